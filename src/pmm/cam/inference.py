"""Multi-scale + flip CAM inference (pure torch) and the background-threshold sweep (pure numpy)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from pmm.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from pmm.metrics import confusion_matrix


def normalize_images(images: torch.Tensor) -> torch.Tensor:
    """N x H x W x 3 uint8 -> N x 3 x H x W float, ImageNet-normalised."""
    x = images.permute(0, 3, 1, 2).float() / 255.0
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


@torch.no_grad()
def multiscale_cams(net, images: torch.Tensor, scales: Sequence[float] = (0.5, 1.0, 1.5, 2.0), flip: bool = True) -> torch.Tensor:
    """Summed ReLU CAMs over scales (and horizontal flips), at image resolution.

    Args:
        net: returns (logits, cams) for a normalised N x 3 x H x W batch.
        images: N x H x W x 3 uint8 images of one size.

    Returns:
        N x classes x H x W float, not normalised.
    """
    x = normalize_images(images)
    height, width = x.shape[-2:]
    total = None
    for scale in scales:
        size = (max(8, round(height * scale)), max(8, round(width * scale)))
        scaled = F.interpolate(x, size=size, mode="bilinear", align_corners=False) if scale != 1.0 else x
        batch = torch.cat([scaled, scaled.flip(-1)]) if flip else scaled
        cams = F.relu(net(batch)[1])
        cams = F.interpolate(cams, size=(height, width), mode="bilinear", align_corners=False)
        if flip:
            half = cams.shape[0] // 2
            cams = cams[:half] + cams[half:].flip(-1)
        total = cams if total is None else total + cams
    return total


def normalize_cams(cams: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Keep the labelled classes (1-based ``labels``) of one image, min-max normalised to [0, 1] each.

    Returns K x H x W for the K labels (K may be 0).
    """
    kept = cams[labels - 1]
    flat = kept.flatten(1)
    low = flat.min(dim=1).values.view(-1, 1, 1)
    high = flat.max(dim=1).values.view(-1, 1, 1)
    return (kept - low) / (high - low).clamp_min(1e-5)


def default_thresholds() -> np.ndarray:
    """0.05, 0.10, ..., 0.95: the background thresholds swept when scoring CAMs."""
    return np.round(np.arange(0.05, 0.951, 0.05), 2)


class ThresholdSweep:
    """Accumulates one confusion matrix per background threshold over a split."""

    def __init__(self, num_classes: int, thresholds: Sequence[float] | None = None) -> None:
        self.thresholds = np.asarray(default_thresholds() if thresholds is None else thresholds, dtype=np.float64)
        self.num_classes = num_classes
        self.confusions = np.zeros((len(self.thresholds), num_classes, num_classes), dtype=np.int64)

    def update(self, cams: np.ndarray, labels: np.ndarray, target: np.ndarray) -> None:
        """Add one image: ``cams`` K x H x W in [0, 1] for 1-based ``labels``, ``target`` H x W."""
        if len(labels) == 0:
            peak = np.zeros(target.shape, dtype=np.float32)
            winner = np.zeros(target.shape, dtype=np.int64)
        else:
            peak = cams.max(axis=0)
            winner = np.asarray(labels, dtype=np.int64)[cams.argmax(axis=0)]
        for index, threshold in enumerate(self.thresholds):
            prediction = np.where(peak < threshold, 0, winner)
            self.confusions[index] += confusion_matrix(prediction, target, self.num_classes)
