"""The multi-crop round of the CAM stage (pure numpy): training crop boxes and their labels.

PMM trains its final CAM network on crops (``VOC12ClsHeatCropDataset`` in the authors'
``tool/data.py``): a random crop of 4-100 % of the image area, aspect 3/5-5/3 (torchvision's
RandomResizedCrop sampling, 10 attempts, else a centre crop), labelled with the classes of the
first round's rough mask that the crop holds, resampled (up to 100 times) until it holds one; the
crop is then flipped, colour-jittered and resized to 448 x 448.

Boxes are ``(top, left, height, width)`` in pixels of the full image, as ``pmm.nets.tta.sliding_windows``.
The settings (area, aspect, labelling shares) have no defaults here: their one home is
``pmm.settings.MultiCropSettings`` (``cam.multi_crop``).
"""

from __future__ import annotations

import math
import numpy as np

Box = tuple[int, int, int, int]  # top, left, height, width


def sample_crop_box(
    height: int,
    width: int,
    rng: np.random.Generator,
    area: tuple[float, float],
    aspect: tuple[float, float],
    heat: np.ndarray | None = None,
    attempts: int = 10,
) -> Box:
    """A random crop box of ``area`` (fraction of the image) and ``aspect`` (width / height,
    log-uniform), as torchvision's RandomResizedCrop: ``attempts`` tries, then a centre crop.

    ``heat`` (H x W, >= 0; e.g. the max over classes of the first round's CAMs): the crop is
    centred on a pixel drawn with probability proportional to it (clipped into the image) instead
    of placed uniformly. The authors place crops uniformly and rely on the label resampling of
    :func:`sample_labelled_crop` to land on objects; ``heat`` is this package's option.
    """
    image_area = height * width
    log_low, log_high = math.log(aspect[0]), math.log(aspect[1])
    for _ in range(attempts):
        target = image_area * rng.uniform(area[0], area[1])
        ratio = math.exp(rng.uniform(log_low, log_high))
        w = int(round(math.sqrt(target * ratio)))
        h = int(round(math.sqrt(target / ratio)))
        if 0 < w <= width and 0 < h <= height:
            if heat is not None and float(np.sum(heat)) > 0:
                weights = np.clip(np.asarray(heat, dtype=np.float64), 0, None).ravel()
                centre = int(rng.choice(weights.size, p=weights / weights.sum()))
                cy, cx = divmod(centre, width)
                top = min(max(0, cy - h // 2), height - h)
                left = min(max(0, cx - w // 2), width - w)
            else:
                top = int(rng.integers(0, height - h + 1))
                left = int(rng.integers(0, width - w + 1))
            return top, left, h, w
    # Centre crop at the aspect limits (torchvision's fallback).
    ratio = width / height
    if ratio < min(aspect):
        w, h = width, int(round(width / min(aspect)))
    elif ratio > max(aspect):
        w, h = int(round(height * max(aspect))), height
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def crop_labels(mask: np.ndarray, box: Box, num_classes: int, min_share: float, min_object_share: float | None) -> np.ndarray:
    """Multi-hot labels (``num_classes`` foreground classes, float32) of a crop of a rough mask.

    Args:
        mask: H x W label map (0 background, 1..C classes, 255 or any value > C ignored).
        box: the crop, ``(top, left, height, width)``.
        min_share: class k is a label when its pixels cover >= this fraction of the crop's area.
        min_object_share: ... or when the crop holds >= this fraction of the class's pixels in the
            whole image (the authors' second rule: "box inside mask, or mask inside box"); None: off.
    """
    top, left, h, w = box
    labels = np.zeros(num_classes, dtype=np.float32)
    window = mask[top : top + h, left : left + w]
    if window.size == 0:
        return labels
    inside = np.bincount(window.ravel().astype(np.int64), minlength=num_classes + 1)[1 : num_classes + 1]
    share = inside / float(window.size)
    keep = share >= min_share
    if min_object_share is not None:
        total = np.bincount(mask.ravel().astype(np.int64), minlength=num_classes + 1)[1 : num_classes + 1]
        keep |= (total > 0) & (inside >= min_object_share * np.maximum(total, 1))
    labels[keep & (inside > 0)] = 1.0
    return labels


def sample_labelled_crop(
    mask: np.ndarray,
    num_classes: int,
    rng: np.random.Generator,
    area: tuple[float, float],
    aspect: tuple[float, float],
    min_share: float,
    min_object_share: float | None,
    heat: np.ndarray | None = None,
    tries: int = 100,
) -> tuple[Box, np.ndarray]:
    """A crop box and its labels (:func:`crop_labels`), resampled until some class is labelled or
    ``tries`` boxes were drawn (then the last one, possibly with no label, as the authors)."""
    height, width = mask.shape[:2]
    for _ in range(max(1, tries)):
        box = sample_crop_box(height, width, rng, area, aspect, heat)
        labels = crop_labels(mask, box, num_classes, min_share, min_object_share)
        if labels.any():
            break
    return box, labels
