"""SGD with poly learning-rate decay per step, as every stage of PMM uses."""

from __future__ import annotations

import pytorch_lightning as pl
import torch


def poly_factor(step: int, total_steps: int, power: float, base_lr: float, min_lr: float = 0.0,
                period: bool = False) -> float:
    """mmseg's poly: ``lr = (base - min) * (1 - step/total) ** power + min``, as a factor of ``base``."""
    progress = (step % total_steps if period else min(step, total_steps)) / total_steps
    decayed = max(0.0, 1.0 - progress) ** power
    if base_lr <= 0:
        return decayed
    return ((base_lr - min_lr) * decayed + min_lr) / base_lr


def build_optimizer_and_poly(
    module: pl.LightningModule, param_groups: list[dict], optimizer_partial, power: float = 0.9, period: int | None = None,
    min_lr: float = 0.0,
):
    """Finish a partial optimizer on ``param_groups``; decay each group's lr by poly down to ``min_lr``.

    With ``period``, the decay restarts every ``period`` steps (each cyclic round is a fresh schedule).
    """
    optimizer = optimizer_partial(params=param_groups)
    total_steps = period or max(1, int(module.trainer.estimated_stepping_batches))
    lambdas = [
        (lambda step, base=group["lr"]: poly_factor(step, total_steps, power, base, min_lr, bool(period)))
        for group in optimizer.param_groups
    ]
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambdas)
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
