"""Pseudo-mask generation from CAMs: PPMG (docs/method.md) and the baselines it is compared to.

All functions are pure numpy: image HxWx3 uint8, CAMs KxHxW in [0, 1] for the K present classes,
``labels`` the K 1-based class ids; outputs are HxW uint8 label maps with 0 = background.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from pmm.pseudo.cov import cov_smooth
from pmm.crf import PSEUDO_CRF, CRFParams, dense_crf, dense_crf_batch

PSEUDO_METHODS = ("argmax", "crf", "ppmg")


def _check_inputs(cams: np.ndarray, labels: Sequence[int], image: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Validate CAMs, class ids and (optionally) the image; return ``(cams float64, labels int64)``."""
    cams = np.asarray(cams)
    if cams.ndim != 3:
        raise ValueError(f"cams must be KxHxW (one map per present class), got shape {cams.shape}")
    labels = np.asarray(labels).reshape(-1)
    if labels.size and not np.issubdtype(labels.dtype, np.integer):
        if not np.all(np.equal(np.mod(labels, 1), 0)):
            raise ValueError(f"labels must be integer class ids, got {labels.tolist()}")
    labels = labels.astype(np.int64)
    if cams.shape[0] != labels.size:
        raise ValueError(f"cams has {cams.shape[0]} maps but labels has {labels.size} ids")
    # 0 is background and 255 the ignore value of the uint8 masks, so class ids live in 1..254.
    if labels.size and (labels.min() < 1 or labels.max() > 254):
        raise ValueError(f"labels must be 1-based class ids in [1, 254] (0 is background), got {labels.tolist()}")
    if image is not None:
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"image must be HxWx3 (RGB), got shape {image.shape}")
        if image.shape[:2] != cams.shape[1:]:
            raise ValueError(
                f"image is {image.shape[0]}x{image.shape[1]} but cams are {cams.shape[1]}x{cams.shape[2]}: "
                "resize the CAMs to the image"
            )
    return cams.astype(np.float64, copy=False), labels


def alpha_from_threshold(t: float, low: float = 1.0, high: float = 24.0) -> float:
    """The background exponent that makes ``(1 - S) ** alpha`` tie with ``S`` at ``S = t``.

    ``alpha = ln(t) / ln(1 - t)``, clipped to ``[low, high]``: t = 0.16 (VOC CAMs) gives about 10.5,
    the paper's 11; t = 0.5 gives 1.

    Args:
        t: the best background threshold of the CAMs, in (0, 1).
        low: smallest alpha returned.
        high: largest alpha returned (24 is the paper's CRF-only setting).

    Returns:
        alpha as a float.

    Raises:
        ValueError: if ``t`` is not strictly between 0 and 1, or ``low > high``.
    """
    t = float(t)
    if not 0.0 < t < 1.0:
        raise ValueError(f"threshold t must be in (0, 1), got {t}")
    if low > high:
        raise ValueError(f"low ({low}) must not exceed high ({high})")
    return float(min(max(math.log(t) / math.log1p(-t), low), high))


def cam_argmax(cams: np.ndarray, labels: Sequence[int], bg_threshold: float) -> np.ndarray:
    """The plain CAM pseudo-mask: arg-max class where its CAM reaches ``bg_threshold``, else background.

    Args:
        cams: KxHxW CAMs in [0, 1].
        labels: the K 1-based class ids.
        bg_threshold: background wherever every CAM is below this value.

    Returns:
        HxW uint8 label map.
    """
    cams, labels = _check_inputs(cams, labels)
    out = np.zeros(cams.shape[1:], dtype=np.uint8)
    if labels.size == 0:
        return out
    best = cams.argmax(axis=0)
    fg = cams.max(axis=0) >= bg_threshold
    out[fg] = labels[best[fg]]
    return out


def proportional_labels(cams: np.ndarray, fg_masks: np.ndarray, labels: Sequence[int]) -> np.ndarray:
    """Resolve per-class foreground masks into one label map by proportional importance.

    ``I_k = M_k / (1 + sum(M_k * F_k))``: dividing by the class's total activation inside its own
    foreground stops a large, strongly activated object from swallowing a small one it overlaps.
    A pixel is background if no ``F_k`` is set there, or if every candidate scores 0.

    Args:
        cams: KxHxW raw CAMs ``M_k`` in [0, 1] (not the CoV-smoothed ones).
        fg_masks: KxHxW boolean foreground masks ``F_k``.
        labels: the K 1-based class ids.

    Returns:
        HxW uint8 label map.
    """
    cams, labels = _check_inputs(cams, labels)
    fg_masks = np.asarray(fg_masks)
    if fg_masks.shape != cams.shape:
        raise ValueError(f"fg_masks have shape {fg_masks.shape} but cams have {cams.shape}")
    fg_masks = fg_masks.astype(bool)
    out = np.zeros(cams.shape[1:], dtype=np.uint8)
    if labels.size == 0:
        return out
    totals = (cams * fg_masks).reshape(cams.shape[0], -1).sum(axis=1)
    scores = np.where(fg_masks, cams / (1.0 + totals)[:, None, None], 0.0)
    best = scores.argmax(axis=0)
    fg = fg_masks.any(axis=0) & (scores.max(axis=0) > 0)
    out[fg] = labels[best[fg]]
    return out


def ppmg(
    image: np.ndarray,
    cams: np.ndarray,
    labels: Sequence[int],
    alpha: float = 11,
    cov_scale: float = 0.3,
    threshold: float = 0.05,
    crf: CRFParams = PSEUDO_CRF,
) -> np.ndarray:
    """Proportional Pseudo-mask Generation.

    ``S = cov_smooth(M)``; for each class separately a 2-label dense CRF on ``[(1 - S_k) ** alpha, S_k]``
    gives ``F_k = Q_k[fg] > 0.5``; overlaps are resolved by :func:`proportional_labels`.

    Args:
        image: HxWx3 uint8 image.
        cams: KxHxW CAMs in [0, 1] of the K present classes.
        labels: the K 1-based class ids.
        alpha: background exponent; pick it with :func:`alpha_from_threshold` for the CAMs' calibration.
        cov_scale: CoV factor ``s``; 0 is the "PPMG without CoV" ablation.
        threshold: CoV activation threshold ``t``.
        crf: the CRF settings and backend (``crf.pseudo``); the K binary problems go to the backend
            in one call, so it can share the image's lattice between them.

    Returns:
        HxW uint8 label map (0 = background).
    """
    cams, labels = _check_inputs(cams, labels, image)
    if labels.size == 0:
        return np.zeros(cams.shape[1:], dtype=np.uint8)
    smoothed = cov_smooth(cams, scale=cov_scale, threshold=threshold).astype(np.float64)
    # One binary CRF per class: each class decides its own extent without competing with the others.
    problems = np.stack([(1.0 - smoothed) ** alpha, smoothed], axis=1)  # K x 2 x H x W
    q = dense_crf_batch(image, problems, crf)
    fg_masks = q[:, 1] > 0.5
    return proportional_labels(cams, fg_masks, labels)


def _multi_label_crf(image: np.ndarray, cams: np.ndarray, labels: np.ndarray, alpha: float,
                     crf: CRFParams) -> tuple[np.ndarray, np.ndarray]:
    """(marginals (K+1) x H x W, label lookup) of one CRF over ``[(1 - max_k M_k) ** alpha, M_1, ..., M_K]``."""
    background = (1.0 - cams.max(axis=0)) ** alpha
    q = dense_crf(image, np.concatenate([background[None], cams]), crf)
    return q, np.concatenate([[0], labels]).astype(np.uint8)


def crf_baseline(
    image: np.ndarray,
    cams: np.ndarray,
    labels: Sequence[int],
    alpha: float = 24,
    crf: CRFParams = PSEUDO_CRF,
) -> np.ndarray:
    """The "CRF" baseline: one multi-label dense CRF over ``[(1 - max_k M_k) ** alpha, M_1, ..., M_K]``.

    Args:
        image: HxWx3 uint8 image.
        cams: KxHxW CAMs in [0, 1] (raw or CoV-smoothed).
        labels: the K 1-based class ids.
        alpha: background exponent (24 in the paper's CRF-only setting).
        crf: the CRF settings and backend (``crf.pseudo``).

    Returns:
        HxW uint8 label map (0 = background).
    """
    cams, labels = _check_inputs(cams, labels, image)
    if labels.size == 0:
        return np.zeros(cams.shape[1:], dtype=np.uint8)
    q, lut = _multi_label_crf(image, cams, labels, alpha, crf)
    return lut[q.argmax(axis=0)]


def confident_crf_mask(
    image: np.ndarray,
    cams: np.ndarray,
    labels: Sequence[int],
    alpha: float,
    confidence: float,
    crf: CRFParams = PSEUDO_CRF,
    unsure: int = 255,
) -> np.ndarray:
    """The multi-crop round's rough mask: :func:`crf_baseline`'s CRF, kept only where it is sure.

    One multi-label dense CRF over ``[(1 - max_k M_k) ** alpha, M_1, ..., M_K]``; a pixel gets
    the label whose marginal exceeds ``confidence`` (background included) and ``unsure``
    elsewhere. With ``confidence >= 0.5`` at most one marginal can exceed it, so the map holds
    each class's "marginal > confidence" region exactly: what the authors' crop labeller reads
    (their ``heat[k] > 0.9``).

    Returns:
        HxW uint8 map: 0 background, the 1-based class ids, ``unsure``.
    """
    if not 0.5 <= confidence < 1:
        raise ValueError(f"confidence must be in [0.5, 1) (one label at most above it), got {confidence}")
    cams, labels = _check_inputs(cams, labels, image)
    if labels.size == 0:
        return np.zeros(cams.shape[1:], dtype=np.uint8)
    q, lut = _multi_label_crf(image, cams, labels, alpha, crf)
    best = q.argmax(axis=0)
    sure = np.take_along_axis(q, best[None], axis=0)[0] > confidence
    return np.where(sure, lut[best], np.uint8(unsure)).astype(np.uint8)


def make_pseudo_mask(
    method: str,
    image: np.ndarray,
    cams: np.ndarray,
    labels: Sequence[int],
    *,
    alpha: float,
    cov: bool = True,
    cov_scale: float = 0.3,
    threshold: float = 0.05,
    bg_threshold: float = 0.5,
    crf: CRFParams = PSEUDO_CRF,
) -> np.ndarray:
    """Dispatch to one pseudo-mask method by name (the pipeline's entry point).

    Args:
        method: ``"argmax"`` (:func:`cam_argmax`), ``"crf"`` (:func:`crf_baseline`) or ``"ppmg"`` (:func:`ppmg`).
        image: HxWx3 uint8 image.
        cams: KxHxW CAMs in [0, 1].
        labels: the K 1-based class ids.
        alpha: background exponent for ``"crf"`` and ``"ppmg"`` (ignored by ``"argmax"``).
        cov: apply CoV smoothing (for ``"ppmg"``, ``False`` means ``cov_scale = 0``).
        cov_scale: CoV factor ``s``.
        threshold: CoV activation threshold ``t``.
        bg_threshold: background threshold of ``"argmax"``.
        crf: the CRF settings and backend (``crf.pseudo``) of ``"crf"`` and ``"ppmg"``.

    Returns:
        HxW uint8 label map (0 = background).

    Raises:
        ValueError: for an unknown method or invalid inputs.
    """
    if method not in PSEUDO_METHODS:
        raise ValueError(f"unknown pseudo-mask method {method!r}; choose one of {', '.join(PSEUDO_METHODS)}")
    if method == "ppmg":
        return ppmg(
            image,
            cams,
            labels,
            alpha=alpha,
            cov_scale=cov_scale if cov else 0.0,
            threshold=threshold,
            crf=crf,
        )
    _check_inputs(cams, labels, image)
    maps = cov_smooth(cams, scale=cov_scale, threshold=threshold) if cov else np.asarray(cams)
    if method == "argmax":
        return cam_argmax(maps, labels, bg_threshold)
    return crf_baseline(image, maps, labels, alpha=alpha, crf=crf)
