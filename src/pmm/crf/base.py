"""The dense-CRF settings (:class:`CRFParams`), the backend interface and the backend registry.

Backends (``pydensecrf_backend``, ``fast_backend``, ``torch_backend``) build on this module; the
package's entry point :mod:`pmm.crf` registers them and runs every CRF call.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import numpy as np

# Unary energies are -log p; clipping keeps them finite where a score is exactly zero.
PROB_FLOOR = 1e-5


@dataclass(frozen=True)
class CRFParams:
    """One fully-connected CRF setting (a ``crf.pseudo`` / ``crf.seg`` config node).

    Attributes:
        backend: a registered backend name (:data:`CRF_BACKENDS`) or a dotted path to a
            :class:`CRFBackend` subclass. ``fast`` (numba, no C++ build) by default; ``pydensecrf``,
            the exact reference, needs the optional extra ``pmm[pydensecrf]``.
        iterations: mean-field iterations.
        gauss_sxy, gauss_compat: spatial std (pixels) and Potts weight of the smoothness kernel.
        bilateral_sxy, bilateral_srgb, bilateral_compat: spatial std, colour std and Potts weight
            of the appearance kernel.
    """

    backend: str = "fast"
    iterations: int = 10
    gauss_sxy: float = 3.0
    gauss_compat: float = 10.0
    bilateral_sxy: float = 80.0
    bilateral_srgb: float = 13.0
    bilateral_compat: float = 10.0

    @classmethod
    def from_config(cls, node: Mapping[str, Any] | "CRFParams" | None, key: str = "crf") -> "CRFParams":
        """Build from a config mapping; an unknown key or a bad value is a one-line error naming ``key``."""
        from pmm.errors import PmmError

        if node is None:
            return cls()
        if isinstance(node, CRFParams):
            return node
        known = {f.name for f in fields(cls)}
        values = dict(node)
        unknown = sorted(set(values) - known)
        if unknown:
            raise PmmError(f"{key}.{unknown[0]}: unknown CRF setting; the settings are {', '.join(sorted(known))}")
        # The one place the CRF settings are range-checked (pmm.settings builds the crf node through here).
        for name, value in values.items():
            if name == "backend":
                continue
            number = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            if name == "iterations":
                good, expected = number and isinstance(value, int) and value >= 1, "an integer >= 1"
            elif name.endswith("_compat"):
                good, expected = number and value >= 0, "a number >= 0"
            else:  # kernel widths
                good, expected = number and value > 0, "a number > 0"
            if not good:
                shown = "null" if value is None else str(value).lower() if isinstance(value, bool) else value
                raise PmmError(f"{key}.{name}={shown}: expected {expected}")
        params = cls(**values)
        return params

    def with_backend(self, backend: str) -> "CRFParams":
        return replace(self, backend=backend)

    def as_dict(self) -> dict:
        return asdict(self)


# The pseudo-mask stage's settings (the paper's), and DeepLab's for the segmentation stage
# (cyclic relabelling and test), applied to the averaged softmax of the test-time augmentations.
PSEUDO_CRF = CRFParams()
SEG_CRF = CRFParams(gauss_sxy=1.0, gauss_compat=3.0, bilateral_sxy=67.0, bilateral_srgb=3.0, bilateral_compat=4.0)


class CRFBackend(ABC):
    """Mean-field inference of fully-connected CRFs; one call solves every problem of one image."""

    @abstractmethod
    def solve(self, image: np.ndarray, unaries: np.ndarray, params: CRFParams) -> np.ndarray:
        """Marginals of P CRF problems that share one image.

        Args:
            image: H x W x 3 uint8, C-contiguous (the colour order does not change the result).
            unaries: P x L x H x W float32 unary energies (``-log p``).
            params: the kernel settings.

        Returns:
            Q, P x L x H x W float32 marginals, summing to 1 over the L labels at every pixel.
        """


CRF_BACKENDS: dict[str, type[CRFBackend]] = {}
"""Registry of dense-CRF backends: name -> :class:`CRFBackend` subclass."""


def register_crf_backend(name: str):
    """Class decorator: make a :class:`CRFBackend` selectable as ``crf.*.backend=<name>``."""

    def decorate(cls: type[CRFBackend]) -> type[CRFBackend]:
        CRF_BACKENDS[name] = cls
        return cls

    return decorate
