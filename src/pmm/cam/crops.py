"""The multi-crop round of the CAM stage (pure numpy): training crop boxes and their labels.

PMM trains its final CAM network on crops of the training images (``VOC12ClsHeatCropDataset`` in
the authors' ``tool/data.py``). Two samplers:

- ``tiles`` (the authors' run): draw one of the multi-crop inference scales, then one tile of that
  scale's grid (:func:`tile_grid`, the very tiles multi-crop inference runs on), label it from the
  first round's *confident* rough mask with the two-ratio rule (:func:`tile_labels`), and redraw
  a tile of the same scale up to as many times as the grid has tiles until it gets a label
  (:func:`sample_labelled_tile`); the tile is then flipped, colour-jittered and stretched to
  448 x 448.
- ``random``: a RandomResizedCrop-style box (4-100 % of the area, aspect 3/5-5/3), optionally
  centred on the first round's CAM heat, labelled by shares of the rough mask, resampled up to 100
  times (:func:`sample_labelled_crop`). The authors' code has this branch (without heat) for runs
  without inference scales; this package adds the heat.

Boxes are ``(top, left, height, width)`` in pixels of the full image, as ``pmm.nets.tta.sliding_windows``;
:func:`tile_grid` gives ``(x1, y1, x2, y2)`` corners, as the authors' code. The settings have no
defaults here: their one home is ``pmm.settings.MultiCropSettings`` (``cam.multi_crop``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

# The tile geometry lives with the other window helpers of the TTA module (inference uses it too).
from pmm.nets.tta import Corners, tile_grid

__all__ = ["Box", "Corners", "class_areas", "crop_labels", "sample_crop_box", "sample_labelled_crop", "sample_labelled_tile",
           "tile_grid", "tile_labels", "UNSURE"]

Box = tuple[int, int, int, int]  # top, left, height, width
UNSURE = 255  # a rough-mask pixel no class (background included) holds with the required confidence


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


def class_areas(mask: np.ndarray, num_classes: int) -> np.ndarray:
    """Pixels of each foreground class 1..C in a rough mask (unsure and ignored pixels not counted)."""
    return np.bincount(mask.ravel().astype(np.int64), minlength=256)[1 : num_classes + 1]


def tile_labels(mask: np.ndarray, corners: Corners, num_classes: int, threshold: float,
                object_threshold: float | None = None, areas: np.ndarray | None = None) -> np.ndarray:
    """Multi-hot labels (``num_classes`` foreground classes, float32) of one tile: the authors' two-ratio rule.

    Args:
        mask: H x W confident rough mask: 1..C where that class's CRF marginal exceeds the
            confidence (0.9), 0 where the background's does, :data:`UNSURE` (255) elsewhere. At most
            one of the marginals (which sum to 1) can exceed 0.9, so this one map holds every
            class's "marginal > 0.9" set exactly.
        corners: the tile, ``(x1, y1, x2, y2)``.
        threshold: class k labels the tile when ``intersection / tile area > threshold`` ("the
            tile is inside the object") **or** ``intersection / area_k > object_threshold`` ("the
            object is inside the tile"), both strict, as the authors' ``update_label`` (0.1 both).
        object_threshold: the second ratio's threshold; None: ``threshold``.
        areas: :func:`class_areas` of ``mask``, when the caller labels several tiles of one mask.
    """
    object_threshold = threshold if object_threshold is None else object_threshold
    x1, y1, x2, y2 = corners
    labels = np.zeros(num_classes, dtype=np.float32)
    tile_area = max(0, x2 - x1) * max(0, y2 - y1)
    if tile_area == 0:
        return labels
    total = class_areas(mask, num_classes) if areas is None else areas
    inside = np.bincount(mask[y1:y2, x1:x2].ravel().astype(np.int64), minlength=256)[1 : num_classes + 1]
    present = total > 0
    keep = present & ((inside / tile_area > threshold) | (inside / np.maximum(total, 1) > object_threshold))
    labels[keep] = 1.0
    return labels


def sample_labelled_tile(mask: np.ndarray, grids: Sequence[Sequence[Corners]], num_classes: int,
                         rng: np.random.Generator, threshold: float,
                         object_threshold: float | None = None) -> tuple[Corners, np.ndarray]:
    """One training tile and its labels, as the authors draw them.

    One scale is drawn uniformly, then a tile of its grid (uniformly, with replacement) until
    :func:`tile_labels` gives it a label, at most as many draws as the grid has tiles; the last
    draw is kept even without a label (its labels are then all zero).
    """
    tiles = grids[int(rng.integers(len(grids)))]
    corners, labels = tiles[0], np.zeros(num_classes, dtype=np.float32)
    areas = class_areas(mask, num_classes)  # the same for every draw
    for _ in range(len(tiles)):
        corners = tiles[int(rng.integers(len(tiles)))]
        labels = tile_labels(mask, corners, num_classes, threshold, object_threshold, areas)
        if labels.any():
            break
    return corners, labels
