"""Segmenter inference: multi-scale + flip, whole image or sliding window; optional dense-CRF refinement."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from pmm.cam.inference import normalize_images


def _pad_to_multiple(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Zero-pad (the normalised mean) on the bottom/right so SMP's size check passes."""
    height, width = x.shape[-2:]
    pad_h, pad_w = (-height) % multiple, (-width) % multiple
    if pad_h or pad_w:
        x = F.pad(x, (0, pad_w, 0, pad_h))
    return x, (height, width)


def _logits(net, x: torch.Tensor, multiple: int) -> torch.Tensor:
    padded, (height, width) = _pad_to_multiple(x, multiple)
    return net(padded)["out"][..., :height, :width]


def _sliding_logits(net, x: torch.Tensor, window: int, stride: int, num_classes: int, multiple: int) -> torch.Tensor:
    """Average logits over overlapping windows (images smaller than a window run whole)."""
    height, width = x.shape[-2:]
    if height <= window and width <= window:
        return _logits(net, x, multiple)
    total = x.new_zeros((x.shape[0], num_classes, height, width))
    count = x.new_zeros((1, 1, height, width))
    tops = list(range(0, max(height - window, 0) + 1, stride))
    lefts = list(range(0, max(width - window, 0) + 1, stride))
    if tops[-1] + window < height:
        tops.append(height - window)
    if lefts[-1] + window < width:
        lefts.append(width - window)
    for top in tops:
        for left in lefts:
            crop = x[..., top : top + window, left : left + window]
            total[..., top : top + crop.shape[-2], left : left + crop.shape[-1]] += _logits(net, crop, multiple)
            count[..., top : top + crop.shape[-2], left : left + crop.shape[-1]] += 1
    return total / count


@torch.no_grad()
def predict_probs(
    net,
    images: torch.Tensor,
    num_classes: int,
    scales: Sequence[float] = (1.0,),
    flip: bool = False,
    mode: str = "whole",
    window: int = 512,
    stride: int = 480,
    size_multiple: int = 32,
) -> torch.Tensor:
    """Softmax probabilities averaged over scales (and flips): N x C x H x W at image size.

    Args:
        images: N x H x W x 3 uint8 images of one size.
        mode: ``whole`` or ``slide`` (sliding window of ``window`` px every ``stride`` px).
    """
    if mode not in ("whole", "slide"):
        raise ValueError(f"inference mode {mode!r}: choose 'whole' or 'slide'")
    x = normalize_images(images)
    height, width = x.shape[-2:]
    total = None
    for scale in scales:
        size = (max(size_multiple, round(height * scale)), max(size_multiple, round(width * scale)))
        scaled = F.interpolate(x, size=size, mode="bilinear", align_corners=False) if scale != 1.0 else x
        variants = [scaled, scaled.flip(-1)] if flip else [scaled]
        for flipped, variant in enumerate(variants):
            if mode == "slide":
                logits = _sliding_logits(net, variant, window, stride, num_classes, size_multiple)
            else:
                logits = _logits(net, variant, size_multiple)
            if flipped:
                logits = logits.flip(-1)
            probs = F.interpolate(logits, size=(height, width), mode="bilinear", align_corners=False).softmax(1)
            total = probs if total is None else total + probs
    return total / (len(scales) * (2 if flip else 1))


def restrict_to_labels(probs: np.ndarray, labels: Sequence[int]) -> np.ndarray:
    """Zero every class but background and the image-level ``labels``, then renormalise.

    The training images' labels are the weak supervision itself, so predictions for them may use it.
    """
    keep = np.zeros(probs.shape[0], dtype=bool)
    keep[0] = True
    keep[list(labels)] = True
    restricted = np.where(keep[:, None, None], probs, 0.0)
    return restricted / np.clip(restricted.sum(axis=0, keepdims=True), 1e-8, None)


def probs_to_mask(image: np.ndarray, probs: np.ndarray, crf: bool = False, crf_backend: str = "pydensecrf") -> np.ndarray:
    """Label map from C x H x W probabilities, optionally refined by a dense CRF over the classes in play."""
    if not crf:
        return probs.argmax(axis=0).astype(np.uint8)
    from pmm.pseudo import dense_crf

    # The CRF runs on the classes that have any probability mass: fewer labels, same result.
    active = np.flatnonzero(probs.reshape(probs.shape[0], -1).max(axis=1) > 1e-3)
    refined = dense_crf(image, probs[active], backend=crf_backend)
    return active[refined.argmax(axis=0)].astype(np.uint8)
