"""Albumentations pipelines for the CAM classifier and the segmenter.

Pipelines end with float images in [0, 1] (C x H x W tensors): every network normalises its own
input with its backbone's mean and std (:class:`pmm.nets.ImageNormalize`), so training, CAM
inference, cyclic relabelling, evaluation and prediction share one normalisation path.

Reference pipelines (the authors' code; docs/paper.md):

- :func:`cam_train_transform`: SEAM's CAM training augmentation: the long side resized to a random
  length in 448-768, horizontal flip, colour jitter (0.3, 0.3, 0.3, 0.1), random 448 crop (an
  image smaller than the crop is placed at a random position in the padded crop).
- :func:`seg_train_transform`: mmseg's ``train_pipeline`` of the authors' segmentation configs
  (WSSS_MMSeg ``configs/_base_/datasets/pascal_voc12.py``): ``Resize(img_scale=(2048, 512),
  ratio_range=(0.5, 2.0))``, ``RandomCrop(crop_size=(512, 512), cat_max_ratio=0.75)``,
  ``RandomFlip(prob=0.5)``, ``PhotoMetricDistortion()``, ``Pad(size=crop_size, pad_val=0,
  seg_pad_val=255)``.
- :func:`rescale_short_side`: the test-time ``Resize(img_scale=(2048, 512), keep_ratio=True)``.

Every builder takes ``seed``: the Compose and all its steps then draw from one generator seeded
with it (see :func:`seed_transform`); DataLoader workers re-seed it per worker.
"""

from __future__ import annotations

from typing import Any

import albumentations as A
import cv2
import numpy as np
from albumentations.pytorch import ToTensorV2

from pmm.nets.tta import rescaled_size


__all__ = [
    "CatMaxRandomCrop",
    "PhotoMetricDistortion",
    "ShortSideRescale",
    "cam_train_transform",
    "eval_transform",
    "rescale_short_side",
    "rescaled_size",
    "seed_transform",
    "seg_train_transform",
    "to_tensor",
    "train_transform",
]


def seed_transform(transform: Any, seed: int | None) -> Any:
    """Seed an albumentations Compose (or transform) so all its steps share one generator; returns it.

    ``seed=None`` draws fresh entropy (albumentations' default). Objects without
    ``set_random_seed`` (plain callables) are returned unchanged.
    """
    if transform is None or not hasattr(transform, "set_random_seed"):
        return transform
    transform.set_random_seed(None if seed is None else int(seed) % (1 << 32))
    if hasattr(transform, "set_random_state"):
        transform.set_random_state(transform.random_generator, transform.py_random)
    return transform


def to_tensor() -> list:
    """uint8 HxWx3 -> float 3xHxW in [0, 1] (masks stay integer)."""
    return [A.ToFloat(max_value=255.0), ToTensorV2()]


def _compose(steps: list, seed: int | None) -> A.Compose:
    return seed_transform(A.Compose(steps), seed)


def train_transform(crop_size: int, scale_range: tuple[float, float] = (0.7, 1.3), photometric: bool = True,
                    seed: int | None = None) -> A.Compose:
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
    return _compose(steps + to_tensor(), seed)


def eval_transform(seed: int | None = None) -> A.Compose:
    """To a [0, 1] tensor only: evaluation runs on the whole image at its own size."""
    return _compose(to_tensor(), seed)


# --------------------------------------------------------------------------------------------
# CAM stage (SEAM's augmentation)
# --------------------------------------------------------------------------------------------

def cam_train_transform(crop: int = 448, long_side: tuple[int, int] = (448, 768),
                        jitter: tuple[float, float, float, float] | None = (0.3, 0.3, 0.3, 0.1),
                        ignore_index: int = 255, image_fill: float | tuple[float, float, float] = 0,
                        seed: int | None = None) -> A.Compose:
    """The paper's CAM training augmentation (SEAM's ``train_cls`` pipeline).

    Long side resized to a length drawn uniformly from ``long_side`` (inclusive; bicubic, up or
    down), horizontal flip, colour jitter ``(brightness, contrast, saturation, hue)`` applied to
    every image (torchvision's ``ColorJitter``, random order), random ``crop`` x ``crop`` crop; a
    side shorter than ``crop`` is padded (``image_fill`` in the image, ``ignore_index`` in a mask,
    if one is passed) with the image at a random position, as SEAM's ``RandomCrop`` places it.
    ``jitter=None`` leaves colours alone. SEAM pads after normalising (zeros = the mean colour):
    ``image_fill=(124, 116, 104)`` reproduces that for ImageNet-normalised networks.
    """
    low, high = (int(v) for v in long_side)
    if not 0 < low <= high:
        raise ValueError(f"long_side must be 0 < low <= high, got {long_side}")
    steps: list = [
        A.LongestMaxSize(max_size=list(range(low, high + 1)), interpolation=cv2.INTER_CUBIC,
                         mask_interpolation=cv2.INTER_NEAREST),
        A.HorizontalFlip(p=0.5),
    ]
    if jitter is not None:
        brightness, contrast, saturation, hue = jitter
        steps.append(A.ColorJitter(brightness=brightness, contrast=contrast, saturation=saturation, hue=hue, p=1.0))
    steps.append(A.RandomCrop(crop, crop, pad_if_needed=True, pad_position="random", border_mode=cv2.BORDER_CONSTANT,
                              fill=image_fill, fill_mask=ignore_index))
    return _compose(steps + to_tensor(), seed)


# --------------------------------------------------------------------------------------------
# Segmentation stage (mmseg's pipeline)
# --------------------------------------------------------------------------------------------

def rescale_short_side(image: np.ndarray, short_side: int | None, max_long: int | None = None,
                       ratio: float = 1.0, interpolation: int = cv2.INTER_LINEAR) -> np.ndarray:
    """Test-time rescale (mmseg's ``Resize(img_scale=(max_long, short_side), keep_ratio=True)``).

    ``image`` is H x W (x C) numpy (uint8 image or, with ``interpolation=cv2.INTER_NEAREST``, a
    mask); returns it resized to :func:`rescaled_size` (the same array when the size is kept).
    """
    height, width = image.shape[:2]
    new_h, new_w = rescaled_size(height, width, short_side, max_long, ratio)
    if (new_h, new_w) == (height, width):
        return image
    return cv2.resize(image, (new_w, new_h), interpolation=interpolation)


class ShortSideRescale(A.DualTransform):
    """mmseg's ``Resize(img_scale=(max_long, short_side), ratio_range=ratio_range)``.

    A ratio is drawn uniformly from ``ratio_range``; the image is rescaled (bilinear; masks
    nearest) so that its short side is ``short_side * ratio`` and its long side at most
    ``max_long * ratio`` (:func:`rescaled_size`). ``short_side=None``: the original size times
    the ratio. ``ratio_range=None``: ratio 1.
    """

    def __init__(self, short_side: int | None = 512, max_long: int | None = 2048,
                 ratio_range: tuple[float, float] | None = (0.5, 2.0), interpolation: int = cv2.INTER_LINEAR,
                 p: float = 1.0) -> None:
        super().__init__(p=p)
        if ratio_range is not None and not 0 < ratio_range[0] <= ratio_range[1]:
            raise ValueError(f"ratio_range must be 0 < low <= high, got {ratio_range}")
        self.short_side, self.max_long = short_side, max_long
        self.ratio_range = None if ratio_range is None else (float(ratio_range[0]), float(ratio_range[1]))
        self.interpolation = interpolation

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        height, width = params["shape"][:2]
        ratio = 1.0
        if self.ratio_range is not None:
            low, high = self.ratio_range
            ratio = low + self.py_random.random() * (high - low)
        return {"size": rescaled_size(height, width, self.short_side, self.max_long, ratio), "ratio": ratio}

    def apply(self, img: np.ndarray, size: tuple[int, int], **params: Any) -> np.ndarray:
        return img if img.shape[:2] == size else cv2.resize(img, size[::-1], interpolation=self.interpolation)

    def apply_to_mask(self, mask: np.ndarray, size: tuple[int, int], **params: Any) -> np.ndarray:
        return mask if mask.shape[:2] == size else cv2.resize(mask, size[::-1], interpolation=cv2.INTER_NEAREST)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("short_side", "max_long", "ratio_range", "interpolation")


class CatMaxRandomCrop(A.DualTransform):
    """mmseg's ``RandomCrop(crop_size, cat_max_ratio, ignore_index)`` (no padding).

    The crop is ``min(crop, H)`` x ``min(crop, W)`` at a uniform offset. With a mask and
    ``cat_max_ratio < 1``, a crop is re-drawn (up to 10 times) while its non-ignored pixels hold
    fewer than two classes or one class covers ``cat_max_ratio`` or more of them; after 10
    re-draws the last one is kept unchecked (mmseg's loop exactly).
    """

    def __init__(self, height: int, width: int, cat_max_ratio: float = 0.75, ignore_index: int = 255,
                 max_tries: int = 10, p: float = 1.0) -> None:
        super().__init__(p=p)
        self.height, self.width = int(height), int(width)
        self.cat_max_ratio, self.ignore_index, self.max_tries = float(cat_max_ratio), ignore_index, int(max_tries)

    def _draw(self, height: int, width: int) -> tuple[int, int, int, int]:
        top = self.py_random.randint(0, max(height - self.height, 0))
        left = self.py_random.randint(0, max(width - self.width, 0))
        return top, top + min(self.height, height), left, left + min(self.width, width)

    def _acceptable(self, mask: np.ndarray, box: tuple[int, int, int, int]) -> bool:
        y1, y2, x1, x2 = box
        labels, counts = np.unique(mask[y1:y2, x1:x2], return_counts=True)
        counts = counts[labels != self.ignore_index]
        return len(counts) > 1 and counts.max() / counts.sum() < self.cat_max_ratio

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        height, width = params["shape"][:2]
        box = self._draw(height, width)
        mask = data.get("mask")
        tries = 0
        if mask is not None and self.cat_max_ratio < 1.0:
            for _ in range(self.max_tries):
                if self._acceptable(mask, box):
                    break
                box = self._draw(height, width)
                tries += 1
        return {"box": box, "redraws": tries}

    def apply(self, img: np.ndarray, box: tuple[int, int, int, int], **params: Any) -> np.ndarray:
        y1, y2, x1, x2 = box
        return np.ascontiguousarray(img[y1:y2, x1:x2])

    def apply_to_mask(self, mask: np.ndarray, box: tuple[int, int, int, int], **params: Any) -> np.ndarray:
        y1, y2, x1, x2 = box
        return np.ascontiguousarray(mask[y1:y2, x1:x2])

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("height", "width", "cat_max_ratio", "ignore_index", "max_tries")


class PhotoMetricDistortion(A.ImageOnlyTransform):
    """mmseg's ``PhotoMetricDistortion`` on a uint8 RGB image, in mmseg's order and probabilities.

    1. brightness: with prob. 0.5 add a delta drawn from U(-brightness_delta, brightness_delta);
    2. a coin picks whether contrast comes second or last;
    3. contrast (prob. 0.5): multiply by U(contrast_range);
    4. saturation (prob. 0.5): HSV's S multiplied by U(saturation_range);
    5. hue (prob. 0.5): HSV's H (OpenCV's 0-179 scale) shifted by an integer in
       [-hue_delta, hue_delta], modulo 180;
    6. contrast here if the coin said "last".

    Every step clips to [0, 255] and truncates to uint8 as mmseg's ``convert`` does. (mmseg's
    docstring also lists a channel swap, which its code does not do; nor does this.)
    """

    def __init__(self, brightness_delta: int = 32, contrast_range: tuple[float, float] = (0.5, 1.5),
                 saturation_range: tuple[float, float] = (0.5, 1.5), hue_delta: int = 18, p: float = 1.0) -> None:
        super().__init__(p=p)
        self.brightness_delta = brightness_delta
        self.contrast_range = tuple(contrast_range)
        self.saturation_range = tuple(saturation_range)
        self.hue_delta = int(hue_delta)

    def _uniform(self, low: float, high: float) -> float:
        return low + self.py_random.random() * (high - low)

    def get_params(self) -> dict[str, Any]:
        coin = lambda: self.py_random.random() < 0.5  # noqa: E731
        beta = self._uniform(-self.brightness_delta, self.brightness_delta) if coin() else None
        contrast_first = coin()
        alpha_contrast = self._uniform(*self.contrast_range) if coin() else None
        alpha_saturation = self._uniform(*self.saturation_range) if coin() else None
        hue_shift = self.py_random.randint(-self.hue_delta, self.hue_delta) if coin() else None
        return {"beta": beta, "contrast_first": contrast_first, "alpha_contrast": alpha_contrast,
                "alpha_saturation": alpha_saturation, "hue_shift": hue_shift}

    @staticmethod
    def _convert(img: np.ndarray, alpha: float = 1.0, beta: float = 0.0) -> np.ndarray:
        return np.clip(img.astype(np.float32) * alpha + beta, 0, 255).astype(np.uint8)

    def apply(self, img: np.ndarray, beta: float | None = None, contrast_first: bool = True,
              alpha_contrast: float | None = None, alpha_saturation: float | None = None,
              hue_shift: int | None = None, **params: Any) -> np.ndarray:
        if img.dtype != np.uint8:
            raise TypeError(f"PhotoMetricDistortion expects a uint8 image, got {img.dtype}")
        if beta is not None:
            img = self._convert(img, beta=beta)
        if contrast_first and alpha_contrast is not None:
            img = self._convert(img, alpha=alpha_contrast)
        if alpha_saturation is not None or hue_shift is not None:
            hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV)
            if alpha_saturation is not None:
                hsv[:, :, 1] = self._convert(hsv[:, :, 1], alpha=alpha_saturation)
                # mmseg converts back to the image between saturation and hue: same rounding here.
                if hue_shift is not None:
                    hsv = cv2.cvtColor(cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB), cv2.COLOR_RGB2HSV)
            if hue_shift is not None:
                hsv[:, :, 0] = (hsv[:, :, 0].astype(np.int32) + hue_shift) % 180
            img = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
        if not contrast_first and alpha_contrast is not None:
            img = self._convert(img, alpha=alpha_contrast)
        return img

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("brightness_delta", "contrast_range", "saturation_range", "hue_delta")


def seg_train_transform(crop: int = 512, short_side: int | None = 512, max_long: int | None = 2048,
                        ratio_range: tuple[float, float] | None = (0.5, 2.0), cat_max_ratio: float = 0.75,
                        photometric: bool = True, ignore_index: int = 255,
                        image_fill: float | tuple[float, float, float] = 0, seed: int | None = None) -> A.Compose:
    """mmseg's segmentation training pipeline (the authors' ``pascal_voc12.py`` ``train_pipeline``).

    :class:`ShortSideRescale` (short side ``short_side`` x ratio, long side at most
    ``max_long`` x ratio, ratio ~ U(``ratio_range``)), :class:`CatMaxRandomCrop` (``crop``,
    ``cat_max_ratio``, ``ignore_index``), horizontal flip (0.5), :class:`PhotoMetricDistortion`
    (if ``photometric``), pad to ``crop`` x ``crop`` at the bottom/right with ``image_fill`` in
    the image and ``ignore_index`` in the mask, then a [0, 1] float tensor and an integer mask.

    mmseg pads *after* ``Normalize``, so its padded pixels are 0 in normalised space (the mean
    colour); ``image_fill=(124, 116, 104)`` (ImageNet's mean in uint8) reproduces that for
    networks that normalise with ImageNet statistics. The default 0 pads black.
    """
    steps: list = [
        ShortSideRescale(short_side, max_long, ratio_range),
        CatMaxRandomCrop(crop, crop, cat_max_ratio=cat_max_ratio, ignore_index=ignore_index),
        A.HorizontalFlip(p=0.5),
    ]
    if photometric:
        steps.append(PhotoMetricDistortion())
    steps.append(A.PadIfNeeded(crop, crop, position="top_left", border_mode=cv2.BORDER_CONSTANT,
                               fill=image_fill, fill_mask=ignore_index))
    return _compose(steps + to_tensor(), seed)


def _listify(node) -> dict:
    from omegaconf import DictConfig, OmegaConf

    values = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else dict(node)
    return {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}


def cam_pipeline(data_cfg, crop_size: int) -> A.Compose:
    """The CAM stage's training pipeline, ``crop_size`` crops (``cam.crop_size``): ``data.cam_aug``
    (SEAM's, the paper presets) or the default one."""
    if data_cfg.get("cam_aug"):
        return cam_train_transform(crop=crop_size, **_listify(data_cfg.cam_aug))
    return train_transform(crop_size, tuple(data_cfg.scale_range))


def seg_pipeline(data_cfg, crop_size: int) -> A.Compose:
    """The segmenter's training pipeline, ``crop_size`` crops (``seg.crop_size``): ``data.seg_aug``
    (mmseg's, the paper presets) or the default one."""
    if data_cfg.get("seg_aug"):
        return seg_train_transform(crop=crop_size, **_listify(data_cfg.seg_aug))
    return train_transform(crop_size, tuple(data_cfg.scale_range))
