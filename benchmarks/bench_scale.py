"""Cost that stays linear at scale: the per-image steps on trees of N and 4N images, time and peak memory.

Generates three embedded synthetic trees (``pmm.data.synthetic``, 160 px): a base tree of
``BASE_IMAGES`` train / val images, one of N and one of 4N (train and val of that size each). A CAM
network and a segmenter are trained once, briefly, on the base tree (their quality does not matter
here: the cost of a step does not depend on it much). Then, on every tree, each step runs as its own
process under ``/usr/bin/time -v``:

- ``cams``: CAM inference of the training split (``cam.*`` TTA, what ``stage=pseudo cam_ckpt=...`` does first);
- ``pseudo``: ``python -m pmm.run stage=pseudo`` on those CAMs (CAM scoring, alpha search, CoV + PPMG
  in ``pseudo.workers`` processes, scoring), with ``pseudo.workers=2`` (the default) and ``=1``;
- ``relabel``: one cyclic relabelling, the segmenter predicting every training image with
  ``cyclic.*`` TTA and the ``crf.seg`` CRF, then the new round scored (what a cyclic round does);
- ``eval``: ``python -m pmm.run stage=eval seg_ckpt=...`` on the tree's val split (every protocol of
  ``eval.protocols``).

The table gives wall seconds, process CPU seconds (user + sys, children included), CPU seconds per
image and peak RSS ("Maximum resident set size": the largest single process, children included).
The verdicts compare 4N with N: the CPU seconds per image *beyond the base tree's* (fixed costs such
as imports and model loading cancel out) may be at most ``TIME_TOLERANCE`` higher at 4N, the peak RSS
at most ``RSS_TOLERANCE`` higher. A step that keeps something per image in memory or does quadratic work misses.

    python benchmarks/bench_scale.py                    # markdown on stdout (N=160: ~8 min on 2 quiet cores)
    python benchmarks/bench_scale.py --n 40 --work /tmp/scale   # a quick check of the script
    python benchmarks/run_all.py --only scale --update  # the `scale` section of RESULTS.md
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TIME = Path("/usr/bin/time")
DEFAULT_N = 160
BASE_IMAGES = 16
IMAGE_SIZE = 160
TREE_SEED = 11
TIME_TOLERANCE = 0.15
RSS_TOLERANCE = 0.10
# The alpha search scores a fixed sample of training images (pseudo.alpha_search_images, 48 by
# default): a fixed cost by design. The same sample size on every tree keeps it a fixed cost here
# too, cancelled by the base tree, instead of a cost that grows until the default sample is full.
SEARCH_IMAGES = BASE_IMAGES
# (step name, what it measures) in table order.
STEPS = {
    "cams": "CAM inference (cam.* TTA) of train",
    "pseudo": "stage=pseudo on those CAMs (workers=2)",
    "pseudo_w1": "stage=pseudo, pseudo.workers=1",
    "relabel": "cyclic relabelling of train (cyclic.* TTA + crf.seg), scored",
    "eval": "stage=eval on val (eval.protocols)",
}
_TIME_FIELDS = {
    "user": r"User time \(seconds\): ([\d.]+)",
    "sys": r"System time \(seconds\): ([\d.]+)",
    "wall": r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)",
    "rss_kib": r"Maximum resident set size \(kbytes\): (\d+)",
    "exit": r"Exit status: (\d+)",
}


@dataclass
class Measure:
    step: str
    images: int
    wall: float = 0.0
    cpu: float = 0.0
    rss_mib: float = 0.0
    error: str | None = None

    @property
    def cpu_per_image(self) -> float:
        return self.cpu / self.images


def _clock_seconds(text: str) -> float:
    """``h:mm:ss`` or ``m:ss.ss`` (GNU time's elapsed format) in seconds."""
    seconds = 0.0
    for part in text.split(":"):
        seconds = seconds * 60 + float(part)
    return seconds


def parse_time_report(text: str) -> dict[str, float]:
    """wall, cpu (user + sys) seconds, rss_mib and exit from GNU ``/usr/bin/time -v`` output."""
    found = {}
    for key, pattern in _TIME_FIELDS.items():
        match = re.search(pattern, text)
        if match is None:
            raise ValueError(f"no '{pattern.split(chr(92))[0].strip()}' line in the /usr/bin/time -v report")
        found[key] = match.group(1)
    return {"wall": _clock_seconds(found["wall"]), "cpu": float(found["user"]) + float(found["sys"]),
            "rss_mib": int(found["rss_kib"]) / 1024, "exit": int(found["exit"])}


def _env(threads: int | None = None) -> dict[str, str]:
    """This checkout's pmm (whatever is installed), wandb offline; ``threads``: OpenMP / MKL threads per process."""
    path = os.pathsep.join([str(ROOT / "src"), *filter(None, [os.environ.get("PYTHONPATH")])])
    env = dict(os.environ, PYTHONPATH=path, WANDB_MODE="offline")
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    return env


def run_timed(step: str, images: int, command: list[str], logs: Path, threads: int | None = None) -> Measure:
    """Run ``command`` under ``/usr/bin/time -v``; its output goes to ``logs/<step>_<images>.log``."""
    logs.mkdir(parents=True, exist_ok=True)
    log, report = logs / f"{step}_{images}.log", logs / f"{step}_{images}.time"
    with log.open("w") as out:
        subprocess.run([str(TIME), "-v", "-o", str(report), *command], cwd=ROOT, env=_env(threads), stdout=out,
                       stderr=subprocess.STDOUT)
    measure = Measure(step, images)
    try:
        figures = parse_time_report(report.read_text())
    except (OSError, ValueError) as error:
        measure.error = f"no time report ({error}); see {log}"
        return measure
    measure.wall, measure.cpu, measure.rss_mib = figures["wall"], figures["cpu"], figures["rss_mib"]
    if figures["exit"] != 0:
        tail = [line for line in log.read_text().splitlines() if line.strip()][-1:] or ["(no output)"]
        measure.error = f"exit {figures['exit']}: {tail[0][:160]} ({log})"
    return measure


# ------------------------------------------------------------------------------------------- the runs

def tree_overrides(root: Path, images: int, cache: Path) -> list[str]:
    """pmm.run overrides that point the embedded dataset at the tree (its generate node must match it)."""
    return [f"data.root={root}", f"data.generate.seed={TREE_SEED}", f"data.generate.num_train={images}",
            f"data.generate.num_val={images}", f"data.generate.image_size={IMAGE_SIZE}", f"paths.cache_dir={cache}"]


def make_tree(work: Path, images: int) -> Path:
    """The synthetic tree of ``images`` train and val images, indexed (its label cache written) before any timing."""
    sys.path.insert(0, str(ROOT / "src"))
    from pmm.data.synthetic import SYNTHETIC_CLASS_NAMES, ensure_synthetic
    from pmm.data.voc import load_voc_split

    root = ensure_synthetic(work / f"tree{images}", TREE_SEED, images, images, IMAGE_SIZE)
    for split in ("train", "val"):
        load_voc_split(root, split, SYNTHETIC_CLASS_NAMES, cache_dir=work / "cache")
    return root


def pmm_run(*overrides: str) -> list[str]:
    return [sys.executable, "-m", "pmm.run", *overrides]


def driver(step: str, run_dir: Path, checkpoint: Path, overrides: list[str]) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), "--step", step, "--run-dir", str(run_dir),
            "--ckpt", str(checkpoint), *overrides]


def train_checkpoints(work: Path, base: Path) -> tuple[Path, Path]:
    """A CAM network and a segmenter trained for one epoch on the base tree (not timed)."""
    data = tree_overrides(base, BASE_IMAGES, work / "cache")
    cam_run, seg_run = work / "train_cam", work / "train_seg"
    for run_dir, overrides in ((cam_run, ["stage=cam", "cam.max_epochs=1", "cam.lengthen_to_steps=null"]),
                               (seg_run, ["stage=seg", "pseudo.source=ground_truth", "seg.max_epochs=1"])):
        if (run_dir / "checkpoints").is_dir() and any((run_dir / "checkpoints").rglob("last.ckpt")):
            continue
        done = subprocess.run(pmm_run(*overrides, *data, f"hydra.run.dir={run_dir}"), cwd=ROOT, env=_env(),
                              capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(overrides)} on the base tree failed: {done.stderr.strip()[-500:]}")
    return cam_run / "checkpoints" / "cam" / "last.ckpt", seg_run / "checkpoints" / "seg" / "last.ckpt"


def _link_cams(source: Path, target: Path) -> None:
    """The CAM files of the inference step in another run folder (hard links: nothing copied)."""
    target.mkdir(parents=True, exist_ok=True)
    for path in source.glob("*.npz"):
        try:
            os.link(path, target / path.name)
        except OSError:
            shutil.copyfile(path, target / path.name)


def measure_tree(work: Path, root: Path, images: int, cam_ckpt: Path, seg_ckpt: Path,
                 threads: int | None = None) -> list[Measure]:
    """Every step of :data:`STEPS` on one tree, each in a fresh run folder."""
    data = tree_overrides(root, images, work / "cache")
    runs, logs = work / "runs", work / "logs"

    def timed(step: str, command: list[str]) -> Measure:
        return run_timed(step, images, command, logs, threads)

    def run_dir(step: str) -> Path:
        folder = runs / f"{step}_{images}"
        shutil.rmtree(folder, ignore_errors=True)
        return folder

    measures = []
    cams_run = run_dir("cams")
    print(f"[bench_scale] {images} images ...", file=sys.stderr, flush=True)
    measures.append(timed("cams", driver("cams", cams_run, cam_ckpt, data)))
    for step, workers in (("pseudo", 2), ("pseudo_w1", 1)):
        folder = run_dir(step)
        _link_cams(cams_run / "cams" / "train", folder / "cams" / "train")
        measures.append(timed(step, pmm_run("stage=pseudo", f"pseudo.workers={workers}",
                                            f"pseudo.alpha_search_images={SEARCH_IMAGES}", *data,
                                            f"hydra.run.dir={folder}")))
    measures.append(timed("relabel", driver("relabel", run_dir("relabel"), seg_ckpt, data)))
    measures.append(timed("eval", pmm_run("stage=eval", f"seg_ckpt={seg_ckpt}", *data,
                                          f"hydra.run.dir={run_dir('eval')}")))
    return measures


# ------------------------------------------------------------------------------------------- the report

@dataclass
class Ratio:
    """One step's 4N figures against its N figures (None where a run failed or the base is not below N)."""

    step: str
    per_image: float | None = None  # CPU s per image, 4N over N
    marginal: float | None = None  # CPU s per image beyond the base tree's, 4N over N
    beyond: tuple[float, float] | None = None  # CPU s beyond the base tree's at N and at 4N
    wall_per_image: float | None = None
    rss: float | None = None


def ratios(measures: list[Measure], base: int, n: int) -> list[Ratio]:
    """Per step: the ratios of the 4N tree's figures to the N tree's."""
    by = {(m.step, m.images): m for m in measures if m.error is None}
    rows = []
    for step in STEPS:
        small, large, zero = by.get((step, n)), by.get((step, 4 * n)), by.get((step, base))
        if small is None or large is None:
            rows.append(Ratio(step))
            continue
        row = Ratio(step, per_image=large.cpu_per_image / small.cpu_per_image,
                    wall_per_image=(large.wall / large.images) / (small.wall / small.images),
                    rss=large.rss_mib / small.rss_mib)
        if zero is not None:
            row.beyond = (small.cpu - zero.cpu, large.cpu - zero.cpu)
            if row.beyond[0] > 0:
                row.marginal = (row.beyond[1] / (4 * n - base)) / (row.beyond[0] / (n - base))
        rows.append(row)
    return rows


def _x(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def table(measures: list[Measure]) -> list[str]:
    lines = ["| step | images | wall s | CPU s | CPU s/image | peak RSS MiB |", "|---|---|---|---|---|---|"]
    for step in STEPS:
        for m in sorted((m for m in measures if m.step == step), key=lambda m: m.images):
            if m.error:
                lines.append(f"| {STEPS[step]} | {m.images} | failed: {m.error} | | | |")
            else:
                lines.append(f"| {STEPS[step]} | {m.images} | {m.wall:.1f} | {m.cpu:.1f} | {m.cpu_per_image:.3f} | "
                             f"{m.rss_mib:.0f} |")
    return lines


def ratio_table(rows: list[Ratio]) -> list[str]:
    lines = ["| step | CPU s/image 4N / N | CPU s beyond the base, N and 4N | per image beyond the base 4N / N | "
             "wall s/image 4N / N | peak RSS 4N / N |", "|---|---|---|---|---|---|"]
    for r in rows:
        beyond = "—" if r.beyond is None else f"{r.beyond[0]:.1f}, {r.beyond[1]:.1f}"
        lines.append(f"| {STEPS[r.step]} | {_x(r.per_image)} | {beyond} | {_x(r.marginal)} | {_x(r.wall_per_image)} | "
                     f"{_x(r.rss)} |")
    return lines


def _judge(value: float | None, tolerance: float) -> str:
    """``met``, ``missed`` (4N costs more per image than N beyond the tolerance), ``cheaper`` or ``unmeasured``."""
    if value is None:
        return "unmeasured"
    if value > 1 + tolerance:
        return "missed"
    return "met" if value >= 1 - tolerance else "cheaper"


def verdicts(rows: list[Ratio]) -> list[str]:
    """One line per target: met by every step, or which steps missed it (and which could not be judged).

    Only a step that costs more per image at 4N misses; one that costs less is named apart (a fixed
    cost the base tree does not show, or noise), since that is no scale problem.
    """
    lines = []
    for name, tolerance, value in (
        (f"CPU s per image beyond the base tree, 4N at most {TIME_TOLERANCE:.0%} above N", TIME_TOLERANCE,
         lambda r: r.marginal),
        (f"peak RSS, 4N at most {RSS_TOLERANCE:.0%} above N", RSS_TOLERANCE, lambda r: r.rss),
    ):
        judged = {r.step: _judge(value(r), tolerance) for r in rows}

        def named(verdict: str) -> list[str]:
            return [f"{r.step} ({_x(value(r))})" for r in rows if judged[r.step] == verdict]

        text = "**missed** by " + ", ".join(named("missed")) if named("missed") else "met by every step measured"
        if named("cheaper"):
            text += "; cheaper per image at 4N (a fixed cost beyond the base tree's, or noise): " + ", ".join(named("cheaper"))
        unmeasured = [r.step for r in rows if judged[r.step] == "unmeasured"]
        if unmeasured:
            text += ("; not judged (a failed run, or the N tree's CPU s not above the base tree's: too noisy): "
                     + ", ".join(unmeasured))
        lines.append(f"- {name}: {text}")
    return lines


def workers_table(measures: list[Measure]) -> list[str]:
    by = {(m.step, m.images): m for m in measures if m.error is None}
    lines = ["| images | wall s, workers=1 | wall s, workers=2 | speed-up | CPU s, workers=1 | CPU s, workers=2 |",
             "|---|---|---|---|---|---|"]
    for images in sorted({m.images for m in measures}):
        one, two = by.get(("pseudo_w1", images)), by.get(("pseudo", images))
        if one and two:
            lines.append(f"| {images} | {one.wall:.1f} | {two.wall:.1f} | {one.wall / two.wall:.2f}x | "
                         f"{one.cpu:.1f} | {two.cpu:.1f} |")
    return lines


def _load() -> str:
    try:
        return " / ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return "unknown"


def section(n: int = DEFAULT_N, work: Path | None = None, threads: int | None = None) -> str:
    if n <= BASE_IMAGES:
        raise SystemExit(f"bench_scale: --n {n}: expected more than the base tree's {BASE_IMAGES} images")
    if not TIME.is_file():
        raise SystemExit(f"bench_scale: {TIME} not found: this benchmark reads GNU time's -v report "
                         "(apt-get install time)")
    work = Path(work) if work else Path(tempfile.mkdtemp(prefix="pmm-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    load_start = _load()
    sizes = (BASE_IMAGES, n, 4 * n)
    trees = {size: make_tree(work, size) for size in sizes}
    cam_ckpt, seg_ckpt = train_checkpoints(work, trees[BASE_IMAGES])
    measures = [m for size in sizes for m in measure_tree(work, trees[size], size, cam_ckpt, seg_ckpt, threads)]
    load_end = _load()
    rows = ratios(measures, BASE_IMAGES, n)
    command = f"python benchmarks/bench_scale.py --n {n}" + (f" --threads {threads}" if threads else "")
    lines = [
        "## Cost at scale (N and 4N images)",
        "",
        f"`{command}`: embedded synthetic trees ({IMAGE_SIZE} px, tree seed {TREE_SEED}) of {BASE_IMAGES} (base), "
        f"{n} (N) and {4 * n} (4N) train images, as many val images. CAM network and segmenter trained for one "
        f"epoch on the base tree. Each step is one process under `/usr/bin/time -v`"
        + (f" with {threads} OpenMP thread(s)" if threads else "") + "; CPU s is user + sys with its children, "
        f"peak RSS the largest single process. `stage=pseudo` runs with `pseudo.alpha_search_images={SEARCH_IMAGES}` "
        f"(a fixed cost on every tree). Load average (1 / 5 / 15 min) at start {load_start}, at end {load_end}.",
        "",
        *table(measures),
        "",
        "The 4N tree against the N tree. \"Beyond the base\" takes out the fixed cost of a process (imports, model "
        "loading): (CPU s - the base tree's CPU s) / (images - the base tree's images).",
        "",
        *ratio_table(rows),
        "",
        *verdicts(rows),
        "",
        "`stage=pseudo` with one and two CRF processes:",
        "",
        *workers_table(measures),
    ]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------- the steps

def run_step(step: str, run_dir: Path, checkpoint: Path, overrides: list[str]) -> None:
    """``--step``: one measured step in this process, with the config ``python -m pmm.run`` would compose."""
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    import pmm

    with initialize_config_dir(version_base="1.3", config_dir=str(Path(pmm.__file__).parent / "conf")):
        cfg = compose("config", overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    with open_dict(cfg):
        cfg.paths.root_dir = cfg.paths.output_dir = str(run_dir)
    from pmm.runtime.context import RunContext

    ctx = RunContext(cfg, run_dir)
    ctx.prepare_data()
    if step == "cams":
        from pmm.stages.cam_inference import infer_cams, load_cam_module

        infer_cams(ctx, load_cam_module(ctx, checkpoint), cfg.cam.split)
        return
    from pmm.nets.tta import TTAConfig
    from pmm.scoring.masks import score_mask_folder
    from pmm.seg.inference import predict_split_to_folder
    from pmm.seg.model import load_segmenter
    from pmm.stages.seg import seg_crf

    net, _, _ = load_segmenter(checkpoint, ctx.class_names)
    split, folder = ctx.train_split, ctx.round_dir(1)
    predict_split_to_folder(net, split, split.ids, folder, batch_size=cfg.cyclic.batch_size,
                            use_labels=cfg.cyclic.restrict_to_labels, device="cpu",
                            tta=TTAConfig.from_config(cfg.cyclic), crf=seg_crf(ctx, cfg.cyclic.crf))
    print(f"relabelled round mIoU: {score_mask_folder(split, folder)['miou']:.4f}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=DEFAULT_N, help=f"images of the N tree (default {DEFAULT_N})")
    parser.add_argument("--work", type=Path, default=None, help="where trees, runs and logs go (default: a temp folder)")
    parser.add_argument("--threads", type=int, default=None,
                        help="OpenMP / MKL threads of every measured process (default: torch's own, one per core)")
    parser.add_argument("--step", choices=("cams", "relabel"), help=argparse.SUPPRESS)
    parser.add_argument("--run-dir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--ckpt", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("overrides", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.step:
        run_step(args.step, args.run_dir, args.ckpt, args.overrides)
        return 0
    print(section(args.n, args.work, args.threads))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
