"""Pseudo-mask maths of PMM: CoV smoothing, PPMG and its baselines (numpy in, numpy out; the CRF is pmm.crf)."""

from pmm.pseudo.cov import cov_smooth
from pmm.pseudo.ppmg import (
    PSEUDO_METHODS,
    alpha_from_threshold,
    cam_argmax,
    confident_crf_mask,
    crf_baseline,
    make_pseudo_mask,
    ppmg,
    proportional_labels,
)

__all__ = [
    "PSEUDO_METHODS",
    "alpha_from_threshold",
    "cam_argmax",
    "confident_crf_mask",
    "cov_smooth",
    "crf_baseline",
    "make_pseudo_mask",
    "ppmg",
    "proportional_labels",
]
