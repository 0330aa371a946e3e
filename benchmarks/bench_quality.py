"""The default pipeline's quality on shape trees it was never tuned on: CAM, round 0, round 1, val per tree.

A guard, not a timing: it regenerates two VOC-layout shape trees with ``scripts/make_shapes_tree.py``
(tree seeds that no default was tuned on), runs the default ``python -m pmm.run stage=all`` on each
and tabulates each run's ``metrics.json``, then says whether the default still meets its targets:
the cyclic round improves the masks by at least ``MIN_CYCLIC_GAIN`` and val reaches ``MIN_VAL``.

    python benchmarks/bench_quality.py                       # markdown on stdout
    python benchmarks/bench_quality.py --trees 303 404 --seed 0 --work /tmp/quality
    python benchmarks/run_all.py --only quality              # the `quality` section of RESULTS.md

About 6 minutes per tree on a 2-core CPU (480 train / 120 val images of 128 x 128).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLASS_NAMES = "[background,circle,square,triangle,cross]"
# Tree seeds used by this guard and by nothing else: the defaults were tuned on other trees
# (the ablation's 4242, the default 7 and the trees of the last default change), so these stay unseen.
GUARD_TREES = (303, 404)
TRAIN_IMAGES, VAL_IMAGES, IMAGE_SIZE = 480, 120, 128
# The targets the default is held to (docs/benchmarks.md): relabelling must improve the masks,
# and val must not fall below what the default reached on unseen trees when these were set.
MIN_CYCLIC_GAIN = 0.05
MIN_VAL = 0.80


@dataclass
class TreeResult:
    tree_seed: int
    seed: int
    cam: float | None = None
    round0: float | None = None
    round1: float | None = None
    val: float | None = None
    seconds: float = 0.0
    error: str | None = None

    @property
    def gain(self) -> float | None:
        if self.round0 is None or self.round1 is None:
            return None
        return self.round1 - self.round0


def make_tree(out: Path, tree_seed: int) -> None:
    """Write the shape tree with this seed (skipped when it is already there)."""
    if (out / "ImageSets" / "Segmentation" / "val.txt").is_file():
        return
    subprocess.run([sys.executable, str(ROOT / "scripts" / "make_shapes_tree.py"), str(out), "--train",
                    str(TRAIN_IMAGES), "--val", str(VAL_IMAGES), "--size", str(IMAGE_SIZE), "--seed", str(tree_seed)],
                   check=True, capture_output=True, text=True, cwd=ROOT)


def run_tree(work: Path, tree_seed: int, seed: int, overrides: list[str]) -> TreeResult:
    """``stage=all`` with the default config on one tree; the figures from its metrics.json."""
    tree = work / f"tree{tree_seed}"
    make_tree(tree, tree_seed)
    run_dir = work / f"run_tree{tree_seed}_seed{seed}"
    command = [sys.executable, "-m", "pmm.run", "stage=all", "data=voc", f"data.root={tree}",
               f"data.class_names={CLASS_NAMES}", f"seed={seed}", f"hydra.run.dir={run_dir}", *overrides]
    result = TreeResult(tree_seed, seed)
    started = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=dict(os.environ, WANDB_MODE="offline"))
    result.seconds = time.perf_counter() - started
    if done.returncode != 0:
        tail = [line for line in done.stderr.strip().splitlines() if line.strip()][-1:] or ["(no output)"]
        result.error = f"exit {done.returncode}: {tail[0][:200]}"
        return result
    metrics = json.loads((run_dir / "metrics.json").read_text())
    rounds = metrics.get("pseudo_miou_rounds") or []
    result.cam = metrics.get("cam_miou")
    result.round0 = rounds[0] if rounds else None
    result.round1 = rounds[1] if len(rounds) > 1 else None
    result.val = metrics.get("val_miou")
    return result


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"


def table(results: list[TreeResult]) -> list[str]:
    lines = ["| tree seed | seed | CAM | round 0 (PPMG) | round 1 (cyclic) | gain | val | wall s |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results:
        if r.error:
            lines.append(f"| {r.tree_seed} | {r.seed} | failed: {r.error} | | | | | {r.seconds:.0f} |")
            continue
        gain = "—" if r.gain is None else f"{r.gain:+.3f}"
        lines.append(f"| {r.tree_seed} | {r.seed} | {_fmt(r.cam)} | {_fmt(r.round0)} | {_fmt(r.round1)} | {gain} | "
                     f"{_fmt(r.val)} | {r.seconds:.0f} |")
    return lines


def verdicts(results: list[TreeResult]) -> list[str]:
    """One line per target: met on every tree, or which trees missed it."""
    lines = []
    for name, ok in (
        (f"cyclic round improves the masks by >= {MIN_CYCLIC_GAIN:.2f}", lambda r: r.gain is not None and r.gain >= MIN_CYCLIC_GAIN),
        (f"val mIoU >= {MIN_VAL:.2f}", lambda r: r.val is not None and r.val >= MIN_VAL),
    ):
        missed = [f"tree {r.tree_seed} seed {r.seed}" for r in results if not ok(r)]
        lines.append(f"- {name}: " + ("met on every tree" if not missed else "**missed** on " + ", ".join(missed)))
    return lines


def section(trees: tuple[int, ...] = GUARD_TREES, seed: int = 0, work: Path | None = None,
            overrides: list[str] | None = None) -> str:
    work = Path(work) if work else Path(tempfile.mkdtemp(prefix="pmm-quality-"))
    work.mkdir(parents=True, exist_ok=True)
    results = []
    for tree_seed in trees:
        print(f"[bench_quality] tree {tree_seed} seed {seed} ...", file=sys.stderr, flush=True)
        results.append(run_tree(work, tree_seed, seed, list(overrides or [])))
    extra = f" {' '.join(overrides)}" if overrides else ""
    lines = [
        "## Default quality on unseen shape trees",
        "",
        f"`python -m pmm.run stage=all data=voc data.root=<tree> data.class_names={CLASS_NAMES} seed={seed}{extra}` "
        f"on trees from `scripts/make_shapes_tree.py --train {TRAIN_IMAGES} --val {VAL_IMAGES} --size {IMAGE_SIZE} "
        f"--seed <tree seed>` (tree seeds no default was tuned on). Pseudo-mask rounds are scored on train, "
        "val is the segmenter after the cyclic round.",
        "",
        *table(results),
        "",
        *verdicts(results),
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trees", type=int, nargs="+", default=list(GUARD_TREES), help="tree seeds")
    parser.add_argument("--seed", type=int, default=0, help="the run's seed (training, not data)")
    parser.add_argument("--work", type=Path, default=None, help="where trees and runs go (default: a temp folder)")
    parser.add_argument("overrides", nargs="*", help="extra pmm.run overrides, e.g. cyclic.rounds=0")
    args = parser.parse_args(argv)
    print(section(tuple(args.trees), args.seed, args.work, args.overrides))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
