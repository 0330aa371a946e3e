"""Benchmarks quoted in issue notes: wall time of the default pipeline and the cost of PPMG.

    python scripts/benchmark.py                  # both
    python scripts/benchmark.py --only ppmg      # PPMG per image on the VOC samples and synthetic images
    python scripts/benchmark.py --only pipeline --overrides trainer=ddp trainer.accelerator=cpu trainer.devices=2

Prints one line per figure; the pipeline's metrics.json is printed too.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def bench_ppmg(repeats: int = 3) -> None:
    from pmm.data.synthetic import render_sample
    from pmm.pseudo import ppmg

    rng = np.random.default_rng(0)
    cases = []
    samples = ROOT.parent / "shared" / "data" / "voc_samples" / "JPEGImages"
    if samples.is_dir():
        from pmm.io import load_image

        cases.append(("VOC sample 513x513", load_image(next(iter(sorted(samples.glob("*.jpg")))))))
    cases.append(("synthetic 160x160", render_sample(rng)[0]))
    for name, image in cases:
        height, width = image.shape[:2]
        yy, xx = np.mgrid[0:height, 0:width]
        cams = np.stack([np.exp(-((yy - height / 3) ** 2 + (xx - width / 3) ** 2) / (0.05 * height * width)),
                         np.exp(-((yy - height / 2) ** 2 + (xx - width / 2) ** 2) / (0.08 * height * width))]).astype(np.float32)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            ppmg(image, cams, [1, 2], alpha=4.0)
            times.append(time.perf_counter() - start)
        print(f"ppmg (pydensecrf, 2 classes) on {name}: {min(times) * 1000:.0f} ms per image (best of {repeats})")


def bench_pipeline(overrides: list[str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "run"
        command = [sys.executable, "-m", "pmm.run", "stage=all", f"hydra.run.dir={run_dir}", *overrides]
        start = time.perf_counter()
        subprocess.run(command, check=True, cwd=ROOT, env=dict(os.environ), stdout=subprocess.DEVNULL)
        elapsed = time.perf_counter() - start
        metrics = json.loads((run_dir / "metrics.json").read_text())
    print(f"stage=all {' '.join(overrides)}: {elapsed:.0f} s wall, world_size {metrics['world_size']}")
    keys = ("cam_miou", "pseudo_miou", "pseudo_miou_rounds", "val_miou", "pseudo_alpha", "cam_bg_threshold")
    print(json.dumps({k: metrics.get(k) for k in keys}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=("ppmg", "pipeline"))
    parser.add_argument("--overrides", nargs="*", default=[])
    args = parser.parse_args()
    if args.only in (None, "ppmg"):
        bench_ppmg()
    if args.only in (None, "pipeline"):
        bench_pipeline(args.overrides)


if __name__ == "__main__":
    main()
