"""Entry point: ``python -m pmm.run stage=cam|pseudo|seg|eval|all [overrides]``.

Builds the run context, runs the stages in order, writes ``metrics.json`` and returns the metric a
sweep optimises. Bad input stops the run with one line naming the file or key and the fix.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
from pathlib import Path

# wandb never prompts and stays offline unless the user opted in with WANDB_MODE=online.
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")

import hydra  # noqa: E402
from hydra.core.hydra_config import HydraConfig  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402

from pmm.runtime.context import RunContext  # noqa: E402
from pmm.errors import PmmError  # noqa: E402

log = logging.getLogger("pmm")

OmegaConf.register_new_resolver("pmm.wandb_offline", lambda: os.environ.get("WANDB_MODE", "offline") != "online", replace=True)

# Each stage entry point, in pipeline order; `all` runs them one after another in one run directory.
PIPELINES: dict[str, tuple[str, ...]] = {
    "cam": ("cam",),
    "pseudo": ("pseudo",),
    "seg": ("seg",),
    "eval": ("eval",),
    "all": ("cam", "pseudo", "seg"),
}
INTERRUPTED_EXIT = 130  # 128 + SIGINT, what a shell reports for Ctrl-C
HEADLINE = {"cam": "cam_miou", "pseudo": "pseudo_miou", "seg": "val_miou", "eval": "val_miou", "all": "val_miou"}


def stage_runner(name: str):
    import importlib

    return importlib.import_module(f"pmm.stages.{name}").run


def stages_to_run(cfg: DictConfig, run_dir: Path) -> tuple[str, ...]:
    """The stages of ``cfg.stage``; with ``stage=all`` and a segmenter ``ckpt_path``, only the segmentation
    stage; with ``stage=all`` and ``pseudo.cams``, no CAM stage.

    Resuming a whole pipeline from a segmenter checkpoint must not retrain the CAM network: the CAM
    and pseudo-mask outputs are taken from the run directory that wrote the checkpoint. CAMs given
    in ``pseudo.cams`` replace the CAM stage's: the pipeline is pseudo -> seg.
    """
    stages = PIPELINES[cfg.stage]
    if cfg.stage != "all":
        return stages
    if not cfg.get("ckpt_path"):
        cams = cfg.get("pseudo", {}).get("cams")
        if cams:
            log.info("stage=all with pseudo.cams=%s: the CAM stage is skipped (pseudo -> seg on those CAMs)", cams)
            return tuple(stage for stage in stages if stage != "cam")
        return stages
    from pmm.checkpoints import ANY_STAGE, checkpoint_stage, read_pmm_checkpoint

    found = checkpoint_stage(read_pmm_checkpoint(Path(cfg.ckpt_path), "ckpt_path", ANY_STAGE, resume=True))
    if found in ("cam", None):
        if cfg.get("pseudo", {}).get("cams"):
            raise PmmError(f"ckpt_path={cfg.ckpt_path}: resumes the CAM stage, which pseudo.cams={cfg.pseudo.cams} "
                           "skips; drop one of them")
        return stages
    if not any((run_dir / "pseudo_masks").glob("round_*")):
        raise PmmError(
            f"ckpt_path={cfg.ckpt_path}: a segmenter checkpoint resumes stage=all only in the run directory that "
            f"wrote it (its pseudo_masks/ are missing in {run_dir}); add hydra.run.dir=<that run> or use stage=seg"
        )
    log.info("stage=all resumes the segmentation stage from %s (CAM and pseudo-masks of %s)", cfg.ckpt_path, run_dir)
    return ("seg",)


def quiet_other_ranks() -> None:
    """Log lines come from rank 0 only; the other ranks keep warnings and errors."""
    from pmm.runtime.distributed import rank

    if rank() != 0:
        logging.getLogger("pmm").setLevel(logging.WARNING)


def finish_trackers() -> None:
    """Close the wandb run (if one was started) so its files are complete when the process ends."""
    if "wandb" in sys.modules:
        import wandb

        if wandb.run is not None:
            wandb.finish()


def record_stage_seconds(ctx: RunContext, stage: str, seconds: float) -> None:
    """``stage_seconds``: the wall seconds of every stage that finished, merged over the runs of the folder."""
    recorded = dict(ctx.read_metrics().get("stage_seconds") or {})
    recorded[stage] = round(seconds, 2)
    ctx.record(stage_seconds=recorded)


def run_pipeline(cfg: DictConfig, run_dir: Path) -> dict:
    """Run the stages ``cfg.stage`` names into ``run_dir``; return the run's metrics."""
    if cfg.stage not in PIPELINES:
        raise PmmError(f"stage={cfg.stage}: unknown stage; choose one of {', '.join(PIPELINES)}")
    import pytorch_lightning as pl  # here, not at the top: a bad command line is reported without Lightning's import

    from pmm.io import check_writable
    from pmm.report import write_run_report
    from pmm.runtime.devices import check_devices
    from pmm.runtime.environment import describe_environment
    from pmm.runtime.interrupt import RECORD_KEYS, RunInterrupted, interruption, is_user_interrupt
    from pmm.runtime.smoke import apply_smoke
    from pmm.settings import Settings

    apply_smoke(cfg)
    Settings.from_config(cfg)  # every setting's range, before any work
    check_devices(cfg)  # what the trainer asks for against this machine, before any file is written
    check_writable(run_dir, "hydra.run.dir")
    quiet_other_ranks()
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    stages = stages_to_run(cfg, run_dir)
    ctx = RunContext(cfg, run_dir)
    from pmm.runtime.batch import describe, resolve_batches
    from pmm.runtime.trainer import planned_world_size

    world_size = planned_world_size(ctx)
    batches = resolve_batches(cfg, world_size)  # before any loader is built
    log.info(describe(batches))
    ctx.prepare_data()
    train_split = ctx.train_split  # index and check the data before any work
    # stage=eval: the split may lack ground-truth masks (the VOC test set): predicted, not scored
    val_split = ctx.eval_split if cfg.stage == "eval" else ctx.val_split
    if "cam" in stages and "pseudo" in stages:  # settings that need ground truth fail now, not after the CAM stage
        from pmm.stages.pseudo import check_without_truth

        check_without_truth(ctx, t_star_known=False)
    ctx.record(
        stage=cfg.stage,
        data_root=str(ctx.data_root),
        num_classes=ctx.num_classes,
        class_names=list(ctx.class_names),
        train_split=train_split.split,
        val_split=val_split.split,
        num_train_images=len(train_split),
        num_val_images=len(val_split),
        seed=cfg.seed,
        batch=batches,
        stages=list(stages),  # what this run runs (stage=all may skip some): report.html says which finished
        environment=describe_environment(cfg, world_size),
        remove=RECORD_KEYS,  # a resumed run: where the last one stopped no longer holds
    )
    current, stopped = None, None
    try:
        for current in stages:
            started = time.perf_counter()
            stage_runner(current)(ctx)
            record_stage_seconds(ctx, current, time.perf_counter() - started)
    except BaseException as stop:
        stopped = stop
        if current is None or not is_user_interrupt(stop):
            raise
        line, record = interruption(ctx, current, cfg.stage)
        ctx.record(**record)
        stopped = RunInterrupted(line)
        raise stopped from None
    finally:
        finish_trackers()
        write_run_report(run_dir, stopped)  # report.html of what exists; never raises
    return ctx.read_metrics()


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    from pmm.runtime.config_check import restore_hydra_error_reporting
    from pmm.runtime.interrupt import RunInterrupted

    restore_hydra_error_reporting()
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    multirun = HydraConfig.get().mode.name == "MULTIRUN"
    try:
        metrics = run_pipeline(cfg, run_dir)
    except PmmError as error:
        if multirun:  # one bad point must not end the sweep
            log.error("run %s failed: %s", run_dir, error)
            return math.nan
        print(f"pmm: error: {error}", file=sys.stderr)
        sys.exit(2)
    except RunInterrupted as stop:
        print(f"pmm: {stop}", file=sys.stderr)
        sys.exit(INTERRUPTED_EXIT)
    except KeyboardInterrupt:
        print("pmm: interrupted before the first stage started; nothing to resume, rerun the command", file=sys.stderr)
        sys.exit(INTERRUPTED_EXIT)
    key = cfg.optimized_metric or HEADLINE[cfg.stage]
    value = metrics.get(key)
    shown = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    log.info("metrics (%s): %s", run_dir / "metrics.json", ", ".join(f"{k}={v:.4g}" for k, v in shown.items()))
    return float(value) if isinstance(value, (int, float)) else None


def check_output_folder(argv: list[str]) -> str | None:
    """One line when the run folder cannot be created: Hydra makes it before any pmm code runs.

    Looks at ``hydra.run.dir=`` / ``hydra.sweep.dir=`` / ``paths.log_dir=`` on the command line (else
    ``./outputs``) and checks that its nearest existing parent is a writable folder.
    """
    target = Path("outputs")
    for arg in argv:
        for key in ("hydra.run.dir=", "hydra.sweep.dir=", "paths.log_dir="):
            if arg.startswith(key):
                target = Path(arg[len(key):]).expanduser()
    existing = target.absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing.is_dir() and os.access(existing, os.W_OK | os.X_OK):
        return None
    what = "is not a folder" if not existing.is_dir() else "is not writable (read-only file system or permissions)"
    return (f"{target}: cannot create the run folder, {existing} {what}; set hydra.run.dir (or paths.log_dir) "
            "to a writable folder")


def cli() -> None:
    """``pmm`` / ``python -m pmm.run``: the output folder checked before Hydra creates it."""
    problem = check_output_folder(sys.argv[1:])
    if problem:
        print(f"pmm: error: {problem}", file=sys.stderr)
        sys.exit(2)
    from pmm.runtime.config_check import run_hydra_main

    run_hydra_main(main, "config", interrupted_exit=INTERRUPTED_EXIT)


if __name__ == "__main__":
    cli()
