"""``python -m pmm.report RUN_DIR [RUN_DIR ...] [--output DIR]``: rebuild report pages, compare runs.

Each run folder gets its ``report.html`` again. Several runs, or one folder of runs (a Hydra
sweep), also get ``comparison.html``: in ``--output`` or else in the folder that holds them all.
"""

from __future__ import annotations

import argparse
import sys

from pmm.errors import PmmError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pmm.report", description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR", help="a run folder (holds metrics.json) or a folder of runs")
    parser.add_argument("--output", metavar="DIR", help="where comparison.html goes (default: the runs' common folder)")
    args = parser.parse_args(argv)
    from pmm.report.comparison import write_comparison
    from pmm.report.run_page import write_run_page
    from pmm.report.runs import find_runs, load_run

    try:
        folders, compare = find_runs(args.runs)
        runs = [load_run(folder) for folder in folders]
        for run in runs:
            print(write_run_page(run.path))
        if compare:
            print(write_comparison(runs, args.output))
    except PmmError as error:
        print(f"pmm.report: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
