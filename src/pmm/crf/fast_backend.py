"""``crf.*.backend=fast``: PPMG's two-label dense CRFs of one image, solved together, about 3x+ per core.

Where the reference loop spends its time (``benchmarks/bench_crf.py --profile``, 513 x 513 VOC
photos, one core, per two-label problem): 25 ms building the Gaussian lattice, 60 ms building the
bilateral lattice and 267 ms in the 10 mean-field iterations (both kernels filter both labels of
every pixel through pydensecrf's permutohedral lattice). The lattices depend on the image only, yet
``DenseCRF2D`` rebuilds them for every class; and most pixels are settled after one iteration.

This backend keeps pydensecrf's model and its bilateral lattice arithmetic, and changes how the work
is shared:

- the bilateral lattice is built once per image (vectorised numpy, float32 step for step like
  densecrf's ``Permutohedral``: elevation, rounding, simplex ranks, barycentric weights, the
  ``[1/2, 1, 1/2]`` blur along the d + 1 axes, the ``1 / (1 + 2^-d)`` slice factor, symmetric
  normalisation), whatever the number of classes; splat and slice are one sparse N x M matrix;
- with Potts compatibilities a two-label problem needs only its foreground channel:
  ``K(1 - q) = K 1 - K q`` with ``K 1`` the image's constant; the first iteration filters all K
  problems at once as the columns of one matrix;
- pixels whose logit passes +-12 after the first iteration (Q within 6e-6 of 0 or 1) are frozen:
  their splat is kept in lattice space and only the remaining pixels (about 5-15 %) are filtered;
- the spatial kernel (sxy = 3) is an exact separable Gaussian convolution (OpenCV) over the window
  of the active pixels; pydensecrf's 2-d lattice approximates that Gaussian (impulse-response std
  2.9-3.1 px), and building it cost 7 % of the reference's time.

Multi-label problems (the segmentation stage, P = 1) go to the pydensecrf loop: its SSE filtering of
L channels beat a numpy path of this kind (1.7x slower, measured at L = 3 and 21).

Measured (benchmarks/RESULTS.md; 14 voc_samples photos, CAMs from the ground truth, alpha 13,
process CPU time, a 2-core machine shared at load average 7-9): PPMG end to end 2.75-2.8x the
reference loop's images/s per core (the CRF calls alone, freezing at 10: 3.2-3.5x at that load, 4.1x
at load ~1), label maps equal to the reference's on 99.91 % of the pixels, mIoU 0.7775 vs 0.7790.
With ``grid_gaussian = False, freeze_logit = None`` the
marginals equal pydensecrf's to float rounding (max |dQ| 0.006, 100 % of the labels; tested).
"""

from __future__ import annotations

import math

import numpy as np

from pmm.crf import CRFBackend, CRFParams, get_crf_backend, register_crf_backend

__all__ = ["FastBackend", "PermutohedralLattice", "pixel_features"]


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


def _group(codes: np.ndarray, span: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``np.unique(codes, return_index=True, return_inverse=True)`` for codes in ``[0, span)``.

    One sort of ``code << b | index`` (numpy's SIMD sort) instead of an argsort, when both fit in 63 bits.
    """
    n = int(codes.size)
    bits = max(1, (n - 1).bit_length())
    if span >= 2 ** (62 - bits):
        unique, first, inverse = np.unique(codes, return_index=True, return_inverse=True)
        return unique, first, inverse.reshape(-1)
    packed = (codes << bits) | np.arange(n, dtype=np.int64)
    packed.sort()
    order = packed & ((1 << bits) - 1)
    packed >>= bits
    new = np.empty(n, dtype=bool)
    new[0] = True
    np.not_equal(packed[1:], packed[:-1], out=new[1:])
    inverse = np.empty(n, dtype=np.int64)
    inverse[order] = np.cumsum(new) - 1
    return packed[new], order[new], inverse


class PermutohedralLattice:
    """Krähenbühl's permutohedral lattice (densecrf's ``Permutohedral``), built vectorised in numpy.

    The arithmetic follows ``Permutohedral::init`` / ``seqCompute`` step by step in float32, so a
    filter agrees with pydensecrf's to rounding.

    Attributes:
        num_points: N.
        dim: d, the feature dimension.
        num_vertices: M, the lattice points that carry a value.
        offsets: N x (d + 1) lattice point (intp) of each simplex vertex of each feature.
        weights: N x (d + 1) float32 barycentric weights.
        neighbours: (d + 1) x 2 x M blur neighbours (intp) along each lattice axis; M marks a missing one.
        alpha: the slice factor ``1 / (1 + 2^-d)``.
    """

    # Pixels are located in cache-sized chunks: the per-pixel stage is a few dozen numpy passes.
    CHUNK = 32768

    def __init__(self, features: np.ndarray):
        features = np.asarray(features, dtype=np.float32)
        if features.ndim != 2 or features.shape[1] < 1 or features.shape[0] < 1:
            raise ValueError(f"features must be N x d with N, d >= 1, got shape {features.shape}")
        n, d = features.shape
        columns = np.ascontiguousarray(features.T)
        self.num_points, self.dim = n, d
        self.alpha = 1.0 / (1.0 + 2.0 ** (-d))
        self.weights = np.empty((n, d + 1), dtype=np.float32)
        rem0 = np.empty((d + 1, n), dtype=np.int16)  # remainder-0 point, in units of d + 1
        rank = np.empty((d + 1, n), dtype=np.int8)
        for begin in range(0, n, self.CHUNK):
            part = slice(begin, min(begin + self.CHUNK, n))
            self._locate(columns[:, part], self.weights[part], rem0[:, part], rank[:, part])

        # Features in the same simplex (same rem0 and ranks) share their d + 1 vertices.
        rem_lo = rem0[:d].min(axis=1).astype(np.int64)
        rem_span = rem0[:d].max(axis=1).astype(np.int64) - rem_lo + 1
        mults, span = [], 1
        for i in range(d):
            mults.append(span)
            span *= int(rem_span[i])
        for i in range(d):
            mults.append(span)
            span *= d + 1
        if span >= 2**52:
            raise ValueError("lattice coordinates out of range (features far too large for their kernel width)")
        mults = np.asarray(mults, dtype=np.float64)
        code = np.empty(n, dtype=np.int64)
        shift = np.concatenate([rem_lo, np.zeros(d, dtype=np.int64)]).astype(np.float64)[:, None]
        for begin in range(0, n, self.CHUNK):
            part = slice(begin, min(begin + self.CHUNK, n))
            stacked = np.concatenate([rem0[:d, part], rank[:d, part]]).astype(np.float64)
            stacked -= shift
            code[part] = mults @ stacked  # exact: below 2^52
        _, first, simplex_of = _group(code, span)
        s_rem0 = rem0[:d, first].astype(np.int64)  # d x U
        s_rank = rank[:, first]  # (d + 1) x U

        # Vertex r of a simplex: key[i] = (d+1) rem0[i] + canonical[r][rank[i]] with
        # canonical[r][j] = r if j <= d - r else r - (d + 1); the last coordinate is implied. Encoded
        # with a margin of d + 1 for the blur neighbours: enc(r) = enc(r - 1) + sum(mult)
        # - (d + 1) mult[the coordinate of rank d + 1 - r].
        lo = (d + 1) * s_rem0.min(axis=1) - d - (d + 1)
        spans = (d + 1) * (s_rem0.max(axis=1) - s_rem0.min(axis=1)) + 2 * d + 2 * (d + 1) + 1
        if float(np.prod(spans.astype(np.float64))) >= 2.0**62:
            raise ValueError("lattice coordinates out of range (features far too large for their kernel width)")
        key_mult = np.cumprod(np.concatenate([[1], spans[:-1]])).astype(np.int64)
        u = s_rem0.shape[1]
        base = ((d + 1) * s_rem0 - lo[:, None]).T @ key_mult  # U
        by_rank_mult = np.zeros(u * (d + 1), dtype=np.int64)
        urow = np.arange(0, u * (d + 1), d + 1, dtype=np.int64)
        for i in range(d):
            by_rank_mult[urow + s_rank[i]] = key_mult[i]
        by_rank_mult = by_rank_mult.reshape(u, d + 1)
        step = int(key_mult.sum())
        encoded = np.empty((u, d + 1), dtype=np.int64)
        encoded[:, 0] = base
        for r in range(1, d + 1):
            np.subtract(encoded[:, r - 1] + step, (d + 1) * by_rank_mult[:, d + 1 - r], out=encoded[:, r])
        vertices, _, vertex_of = _group(encoded.reshape(-1), int(np.prod(spans)))
        m = int(vertices.size)
        self.num_vertices = m
        self.offsets = vertex_of.reshape(u, d + 1)[simplex_of]

        # Blur neighbours along axis j: key - 1 everywhere except key[j] + d (j < d), and the opposite.
        neighbours = np.empty((d + 1, 2, m), dtype=np.intp)
        for j in range(d + 1):
            delta = -int(key_mult.sum()) + ((d + 1) * int(key_mult[j]) if j < d else 0)
            for side, sign in enumerate((1, -1)):
                wanted = vertices + sign * delta
                pos = np.minimum(np.searchsorted(vertices, wanted), m - 1)
                neighbours[j, side] = np.where(vertices[pos] == wanted, pos, m)
        self.neighbours = neighbours

    @staticmethod
    def _locate(columns: np.ndarray, weights: np.ndarray, rem0_out: np.ndarray, rank_out: np.ndarray) -> None:
        """The enclosing simplex (remainder-0 point, ranks) and barycentric weights of d x n features.

        Follows densecrf's ``Permutohedral::init`` in float32.
        """
        d, n = columns.shape
        f32 = np.float32
        inv_std_dev = f32(math.sqrt(2.0 / 3.0) * (d + 1))
        scale = [f32(1.0 / math.sqrt((i + 2) * (i + 1)) * float(inv_std_dev)) for i in range(d)]

        # Elevate onto the hyperplane sum(x) = 0 of R^(d+1) (Adams et al. 2010, p. 5).
        elevated = np.empty((d + 1, n), dtype=f32)
        running = np.zeros(n, dtype=f32)
        for j in range(d, 0, -1):
            cf = columns[j - 1] * scale[j - 1]
            np.subtract(running, f32(j) * cf, out=elevated[j])
            running += cf
        elevated[0] = running

        # The closest remainder-0 lattice point, coordinate by coordinate (ties round down); rem0 is
        # kept in units of d + 1 (float32 holds these small integers exactly).
        down_factor = f32(1.0) / f32(d + 1)
        up_factor = f32(d + 1)
        v = elevated * down_factor
        up = np.ceil(v)
        rem0 = np.floor(v, out=v)
        rem0 += up * up_factor - elevated < elevated - rem0 * up_factor  # ceil = floor + 1 there
        total = rem0.sum(axis=0).astype(np.int8)  # small integers: |total| <= d + 1
        diffs = elevated - rem0 * up_factor

        # rank[i] = #{j: diff_j > diff_i} + #{j < i: diff_j == diff_i} (the C++ pairwise loop).
        rank = np.zeros((d + 1, n), dtype=np.int8)
        for i in range(d):
            for j in range(i + 1, d + 1):
                smaller = diffs[i] < diffs[j]
                rank[i] += smaller
                rank[j] += ~smaller
        rank += total
        wrap = (rank < 0).view(np.int8) - (rank > d).view(np.int8)
        rank += wrap * np.int8(d + 1)
        rem0 += wrap

        # Barycentric coordinates (p. 10): coordinate i adds +v at d - rank and -v at d - rank + 1,
        # so slot m gets v[rank d - m] - v[rank d - m + 1] (and slot 0 wraps around).
        v = (elevated - rem0 * up_factor) * down_factor
        by_slot = np.empty(n * (d + 1), dtype=f32)  # by_slot[m] = v of the coordinate of rank d - m
        row = np.arange(d, n * (d + 1), d + 1, dtype=np.int64)
        for i in range(d + 1):
            by_slot[row - rank[i]] = v[i]
        by_slot = by_slot.reshape(n, d + 1)
        np.subtract(by_slot[:, 1:], by_slot[:, :-1], out=weights[:, 1:])
        weights[:, 0] = (by_slot[:, 0].astype(np.float64) + (1.0 - by_slot[:, d].astype(np.float64))).astype(f32)
        rem0_out[...] = rem0
        rank_out[...] = rank

    def matrix(self, row_scale: np.ndarray | None = None):
        """The N x M splat/slice matrix (scipy CSR, float32), rows optionally scaled."""
        import scipy.sparse as sp

        n, k = self.num_points, self.dim + 1
        data = self.weights if row_scale is None else self.weights * row_scale.astype(np.float32)[:, None]
        return sp.csr_matrix((data.reshape(-1), self.offsets.reshape(-1), np.arange(0, n * k + 1, k)),
                             shape=(n, self.num_vertices))

    def matrix_from(self, weights: np.ndarray):
        """The N x M CSR matrix with these N x (d + 1) entries at the vertices' columns (int32 indices)."""
        import scipy.sparse as sp

        n, k = self.num_points, self.dim + 1
        matrix = sp.csr_matrix((self.num_points, self.num_vertices), dtype=np.float32)
        matrix.data = weights.reshape(-1)
        matrix.indices = self.offsets.reshape(-1).astype(np.int32)
        matrix.indptr = np.arange(0, n * k + 1, k, dtype=np.int32)
        return matrix

    def blur(self, values: np.ndarray) -> np.ndarray:
        """The ``[1/2, 1, 1/2]`` blur along the d + 1 lattice axes of M or M x C values (a new array)."""
        m = self.num_vertices
        buffer = np.zeros((m + 1,) + values.shape[1:], dtype=values.dtype)
        buffer[:m] = values
        scratch = np.zeros_like(buffer)
        for j in range(self.dim + 1):
            n1, n2 = self.neighbours[j]
            np.add(buffer[n1], buffer[n2], out=scratch[:m])
            scratch[:m] *= 0.5
            scratch[:m] += buffer[:m]
            buffer, scratch = scratch, buffer
        return buffer[:m]

    def filter(self, values: np.ndarray) -> np.ndarray:
        """pydensecrf's ``Permutohedral::compute`` of N or N x C values."""
        a = self.matrix()
        return (a @ self.blur(a.T @ values)) * np.float32(self.alpha)


class LatticeKernel:
    """A symmetric-normalised permutohedral kernel of an image: ``K~ q = n * (K (n * q))``, ``n = (K 1)^-1/2``.

    Filters all pixels through a CSR matrix, or only the active pixels by gathers, the frozen pixels'
    contribution kept as lattice values.
    """

    def __init__(self, features: np.ndarray, weight: float):
        self.weight = weight
        self.lattice = lattice = PermutohedralLattice(features)
        # K 1 without a matrix: splat the weights, blur, slice.
        splat = np.bincount(lattice.offsets.reshape(-1), weights=lattice.weights.reshape(-1),
                            minlength=lattice.num_vertices).astype(np.float32)
        blurred = lattice.blur(splat)
        raw = np.einsum("ij,ij->i", blurred[lattice.offsets], lattice.weights) * np.float32(lattice.alpha)
        norm = (1.0 / np.sqrt(raw.astype(np.float64) + 1e-20)).astype(np.float32)
        self.scaled_weights = lattice.weights * norm[:, None]  # splat and slice weights, n folded in
        self.matrix = lattice.matrix_from(self.scaled_weights)

    def apply(self, values: np.ndarray, factor: float = 1.0) -> np.ndarray:
        """``factor * K~ values`` of all pixels, N or N x C float32 values."""
        blurred = self.lattice.blur(self.matrix.T @ values)
        blurred *= np.float32(factor * self.lattice.alpha)
        return self.matrix @ blurred

    def _splat(self, offsets: np.ndarray, weights: np.ndarray, values: np.ndarray) -> np.ndarray:
        return np.bincount(offsets.reshape(-1), weights=(weights * values[:, None]).reshape(-1),
                           minlength=self.lattice.num_vertices)

    def start(self, active: np.ndarray, q: np.ndarray) -> list:
        """State of one problem's active-set iteration (q: all N marginals)."""
        offsets, weights = self.lattice.offsets[active], self.scaled_weights[active]
        frozen = np.asarray(self.matrix.T @ q, dtype=np.float64) - self._splat(offsets, weights, q[active])
        return [offsets, weights, frozen]

    def message(self, state: list, q: np.ndarray, q_active: np.ndarray, factor: float) -> np.ndarray:
        """``factor * K~ q`` at the active pixels."""
        offsets, weights, frozen = state
        blurred = self.lattice.blur(frozen + self._splat(offsets, weights, q_active))
        blurred *= factor * self.lattice.alpha
        return np.einsum("ij,ij->i", blurred[offsets], weights)

    def freeze(self, state: list, done: np.ndarray, q_active: np.ndarray) -> None:
        """Move the ``done`` active pixels (a mask over the active ones) to the frozen lattice values."""
        offsets, weights, frozen = state
        frozen += self._splat(offsets[done], weights[done], q_active[done])
        keep = ~done
        state[0], state[1] = offsets[keep], weights[keep]


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
        height, width = self.shape
        flat = values.reshape(values.shape[0], -1)
        out = np.empty(flat.shape, dtype=np.float32)
        for c in range(flat.shape[1]):
            column = np.ascontiguousarray(flat[:, c] * self.norm).reshape(height, width)
            out[:, c] = self._blur(column).reshape(-1)
        out *= (np.float32(factor) * self.norm)[:, None]
        return out.reshape(values.shape)

    def start(self, active: np.ndarray, q: np.ndarray) -> list:
        return [active, self._box(active)]

    def _box(self, active: np.ndarray) -> tuple[int, int, int, int]:
        height, width = self.shape
        if active.size == 0:
            return (0, 0, 0, 0)
        rows, cols = np.divmod(active, width)
        margin = self.radius
        return (max(int(rows[0]) - margin, 0), min(int(rows[-1]) + margin + 1, height),
                max(int(cols.min()) - margin, 0), min(int(cols.max()) + margin + 1, width))

    def message(self, state: list, q: np.ndarray, q_active: np.ndarray, factor: float) -> np.ndarray:
        active, box = state
        height, width = self.shape
        # Blur only the window that the active pixels' kernels reach (zero padding stays exact:
        # the window's border pixels get their outside neighbours from the margin).
        top, bottom, left, right = box
        window = (q.reshape(height, width)[top:bottom, left:right] * self.norm2d[top:bottom, left:right])
        blurred = self._blur(window)
        rows, cols = np.divmod(active, width)
        return blurred[rows - top, cols - left] * self.norm[active] * np.float32(factor)

    def freeze(self, state: list, done: np.ndarray, q_active: np.ndarray) -> None:
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
# after the first iteration is frozen: it keeps its Q and stops being filtered. On voc_samples' PPMG
# maps (benchmarks/bench_crf.py, alpha 13), pixels that differ from pydensecrf's: 0.09 % at 12 (mIoU
# -0.0015), 0.27 % at 10 (-0.0035), 0.07 % at 14 (-0.0011, 5 % slower than 12); without freezing
# (grid Gaussian only) 0.07 % (-0.0009) but 20 % slower.
FREEZE_LOGIT = 12.0
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
    for p in range(num_problems):
        q_p = q[p]
        active = np.flatnonzero(np.abs(logits[p]) <= freeze_logit)
        states = [kernel.start(active, q_p) for kernel in kernels]
        for _ in range(iterations - 1):
            if active.size == 0:
                break
            x = offset[p, active]
            for kernel, state in zip(kernels, states):
                x = x + kernel.message(state, q_p, q_p[active], 2.0 * kernel.weight)
            q_active = _sigmoid(x)
            q_p[active] = q_active
            done = np.abs(x) > freeze_logit
            # Compacting the active rows costs a pass over them: only worth it for a real share.
            if np.count_nonzero(done) > FREEZE_BATCH * active.size:
                for kernel, state in zip(kernels, states):
                    kernel.freeze(state, done, q_active)
                active = active[~done]
    return q.T


@register_crf_backend("fast")
class FastBackend(CRFBackend):
    """Shared lattices, one-channel binary problems, sparse-matrix filtering (CPU, numpy/scipy)."""

    grid_gaussian = True
    freeze_logit: float | None = FREEZE_LOGIT

    def solve(self, image: np.ndarray, unaries: np.ndarray, params: CRFParams) -> np.ndarray:
        num_problems, num_labels, height, width = unaries.shape
        if num_labels == 1:
            return np.ones(unaries.shape, dtype=np.float32)
        if num_labels == 2:
            kernels = _image_kernels(image, params, self.grid_gaussian)
            flat = unaries.reshape(num_problems, num_labels, height * width)
            fg = binary_mean_field(kernels, flat, int(params.iterations), self.freeze_logit).T.reshape(num_problems, height, width)
            return np.stack([1.0 - fg, fg], axis=1).astype(np.float32)
        # Multi-label problems (the segmentation stage): pydensecrf's SSE filtering of L channels beat
        # this numpy path (1.7x slower at L = 3 and 21, measured), so they go to the reference.
        return get_crf_backend("pydensecrf").solve(image, unaries, params)
