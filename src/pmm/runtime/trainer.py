"""Trainer, callbacks, loggers and schedules as every stage builds them from the config groups."""

from __future__ import annotations

import logging
import math

import hydra
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf

from pmm.checkpoints import AtomicCheckpointIO
from pmm.runtime.context import RunContext
from pmm.runtime.tracking import run_config

log = logging.getLogger("pmm")


def build_loggers(cfg: DictConfig) -> list:
    """Instantiate every ``_target_`` node of ``cfg.logger`` (none when ``logger=none``)."""
    if not cfg.get("logger"):
        return []
    return [hydra.utils.instantiate(node) for node in cfg.logger.values() if isinstance(node, DictConfig) and "_target_" in node]


def build_callbacks(cfg: DictConfig, stage: str, **partials) -> list[pl.Callback]:
    """The ``callbacks.<stage>`` nodes, instantiated in config order.

    A node with ``_partial_: true`` (the cyclic callback) is completed with ``partials[name]`` (a
    dict of run-time objects); one without its partial arguments is left out.
    """
    nodes = (cfg.get("callbacks") or {}).get(stage) or {}
    callbacks = []
    for name, node in nodes.items():
        if not isinstance(node, DictConfig) or "_target_" not in node:
            continue
        if node.get("_partial_"):
            if name not in partials:
                continue
            callbacks.append(hydra.utils.instantiate(node)(**partials[name]))
        else:
            callbacks.append(hydra.utils.instantiate(node))
    return callbacks


def inference_callbacks(cfg: DictConfig, stage: str) -> list[pl.Callback]:
    """The callbacks of ``callbacks.<stage>`` that an inference trainer of that stage's network also
    takes: its memory format, so that a network loaded from a checkpoint predicts as the trained one did."""
    from pmm.runtime.memory_format import MemoryFormat

    nodes = (cfg.get("callbacks") or {}).get(stage) or {}
    # Only those nodes are built: the stage's checkpoint and monitor callbacks have no place in inference.
    return [hydra.utils.instantiate(node) for node in nodes.values()
            if isinstance(node, DictConfig) and "_target_" in node and not node.get("_partial_")
            and issubclass(hydra.utils.get_class(node._target_), MemoryFormat)]


def epochs_for_min_steps(max_epochs: int, min_steps: int | None, num_images: int, batch_size: int,
                         world_size: int = 1) -> int:
    """``max_epochs``, raised so that training makes at least ``min_steps`` optimiser steps.

    A from-scratch network needs a number of *updates* to learn, whatever the dataset size: with
    a fixed epoch count a 400-image tree gets a third fewer than the 600-image default. This is the
    ``cam.lengthen_to_steps`` / ``seg.lengthen_to_steps`` floor, not Lightning's ``min_steps``.
    """
    if not min_steps:
        return max_epochs
    steps_per_epoch = max(1, num_images // (batch_size * world_size))
    return max(max_epochs, math.ceil(min_steps / steps_per_epoch))


def trainer_kwargs(ctx: RunContext, **overrides) -> dict:
    kwargs = OmegaConf.to_container(ctx.cfg.trainer, resolve=True)
    kwargs.pop("_target_", None)
    kwargs.update(overrides)
    on_cpu = kwargs.get("accelerator") == "cpu" or (kwargs.get("accelerator") == "auto" and not torch.cuda.is_available())
    if kwargs.get("sync_batchnorm") and on_cpu:
        # torch's SyncBatchNorm is CUDA-only; CPU DDP (gloo) runs with per-process BatchNorm.
        kwargs["sync_batchnorm"] = False
    if on_cpu and str(kwargs.get("precision", "")).startswith("16"):
        kwargs["precision"] = "bf16-mixed" if str(kwargs["precision"]).endswith("mixed") else "32-true"
    return kwargs


def planned_world_size(ctx: RunContext) -> int:
    """How many processes the configured trainer will run, known before any process group exists.

    The schedules (epochs that reach ``lengthen_to_steps``) depend on it; a probe Trainer without
    loggers or callbacks resolves devices x nodes exactly as the real one will.
    """
    kwargs = trainer_kwargs(ctx, logger=False, callbacks=[], enable_checkpointing=False, enable_progress_bar=False)
    target = ctx.cfg.trainer.get("_target_", "pytorch_lightning.Trainer")
    return hydra.utils.get_class(target)(**kwargs).world_size


def build_trainer(ctx: RunContext, stage: str, max_epochs: int | None, callbacks: list | None = None,
                  with_logger: bool = True, **overrides) -> pl.Trainer:
    """The configured Trainer for one stage: ``trainer`` node, ``callbacks.<stage>`` nodes, loggers."""
    loggers = build_loggers(ctx.cfg) if with_logger else []
    for logger in loggers:
        logger.log_hyperparams(run_config(ctx.cfg))
    if callbacks is None:
        callbacks = build_callbacks(ctx.cfg, stage)
    if not loggers:  # an LR monitor without a logger is an error in Lightning
        callbacks = [c for c in callbacks if not isinstance(c, pl.callbacks.LearningRateMonitor)]
    kwargs = trainer_kwargs(ctx, **overrides)
    kwargs["logger"] = loggers or False
    # Checkpoints are written to a temporary name and renamed: a full disk never leaves half a file.
    kwargs["plugins"] = [*(kwargs.get("plugins") or []), AtomicCheckpointIO()]
    target = ctx.cfg.trainer.get("_target_", "pytorch_lightning.Trainer")
    trainer = hydra.utils.get_class(target)(max_epochs=max_epochs, callbacks=callbacks, **kwargs)
    ctx.record(world_size=trainer.world_size)
    ctx.track_trainer(stage, trainer)
    return trainer
