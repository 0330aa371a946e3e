"""Input normalisation inside the network, from the backbone's own data config.

Datasets and inference hand every network float RGB images in [0, 1]; the network subtracts its
backbone's mean and divides by its std. The statistics come from timm's
``resolve_model_data_config`` (or SMP's preprocessing parameters for SMP-native encoders), so a
backbone trained with other statistics than ImageNet's is fed what it expects, and no caller has
to know which.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def data_config_of(model: nn.Module) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) of a timm model (or a timm features_only wrapper); ImageNet's when it has none."""
    try:
        from timm.data import resolve_model_data_config

        config = resolve_model_data_config(model)
        return tuple(float(v) for v in config["mean"]), tuple(float(v) for v in config["std"])
    except Exception:  # noqa: BLE001 - a model timm cannot describe gets the ImageNet statistics
        return IMAGENET_MEAN, IMAGENET_STD


class ImageNormalize(nn.Module):
    """``(x - mean) / std`` for N x 3 x H x W images in [0, 1].

    The statistics are non-persistent buffers: they follow the module to its device but are not
    part of the state dict, so checkpoints written before this module existed load unchanged.
    """

    def __init__(self, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1), persistent=False)

    @classmethod
    def from_timm(cls, model: nn.Module) -> "ImageNormalize":
        return cls(*data_config_of(model))

    def forward(self, images: Tensor) -> Tensor:
        return (images - self.mean) / self.std

    def extra_repr(self) -> str:
        return f"mean={[round(v, 4) for v in self.mean.flatten().tolist()]}, std={[round(v, 4) for v in self.std.flatten().tolist()]}"
