"""The default ``stage=all`` timed end to end: wall time, peak RSS, and the throughput of each stage.

Runs ``python -m pmm.run stage=all`` (the embedded default, ``make run``) under ``/usr/bin/time -v``
in a temporary run directory and reads the stage boundaries from its log timestamps.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STAMP = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),\d+\]\[pmm\]\[INFO\] - (.*)$")
MARKS = {
    "cam_start": "CAM stage:",
    "cam_scored": "CAM mIoU on",
    "pseudo_start": "pseudo-masks: method=",
    "pseudo_done": "pseudo-mask mIoU on",
    "seg_start": "segmentation stage:",
    "round_done": "cyclic round 1 pseudo-mask mIoU",
    "val_done": "val mIoU (",
}


def _times(log: str) -> dict[str, datetime]:
    found: dict[str, datetime] = {}
    for line in log.splitlines():
        match = STAMP.match(line.strip().split("\r")[-1])
        if not match:
            continue
        when = datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S")
        for key, text in MARKS.items():
            if match.group(2).startswith(text) and key not in found:
                found[key] = when
    return found


def section(overrides: list[str] | None = None) -> str:
    run_dir = Path(tempfile.mkdtemp(prefix="pmm-bench-"))
    command = [sys.executable, "-m", "pmm.run", "stage=all", f"hydra.run.dir={run_dir}", *(overrides or [])]
    timed = ["/usr/bin/time", "-v", *command] if Path("/usr/bin/time").exists() else command
    started = time.perf_counter()
    result = subprocess.run(timed, cwd=ROOT, capture_output=True, text=True, env=dict(os.environ, WANDB_MODE="offline"))
    wall = time.perf_counter() - started
    if result.returncode != 0:
        return f"## Default pipeline\n\n`{' '.join(command)}` failed:\n\n```\n{result.stderr[-2000:]}\n```\n"
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", result.stderr)
    log = (run_dir / "run.log").read_text() if (run_dir / "run.log").is_file() else result.stderr
    marks = _times(log + "\n" + result.stderr)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    train, val = metrics["num_train_images"], metrics["num_val_images"]

    def span(a: str, b: str) -> float | None:
        return (marks[b] - marks[a]).total_seconds() if a in marks and b in marks else None

    rows = [
        ("CAM stage (train + multi-scale flip inference + scoring)", span("cam_start", "cam_scored"), None),
        ("pseudo-mask stage (CoV + PPMG, crf.pseudo)", span("pseudo_start", "pseudo_done"), train),
        ("segmentation stage (training, cyclic relabelling, eval)", span("seg_start", "val_done"), None),
    ]
    lines = [
        "## Default pipeline (`make run`)",
        "",
        f"`python -m pmm.run stage=all {' '.join(overrides or [])}` on the embedded dataset ({train} train / {val} val "
        f"images): wall {wall:.0f} s, peak RSS {int(rss.group(1)) / 1024:.0f} MiB" if rss else
        f"`python -m pmm.run stage=all` on the embedded dataset: wall {wall:.0f} s",
        "",
        f"mIoU: CAM {metrics.get('cam_miou', float('nan')):.3f} -> round 0 {metrics['pseudo_miou_rounds'][0]:.3f} -> "
        + " -> ".join(f"round {i} {v:.3f}" for i, v in enumerate(metrics["pseudo_miou_rounds"][1:], 1))
        + f" -> val {metrics['val_miou']:.3f}",
        "",
        "| part | wall s | images/s |",
        "|---|---|---|",
    ]
    for name, seconds, images in rows:
        rate = f"{images / seconds:.1f}" if seconds and images else "—"
        lines.append(f"| {name} | {seconds if seconds is not None else '—'} | {rate} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(section(sys.argv[1:]))
