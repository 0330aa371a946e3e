"""Dense CRF for the pseudo-mask maths: re-exports of :mod:`pmm.crf`, the package's one CRF node."""

from pmm.crf import (  # noqa: F401
    CRF_BACKENDS,
    PROB_FLOOR,
    PSEUDO_CRF,
    SEG_CRF,
    CRFBackend,
    CRFParams,
    dense_crf,
    dense_crf_batch,
    get_crf_backend,
    register_crf_backend,
)
