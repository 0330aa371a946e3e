"""Run the benchmark sections and write benchmarks/RESULTS.md (command line, machine, date, commit).

    python benchmarks/run_all.py                  # every section -> benchmarks/RESULTS.md
    python benchmarks/run_all.py --only crf       # some sections
    python benchmarks/run_all.py --out /tmp/r.md  # elsewhere

Adding a section: write a function returning a markdown string (it should say what it measured and
on what data) and add it to :data:`SECTIONS`; it runs in this process, after the earlier sections.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(HERE))


def crf_section() -> str:
    import bench_crf

    return bench_crf.section(profile=True)


def pipeline_section() -> str:
    import bench_pipeline

    return bench_pipeline.section()


# name -> callable returning a markdown section; run in this order.
SECTIONS: dict[str, Callable[[], str]] = {
    "crf": crf_section,
    "pipeline": pipeline_section,
}


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def machine() -> str:
    parts = [f"{_cpu_model()}, {os.cpu_count()} logical CPUs"]
    try:
        load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
        parts.append(f"load average at start {load}")
    except OSError:
        pass
    try:
        import torch

        parts.append(f"torch {torch.__version__}")
        if torch.cuda.is_available():
            parts.append(f"GPU {torch.cuda.get_device_name()}")
        else:
            parts.append("no GPU")
    except ImportError:
        pass
    parts.append(f"Python {platform.python_version()} on {platform.system()} {platform.release()}")
    return "; ".join(parts)


def commit() -> str:
    try:
        out = subprocess.run(["git", "-C", str(ROOT), "describe", "--always", "--dirty"], capture_output=True,
                             text=True, check=True)
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", nargs="+", choices=sorted(SECTIONS), help="sections to run (default: all)")
    parser.add_argument("--out", type=Path, default=HERE / "RESULTS.md")
    args = parser.parse_args(argv)
    names = args.only or list(SECTIONS)
    started = time.perf_counter()
    header = [
        "# pmm benchmarks",
        "",
        f"- command: `{shlex.join([Path(sys.executable).name, *sys.argv])}` (from the repository root)",
        f"- machine: {machine()}",
        f"- date: {_dt.datetime.now().astimezone().strftime('%Y-%m-%d %H:%M %Z')}",
        f"- commit: {commit()}",
        "",
        "CPU figures are process CPU seconds (every thread counted), so they read per core even on a "
        "shared machine; wall seconds depend on the load.",
        "",
    ]
    body = []
    for name in names:
        print(f"[run_all] {name} ...", file=sys.stderr, flush=True)
        body.append(SECTIONS[name]())
    footer = ["", f"_{len(names)} section(s) in {time.perf_counter() - started:.0f} s wall._", ""]
    args.out.write_text("\n".join(header + body + footer))
    print(f"[run_all] wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
