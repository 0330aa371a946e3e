"""SGD with poly learning-rate decay per step, as every stage of PMM uses."""

from __future__ import annotations

import pytorch_lightning as pl
import torch


def build_optimizer_and_poly(
    module: pl.LightningModule, param_groups: list[dict], optimizer_partial, power: float = 0.9, period: int | None = None
):
    """Finish a partial optimizer on ``param_groups``; decay each group's lr by (1 - step/total) ** power.

    With ``period``, the decay restarts every ``period`` steps (each cyclic round is a fresh schedule).
    """
    optimizer = optimizer_partial(params=param_groups)
    total_steps = period or max(1, int(module.trainer.estimated_stepping_batches))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: max(0.0, 1.0 - (step % total_steps if period else step) / total_steps) ** power
    )
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
