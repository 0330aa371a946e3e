"""Fully-connected (dense) CRF refinement of per-pixel label probabilities.

Backends are looked up by name in :data:`CRF_BACKENDS`, so a faster implementation (e.g. a GPU
one) can be registered later without touching the callers.
"""

from __future__ import annotations

from typing import Callable, Dict

import numpy as np

# Unary energies are -log p; clipping keeps them finite where a score is exactly zero.
PROB_FLOOR = 1e-5

CrfBackend = Callable[..., np.ndarray]


def _check_image_probs(image: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validate an HxWx3 image and an LxHxW probability stack of the same size."""
    image = np.asarray(image)
    probs = np.asarray(probs)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be HxWx3 (RGB), got shape {image.shape}")
    if probs.ndim != 3 or probs.shape[0] < 1:
        raise ValueError(f"probs must be LxHxW with at least one label, got shape {probs.shape}")
    if probs.shape[1:] != image.shape[:2]:
        raise ValueError(
            f"image is {image.shape[0]}x{image.shape[1]} but probs are {probs.shape[1]}x{probs.shape[2]}: "
            "resize the probabilities to the image"
        )
    return image, probs


def _pydensecrf_backend(
    image: np.ndarray,
    unary: np.ndarray,
    *,
    iterations: int,
    gauss_sxy: float,
    gauss_compat: float,
    bilateral_sxy: float,
    bilateral_srgb: float,
    bilateral_compat: float,
) -> np.ndarray:
    """Mean-field inference with pydensecrf2's ``DenseCRF2D`` (CPU, deterministic)."""
    import pydensecrf.densecrf as dcrf  # imported lazily: only this backend needs the C extension

    num_labels, height, width = unary.shape
    crf = dcrf.DenseCRF2D(width, height, num_labels)
    # The C++ side reads raw buffers, so both arrays must be C-contiguous with the exact dtypes.
    crf.setUnaryEnergy(np.ascontiguousarray(unary.reshape(num_labels, -1), dtype=np.float32))
    # Scalar compat values make PottsCompatibility weights.
    crf.addPairwiseGaussian(sxy=gauss_sxy, compat=gauss_compat)
    crf.addPairwiseBilateral(
        sxy=bilateral_sxy,
        srgb=bilateral_srgb,
        rgbim=np.ascontiguousarray(image, dtype=np.uint8),
        compat=bilateral_compat,
    )
    q = crf.inference(int(iterations))
    return np.asarray(q, dtype=np.float32).reshape(num_labels, height, width)


CRF_BACKENDS: Dict[str, CrfBackend] = {"pydensecrf": _pydensecrf_backend}
"""Registry of dense-CRF backends: name -> ``fn(image, unary, *, iterations, gauss_sxy, ...)``."""


def dense_crf(
    image: np.ndarray,
    probs: np.ndarray,
    backend: str = "pydensecrf",
    iterations: int = 10,
    gauss_sxy: float = 3,
    gauss_compat: float = 10,
    bilateral_sxy: float = 80,
    bilateral_srgb: float = 13,
    bilateral_compat: float = 10,
) -> np.ndarray:
    """Refine a per-pixel probability stack with a fully-connected CRF.

    The probabilities are used as given (not re-normalised; PPMG's ``[(1 - S) ** alpha, S]`` does
    not sum to 1 and its imbalance is the point), with unary ``-log(max(p, 1e-5))``.

    Args:
        image: HxWx3 uint8 image; the colour order does not matter for the result.
        probs: LxHxW scores of the L labels.
        backend: a key of :data:`CRF_BACKENDS`.
        iterations: mean-field iterations.
        gauss_sxy: spatial std of the Gaussian (smoothness) kernel, in pixels.
        gauss_compat: Potts weight of the Gaussian kernel.
        bilateral_sxy: spatial std of the bilateral (appearance) kernel, in pixels.
        bilateral_srgb: colour std of the bilateral kernel.
        bilateral_compat: Potts weight of the bilateral kernel.

    Returns:
        Q, the LxHxW float32 marginals (they sum to 1 over labels at every pixel).

    Raises:
        ValueError: on mismatched shapes, an unknown backend, or a non-positive iteration count.
    """
    image, probs = _check_image_probs(image, probs)
    if backend not in CRF_BACKENDS:
        raise ValueError(f"unknown CRF backend {backend!r}; choose one of {sorted(CRF_BACKENDS)}")
    if int(iterations) < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")
    if image.dtype != np.uint8:
        if np.issubdtype(image.dtype, np.floating) and image.size and image.max() <= 1.0:
            raise ValueError("image must be uint8 in [0, 255]; got floats in [0, 1]: multiply by 255 first")
        image = np.clip(image, 0, 255).astype(np.uint8)
    unary = -np.log(np.clip(probs.astype(np.float64), PROB_FLOOR, None))
    return CRF_BACKENDS[backend](
        image,
        unary.astype(np.float32),
        iterations=iterations,
        gauss_sxy=gauss_sxy,
        gauss_compat=gauss_compat,
        bilateral_sxy=bilateral_sxy,
        bilateral_srgb=bilateral_srgb,
        bilateral_compat=bilateral_compat,
    )
