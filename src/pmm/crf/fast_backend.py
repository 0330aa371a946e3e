"""``crf.*.backend=fast``: the dense CRFs of one image on one shared lattice, with frozen pixels.

The reference loop (``benchmarks/bench_crf.py --profile`` shows where it spends its time) builds a
Gaussian and a bilateral lattice and runs the mean-field iterations for every problem (both
kernels filter every label of every pixel through pydensecrf's permutohedral lattice). The
lattices depend on the image only, yet ``DenseCRF2D`` rebuilds them for every class (PPMG's K
two-label problems); and most pixels are settled after one iteration.

This backend keeps pydensecrf's model and its lattice arithmetic, and changes how the work is
shared:

- the bilateral lattice is built once per image, whatever the number of problems, by compiled
  code (``pmm.crf._lattice_jit``, numba): densecrf's ``Permutohedral`` float32 step for step
  (elevation, rounding, simplex ranks, barycentric weights, the ``[1/2, 1, 1/2]`` blur along the
  d + 1 axes, the ``1 / (1 + 2^-d)`` slice factor, symmetric normalisation), with its vertices
  found by sorting packed keys and numbered in key order (the blur then reads in order). Its
  per-pixel pass runs a block of pixels at a time, one coordinate after the other, so that the
  compiler vectorises it (SIMD), and its sorts are ``np.sort`` of the keys with the pixel index in
  their low bits (a third of ``np.argsort``'s time); both leave the lattice bit for bit as it was;
- with Potts compatibilities the marginals' sum to one saves a channel: a two-label problem needs
  only its foreground, ``K(1 - q) = K 1 - K q``, and an L-label problem L - 1 channels, with ``K 1``
  the image's constant; all channels (PPMG's K problems in the first iteration, or the L - 1
  labels) go through one splat / blur / slice;
- pixels that are saturated after the first iteration are frozen: their splat is kept in lattice
  space and only the remaining pixels are splatted and sliced (a two-label problem's iteration is
  a few compiled calls that add each kernel's message in place and apply the sigmoid and the
  freezing test in one pass, reading the problem's marginals where they are). Two labels: logit past +-12 (Q
  within 6e-6 of 0 or 1, about 5-15 % of PPMG's pixels stay); L labels: top logit 6 above the
  log-sum-exp of the others (max Q above 1 - 2.5e-3; on a segmenter's softmax 5-30 % stay), a
  margin that grows with the kernels' total Potts weight past the segmentation stage's;
- the spatial kernel is an exact separable Gaussian convolution (OpenCV) over the window of the
  active pixels, all channels at once; pydensecrf's 2-d lattice approximates that Gaussian
  (impulse-response std 2.9-3.1 px for sxy = 3, 0.95-1.02 px with a centre weight 0.135-0.162
  instead of 0.159 for the segmentation stage's sxy = 1) and is itself costly to build.

Its speed-up, pixel agreement and mIoU against the reference: ``python benchmarks/bench_crf.py``
(docs/benchmarks.md). With ``grid_gaussian = False, freeze_logit = label_freeze_logit = None`` the
marginals equal pydensecrf's to float rounding (tested).
"""

from __future__ import annotations

import math

import numpy as np

from pmm.crf.base import CRFBackend, CRFParams, register_crf_backend

__all__ = ["FastBackend", "LatticeKernel", "pixel_features"]


def pixel_features(image: np.ndarray, sxy: float, srgb: float | None = None) -> np.ndarray:
    """pydensecrf's ``DenseCRF2D`` features, N x d float32 in row-major pixel order.

    ``(x / sxy, y / sxy)`` for the Gaussian kernel; ``(x / sxy, y / sxy, r / srgb, g / srgb, b / srgb)``
    for the bilateral one (float32 divisions, as the C++ code does them).
    """
    height, width = image.shape[:2]
    sxy32 = np.float32(sxy)
    columns = [
        np.tile(np.arange(width, dtype=np.float32) / sxy32, height),
        np.repeat(np.arange(height, dtype=np.float32) / sxy32, width),
    ]
    if srgb is not None:
        colours = np.asarray(image).reshape(-1, 3)
        srgb32 = np.float32(srgb)
        columns += [colours[:, c].astype(np.float32) / srgb32 for c in range(3)]
    return np.stack(columns, axis=1)


class LatticeKernel:
    """A symmetric-normalised permutohedral kernel of an image: ``K~ q = n * (K (n * q))``, ``n = (K 1)^-1/2``.

    The lattice is compiled (``pmm.crf._lattice_jit``). All pixels are filtered at once, or, in the
    active-set iterations, only the active pixels are splatted and sliced, the frozen ones' splat
    kept as lattice values; the blur runs over the whole lattice, which is small (0.8-16 % of N
    vertices on the voc_samples photos with PPMG's bilateral settings).
    """

    def __init__(self, features: np.ndarray, weight: float):
        from pmm.crf import _lattice_jit as jit

        self.jit = jit
        self.weight = weight
        self.alpha = np.float32(1.0 / (1.0 + 2.0 ** (-features.shape[1])))
        self.offsets, weights, self.neighbours, self.num_vertices = jit.build_lattice(features)
        norm = jit.kernel_norm(self.offsets, weights, self.neighbours, self.num_vertices, self.alpha)
        weights *= norm[:, None]  # splat and slice weights with the symmetric normalisation folded in
        self.scaled_weights = weights

    def apply(self, values: np.ndarray, factor: float = 1.0) -> np.ndarray:
        """``factor * K~ values`` of all pixels, N or N x C float32 values."""
        jit = self.jit
        columns = np.ascontiguousarray(values.reshape(values.shape[0], -1), dtype=np.float32)
        lattice = jit.blur(jit.splat_all(self.offsets, self.scaled_weights, columns, self.num_vertices), self.neighbours)
        out = jit.slice_all(self.offsets, self.scaled_weights, lattice, np.float32(factor) * self.alpha)
        return out.reshape(values.shape)

    def start(self, active: np.ndarray, q: np.ndarray) -> list:
        """State of one problem's active-set iteration (q: all N marginals): active rows, frozen splat, buffers."""
        jit = self.jit
        frozen = jit.splat_all(self.offsets, self.scaled_weights, q.astype(np.float64)[:, None], self.num_vertices)[:, 0]
        jit.splat_pixels(self.offsets, self.scaled_weights, active, q, -1.0, frozen)
        return [active, frozen, np.empty_like(frozen), np.zeros_like(frozen)]

    def message(self, state: list, q: np.ndarray, factor: float, x: np.ndarray) -> None:
        """``x += factor * K~ q`` at the active pixels."""
        active, frozen, work, scratch = state
        self.jit.add_lattice_message(x, self.offsets, self.scaled_weights, self.neighbours, frozen, active, q,
                                     float(factor * self.alpha), work, scratch)

    def freeze(self, state: list, done: np.ndarray, q: np.ndarray) -> None:
        """Move the ``done`` active pixels (a mask over the active ones) to the frozen lattice values."""
        self.jit.splat_pixels_masked(self.offsets, self.scaled_weights, state[0], q, done, state[1])
        state[0] = state[0][~done]

    # One L-label problem: all label channels go through the lattice together (N x L values).

    def start_labels(self, active: np.ndarray, q: np.ndarray) -> list:
        """State of the active-set iterations of one multi-label problem (q: N x C): active rows, frozen splat."""
        frozen_rows = np.setdiff1d(np.arange(q.shape[0]), active, assume_unique=True)
        frozen = self.jit.splat(self.offsets, self.scaled_weights, q[frozen_rows], frozen_rows, self.num_vertices)
        return [active, frozen, np.empty_like(frozen), np.zeros_like(frozen)]

    def message_labels(self, state: list, q: np.ndarray, q_active: np.ndarray, factor: float) -> np.ndarray:
        """``factor * K~ q`` at the active pixels, all channels (N' x C)."""
        active, frozen, work, scratch = state
        return self.jit.filter_rows_labels(self.offsets, self.scaled_weights, self.neighbours, frozen, active, q_active,
                                           np.float32(factor) * self.alpha, work, scratch)

    def freeze_labels(self, state: list, done: np.ndarray, q_active: np.ndarray) -> None:
        active, frozen = state[:2]
        self.jit.splat_rows_labels(self.offsets, self.scaled_weights, active[done], q_active[done], frozen)
        state[0] = active[~done]

class GridGaussianKernel:
    """The spatial kernel as a separable Gaussian blur of the pixel grid (zero outside the image).

    pydensecrf filters it through a 2-d permutohedral lattice, whose impulse response is a slightly
    position-dependent Gaussian of standard deviation ~ sxy (2.93-3.09 px for sxy = 3); an exact
    Gaussian of std sxy replaces it at a fraction of the cost (no lattice to build). Symmetric
    normalisation as pydensecrf's.
    """

    def __init__(self, height: int, width: int, sxy: float, weight: float):
        import cv2

        self.weight = weight
        self.shape = (height, width)
        self.sigma = float(sxy)
        self.radius = int(math.ceil(4.0 * self.sigma))
        self.taps = cv2.getGaussianKernel(2 * self.radius + 1, self.sigma, cv2.CV_32F)
        self.norm = 1.0 / np.sqrt(self._blur(np.ones(self.shape, dtype=np.float32)).astype(np.float64) + 1e-20)
        self.norm2d = self.norm.astype(np.float32)
        self.norm = self.norm2d.reshape(-1)

    def _blur(self, image: np.ndarray) -> np.ndarray:
        import cv2

        return cv2.sepFilter2D(image, cv2.CV_32F, self.taps, self.taps, borderType=cv2.BORDER_CONSTANT)

    def apply(self, values: np.ndarray, factor: float = 1.0) -> np.ndarray:
        """``factor * K~ values`` of all pixels, N or N x C float32 values (all channels in one blur)."""
        height, width = self.shape
        flat = values.reshape(values.shape[0], -1)
        scaled = (flat * self.norm[:, None]).astype(np.float32, copy=False).reshape(height, width, -1)
        out = self._blur(scaled).reshape(flat.shape)
        out *= (np.float32(factor) * self.norm)[:, None]
        return out.reshape(values.shape)

    def start(self, active: np.ndarray, q: np.ndarray) -> list:
        rows, cols = np.divmod(active, self.shape[1])
        return [active, self._box(active), rows, cols]

    def _box(self, active: np.ndarray) -> tuple[int, int, int, int]:
        height, width = self.shape
        if active.size == 0:
            return (0, 0, 0, 0)
        rows, cols = np.divmod(active, width)
        margin = self.radius
        return (max(int(rows[0]) - margin, 0), min(int(rows[-1]) + margin + 1, height),
                max(int(cols.min()) - margin, 0), min(int(cols.max()) + margin + 1, width))

    def message(self, state: list, q: np.ndarray, factor: float, x: np.ndarray) -> None:
        """``x += factor * K~ q`` at the active pixels."""
        from pmm.crf import _lattice_jit as jit

        active, box, rows, cols = state
        height, width = self.shape
        # Blur only the window that the active pixels' kernels reach (zero padding stays exact:
        # the window's border pixels get their outside neighbours from the margin).
        top, bottom, left, right = box
        window = (q.reshape(height, width)[top:bottom, left:right] * self.norm2d[top:bottom, left:right])
        jit.add_window_message(x, self._blur(window), rows, cols, top, left, self.norm2d, np.float32(factor))

    def freeze(self, state: list, done: np.ndarray, q: np.ndarray) -> None:
        keep = ~done
        state[0], state[2], state[3] = state[0][keep], state[2][keep], state[3][keep]
        state[1] = self._box(state[0])

    def start_labels(self, active: np.ndarray, q: np.ndarray) -> list:
        return [active, self._box(active)]

    def message_labels(self, state: list, q: np.ndarray, q_active: np.ndarray, factor: float) -> np.ndarray:
        """``factor * K~ q`` at the active pixels, all labels: one blur of the window they reach."""
        active, box = state
        height, width = self.shape
        top, bottom, left, right = box
        window = q.reshape(height, width, -1)[top:bottom, left:right] * self.norm2d[top:bottom, left:right, None]
        blurred = self._blur(window).reshape(bottom - top, right - left, -1)
        rows, cols = np.divmod(active, width)
        return blurred[rows - top, cols - left] * (self.norm[active] * np.float32(factor))[:, None]

    def freeze_labels(self, state: list, done: np.ndarray, q_active: np.ndarray) -> None:
        state[0] = state[0][~done]
        state[1] = self._box(state[0])

def _image_kernels(image: np.ndarray, params: CRFParams, grid_gaussian: bool = True) -> list:
    kernels = []
    height, width = image.shape[:2]
    if params.gauss_compat:
        if grid_gaussian:
            kernels.append(GridGaussianKernel(height, width, params.gauss_sxy, float(params.gauss_compat)))
        else:
            kernels.append(LatticeKernel(pixel_features(image, params.gauss_sxy), float(params.gauss_compat)))
    if params.bilateral_compat:
        kernels.append(LatticeKernel(pixel_features(image, params.bilateral_sxy, params.bilateral_srgb),
                                     float(params.bilateral_compat)))
    return kernels


def _sigmoid(x: np.ndarray) -> np.ndarray:
    from scipy.special import expit

    return expit(x.astype(np.float32, copy=False))


# A pixel whose foreground-minus-background logit exceeds this in magnitude (Q within 6e-6 of 0 or 1)
# after the first iteration is frozen: it keeps its Q and stops being filtered. 12 trades agreement
# with pydensecrf against speed (the figures at 10, 12 and 14: docs/benchmarks.md).
FREEZE_LOGIT = 12.0
# The same for one multi-label problem (the segmentation stage's): a pixel is frozen once its top
# logit beats the log-sum-exp of the others by this much (max Q above 1 - 2.5e-3). Lower than the
# two-label value because the full-lattice blur stays per iteration, so only the splat and slice
# shrink; on segmenter-like softmaxes of the voc_samples photos 6 changes 0.0003 % of pixels more
# than exact iteration (docs/benchmarks.md). That value holds for kernels of total Potts weight up to
# LABEL_FREEZE_WEIGHT (the segmentation stage's 3 + 4); heavier kernels move a logit further after
# the first iteration, so the threshold grows in proportion (the multi-crop round's rough masks,
# 3 + 10: 11.1; at 6 they lost 0.2 % of pixels to freezing, docs/benchmarks.md).
LABEL_FREEZE_LOGIT = 6.0
LABEL_FREEZE_WEIGHT = 7.0
# Later iterations freeze their saturated pixels only when they are at least this share of the active ones.
FREEZE_BATCH = 0.1


def binary_mean_field(kernels: list, unaries: np.ndarray, iterations: int,
                      freeze_logit: float | None = FREEZE_LOGIT) -> np.ndarray:
    """Foreground marginals, N x P, of P two-label Potts problems (unaries P x 2 x N) sharing the kernels.

    With Potts compatibilities ``x_fg - x_bg = (U_bg - U_fg) + sum_k w_k (2 K~q - K~1)``, so one
    channel per problem is filtered. The first iteration filters every pixel of all P problems at
    once; then pixels with ``|x| > freeze_logit`` are frozen (None: exact iteration everywhere), and
    each problem iterates over its remaining pixels only.
    """
    num_problems = unaries.shape[0]
    drive = (unaries[:, 0] - unaries[:, 1]).T.astype(np.float32)  # N x P
    # One pass over each kernel gives K~1 (column 0) and the first iteration's messages.
    first = np.empty((drive.shape[0], num_problems + 1), dtype=np.float32)
    first[:, 0] = 1.0
    first[:, 1:] = _sigmoid(drive)
    offset = drive
    logits = np.zeros_like(drive)
    for kernel in kernels:
        filtered = kernel.apply(first, kernel.weight)
        offset -= filtered[:, :1]
        logits += 2.0 * filtered[:, 1:]
    logits += offset
    q = _sigmoid(logits)
    if iterations <= 1:
        return q
    if freeze_logit is None:
        for _ in range(iterations - 1):
            logits = offset.copy()
            for kernel in kernels:
                logits += kernel.apply(q, 2.0 * kernel.weight)
            q = _sigmoid(logits)
        return q
    q = np.ascontiguousarray(q.T)  # P x N
    logits = np.ascontiguousarray(logits.T)
    offset = np.ascontiguousarray(offset.T)
    from pmm.crf import _lattice_jit as jit

    limit = np.float32(freeze_logit)
    for p in range(num_problems):
        q_p = q[p]
        active = np.flatnonzero(np.abs(logits[p]) <= freeze_logit)
        states = [kernel.start(active, q_p) for kernel in kernels]
        for _ in range(iterations - 1):
            if active.size == 0:
                break
            x = offset[p, active]
            for kernel, state in zip(kernels, states):
                kernel.message(state, q_p, 2.0 * kernel.weight, x)
            done, count = jit.settle_binary(x, q_p, active, limit)
            # Compacting the active rows costs a pass over them: only worth it for a real share.
            if count > FREEZE_BATCH * active.size:
                for kernel, state in zip(kernels, states):
                    kernel.freeze(state, done, q_p)
                active = active[~done]
    return q.T


def label_freeze_threshold(freeze_logit: float | None, params: CRFParams) -> float | None:
    """The multi-label freezing threshold for these kernels: ``freeze_logit`` scaled by their total
    Potts weight over :data:`LABEL_FREEZE_WEIGHT`, never below ``freeze_logit`` (None: no freezing)."""
    if freeze_logit is None:
        return None
    weight = float(params.gauss_compat) + float(params.bilateral_compat)
    return float(freeze_logit) * max(1.0, weight / LABEL_FREEZE_WEIGHT)


def multi_label_mean_field(kernels: list, unaries: np.ndarray, iterations: int,
                           freeze_logit: float | None = LABEL_FREEZE_LOGIT) -> np.ndarray:
    """Marginals, N x L, of one L-label Potts problem (unaries L x N) on the image's kernels.

    densecrf's update ``x_l = -U_l + sum_k w_k K~_k Q_l``, ``Q = softmax(x)``. The marginals sum to
    one, so ``K~ Q_last = K~ 1 - sum_{l < last} K~ Q_l``: L - 1 channels are filtered (splatted,
    blurred and sliced together), ``K~ 1`` once. The first iteration filters every pixel; then pixels
    whose top logit beats the log-sum-exp of the others by more than ``freeze_logit`` (1 - max Q <
    e^-freeze_logit) are frozen: their splat is kept in lattice space and only the remaining pixels
    are splatted and sliced. None: exact iteration everywhere.
    """
    from pmm.crf import _lattice_jit as jit

    neg_unary = np.ascontiguousarray(-unaries.T, dtype=np.float32)  # N x L
    num_pixels, num_labels = neg_unary.shape
    filtered = num_labels - 1
    q = jit.softmax_rows(neg_unary)
    # One pass over each kernel gives K~1 (the last column) and the first iteration's messages.
    first = q.copy()
    first[:, filtered] = 1.0
    messages = np.zeros((num_pixels, num_labels), dtype=np.float32)
    for kernel in kernels:
        messages += kernel.apply(first, kernel.weight)
    ones_message = messages[:, filtered].copy()  # sum_k w_k K~_k 1

    def update(x: np.ndarray, messages: np.ndarray, ones: np.ndarray) -> np.ndarray:
        x[:, :filtered] += messages[:, :filtered]
        x[:, filtered] += ones - messages[:, :filtered].sum(axis=1)
        return x

    logits = update(neg_unary.copy(), messages, ones_message)
    q = jit.softmax_rows(logits)
    if freeze_logit is None:
        for _ in range(iterations - 1):
            values = np.ascontiguousarray(q[:, :filtered])
            messages = sum(kernel.apply(values, kernel.weight) for kernel in kernels)
            q = jit.softmax_rows(update(neg_unary.copy(), messages, ones_message))
        return q
    if iterations <= 1:
        return q
    active = np.flatnonzero(~jit.saturated_rows(logits, freeze_logit))
    values = np.ascontiguousarray(q[:, :filtered])
    states = [kernel.start_labels(active, values) for kernel in kernels]
    for _ in range(iterations - 1):
        if active.size == 0:
            break
        values_active = values[active]
        messages = sum(kernel.message_labels(state, values, values_active, kernel.weight)
                       for kernel, state in zip(kernels, states))
        x = update(neg_unary[active], messages, ones_message[active])
        q_active = jit.softmax_rows(x)
        q[active] = q_active
        values[active] = q_active[:, :filtered]
        done = jit.saturated_rows(x, freeze_logit)
        # Compacting the active rows costs a pass over them: only worth it for a real share.
        if np.count_nonzero(done) > FREEZE_BATCH * active.size:
            values_active = values[active]
            for kernel, state in zip(kernels, states):
                kernel.freeze_labels(state, done, values_active)
            active = active[~done]
    return q


@register_crf_backend("fast")
class FastBackend(CRFBackend):
    """One lattice per image shared by all its problems and labels; frozen pixels (CPU, numba + OpenCV)."""

    grid_gaussian = True
    freeze_logit: float | None = FREEZE_LOGIT  # two-label problems
    # Problems with three labels or more, at kernels of total weight up to LABEL_FREEZE_WEIGHT
    # (label_freeze_threshold scales it for heavier ones).
    label_freeze_logit: float | None = LABEL_FREEZE_LOGIT

    def solve(self, image: np.ndarray, unaries: np.ndarray, params: CRFParams) -> np.ndarray:
        num_problems, num_labels, height, width = unaries.shape
        if num_labels == 1:
            return np.ones(unaries.shape, dtype=np.float32)
        if num_labels == 2:
            kernels = _image_kernels(image, params, self.grid_gaussian)
            flat = unaries.reshape(num_problems, num_labels, height * width)
            fg = binary_mean_field(kernels, flat, int(params.iterations), self.freeze_logit).T.reshape(num_problems, height, width)
            return np.stack([1.0 - fg, fg], axis=1).astype(np.float32)
        kernels = _image_kernels(image, params, self.grid_gaussian)
        flat = unaries.reshape(num_problems, num_labels, height * width)
        freeze = label_freeze_threshold(self.label_freeze_logit, params)
        q = [multi_label_mean_field(kernels, unary, int(params.iterations), freeze) for unary in flat]
        return np.stack([marginals.T.reshape(num_labels, height, width) for marginals in q]).astype(np.float32)
