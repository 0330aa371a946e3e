"""The exact reference backend: pydensecrf2's ``DenseCRF2D``, one instance per problem (CPU)."""

from __future__ import annotations

import numpy as np

from pmm.crf.base import CRFBackend, CRFParams, register_crf_backend


def solve_one(image: np.ndarray, unary: np.ndarray, params: CRFParams) -> np.ndarray:
    """Mean-field marginals of one L x H x W unary stack with Krähenbühl & Koltun's Potts kernels."""
    import pydensecrf.densecrf as dcrf  # imported lazily: only this backend needs the C extension

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


@register_crf_backend("pydensecrf")
class PyDenseCRFBackend(CRFBackend):
    """The straightforward loop: one ``DenseCRF2D`` per problem, deterministic."""

    def solve(self, image: np.ndarray, unaries: np.ndarray, params: CRFParams) -> np.ndarray:
        return np.stack([solve_one(image, unary, params) for unary in unaries])
