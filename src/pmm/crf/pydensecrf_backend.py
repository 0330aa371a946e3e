"""The exact reference backend: pydensecrf2's ``DenseCRF2D``, one instance per problem (CPU).

pydensecrf2 (it imports as ``pydensecrf``) is a C++ extension that pip builds with the machine's
compiler, so it is an optional extra: ``pip install "pmm[pydensecrf]"``. Without it every other
backend works, and choosing this one is a one-line error (:func:`missing_message`), at start-up
(:mod:`pmm.settings` checks every ``crf.*.backend``) and here when the backend is built.
"""

from __future__ import annotations

import numpy as np

from pmm.crf.base import CRFBackend, CRFParams, register_crf_backend

NAME = "pydensecrf"
INSTALL = 'pip install "pmm[pydensecrf]"'


def unavailable_reason() -> str | None:
    """Why this backend cannot run in this environment, or None when ``pydensecrf.densecrf`` imports."""
    import importlib.util

    try:
        if importlib.util.find_spec("pydensecrf") is None:  # also where sys.modules["pydensecrf"] is None
            return "pydensecrf2 is not installed"
        import pydensecrf.densecrf  # noqa: F401
    except ImportError as error:
        detail = " ".join(str(error).split()) or type(error).__name__
        return f"pydensecrf2 is installed but its C extension does not load ({detail})"
    return None


def missing_message(key: str | None, reason: str) -> str:
    """The one line for ``backend=pydensecrf`` without a working pydensecrf2; ``key``: the config key, if known."""
    if key:
        return (f"{key}={NAME}: {reason} (the exact reference CRF, an optional C++ extension); "
                f"install it with {INSTALL}, or choose {key}=fast")
    return (f"CRF backend {NAME!r}: {reason} (the exact reference CRF, an optional C++ extension); "
            f"install it with {INSTALL}, or choose backend=fast (crf.pseudo.backend, crf.seg.backend, crf.rough.backend)")


def check_available(key: str | None = None) -> None:
    """Raise :class:`pmm.errors.PmmError` (one line naming ``key``) when pydensecrf2 cannot be imported."""
    reason = unavailable_reason()
    if reason is not None:
        from pmm.errors import PmmError

        raise PmmError(missing_message(key, reason))


def solve_one(image: np.ndarray, unary: np.ndarray, params: CRFParams) -> np.ndarray:
    """Mean-field marginals of one L x H x W unary stack with Krähenbühl & Koltun's Potts kernels."""
    try:
        import pydensecrf.densecrf as dcrf  # imported lazily: only this backend needs the C extension
    except ImportError:
        check_available()  # the one-line error; checked only on failure, not once per CRF problem
        raise

    num_labels, height, width = unary.shape
    crf = dcrf.DenseCRF2D(width, height, num_labels)
    # The C++ side reads raw buffers, so both arrays must be C-contiguous with the exact dtypes, and
    # Cython's typed memoryview refuses a read-only one (an image straight from np.asarray(PIL image)).
    crf.setUnaryEnergy(np.ascontiguousarray(unary.reshape(num_labels, -1), dtype=np.float32))
    # Scalar compat values make PottsCompatibility weights.
    crf.addPairwiseGaussian(sxy=params.gauss_sxy, compat=params.gauss_compat)
    crf.addPairwiseBilateral(sxy=params.bilateral_sxy, srgb=params.bilateral_srgb,
                             rgbim=np.require(image, np.uint8, ["C", "W"]), compat=params.bilateral_compat)
    q = crf.inference(int(params.iterations))
    return np.asarray(q, dtype=np.float32).reshape(num_labels, height, width)


@register_crf_backend(NAME)
class PyDenseCRFBackend(CRFBackend):
    """The straightforward loop: one ``DenseCRF2D`` per problem, deterministic."""

    def __init__(self) -> None:
        check_available()  # a run checks crf.*.backend at start-up; this covers direct use and dotted paths

    def solve(self, image: np.ndarray, unaries: np.ndarray, params: CRFParams) -> np.ndarray:
        return np.stack([solve_one(image, unary, params) for unary in unaries])
