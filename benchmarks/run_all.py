"""Run the benchmark sections and write benchmarks/RESULTS.md (command line, machine, date, commit).

    python benchmarks/run_all.py                  # every section -> benchmarks/RESULTS.md
    python benchmarks/run_all.py --only crf       # some sections
    python benchmarks/run_all.py --out /tmp/r.md  # elsewhere
    python benchmarks/run_all.py --only quality --update   # replace that section in RESULTS.md, keep the others

Adding a section: write a function returning a markdown string (it should say what it measured and
on what data) and add it to :data:`SECTIONS`; it runs in this process, after the earlier sections.
A section that cannot run here raises :class:`SectionSkipped` with the reason: it is left out (with
``--update`` the file keeps the section as it was), and the reason is printed and noted.

The CRF sections measure against the exact reference loop, ``crf backend=pydensecrf``: they need
the optional extra ``pip install "pmm[pydensecrf]"`` (included in ``.[dev]``).
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


class SectionSkipped(RuntimeError):
    """A section that cannot run on this machine; the message says why and how to fix it."""


def crf_section() -> str:
    import bench_crf

    try:
        return bench_crf.section(profile=True)
    except bench_crf.ReferenceMissing as error:
        raise SectionSkipped(str(error)) from None


def crf_seg_section() -> str:
    import bench_crf

    try:
        return bench_crf.seg_section()
    except bench_crf.ReferenceMissing as error:
        raise SectionSkipped(str(error)) from None


def crf_rough_section() -> str:
    import bench_crf

    return bench_crf.rough_section(backends=("pydensecrf", "fast"), repeats=2)


def pipeline_section() -> str:
    import bench_pipeline

    return bench_pipeline.section()


def quality_section() -> str:
    import bench_quality

    return bench_quality.section()


SCALE_N: int | None = None  # --scale-n: the N tree's size (None: bench_scale's default)


def scale_section() -> str:
    import bench_scale

    return bench_scale.section() if SCALE_N is None else bench_scale.section(n=SCALE_N)


# name -> callable returning a markdown section; run in this order.
SECTIONS: dict[str, Callable[[], str]] = {
    "crf": crf_section,
    "crf_seg": crf_seg_section,
    "crf_rough": crf_rough_section,
    "pipeline": pipeline_section,
    "quality": quality_section,
    "scale": scale_section,
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


def _split_sections(text: str) -> tuple[str, list[str]]:
    """The preamble before the first ``## `` heading, and each ``## `` section (heading included)."""
    parts = text.split("\n## ")
    return parts[0], ["## " + part for part in parts[1:]]


def _with_stamp(section: str, stamp: str) -> str:
    heading, _, rest = section.partition("\n")
    return f"{heading}\n\n{stamp}\n{rest}"


def merge_sections(old: str, new_sections: list[str]) -> str:
    """``old`` with each section of ``new_sections`` replacing the one with the same heading (or appended)."""
    preamble, sections = _split_sections(old.rstrip("\n") + "\n")
    headings = [section.split("\n", 1)[0] for section in sections]
    for new in new_sections:
        new = new.rstrip("\n") + "\n"
        heading = new.split("\n", 1)[0]
        if heading in headings:
            sections[headings.index(heading)] = new
        else:
            sections.append(new)
            headings.append(heading)
    return preamble.rstrip("\n") + "\n\n" + "\n".join(section.rstrip("\n") + "\n" for section in sections)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", nargs="+", choices=sorted(SECTIONS), help="sections to run (default: all)")
    parser.add_argument("--out", type=Path, default=HERE / "RESULTS.md")
    parser.add_argument("--scale-n", type=int, default=None,
                        help="images of the scale section's N tree (default: bench_scale's; 400 makes each step about a minute)")
    parser.add_argument("--update", action="store_true",
                        help="replace only the sections run in --out (each stamped with its own command, date and "
                             "commit) and keep the others as they were measured")
    args = parser.parse_args(argv)
    global SCALE_N
    SCALE_N = args.scale_n
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
    body, skipped = [], []
    for name in names:
        print(f"[run_all] {name} ...", file=sys.stderr, flush=True)
        try:
            body.append(SECTIONS[name]())
        except SectionSkipped as reason:
            print(f"[run_all] {name} skipped: {reason}", file=sys.stderr, flush=True)
            skipped.append(f"_Section `{name}` not measured: {reason}._")
    footer = ["", f"_{len(body)} section(s) in {time.perf_counter() - started:.0f} s wall._", *skipped, ""]
    if args.update and args.out.is_file():
        stamp = (f"_Updated alone: {header[2][2:]}; {header[3][2:]}; {header[4][2:]}; {header[5][2:]}._")
        text = merge_sections(args.out.read_text(), [_with_stamp(section, stamp) for section in body])
    else:
        text = "\n".join(header + body + footer)
    tmp = args.out.with_name(args.out.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(args.out)
    print(f"[run_all] wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
