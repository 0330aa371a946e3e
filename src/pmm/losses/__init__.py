"""Training losses: PUF (Pretended Under-Fitting)."""

from pmm.losses.puf import PUF_MODES, PUFLoss, bound_losses, masked_mean, puf_loss

__all__ = ["PUF_MODES", "PUFLoss", "bound_losses", "masked_mean", "puf_loss"]
