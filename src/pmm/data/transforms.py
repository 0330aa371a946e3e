"""Albumentations pipelines for the CAM classifier and the segmenter."""

from __future__ import annotations

import albumentations as A
import cv2
from albumentations.pytorch import ToTensorV2

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def train_transform(crop_size: int, scale_range: tuple[float, float] = (0.7, 1.3), photometric: bool = True) -> A.Compose:
    """Random scale, crop padded with ignore (255 in masks, black in images), flip, colour jitter.

    Used by both stages: the CAM stage passes no mask, the segmenter passes its pseudo-mask.
    """
    low, high = scale_range
    steps = [
        A.RandomScale(scale_limit=(low - 1.0, high - 1.0), interpolation=cv2.INTER_LINEAR, p=1.0),
        A.PadIfNeeded(crop_size, crop_size, border_mode=cv2.BORDER_CONSTANT, fill=0, fill_mask=255),
        A.RandomCrop(crop_size, crop_size),
        A.HorizontalFlip(p=0.5),
    ]
    if photometric:
        steps.append(A.ColorJitter(brightness=0.3, contrast=0.3, saturation=0.3, hue=0.05, p=0.8))
    steps += [A.Normalize(mean=IMAGENET_MEAN, std=IMAGENET_STD), ToTensorV2()]
    return A.Compose(steps)


def eval_transform() -> A.Compose:
    """Normalise only: evaluation runs on the whole image at its own size."""
    return A.Compose([A.Normalize(mean=IMAGENET_MEAN, std=IMAGENET_STD), ToTensorV2()])
