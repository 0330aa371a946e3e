"""Pseudo-mask maths of PMM: CoV smoothing, dense CRF, PPMG and its baselines (numpy in, numpy out)."""

from pmm.pseudo.cov import cov_smooth
from pmm.crf import CRF_BACKENDS, dense_crf
from pmm.pseudo.ppmg import (
    PSEUDO_METHODS,
    alpha_from_threshold,
    cam_argmax,
    crf_baseline,
    make_pseudo_mask,
    ppmg,
    proportional_labels,
)

__all__ = [
    "CRF_BACKENDS",
    "PSEUDO_METHODS",
    "alpha_from_threshold",
    "cam_argmax",
    "cov_smooth",
    "crf_baseline",
    "dense_crf",
    "make_pseudo_mask",
    "ppmg",
    "proportional_labels",
]
