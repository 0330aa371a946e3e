"""The one dense-CRF entry point of pmm: settings (:class:`CRFParams`) and pluggable backends.

Every CRF call of the package goes through :func:`dense_crf_batch` (or its one-problem form
:func:`dense_crf`). A backend receives *all* CRF problems of one image in one call — PPMG's K
two-label problems, or the segmentation stage's single K-label problem — so a fast backend can
share the work that depends on the image only (the bilateral lattice) between them.

Adding a backend is one class::

    @register_crf_backend("mine")
    class MyBackend(CRFBackend):
        def solve(self, image, unaries, params): ...

and ``crf.pseudo.backend=mine`` (or a dotted path ``crf.pseudo.backend=mypkg.crf.MyBackend``
without registering).
"""

from __future__ import annotations

import functools

import numpy as np

from pmm.crf.base import (CRF_BACKENDS, PROB_FLOOR, PSEUDO_CRF, SEG_CRF, CRFBackend, CRFParams,
                          register_crf_backend)


def _load_builtin_backends() -> None:
    # Imported for their registration side effect; each keeps its heavy imports lazy.
    from pmm.crf import pydensecrf_backend  # noqa: F401

    try:
        from pmm.crf import torch_backend  # noqa: F401
    except ImportError:
        pass
    try:
        from pmm.crf import fast_backend  # noqa: F401
    except ImportError:
        pass


@functools.lru_cache(maxsize=None)
def get_crf_backend(name: str) -> CRFBackend:
    """The (cached) backend instance for a registry name or a dotted class path.

    Raises:
        ValueError: unknown name, naming the registered ones.
        PmmError: ``pydensecrf`` without pydensecrf2 installed (the optional extra ``pmm[pydensecrf]``).
    """
    _load_builtin_backends()
    if name in CRF_BACKENDS:
        return CRF_BACKENDS[name]()
    if "." in name:
        from hydra.utils import get_class

        try:
            cls = get_class(name)
        except Exception as error:  # noqa: BLE001 - any import failure is the same user error
            raise ValueError(f"CRF backend {name!r} could not be imported ({error})") from None
        if not (isinstance(cls, type) and issubclass(cls, CRFBackend)):
            raise ValueError(f"CRF backend {name!r} is not a pmm.crf.CRFBackend subclass")
        return cls()
    raise ValueError(f"unknown CRF backend {name!r}; choose one of {', '.join(sorted(CRF_BACKENDS))} or a dotted class path")


def _check_image(image: np.ndarray, height: int, width: int) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be HxWx3 (RGB), got shape {image.shape}")
    if image.shape[:2] != (height, width):
        raise ValueError(
            f"image is {image.shape[0]}x{image.shape[1]} but probs are {height}x{width}: resize the probabilities to the image"
        )
    if image.dtype != np.uint8:
        if np.issubdtype(image.dtype, np.floating) and image.size and image.max() <= 1.0:
            raise ValueError("image must be uint8 in [0, 255]; got floats in [0, 1]: multiply by 255 first")
        image = np.clip(image, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(image)


def unary_from_probs(probs: np.ndarray) -> np.ndarray:
    """``-log(max(p, 1e-5))`` as float32; the probabilities are used as given, not re-normalised."""
    return (-np.log(np.clip(np.asarray(probs, dtype=np.float64), PROB_FLOOR, None))).astype(np.float32)


def dense_crf_batch(image: np.ndarray, probs: np.ndarray, params: CRFParams = PSEUDO_CRF) -> np.ndarray:
    """Refine P per-pixel probability stacks of one image with fully-connected CRFs.

    The probabilities are used as given (PPMG's ``[(1 - S) ** alpha, S]`` does not sum to 1 and its
    imbalance is the point), with unary ``-log(max(p, 1e-5))``.

    Args:
        image: H x W x 3 uint8 image.
        probs: P x L x H x W scores of P problems with L labels each.
        params: kernel settings and backend.

    Returns:
        Q, P x L x H x W float32 marginals.

    Raises:
        ValueError: on mismatched shapes, an unknown backend, or a non-positive iteration count.
    """
    probs = np.asarray(probs)
    if probs.ndim != 4 or probs.shape[1] < 1:
        raise ValueError(f"probs must be P x L x H x W with at least one label, got shape {probs.shape}")
    image = _check_image(image, probs.shape[2], probs.shape[3])
    if int(params.iterations) < 1:
        raise ValueError(f"iterations must be >= 1, got {params.iterations}")
    backend = get_crf_backend(params.backend)
    if probs.shape[0] == 0:
        return np.zeros(probs.shape, dtype=np.float32)
    q = backend.solve(image, unary_from_probs(probs), params)
    if q.shape != probs.shape:
        raise RuntimeError(f"CRF backend {params.backend!r} returned shape {q.shape} for problems of shape {probs.shape}")
    return q.astype(np.float32, copy=False)


def dense_crf(image: np.ndarray, probs: np.ndarray, params: CRFParams = PSEUDO_CRF) -> np.ndarray:
    """One CRF problem: L x H x W probabilities -> L x H x W marginals (see :func:`dense_crf_batch`)."""
    probs = np.asarray(probs)
    if probs.ndim != 3 or probs.shape[0] < 1:
        raise ValueError(f"probs must be LxHxW with at least one label, got shape {probs.shape}")
    return dense_crf_batch(image, probs[None], params)[0]


__all__ = [
    "CRFBackend",
    "CRFParams",
    "CRF_BACKENDS",
    "PROB_FLOOR",
    "PSEUDO_CRF",
    "SEG_CRF",
    "dense_crf",
    "dense_crf_batch",
    "get_crf_backend",
    "register_crf_backend",
    "unary_from_probs",
]
