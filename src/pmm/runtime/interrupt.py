"""Ctrl-C during a run: where it stopped, in metrics.json and in one line with the command that resumes it.

Lightning's trainer catches the KeyboardInterrupt itself, shuts down and raises ``SystemExit(1)``;
elsewhere (indexing, pseudo-masks, scoring) the KeyboardInterrupt arrives as it is. Both end in
:class:`RunInterrupted`, which ``pmm.run`` prints and exits with 130 (the shell's code for SIGINT).
"""

from __future__ import annotations

from pathlib import Path

from pmm.runtime.context import RunContext


# What metrics.json says about the last Ctrl-C (a run that starts again in the folder removes them).
RECORD_KEYS = ("interrupted", "interrupted_stage", "interrupted_epoch", "interrupted_step", "resume_checkpoint")


class RunInterrupted(Exception):
    """The run was stopped by Ctrl-C; the message says where and how to resume."""


def is_user_interrupt(stop: BaseException) -> bool:
    """A Ctrl-C: a KeyboardInterrupt, or the ``SystemExit(1)`` Lightning raises after handling one."""
    return isinstance(stop, KeyboardInterrupt) or (
        isinstance(stop, SystemExit) and isinstance(stop.__context__, KeyboardInterrupt))


def _last_checkpoint(ctx: RunContext, stage: str, trainer) -> Path | None:
    # The newest last.ckpt a checkpoint callback of the trainer wrote (callbacks.<stage>.last_checkpoint
    # keeps it as its only "best" file; Lightning's save_last as last_model_path), else the stage's folder.
    saved = []
    for callback in getattr(trainer, "checkpoint_callbacks", None) or [] if trainer is not None else []:
        saved.append(getattr(callback, "last_model_path", "") or "")
        if getattr(callback, "monitor", None) is None and getattr(callback, "filename", None) == "last":
            saved.append(getattr(callback, "best_model_path", "") or "")
    for candidate in [Path(path) for path in saved if path] + [ctx.checkpoint_dir(stage) / "last.ckpt"]:
        if candidate.is_file():
            return candidate.resolve()
    return None


def interruption(ctx: RunContext, stage: str, pipeline: str) -> tuple[str, dict]:
    """(the line to print, the metrics.json entries) for a Ctrl-C during ``stage`` of ``stage=pipeline``."""
    run_dir = ctx.run_dir.resolve()
    record: dict = {"interrupted": True, "interrupted_stage": stage}
    trainer = ctx.trainers.get(stage)
    where = stage
    if trainer is not None:
        epoch, step = int(trainer.current_epoch), int(trainer.global_step)
        record.update(interrupted_epoch=epoch, interrupted_step=step)
        training = ctx.trainers.get("latest") is trainer and not trainer.state.finished
        where = f"{stage}, epoch {epoch} (step {step})" if training else f"{stage}, after training (epoch {epoch})"

    if stage in ("cam", "seg"):
        checkpoint = _last_checkpoint(ctx, stage, trainer)
        if trainer is None:
            where = f"{stage}, before training started"
        if checkpoint is None:
            return (f"interrupted at {where}; no checkpoint was saved yet (one is written at the end of every epoch): "
                    "rerun the command to start over"), record
        record["resume_checkpoint"] = str(checkpoint)
        how = f"ckpt_path={checkpoint} hydra.run.dir={run_dir}"
    elif stage == "pseudo":
        folder = ctx.round_dir(0)
        written = len(list(folder.glob("*.png"))) if folder.is_dir() else 0
        where = f"pseudo (mask generation, {written} masks written)"
        how = f"pseudo.resume=true hydra.run.dir={run_dir}"
        cam = ctx.checkpoint_dir("cam") / "last.ckpt"
        if pipeline == "all" and cam.is_file():  # stage=all: the CAM stage resumes at its end, the masks written are kept
            how = f"ckpt_path={cam.resolve()} {how}"
    else:
        return f"interrupted at {where}; nothing to resume, rerun the command", record
    return f"interrupted at {where}; resume with `{how}` (the rest of the command unchanged)", record
