"""Trainer, loggers and data loaders as every stage builds them."""

from __future__ import annotations

import logging
import math

import hydra
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader

from pmm.context import RunContext
from pmm.tracking import run_config

log = logging.getLogger("pmm")


def build_loggers(cfg: DictConfig) -> list:
    """Instantiate every ``_target_`` node of ``cfg.logger`` (none when ``logger=none``)."""
    if not cfg.get("logger"):
        return []
    return [hydra.utils.instantiate(node) for node in cfg.logger.values() if isinstance(node, DictConfig) and "_target_" in node]


def epochs_for_min_steps(max_epochs: int, min_steps: int | None, num_images: int, batch_size: int,
                         world_size: int = 1) -> int:
    """``max_epochs``, raised so that training makes at least ``min_steps`` optimiser steps.

    A from-scratch network needs a number of *updates* to learn, whatever the dataset size: with
    a fixed epoch count a 400-image tree gets a third fewer than the 600-image default.
    """
    if not min_steps:
        return max_epochs
    steps_per_epoch = max(1, num_images // (batch_size * world_size))
    return max(max_epochs, math.ceil(min_steps / steps_per_epoch))


def build_trainer(ctx: RunContext, max_epochs: int, callbacks: list | None = None, **overrides) -> pl.Trainer:
    """The configured Trainer for one stage (``trainer`` node plus per-stage settings)."""
    kwargs = OmegaConf.to_container(ctx.cfg.trainer, resolve=True)
    kwargs.pop("_target_", None)
    kwargs.update(overrides)
    on_cpu = kwargs.get("accelerator") == "cpu" or (kwargs.get("accelerator") == "auto" and not torch.cuda.is_available())
    if kwargs.get("sync_batchnorm") and on_cpu:
        # torch's SyncBatchNorm is CUDA-only; CPU DDP (gloo) runs with per-process BatchNorm.
        kwargs["sync_batchnorm"] = False
    if "logger" not in kwargs:
        loggers = build_loggers(ctx.cfg)
        for logger in loggers:
            logger.log_hyperparams(run_config(ctx.cfg))
        kwargs["logger"] = loggers or False
    trainer = pl.Trainer(max_epochs=max_epochs, callbacks=callbacks or [], **kwargs)
    ctx.record(world_size=trainer.world_size)
    return trainer


def loader(dataset, batch_size: int, num_workers: int, shuffle: bool = False, drop_last: bool = False, collate_fn=None) -> DataLoader:
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        drop_last=drop_last,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
        collate_fn=collate_fn,
    )
