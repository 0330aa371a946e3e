"""Coefficient of Variation smoothing of CAMs (docs/method.md)."""

from __future__ import annotations

import numpy as np


def _check_cams(cams: np.ndarray) -> np.ndarray:
    """Return ``cams`` as a float64 KxHxW array, or raise a one-line ValueError."""
    cams = np.asarray(cams)
    if cams.ndim != 3:
        raise ValueError(f"cams must be KxHxW (one map per present class), got shape {cams.shape}")
    if not np.issubdtype(cams.dtype, np.number) or np.issubdtype(cams.dtype, np.complexfloating):
        raise ValueError(f"cams must be real numbers, got dtype {cams.dtype}")
    return cams.astype(np.float64, copy=False)


def cov_smooth(cams: np.ndarray, scale: float = 0.3, threshold: float = 0.05) -> np.ndarray:
    """Smooth each CAM by a power set by its coefficient of variation.

    With ``A_k`` the values of ``M_k`` above ``threshold``, ``cv_k = std(A_k) / mean(A_k) * scale``
    (population std; 0 when ``A_k`` is empty) and ``S_k = M_k ** (1 - cv_k)`` where
    ``M_k >= threshold``, 0 elsewhere. A peaky CAM (large cv) is raised more, so it expands.

    Args:
        cams: KxHxW CAMs of the K present classes, each min-max normalised to [0, 1].
        scale: the factor ``s`` on the coefficient of variation; 0 disables the smoothing
            (then ``S`` is ``M`` with values below ``threshold`` zeroed).
        threshold: the activation threshold ``t``.

    Returns:
        S, a KxHxW float32 array.

    Raises:
        ValueError: if ``cams`` is not a KxHxW real array.
    """
    cams = _check_cams(cams)
    num_classes = cams.shape[0]
    if num_classes == 0:
        return np.zeros(cams.shape, dtype=np.float32)
    flat = cams.reshape(num_classes, -1)
    active = flat > threshold
    count = active.sum(axis=1)
    # Masked moments computed per class in one pass; empty classes get count 1 to avoid 0/0
    # and are forced to cv = 0 below, as the method specifies.
    safe_count = np.maximum(count, 1)
    mean = np.where(active, flat, 0.0).sum(axis=1) / safe_count
    var = np.where(active, (flat - mean[:, None]) ** 2, 0.0).sum(axis=1) / safe_count
    with np.errstate(invalid="ignore", divide="ignore"):
        cv = np.where((count > 0) & (mean > 0), np.sqrt(var) / mean, 0.0) * scale
    # Clip negative values (not expected for normalised CAMs) so the power stays real.
    powered = np.power(np.clip(cams, 0.0, None), (1.0 - cv)[:, None, None])
    # "S_k = 0 where M_k < t": values equal to t keep their power (the rule is strict <).
    smoothed = np.where(cams < threshold, 0.0, powered)
    return smoothed.astype(np.float32)
