"""The paper's ablation, measured with the real CLI: one table and one plot in benchmarks/.

    python benchmarks/ablation.py                                   # embedded + shapes, seeds 0 1 2 (hours)
    python benchmarks/ablation.py --datasets shapes --seeds 0 --work /tmp/abl
    python benchmarks/ablation.py --quick --seeds 0 --work /tmp/ablation_quick   # minutes: checks the script
    python benchmarks/ablation.py --extra crf.pseudo.backend=pydensecrf         # passed to every run (this one: pmm[pydensecrf])

For every dataset and seed it runs ``python -m pmm.run`` subprocesses, each in its own
``hydra.run.dir`` under ``--work``:

- ``stage=cam`` once;
- ``stage=pseudo cam_ckpt=<cam run>/checkpoints/cam/last.ckpt`` for ``pseudo.method=argmax`` and
  ``crf`` (both without CoV, the paper's baselines), ``ppmg`` without CoV, ``ppmg`` (CoV, alpha
  auto: the default) and ``ppmg`` with alpha fixed (``--fixed-alpha``, the paper's 11);
- ``stage=seg pseudo.source=<ppmg run> cam_ckpt=<cam ckpt> cyclic.rounds=0`` with
  ``seg.loss.mode=none|clamp|pow|ignore`` (CE vs PUF);
- ``stage=seg pseudo.source=<ppmg run> cyclic.rounds=2`` (round 0 vs 1 vs 2: ``pseudo_miou_rounds``);
- ``stage=seg pseudo.source=ground_truth cyclic.rounds=0 seg.loss.mode=none`` (the fully-supervised
  twin, same seed), for the weak/full ratio = val mIoU on the PPMG masks (CE, no cycle) / this one.

A run whose ``metrics.json`` already holds its headline key is reused, so a killed ablation
continues where it stopped (an unfinished run directory is removed and run again). A failed run is
logged (``<work>/logs/<run>.log``), its cells read "failed", and the other runs go on.

Cost: 12 CLI runs per dataset and seed. ``--quick`` (one seed, both datasets) took 27 minutes
on 2 loaded cores (load average 7-9); the full ablation (2 datasets x 3 seeds x 12 runs at full size) is hours — an
estimate from the stage times in docs/benchmarks.md, not a measurement: about 30-40 minutes per dataset and
seed on 2 cores.

``shapes`` is a tree written by ``scripts/make_shapes_tree.py`` (4 solid shape classes, a dataset
the defaults were not tuned on) into ``<work>/data``; the embedded dataset is generated there too
(``PMM_DATA_DIR``). Seeds vary the training (``seed=``), not the datasets.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Sequence

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

SHAPES_CLASSES = "[background,circle,square,triangle,cross]"


# --------------------------------------------------------------------------------------------------
# The rows of the table: what each variant reads from which run.

@dataclass(frozen=True)
class Row:
    key: str
    label: str
    group: str
    plot: bool = True        # drawn in ablation.png (mIoU-like, in [0, 1])


ROWS: tuple[Row, ...] = (
    Row("cam", "CAM mIoU (best background threshold)", "CAMs"),
    Row("pseudo_argmax", "argmax of CAMs (no CoV)", "pseudo-mask mIoU (train)"),
    Row("pseudo_crf", "dense CRF (no CoV)", "pseudo-mask mIoU (train)"),
    Row("pseudo_ppmg_nocov", "PPMG without CoV", "pseudo-mask mIoU (train)"),
    Row("pseudo_ppmg", "PPMG (CoV, alpha auto)", "pseudo-mask mIoU (train)"),
    Row("pseudo_ppmg_fixed", "PPMG (CoV, alpha fixed)", "pseudo-mask mIoU (train)"),
    Row("alpha_auto", "alpha chosen by alpha=auto", "pseudo-mask mIoU (train)", plot=False),
    Row("val_ce", "CE (seg.loss.mode=none)", "val mIoU, PPMG masks, no cycle"),
    Row("val_clamp", "PUF clamp", "val mIoU, PPMG masks, no cycle"),
    Row("val_pow", "PUF pow", "val mIoU, PPMG masks, no cycle"),
    Row("val_ignore", "PUF ignore", "val mIoU, PPMG masks, no cycle"),
    Row("round_0", "round 0 (PPMG masks)", "pseudo-mask mIoU by cyclic round (train)"),
    Row("round_1", "round 1", "pseudo-mask mIoU by cyclic round (train)"),
    Row("round_2", "round 2", "pseudo-mask mIoU by cyclic round (train)"),
    Row("val_cyclic2", "val mIoU after cyclic.rounds=2 (CE)", "val mIoU"),
    Row("val_gt", "fully supervised (ground-truth masks, CE)", "val mIoU"),
    Row("ratio", "weak/full ratio (CE on PPMG masks / ground truth)", "ratio"),
)
ROW_KEYS = tuple(row.key for row in ROWS)


# --------------------------------------------------------------------------------------------------
# The runs of one dataset and seed.

@dataclass
class Run:
    name: str                      # also the folder name under <work>/<dataset>/seed<seed>/
    stage: str
    overrides: list[str]
    headline: str                  # the metrics.json key that says the run finished
    depends: tuple[str, ...] = ()  # runs that must have finished first
    run_dir: Path = field(default=Path("."))


def pseudo_variants(fixed_alpha: float) -> dict[str, list[str]]:
    """run name -> stage=pseudo overrides."""
    return {
        "pseudo_argmax": ["pseudo.method=argmax", "pseudo.cov=false"],
        "pseudo_crf": ["pseudo.method=crf", "pseudo.cov=false"],
        "pseudo_ppmg_nocov": ["pseudo.method=ppmg", "pseudo.cov=false", "pseudo.alpha=auto"],
        "pseudo_ppmg": ["pseudo.method=ppmg", "pseudo.cov=true", "pseudo.alpha=auto"],
        "pseudo_ppmg_fixed": ["pseudo.method=ppmg", "pseudo.cov=true", f"pseudo.alpha={fixed_alpha:g}"],
    }


SEG_MODES = ("none", "clamp", "pow", "ignore")


def plan_runs(base: Path, seed: int, dataset_overrides: Sequence[str], extra: Sequence[str] = (),
              fixed_alpha: float = 11.0) -> list[Run]:
    """Every run of one dataset and seed, in an order that satisfies ``depends``."""
    common = [*dataset_overrides, f"seed={seed}"]
    cam_dir = base / "cam"
    cam_ckpt = cam_dir / "checkpoints" / "cam" / "last.ckpt"
    ppmg_dir = base / "pseudo_ppmg"
    runs = [Run("cam", "cam", [], "cam_miou")]
    for name, overrides in pseudo_variants(fixed_alpha).items():
        runs.append(Run(name, "pseudo", [f"cam_ckpt={cam_ckpt}", *overrides], "pseudo_miou", ("cam",)))
    seg_common = [f"cam_ckpt={cam_ckpt}", f"pseudo.source={ppmg_dir}"]
    for mode in SEG_MODES:
        runs.append(Run(f"seg_{mode}", "seg", [*seg_common, "cyclic.rounds=0", f"seg.loss.mode={mode}"],
                        "val_miou", ("cam", "pseudo_ppmg")))
    runs.append(Run("seg_cyclic2", "seg", [*seg_common, "cyclic.rounds=2", "seg.loss.mode=none"], "val_miou",
                    ("cam", "pseudo_ppmg")))
    runs.append(Run("seg_gt", "seg", [f"cam_ckpt={cam_ckpt}", "pseudo.source=ground_truth", "cyclic.rounds=0",
                                      "seg.loss.mode=none"], "val_miou", ("cam",)))
    for run in runs:
        run.run_dir = base / run.name
        run.overrides = [f"stage={run.stage}", *common, *run.overrides, *extra, f"hydra.run.dir={run.run_dir}"]
    return runs


# --------------------------------------------------------------------------------------------------
# From metrics.json files to table values (pure functions, tested on hand-made dicts).

def _number(value) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def extract_values(metrics: Mapping[str, Mapping | None]) -> dict[str, float | None]:
    """Table values of one dataset and seed from ``{run name: metrics.json dict or None (failed)}``."""
    def get(run: str, key: str):
        data = metrics.get(run) or {}
        return data.get(key)

    values: dict[str, float | None] = {"cam": _number(get("cam", "cam_miou"))}
    for name in pseudo_variants(11.0):
        values[name] = _number(get(name, "pseudo_miou"))
    values["alpha_auto"] = _number(get("pseudo_ppmg", "pseudo_alpha"))
    values["val_ce"] = _number(get("seg_none", "val_miou"))
    for mode in ("clamp", "pow", "ignore"):
        values[f"val_{mode}"] = _number(get(f"seg_{mode}", "val_miou"))
    rounds = get("seg_cyclic2", "pseudo_miou_rounds") or []
    for index in range(3):
        values[f"round_{index}"] = _number(rounds[index]) if index < len(rounds) else None
    values["val_cyclic2"] = _number(get("seg_cyclic2", "val_miou"))
    values["val_gt"] = _number(get("seg_gt", "val_miou"))
    values["ratio"] = weak_full_ratio(values["val_ce"], values["val_gt"])
    return values


def weak_full_ratio(weak: float | None, full: float | None) -> float | None:
    """val mIoU on pseudo-masks / the same segmenter on ground truth (same seed); None if undefined."""
    if weak is None or full is None or full <= 0:
        return None
    return weak / full


def mean_std(values: Iterable[float | None]) -> tuple[float | None, float | None, int]:
    """Mean and sample standard deviation (ddof=1) of the values that exist; std is None for n < 2."""
    present = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    n = len(present)
    if n == 0:
        return None, None, 0
    mean = sum(present) / n
    if n < 2:
        return mean, None, n
    std = math.sqrt(sum((v - mean) ** 2 for v in present) / (n - 1))
    return mean, std, n


def format_cell(mean: float | None, std: float | None, n: int, digits: int = 3) -> str:
    if n == 0 or mean is None:
        return "—"
    if std is None:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def aggregate(results: Mapping[str, Mapping[int, Mapping[str, float | None]]]) -> dict[str, dict[str, tuple]]:
    """``{dataset: {seed: {row: value}}}`` -> ``{dataset: {row: (mean, std, n)}}``."""
    out: dict[str, dict[str, tuple]] = {}
    for dataset, by_seed in results.items():
        out[dataset] = {row: mean_std(values.get(row) for values in by_seed.values()) for row in ROW_KEYS}
    return out


def markdown_table(results: Mapping[str, Mapping[int, Mapping[str, float | None]]],
                   rows: Sequence[Row] = ROWS, digits: int = 3) -> str:
    """One table: rows = variants, per dataset a mean ± std column and a per-seed column."""
    datasets = list(results)
    summary = aggregate(results)
    header = ["group", "variant"]
    for dataset in datasets:
        seeds = "/".join(str(s) for s in results[dataset])
        header += [f"{dataset}: mean ± std", f"{dataset}: seeds {seeds}"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [row.group, row.label]
        for dataset in datasets:
            mean, std, n = summary[dataset][row.key]
            cells.append(format_cell(mean, std, n, digits))
            per_seed = [results[dataset][seed].get(row.key) for seed in results[dataset]]
            cells.append(" / ".join("failed" if v is None else f"{v:.{digits}f}" for v in per_seed))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(results: Mapping[str, Mapping[int, Mapping[str, float | None]]], path: Path, title: str = "") -> None:
    """Grouped horizontal bars (one bar per dataset) with the standard deviation as error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [row for row in ROWS if row.plot]
    datasets = list(results)
    summary = aggregate(results)
    height = 0.8 / max(1, len(datasets))
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(rows) * max(1, len(datasets)) / 1.5 + 1.5))
    for index, dataset in enumerate(datasets):
        means = [summary[dataset][row.key][0] for row in rows]
        stds = [summary[dataset][row.key][1] for row in rows]
        ys = [r + (index - (len(datasets) - 1) / 2) * height for r in range(len(rows))]
        ax.barh(ys, [m if m is not None else 0.0 for m in means], height,
                xerr=[s if s is not None else 0.0 for s in stds], capsize=2, label=dataset)
        for y, mean in zip(ys, means):
            if mean is not None:
                ax.text(mean + 0.01, y, f"{mean:.3f}", va="center", fontsize=6)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([row.label for row in rows], fontsize=7)
    ax.invert_yaxis()
    highest = max([1.0] + [m + (s or 0.0) for d in datasets
                            for m, s, _ in (summary[d][row.key] for row in rows) if m is not None])
    ax.set_xlim(0, highest + 0.1)   # a ratio can exceed 1
    ax.set_xlabel("mIoU (ratio: val mIoU weak / full)")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


# --------------------------------------------------------------------------------------------------
# Running the CLI.

def read_metrics(run_dir: Path) -> dict | None:
    try:
        return json.loads((run_dir / "metrics.json").read_text())
    except (OSError, ValueError):
        return None


def finished(run: Run) -> bool:
    metrics = read_metrics(run.run_dir)
    if not metrics or _number(metrics.get(run.headline)) is None:
        return False
    if run.stage == "cam":
        return (run.run_dir / "checkpoints" / "cam" / "last.ckpt").is_file()
    if run.name == "seg_cyclic2":
        return len(metrics.get("pseudo_miou_rounds") or []) >= 3
    return True


def execute(run: Run, env: Mapping[str, str], log_dir: Path, timeout: float | None) -> tuple[dict | None, float]:
    """Run one CLI call (or reuse a finished one); returns (metrics or None if it failed, seconds)."""
    if finished(run):
        print(f"[ablation] reuse {run.run_dir}", file=sys.stderr, flush=True)
        return read_metrics(run.run_dir), 0.0
    if run.run_dir.exists():
        shutil.rmtree(run.run_dir)   # an unfinished run of ours: start it again from scratch
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{run.run_dir.parent.parent.name}-{run.run_dir.parent.name}-{run.name}.log"
    command = [sys.executable, "-m", "pmm.run", *run.overrides]
    print(f"[ablation] run {shlex.join(command[1:])}", file=sys.stderr, flush=True)
    started = time.perf_counter()
    with open(log_path, "w") as log:
        log.write(shlex.join(command) + "\n\n")
        log.flush()
        try:
            result = subprocess.run(command, cwd=ROOT, env=dict(env), stdout=log, stderr=subprocess.STDOUT,
                                    timeout=timeout)
            code = result.returncode
        except subprocess.TimeoutExpired:
            code = "timeout"
    seconds = time.perf_counter() - started
    if code != 0 or not finished(run):
        print(f"[ablation] FAILED ({code}) after {seconds:.0f} s: {run.name}; log {log_path}", file=sys.stderr,
              flush=True)
        return None, seconds
    print(f"[ablation] done {run.name} in {seconds:.0f} s", file=sys.stderr, flush=True)
    return read_metrics(run.run_dir), seconds


def make_shapes_tree(root: Path, quick: bool, tree_seed: int) -> None:
    if (root / "ImageSets" / "Segmentation" / "val.txt").is_file():
        return
    size = ["--train", "24", "--val", "8", "--size", "64"] if quick else []
    subprocess.run([sys.executable, str(ROOT / "scripts" / "make_shapes_tree.py"), str(root), *size,
                    "--seed", str(tree_seed)], cwd=ROOT, check=True)


def dataset_overrides(name: str, work: Path, quick: bool, tree_seed: int) -> list[str]:
    quick_overrides = ["debug=default", "cyclic.every_n_epochs=1"] if quick else []
    if name == "embedded":
        return quick_overrides
    if name == "shapes":
        root = work / "data" / (f"shapes-quick-s{tree_seed}" if quick else f"shapes-s{tree_seed}")
        make_shapes_tree(root, quick, tree_seed)
        return ["data=voc", f"data.root={root}", f"data.class_names={SHAPES_CLASSES}", *quick_overrides]
    raise ValueError(f"unknown dataset {name!r}; expected embedded or shapes")


# --------------------------------------------------------------------------------------------------
# The report.

def machine() -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    parts = [f"{cpu}, {os.cpu_count()} logical CPUs"]
    try:
        parts.append("load average at start " + ", ".join(f"{x:.1f}" for x in os.getloadavg()))
    except OSError:
        pass
    try:
        import torch

        parts.append(f"torch {torch.__version__}")
        parts.append(f"GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else "no GPU")
    except ImportError:
        pass
    parts.append(f"Python {platform.python_version()} on {platform.system()} {platform.release()}")
    return "; ".join(parts)


def commit() -> str:
    try:
        return subprocess.run(["git", "-C", str(ROOT), "describe", "--always", "--dirty"], capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def report(results: Mapping[str, Mapping[int, Mapping[str, float | None]]], *, command: str, machine_line: str,
           date: str, commit_line: str, quick: bool, wall_seconds: float, fixed_alpha: float,
           extra: Sequence[str], failures: Sequence[str], png_name: str = "ablation.png") -> str:
    lines = []
    if quick:
        lines += [
            "> **QUICK SMOKE RUN (`--quick`) — NOT the real ablation.** Tiny datasets (`debug=default`: 24 train /",
            "> 8 val images, one CAM epoch), a single seed: these numbers only show that the script runs end to",
            "> end. Run `python benchmarks/ablation.py` (hours) for the real table.",
            "",
        ]
    seeds = sorted({seed for by_seed in results.values() for seed in by_seed})
    lines += [
        "# pmm ablation" + (" (quick smoke)" if quick else ""),
        "",
        f"- command: `{command}` (from the repository root)",
        f"- machine: {machine_line}",
        f"- date: {date}",
        f"- commit: {commit_line}",
        f"- datasets: {', '.join(results)}; seeds: {' '.join(map(str, seeds))}; wall time {wall_seconds / 60:.1f} min",
    ]
    if extra:
        lines.append(f"- extra overrides on every run: `{' '.join(extra)}`")
    lines += [
        "",
        "Every number comes from a `python -m pmm.run` run's `metrics.json` (the runs and their overrides are",
        "listed in `benchmarks/ablation.py`). Pseudo-masks are scored on the training split against its ground",
        "truth, segmenters on val. `embedded` is the default synthetic dataset (`data=synthetic`), `shapes` a",
        "4-class tree from `scripts/make_shapes_tree.py` (a dataset the defaults were not tuned on). The seed",
        "varies the training, not the data. mean ± std: sample standard deviation over the seeds that",
        "finished (no ± with one seed); the per-seed column lists each seed's value in seed order",
        "(\"failed\": that run failed, see the logs in the work folder).",
        "",
        "- pseudo-masks: `stage=pseudo cam_ckpt=<the seed's CAM run>`; argmax and CRF without CoV (the paper's",
        f"  baselines); alpha fixed = `pseudo.alpha={fixed_alpha:g}` (the paper's value), auto = derived from",
        "  the CAM threshold t* (the value it chose is the `alpha chosen` row).",
        "- CE vs PUF: `stage=seg pseudo.source=<PPMG run> cyclic.rounds=0 seg.loss.mode=none|clamp|pow|ignore`,",
        "  encoder started from the seed's CAM backbone (`cam_ckpt`, the default `segmenter.init_from_cam`).",
        "- rounds: `stage=seg pseudo.source=<PPMG run> cyclic.rounds=2` (round 0 = the PPMG masks rescored,",
        "  rounds 1 and 2 = the segmenter's relabelling); its training is split over three rounds, so its",
        "  val mIoU is not the same budget as the no-cycle rows.",
        "- weak/full ratio, per seed then averaged: val mIoU of CE on the PPMG masks (no cycle) / the same",
        "  command with `pseudo.source=ground_truth`.",
        "",
        markdown_table(results),
        "",
        f"![ablation]({png_name})",
        "",
    ]
    if failures:
        lines += ["Failed runs:", "", *[f"- {name}" for name in failures], ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", nargs="+", default=["embedded", "shapes"], choices=["embedded", "shapes"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--work", type=Path, default=ROOT / "outputs" / "ablation",
                        help="run directories, logs and generated data (reused: the script is resumable)")
    parser.add_argument("--quick", action="store_true",
                        help="debug=default and a tiny shapes tree: minutes, to check the script end to end")
    parser.add_argument("--extra", nargs="+", default=[], metavar="OVERRIDE", help="Hydra overrides for every run")
    parser.add_argument("--fixed-alpha", type=float, default=11.0, help="alpha of the 'alpha fixed' PPMG variant")
    parser.add_argument("--shapes-seed", type=int, default=101, help="seed of the generated shapes tree")
    parser.add_argument("--timeout", type=float, default=None, help="seconds per CLI run (default: none)")
    parser.add_argument("--out", type=Path, default=HERE, help="folder for ABLATION.md and ablation.png")
    args = parser.parse_args(argv)

    command = shlex.join(["python", "benchmarks/ablation.py", *(argv if argv is not None else sys.argv[1:])])
    date = _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    machine_line, commit_line = machine(), commit()
    work = args.work.expanduser().resolve()
    env = dict(os.environ, PMM_DATA_DIR=str(work / "data"), WANDB_MODE="offline", HYDRA_FULL_ERROR="1")
    started = time.perf_counter()
    results: dict[str, dict[int, dict[str, float | None]]] = {}
    failures: list[str] = []
    for dataset in args.datasets:
        overrides = dataset_overrides(dataset, work, args.quick, args.shapes_seed)
        results[dataset] = {}
        for seed in args.seeds:
            base = work / ("quick" if args.quick else "full") / dataset / f"seed{seed}"
            metrics: dict[str, dict | None] = {}
            for run in plan_runs(base, seed, overrides, args.extra, args.fixed_alpha):
                if any(metrics.get(dep) is None for dep in run.depends):
                    print(f"[ablation] skip {dataset}/seed{seed}/{run.name}: a run it needs failed", file=sys.stderr)
                    metrics[run.name] = None
                    failures.append(f"{dataset} seed {seed} {run.name} (skipped: needs {', '.join(run.depends)})")
                    continue
                metrics[run.name], _ = execute(run, env, work / "logs", args.timeout)
                if metrics[run.name] is None:
                    failures.append(f"{dataset} seed {seed} {run.name} (log in {work / 'logs'})")
            results[dataset][seed] = extract_values(metrics)
            (base / "values.json").write_text(json.dumps(results[dataset][seed], indent=1))
    wall = time.perf_counter() - started
    args.out.mkdir(parents=True, exist_ok=True)
    title = "pmm ablation" + (" — QUICK SMOKE, not the real ablation" if args.quick else "") + \
        f" (seeds {' '.join(map(str, args.seeds))}; mean ± std)"
    plot(results, args.out / "ablation.png", title)
    text = report(results, command=command, machine_line=machine_line, date=date, commit_line=commit_line,
                  quick=args.quick, wall_seconds=wall, fixed_alpha=args.fixed_alpha, extra=args.extra,
                  failures=failures)
    (args.out / "ABLATION.md").write_text(text)
    (work / "results.json").write_text(json.dumps({d: {str(s): v for s, v in r.items()} for d, r in results.items()},
                                                  indent=1))
    print(markdown_table(results))
    print(f"[ablation] wrote {args.out / 'ABLATION.md'} and {args.out / 'ablation.png'} in {wall / 60:.1f} min",
          file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
