"""Pretended Under-Fitting (PUF): a cross-entropy that stops chasing the noisiest pseudo-mask pixels.

While the mean per-pixel loss is at least ``beta`` the model is still under-fitting and the loss is
plain cross-entropy. Below ``beta`` the remaining large losses are mostly label noise, so the pixels
that dominate the loss are bounded (``clamp``, ``pow``) or dropped (``ignore``). See docs/method.md.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

PUF_MODES = ("clamp", "pow", "ignore", "none")


def _check_mode(mode: str) -> None:
    if mode not in PUF_MODES:
        raise ValueError(f"unknown PUF mode {mode!r}: expected one of {', '.join(PUF_MODES)}")


def masked_mean(values: Tensor, valid_mask: Tensor) -> Tensor:
    """Mean of ``values`` over ``valid_mask``; 0 (still attached to the graph) when nothing is valid."""
    valid = valid_mask.to(values.dtype)
    # Dividing by max(count, 1) keeps an all-ignored batch at 0 instead of 0/0 = NaN.
    return (values * valid).sum() / valid.sum().clamp_min(1.0)


def bound_losses(per_pixel_loss: Tensor, mode: str, k: float) -> Tensor:
    """Apply a PUF bounding rule to per-pixel losses, element-wise.

    Args:
        per_pixel_loss: non-negative losses, any shape.
        mode: ``clamp`` -> min(l, k); ``pow`` -> (l + 1e-9) ** k; ``ignore`` -> l if l <= k else 0;
            ``none`` -> l.
        k: the bound (clamp, ignore) or the exponent (pow).

    Returns:
        The bounded losses, same shape.
    """
    _check_mode(mode)
    if mode == "clamp":
        return per_pixel_loss.clamp(max=k)
    if mode == "pow":
        return (per_pixel_loss + 1e-9) ** k
    if mode == "ignore":
        return torch.where(per_pixel_loss <= k, per_pixel_loss, torch.zeros_like(per_pixel_loss))
    return per_pixel_loss


def puf_loss(per_pixel_loss: Tensor, valid_mask: Tensor, mode: str = "clamp", beta: float = 0.5, k: float = 0.5) -> Tensor:
    """PUF loss from per-pixel losses.

    Args:
        per_pixel_loss: per-pixel cross-entropy, e.g. NxHxW from ``F.cross_entropy(..., reduction="none")``.
        valid_mask: bool tensor of the same shape, True where the pixel is not ignored.
        mode: ``clamp`` (the paper's), ``pow``, ``ignore`` or ``none`` (plain cross-entropy).
        beta: under-fitting threshold on the mean loss over valid pixels.
        k: bound or exponent of ``mode``.

    Returns:
        A scalar: the mean of the losses over valid pixels if that mean is >= ``beta`` (or mode is
        ``none``), else the mean of the bounded losses over valid pixels. 0 if no pixel is valid.
    """
    _check_mode(mode)
    if per_pixel_loss.shape != valid_mask.shape:
        raise ValueError(f"puf_loss: per_pixel_loss {tuple(per_pixel_loss.shape)} and valid_mask {tuple(valid_mask.shape)} differ in shape")
    valid_mask = valid_mask.bool()
    plain = masked_mean(per_pixel_loss, valid_mask)
    if mode == "none":
        return plain
    bounded = bound_losses(per_pixel_loss, mode, k)
    # Ignored pixels may carry any value after bounding (pow of 0 is not 0): drop them explicitly.
    bounded = torch.where(valid_mask, bounded, torch.zeros_like(bounded))
    bounded_mean = masked_mean(bounded, valid_mask)
    # torch.where instead of an `if`, so choosing the regime does not synchronise with the GPU.
    return torch.where(plain.detach() >= beta, plain, bounded_mean)


class PUFLoss(nn.Module):
    """Cross-entropy with Pretended Under-Fitting, for segmentation logits.

    Called as ``loss(logits, target)`` with ``logits`` NxCxHxW and ``target`` NxHxW long class ids
    (``ignore_index`` = unlabelled). After each call ``last_under_fitting`` holds a detached 0-dim
    bool tensor: True when the plain mean loss was >= ``beta`` (cross-entropy used unchanged). It is
    a tensor, not a Python bool, so the training step does not wait on the GPU; ``bool()`` it or log
    it as ``.float()``.

    Args:
        mode: ``clamp`` (the paper's), ``pow``, ``ignore`` or ``none``.
        beta: under-fitting threshold (VOC 0.5, COCO 0.8).
        k: bound or exponent (VOC 0.5, COCO 0.8).
        ignore_index: target value of ignored pixels.
    """

    def __init__(self, mode: str = "clamp", beta: float = 0.5, k: float = 0.5, ignore_index: int = 255):
        super().__init__()
        _check_mode(mode)
        self.mode = mode
        self.beta = float(beta)
        self.k = float(k)
        self.ignore_index = int(ignore_index)
        self.last_under_fitting: Tensor | None = None

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        if logits.shape[-2:] != target.shape[-2:]:
            raise ValueError(
                f"PUFLoss: logits {tuple(logits.shape)} and target {tuple(target.shape)} differ in size: "
                "upsample the logits to the target size first"
            )
        per_pixel = F.cross_entropy(logits, target, reduction="none", ignore_index=self.ignore_index)
        valid = target != self.ignore_index
        self.last_under_fitting = (masked_mean(per_pixel.detach(), valid) >= self.beta).detach()
        return puf_loss(per_pixel, valid, self.mode, self.beta, self.k)

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}, beta={self.beta}, k={self.k}, ignore_index={self.ignore_index}"
