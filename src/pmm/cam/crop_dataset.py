"""Training data of the multi-crop CAM round: crops of the training images, labelled from the
first round's rough masks (PMM / SEAM's ``VOC12ClsHeatCropDataset``).

Each item is one crop of one image, flipped with probability 1/2, colour-jittered and stretched
to ``crop`` x ``crop``; its labels are the classes of the rough mask the crop holds, restricted
to the image's own labels. ``sampler`` picks the crop:

- ``tiles`` (the authors'): one tile of the multi-crop inference grid at a random scale
  (:func:`pmm.cam.crops.sample_labelled_tile`, the two-ratio labelling rule, redrawn up to the
  grid's size until it has a label);
- ``random``: area and aspect as torchvision's RandomResizedCrop, optionally centred on the first
  round's CAM heat, resampled until a class covers ``min_share`` of it
  (:func:`pmm.cam.crops.sample_labelled_crop`).

Every random draw of an item comes from a numpy ``Generator`` seeded from ``(seed, epoch, index)``
(:func:`pmm.runtime.loaders.derive_seed`), so the crops do not depend on the number of DataLoader
workers, on the order the items are asked for, or on the process. The epoch reaches the workers
through the sampler (:class:`EpochSampler`): it yields ``epoch * len(dataset) + index``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from pmm.cam.crops import Box, sample_labelled_crop, sample_labelled_tile, tile_grid
from pmm.runtime.loaders import derive_seed
from pmm.io import load_cams, load_mask

__all__ = ["CropClassificationDataset", "EpochSampler", "crop_item", "split_key"]


def split_key(key: int, size: int) -> tuple[int, int]:
    """``(epoch, index)`` of a sampler key ``epoch * size + index``."""
    return divmod(int(key), max(1, size))


def crop_item(image: np.ndarray, box: Box, size: int, flip: bool) -> np.ndarray:
    """The ``box`` of an H x W x 3 uint8 image, flipped left-right if ``flip``, resized (bilinear;
    area when shrinking) to ``size`` x ``size``."""
    top, left, h, w = box
    patch = image[top : top + h, left : left + w]
    if flip:
        patch = patch[:, ::-1]
    interpolation = cv2.INTER_AREA if (h > size and w > size) else cv2.INTER_LINEAR
    return cv2.resize(np.ascontiguousarray(patch), (size, size), interpolation=interpolation)


class EpochSampler(Sampler[int]):
    """Shuffles ``range(size)`` with a generator seeded from ``(seed, epoch)`` and yields
    ``epoch * size + index``: the dataset reads the epoch from the key, also in worker processes.

    Lightning calls :meth:`set_epoch` before each training epoch (also after a resume); without it
    each ``iter`` advances the epoch by one.
    """

    def __init__(self, size: int, seed: int, shuffle: bool = True) -> None:
        self.size, self.seed, self.shuffle = int(size), int(seed), shuffle
        self.epoch = 0
        self._explicit = False

    def set_epoch(self, epoch: int) -> None:
        self.epoch, self._explicit = int(epoch), True

    def __len__(self) -> int:
        return self.size

    def __iter__(self) -> Iterator[int]:
        epoch = self.epoch
        if not self._explicit:
            self.epoch += 1
        self._explicit = False
        order = np.arange(self.size)
        if self.shuffle:
            order = np.random.default_rng(derive_seed(self.seed, epoch, 3)).permutation(self.size)
        return iter([epoch * self.size + int(i) for i in order])


class CropClassificationDataset(Dataset):
    """Labelled random crops of a split's images (the multi-crop round's training set).

    Args:
        split: the training split (images and image-level labels).
        mask_dir: the first round's rough masks, ``<mask_dir>/<id>.png`` (0 background, 1..C).
        crop: side of the square crops the network sees.
        seed: the run's seed; an item's draws depend on ``(seed, epoch, index)`` only.
        area, aspect: crop area (share of the image) and aspect (width / height) ranges.
        min_share: a class labels a crop when it covers at least this share of it.
        min_object_share: ... or when the crop holds this share of the class's pixels (None: off).
        heat_dir: the first round's CAM files (``<id>.npz``); crops are centred on a pixel drawn
            in proportion to the max over classes of the CAMs. None: placed uniformly (the authors).
        jitter: colour jitter ``(brightness, contrast, saturation, hue)``; None: off.
        restrict_to_image_labels: drop crop labels the image is not labelled with (a rough mask
            holds only the image's classes anyway; this guards hand-made or foreign masks).
        sampler: ``random`` (the boxes above) or ``tiles`` (the multi-crop inference tiles of
            ``tile_scales`` / ``tile_size`` / ``tile_stride``; ``area``, ``aspect`` and ``heat_dir``
            are then unused and a tile is labelled when ``min_share`` of it is the class or it holds
            more than ``min_object_share`` of the class).

    Items: ``image`` 3 x crop x crop float in [0, 1], ``label`` C multi-hot float32, ``index``,
    ``epoch`` and ``box`` (top, left, height, width in the original image).
    """

    def __init__(self, split, mask_dir: str | Path, crop: int, seed: int, *, area: tuple[float, float],
                 aspect: tuple[float, float], min_share: float, min_object_share: float | None,
                 jitter: tuple[float, float, float, float] | None, heat_dir: str | Path | None = None,
                 restrict_to_image_labels: bool = True, sampler: str = "random",
                 tile_scales: tuple[float, ...] = (1.0,), tile_size: int = 448, tile_stride: int = 300) -> None:
        if sampler not in ("random", "tiles"):
            raise ValueError(f"crop sampler {sampler!r}: expected random or tiles")
        self.split = split
        self.mask_dir = Path(mask_dir)
        self.heat_dir = Path(heat_dir) if heat_dir is not None else None
        self.crop, self.seed = int(crop), int(seed)
        self.area = (float(area[0]), float(area[1]))
        self.aspect = (float(aspect[0]), float(aspect[1]))
        self.min_share = float(min_share)
        self.min_object_share = None if min_object_share is None else float(min_object_share)
        self.jitter = tuple(jitter) if jitter is not None else None
        self.restrict = restrict_to_image_labels
        self.sampler = sampler
        self.tile_scales, self.tile_size, self.tile_stride = tuple(float(v) for v in tile_scales), int(tile_size), int(tile_stride)
        self.num_classes = split.num_classes - 1

    def __len__(self) -> int:
        return len(self.split)

    def heat(self, image_id: str, shape: tuple[int, int]) -> np.ndarray | None:
        if self.heat_dir is None:
            return None
        cams, _ = load_cams(self.heat_dir / f"{image_id}.npz")
        if len(cams) == 0 or cams.shape[1:] != tuple(shape):
            return None
        return cams.max(axis=0)

    def sample(self, index: int, epoch: int = 0) -> tuple[Box, np.ndarray, np.random.Generator]:
        """The crop box and labels of item ``index`` at ``epoch`` (and the generator, for the rest)."""
        image_id = self.split.ids[index]
        mask = load_mask(self.mask_dir / f"{image_id}.png")
        rng = np.random.default_rng(derive_seed(self.seed, epoch, index))
        if self.sampler == "tiles":
            height, width = mask.shape[:2]
            grids = tile_grid(width, height, self.tile_scales, self.tile_size, self.tile_stride)
            # The two ratios share one threshold in the authors' code; here each has its key.
            (x1, y1, x2, y2), labels = sample_labelled_tile(
                mask, grids, self.num_classes, rng, self.min_share,
                self.min_object_share if self.min_object_share is not None else math.inf)
            box = (y1, x1, max(1, y2 - y1), max(1, x2 - x1))
        else:
            box, labels = sample_labelled_crop(mask, self.num_classes, rng, self.area, self.aspect, self.min_share,
                                               self.min_object_share, heat=self.heat(image_id, mask.shape[:2]))
        if self.restrict:
            labels = labels * self.split.label_vector(image_id).astype(np.float32)
        return box, labels, rng

    def _colour(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """torchvision-style ColorJitter (random order of brightness, contrast, saturation, hue) from ``rng``."""
        brightness, contrast, saturation, hue = self.jitter
        x = image.astype(np.float32) / 255.0
        for op in rng.permutation(4):
            if op == 0 and brightness > 0:
                x = x * rng.uniform(max(0.0, 1 - brightness), 1 + brightness)
            elif op == 1 and contrast > 0:
                grey = float((x @ np.array([0.299, 0.587, 0.114], np.float32)).mean())
                x = (x - grey) * rng.uniform(max(0.0, 1 - contrast), 1 + contrast) + grey
            elif op == 2 and saturation > 0:
                grey = (x @ np.array([0.299, 0.587, 0.114], np.float32))[..., None]
                x = (x - grey) * rng.uniform(max(0.0, 1 - saturation), 1 + saturation) + grey
            elif op == 3 and hue > 0:
                hsv = cv2.cvtColor(np.clip(x, 0, 1), cv2.COLOR_RGB2HSV)  # H in degrees [0, 360)
                hsv[..., 0] = np.mod(hsv[..., 0] + 360.0 * rng.uniform(-hue, hue), 360.0)
                x = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
            x = np.clip(x, 0, 1)
        return x

    def __getitem__(self, key: int) -> dict:
        epoch, index = split_key(key, len(self))
        box, labels, rng = self.sample(index, epoch)
        image = crop_item(self.split.load_image(self.split.ids[index]), box, self.crop, flip=bool(rng.random() < 0.5))
        pixels = self._colour(image, rng) if self.jitter is not None else image.astype(np.float32) / 255.0
        return {
            "image": torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1))).float(),
            "label": torch.from_numpy(labels),
            "index": index,
            "epoch": epoch,
            "box": torch.tensor(box, dtype=torch.long),
        }

