"""What the network sees: the RGB image, its colour-blind edge map, or both.

A network trained from scratch on a few hundred images learns *colour* first: the first layer's
random filters respond mostly to the flat colour of a region, and classes whose only cue is their
outline (random-coloured shapes) stay at chance for thousands of steps. The edge map is the Sobel
gradient magnitude, maximum over the colour channels, so a shape looks the same whatever its
colours. A light Gaussian blur first (``edge_sigma``) keeps pixel noise and JPEG blocks out of the
edge map (the measurements behind both: docs/benchmarks.md). ImageNet-pretrained backbones already
see edges: keep ``rgb`` for them (the paper presets do).

The encoding runs inside the model, on the normalised image batch, so every caller (training,
multi-scale CAM inference, cyclic prediction, evaluation) gets it without knowing about it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pmm.errors import PmmError

INPUT_MODES = {"rgb": 3, "edges": 1, "rgb+edges": 4}


def input_channels(mode: str, config_key: str = "cam_net.input") -> int:
    """Channels the backbone receives for an input mode; a one-line error for an unknown mode."""
    if mode not in INPUT_MODES:
        raise PmmError(f"{config_key}={mode}: unknown input encoding; use one of {', '.join(INPUT_MODES)}")
    return INPUT_MODES[mode]


# Both filters are written as sums of shifted slices: a convolution with one input channel is an
# order of magnitude slower on CPUs (16 x 3 x 160 x 160 batch: 106 ms with conv2d, 17 ms sliced), and
# it runs on every training step and every inference scale. Without autograd (the input batch never
# needs a gradient) the sums accumulate in place into preallocated tensors: the same operations in
# the same order, so bit-identical results, in about 30 % less CPU time (no temporary per tap).


def _taps(sigma: float) -> tuple[int, list[float]]:
    radius = max(1, round(2 * sigma))
    taps = torch.arange(-radius, radius + 1, dtype=torch.float64)
    weights = torch.exp(-(taps**2) / (2 * sigma**2))
    return radius, (weights / weights.sum()).tolist()


def _tracked(images: Tensor) -> bool:
    return images.requires_grad and torch.is_grad_enabled()


def _weighted_sum(slices, weights: list[float], tracked: bool) -> Tensor:
    """``sum(w * s)`` in order; in place (one scratch tensor) when nothing needs a gradient."""
    if tracked:
        return sum(weight * piece for piece, weight in zip(slices, weights))
    slices = iter(slices)
    total = torch.mul(next(slices), weights[0])
    scratch = torch.empty_like(total)
    for piece, weight in zip(slices, weights[1:]):
        total.add_(torch.mul(piece, weight, out=scratch))
    return total


def gaussian_blur(images: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian blur of an N x C x H x W batch (replicate padding, radius 2 sigma)."""
    radius, weights = _taps(sigma)
    tracked = _tracked(images)
    height, width = images.shape[-2:]
    padded = F.pad(images, (radius, radius, 0, 0), mode="replicate")
    rows = _weighted_sum((padded[..., offset : offset + width] for offset in range(len(weights))), weights, tracked)
    padded = F.pad(rows, (0, 0, radius, radius), mode="replicate")
    return _weighted_sum((padded[..., offset : offset + height, :] for offset in range(len(weights))), weights, tracked)


def edge_magnitude(images: Tensor, sigma: float = 0.0) -> Tensor:
    """Sobel gradient magnitude of an N x C x H x W batch, maximum over channels -> N x 1 x H x W.

    ``sigma`` > 0 blurs the images first (Gaussian, in pixels) so noise does not read as edges.
    The Sobel kernels are scaled by 1/8, so a unit step gives a magnitude of 0.5.
    """
    if sigma > 0:
        images = gaussian_blur(images, sigma)
    padded = F.pad(images, (1, 1, 1, 1), mode="replicate")
    if _tracked(padded):
        smoothed_down = padded[..., :-2, :] + 2 * padded[..., 1:-1, :] + padded[..., 2:, :]  # [1 2 1] along y
        smoothed_across = padded[..., :-2] + 2 * padded[..., 1:-1] + padded[..., 2:]  # [1 2 1] along x
        grad_x = (smoothed_down[..., 2:] - smoothed_down[..., :-2]) / 8
        grad_y = (smoothed_across[..., 2:, :] - smoothed_across[..., :-2, :]) / 8
        return (grad_x * grad_x + grad_y * grad_y).add(1e-12).sqrt().amax(dim=1, keepdim=True)
    # The same arithmetic in place (a + 2b + c is computed as (2b + a) + c: addition commutes exactly).
    smoothed_down = torch.mul(padded[..., 1:-1, :], 2).add_(padded[..., :-2, :]).add_(padded[..., 2:, :])
    smoothed_across = torch.mul(padded[..., 1:-1], 2).add_(padded[..., :-2]).add_(padded[..., 2:])
    grad_x = torch.sub(smoothed_down[..., 2:], smoothed_down[..., :-2]).div_(8)
    grad_y = torch.sub(smoothed_across[..., 2:, :], smoothed_across[..., :-2, :]).div_(8)
    return grad_x.mul_(grad_x).add_(grad_y.mul_(grad_y)).add_(1e-12).sqrt_().amax(dim=1, keepdim=True)


class InputEncoding(nn.Module):
    """Maps a normalised RGB batch to the backbone's input (``rgb``, ``edges`` or ``rgb+edges``).

    ``edge_sigma``: Gaussian blur (pixels) before the edge filter; 0 = none (what checkpoints made
    before this option was added were trained with, hence the default).
    """

    def __init__(self, mode: str = "rgb", edge_sigma: float = 0.0, config_key: str = "cam_net") -> None:
        super().__init__()
        self.out_channels = input_channels(mode, f"{config_key}.input")
        if not edge_sigma >= 0:
            raise PmmError(f"{config_key}.edge_sigma={edge_sigma}: expected a blur in pixels >= 0 (0: no blur)")
        self.mode = mode
        self.edge_sigma = float(edge_sigma)

    def forward(self, images: Tensor) -> Tensor:
        if self.mode == "rgb":
            return images
        edges = edge_magnitude(images, self.edge_sigma)
        return edges if self.mode == "edges" else torch.cat([images, edges], dim=1)

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}, edge_sigma={self.edge_sigma}"
