"""Test-time augmentation: one module for CAM inference, cyclic relabelling, eval and prediction.

A network is seen as ``fn(images) -> N x C x h x w`` maps (CAMs or logits) at any resolution. This
module runs it over an optional short-side rescale (mmseg's test pipeline), several scales,
horizontal flips, and the whole image / a sliding window / SEAM's multi-crop, stitches the
overlapping windows back together, resizes to the image and combines the variants:

- CAMs (``activation="relu"``, ``reduce="sum"``): ReLU on the network's output, summed over the
  variants (PMM / SEAM sum their multi-scale CAMs and min-max normalise afterwards).
- Segmentation (``activation="softmax"``, ``reduce="mean"``): window logits averaged where they
  overlap, resized, softmax, probabilities averaged over the variants (mmseg's aug_test).

Images are float N x 3 x H x W in [0, 1]; the network normalises them itself.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

TTA_MODES = ("whole", "slide", "multi_crop")
MapFn = Callable[[Tensor], Tensor]


@dataclass(frozen=True)
class TTAConfig:
    """How one caller runs its network over an image.

    Attributes:
        scales: image scale factors (after the short-side rescale).
        flip: also run the horizontally flipped image.
        mode: ``whole`` image, ``slide`` (windows of ``window`` px every ``stride`` px; an image
            smaller than a window runs whole) or ``multi_crop`` (PMM's multi-crop inference: the
            tiles of :func:`tile_grid` at every scale, each cut from the image and stretched to
            ``window`` x ``window``; the maps are averaged over every tile that covers a pixel).
        window, stride: window size and step in pixels.
        short_side: rescale so the short side is this many pixels first (None: keep the size).
        max_long: cap of the long side of that rescale.
        size_multiple: pad every network input to a multiple of this (SMP needs 2**depth).
    """

    scales: tuple[float, ...] = (1.0,)
    flip: bool = False
    mode: str = "whole"
    window: int = 512
    stride: int = 480
    short_side: int | None = None
    max_long: int | None = None
    size_multiple: int = 1

    def __post_init__(self) -> None:
        if self.mode not in TTA_MODES:
            raise ValueError(f"inference mode {self.mode!r}: choose one of {', '.join(TTA_MODES)}")
        if not self.scales or any(float(s) <= 0 for s in self.scales):
            raise ValueError(f"inference scales must be a non-empty list of positive numbers, got {list(self.scales)}")
        if self.window < 1 or self.stride < 1:
            raise ValueError(f"window ({self.window}) and stride ({self.stride}) must be positive")

    @classmethod
    def from_config(cls, node: Mapping, **overrides) -> "TTAConfig":
        """Pick the TTA keys out of a config node (``cam``, ``cyclic``, ``eval``...); others are ignored."""
        names = {f.name for f in fields(cls)}
        values = {k: v for k, v in dict(node).items() if k in names}
        values.update(overrides)
        if "scales" in values:
            values["scales"] = tuple(float(s) for s in values["scales"])
        return cls(**values)


def sliding_windows(height: int, width: int, window: int, stride: int) -> list[tuple[int, int, int, int]]:
    """(top, left, h, w) windows covering an image; the last row/column of windows sits flush with the edge."""

    def starts(length: int) -> list[int]:
        if length <= window:
            return [0]
        positions = list(range(0, length - window + 1, stride))
        if positions[-1] + window < length:
            positions.append(length - window)
        return positions

    return [(top, left, min(window, height), min(window, width)) for top in starts(height) for left in starts(width)]


Corners = tuple[int, int, int, int]  # x1, y1, x2, y2


def tile_grid(width: int, height: int, scales, crop: int = 448, stride: int = 300) -> list[list[Corners]]:
    """The tiles of PMM's multi-crop round, per scale, as ``(x1, y1, x2, y2)`` boxes of the image.

    At scale ``s`` the image is ``int(width * s)`` x ``int(height * s)``. Along each axis tile
    ``i`` spans ``[i * stride, (i + 1) * stride)`` and the last one ends flush with the edge,
    ``crop`` wide (the whole axis when it is shorter); there are ``1 + ceil(max(0, size - crop) /
    stride)`` of them. So the inner tiles are ``stride`` pixels and only the last is ``crop``:
    that is the authors' code (``VOC12ClsDatasetMultiCrop`` in PMM's ``tool/data.py``), kept as
    it is, since their CAMs were inferred and trained on exactly these tiles. The corners are
    mapped back to the original image with ``int(v / s)`` (truncation, as theirs). Order: columns
    outer, rows inner, as the authors iterate. Both multi-crop inference (every tile, stretched
    to ``crop`` x ``crop``) and multi-crop training (one random tile) use these boxes.
    """
    if width < 1 or height < 1:
        raise ValueError(f"tile_grid: image size must be positive, got {width} x {height}")
    if crop < 1 or stride < 1:
        raise ValueError(f"tile_grid: crop ({crop}) and stride ({stride}) must be positive")

    def spans(size: int) -> list[tuple[int, int]]:
        count = 1 + int(math.ceil(max(0.0, float(size - crop)) / stride))
        out = []
        for index in range(count):
            if index == count - 1:
                out.append((max(0, size - crop), size))
            else:
                out.append((index * stride, min(size, (index + 1) * stride)))
        return out

    grids = []
    for scale in scales:
        scale = float(scale)
        if scale <= 0:
            raise ValueError(f"tile_grid: scales must be positive, got {scale}")
        columns, rows = spans(int(width * scale)), spans(int(height * scale))
        grids.append([(int(x1 / scale), int(y1 / scale), int(x2 / scale), int(y2 / scale))
                      for x1, x2 in columns for y1, y2 in rows])
    return grids


def rescaled_size(height: int, width: int, short_side: int | None, max_long: int | None = None,
                  ratio: float = 1.0) -> tuple[int, int]:
    """(new_height, new_width) of mmcv's ``imrescale`` to ``img_scale=(max_long, short_side)`` x ratio.

    The scale factor is ``min(max_long * ratio / long, short_side * ratio / short)`` (the
    targets truncated to ints as mmseg's ``Resize`` does), each side rounded half up.
    ``short_side=None`` keeps the size (times ``ratio``); ``max_long=None`` puts no bound on the
    long side.
    """
    if short_side is None:
        factor = float(ratio)
    else:
        factor = int(short_side * ratio) / min(height, width)
        if max_long is not None:
            factor = min(factor, int(max_long * ratio) / max(height, width))
    return max(1, int(height * factor + 0.5)), max(1, int(width * factor + 0.5))


def _resize(x: Tensor, size: tuple[int, int]) -> Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def _run(fn: MapFn, x: Tensor, multiple: int, activation: str) -> Tensor:
    """``fn`` on ``x`` padded to a multiple, cropped back and resized to ``x``'s size."""
    height, width = x.shape[-2:]
    pad_h, pad_w = (-height) % multiple, (-width) % multiple
    padded = F.pad(x, (0, pad_w, 0, pad_h)) if (pad_h or pad_w) else x
    out = fn(padded)
    if activation == "relu":
        out = F.relu(out)
    full = _resize(out, tuple(padded.shape[-2:]))
    return full[..., :height, :width]


def _windowed(fn: MapFn, x: Tensor, cfg: TTAConfig, activation: str) -> Tensor:
    height, width = x.shape[-2:]
    if cfg.mode == "whole" or (cfg.mode == "slide" and height <= cfg.window and width <= cfg.window):
        return _run(fn, x, cfg.size_multiple, activation)
    total = count = None
    for top, left, h, w in sliding_windows(height, width, cfg.window, cfg.stride):
        out = _run(fn, x[..., top : top + h, left : left + w], cfg.size_multiple, activation)
        if total is None:
            total = out.new_zeros((x.shape[0], out.shape[1], height, width))
            count = out.new_zeros((1, 1, height, width))
        total[..., top : top + h, left : left + w] += out
        count[..., top : top + h, left : left + w] += 1
    return total / count


# Tiles stretched to the crop run through the network this many at a time (one scale's tiles and
# their flips can be dozens of 448 x 448 crops).
_TILE_BATCH = 16


def _multi_crop(fn: MapFn, images: Tensor, cfg: TTAConfig, activation: str) -> Tensor:
    """PMM's multi-crop inference: every tile of :func:`tile_grid` (all scales), cut from the
    image, stretched to ``window`` x ``window`` (no padding: an image smaller than a tile is
    stretched whole), run (and its mirror with ``flip``), resized back onto the tile and averaged
    over all the tiles and flips that cover each pixel (the authors' ``sum / counter``)."""
    height, width = images.shape[-2:]
    boxes = [box for grid in tile_grid(width, height, cfg.scales, cfg.window, cfg.stride) for box in grid
             if box[2] > box[0] and box[3] > box[1]]  # a tiny image at a small scale can map a tile to nothing
    jobs = [(box, flipped) for box in boxes for flipped in ((False, True) if cfg.flip else (False,))]
    total = count = None
    for start in range(0, len(jobs), _TILE_BATCH):
        chunk = jobs[start : start + _TILE_BATCH]
        crops = []
        for (x1, y1, x2, y2), flipped in chunk:
            crop = _resize(images[..., y1:y2, x1:x2], (cfg.window, cfg.window))
            crops.append(crop.flip(-1) if flipped else crop)
        outputs = _run(fn, torch.cat(crops), cfg.size_multiple, activation)
        outputs = outputs.split(images.shape[0])
        for ((x1, y1, x2, y2), flipped), out in zip(chunk, outputs):
            if flipped:
                out = out.flip(-1)
            out = _resize(out, (y2 - y1, x2 - x1))
            if activation == "softmax":
                out = out.softmax(1)
            if total is None:
                total = out.new_zeros((images.shape[0], out.shape[1], height, width))
                count = out.new_zeros((1, 1, height, width))
            total[..., y1:y2, x1:x2] += out
            count[..., y1:y2, x1:x2] += 1
    return total / count.clamp(min=1)


def _check_activation(activation: str, reduce: str = "mean") -> None:
    if activation not in ("relu", "softmax", "none"):
        raise ValueError(f"activation {activation!r}: choose relu, softmax or none")
    if reduce not in ("sum", "mean"):
        raise ValueError(f"reduce {reduce!r}: choose sum or mean")


def _variants(fn: MapFn, images: Tensor, cfg: TTAConfig, activation: str):
    """Yield ``((scale, flipped), maps at image size)`` for every scale x flip variant (whole / slide modes)."""
    height, width = images.shape[-2:]
    base = rescaled_size(height, width, cfg.short_side, cfg.max_long)
    for scale in cfg.scales:
        size = (max(1, round(base[0] * scale)), max(1, round(base[1] * scale)))
        scaled = _resize(images, size)
        for flipped in ((False, True) if cfg.flip else (False,)):
            x = scaled.flip(-1) if flipped else scaled
            maps = _windowed(fn, x, cfg, activation)
            if flipped:
                maps = maps.flip(-1)
            maps = _resize(maps, (height, width))
            if activation == "softmax":
                maps = maps.softmax(1)
            yield (float(scale), flipped), maps


def tta_maps(fn: MapFn, images: Tensor, cfg: TTAConfig = TTAConfig(), activation: str = "softmax",
             reduce: str = "mean") -> Tensor:
    """Run ``fn`` over the augmentations of ``cfg`` and combine them at image size.

    Args:
        fn: N x 3 x h x w -> N x C x h' x w' maps (CAMs or logits), any output resolution.
        images: N x 3 x H x W float images in [0, 1], one size.
        activation: ``relu`` (on the network output: CAMs), ``softmax`` (on the stitched logits at
            image size: class probabilities) or ``none``.
        reduce: ``sum`` or ``mean`` over the variants (scales x flips).

    Returns:
        N x C x H x W.
    """
    return tta_maps_and_single(fn, images, cfg, activation, reduce)[0]


def has_single_variant(cfg: TTAConfig) -> bool:
    """Whether the passes of ``cfg`` include the plain one (scale 1, not flipped) that
    :func:`tta_maps_and_single` can hand back: the multi-crop mode averages its tiles, so no."""
    return cfg.mode != "multi_crop" and any(float(s) == 1.0 for s in cfg.scales)


def tta_maps_and_single(fn: MapFn, images: Tensor, cfg: TTAConfig = TTAConfig(), activation: str = "softmax",
                        reduce: str = "mean") -> tuple[Tensor, Tensor | None]:
    """:func:`tta_maps`, and the maps of its plain variant (scale 1, not flipped) from the same passes.

    The evaluation protocols (single-scale, multi-scale + flip) share their forward passes this way:
    the single-scale prediction is one of the multi-scale ones. The second value is None when the
    variant is not among the passes (:func:`has_single_variant`).
    """
    _check_activation(activation, reduce)
    height, width = images.shape[-2:]
    if cfg.mode == "multi_crop":
        # One average over every tile of every scale (not a sum of per-scale maps): ``reduce`` does not apply.
        base = rescaled_size(height, width, cfg.short_side, cfg.max_long)
        return _resize(_multi_crop(fn, _resize(images, base), cfg, activation), (height, width)), None
    total = single = None
    variants = 0
    for (scale, flipped), maps in _variants(fn, images, cfg, activation):
        if scale == 1.0 and not flipped and single is None:
            single = maps
        total = maps if total is None else total + maps
        variants += 1
    return (total if reduce == "sum" else total / variants), single


def to_float_images(images: Tensor | np.ndarray) -> Tensor:
    """N x H x W x 3 (or H x W x 3) uint8 -> N x 3 x H x W float in [0, 1]."""
    x = torch.as_tensor(images)
    if x.ndim == 3:
        x = x[None]
    return x.permute(0, 3, 1, 2).float() / 255.0


def group_by_size(shapes: Sequence[tuple[int, int]], batch_size: int) -> list[list[int]]:
    """Positions grouped by equal (H, W), each group cut into batches of at most ``batch_size``."""
    groups: dict[tuple[int, int], list[int]] = {}
    for position, shape in enumerate(shapes):
        groups.setdefault(tuple(shape), []).append(position)
    batches = []
    for positions in groups.values():
        batches += [positions[i : i + batch_size] for i in range(0, len(positions), max(1, batch_size))]
    return batches


@torch.no_grad()
def tta_over_images(fn: MapFn, images: Sequence[np.ndarray | Tensor], cfg: TTAConfig = TTAConfig(),
                    activation: str = "softmax", reduce: str = "mean", batch_size: int = 16,
                    device: torch.device | str = "cpu") -> list[Tensor]:
    """:func:`tta_maps` over H x W x 3 uint8 images of any sizes; equal sizes run as one batch.

    Returns:
        One C x H x W float tensor per image (on CPU), in input order.
    """
    return [maps for maps, _ in tta_over_images_and_single(fn, images, cfg, activation, reduce, batch_size, device,
                                                           keep_single=False)]


@torch.no_grad()
def tta_over_images_and_single(fn: MapFn, images: Sequence[np.ndarray | Tensor], cfg: TTAConfig = TTAConfig(),
                               activation: str = "softmax", reduce: str = "mean", batch_size: int = 16,
                               device: torch.device | str = "cpu",
                               keep_single: bool = True) -> list[tuple[Tensor, Tensor | None]]:
    """:func:`tta_maps_and_single` over H x W x 3 uint8 images of any sizes (equal sizes batched).

    Returns:
        One ``(combined, plain variant or None)`` pair of C x H x W CPU tensors per image, in input order.
    """
    outputs: list[tuple | None] = [None] * len(images)
    for positions in group_by_size([tuple(image.shape[:2]) for image in images], batch_size):
        batch = to_float_images(np.stack([np.asarray(images[p]) for p in positions])).to(device)
        maps, single = tta_maps_and_single(fn, batch, cfg, activation, reduce)
        maps = maps.float().cpu()
        single = single.float().cpu() if (keep_single and single is not None) else None
        for row, position in enumerate(positions):
            outputs[position] = (maps[row], None if single is None else single[row])
    return outputs
