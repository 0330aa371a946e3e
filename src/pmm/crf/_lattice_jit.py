"""Compiled (numba) kernels of the fast dense-CRF backend: the permutohedral lattice and its filter.

The lattice is densecrf's ``Permutohedral`` (Adams et al. 2010; Krähenbühl's ``permutohedral.cpp``),
rewritten for numba, float32 step for step (same vertices, weights, blur and slice), with changes
that only affect speed:

- distinct simplices and vertices are found by sorting packed int64 keys, not through a hash table,
  and vertices are numbered in key order, so that the blur neighbours come from one linear merge
  per axis and the blur reads them in increasing order (on a photo at DeepLab's colour width,
  srgb = 3, almost every pixel has its own simplex and the lattice has 1-3 vertices per pixel: hash
  probes and random reads over tables that size are cache misses);
- the filter is split into splat, blur and slice so that mean-field iterations can keep the frozen
  pixels' splat in lattice space and splat and slice only the pixels still changing.

Vertex index ``M`` (one past the last vertex) stands for a missing blur neighbour; arrays of lattice
values carry a zero row there.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

_JIT = dict(cache=True, nogil=True)


# Features per block of the locate pass: its working arrays (a few (d + 1) x block rows) stay in L1.
_LOCATE_BLOCK = 512


@nb.njit(**_JIT)
def locate(features):
    """Pass 1 of the lattice: per feature, the remainder-0 point (in units of d + 1), ranks, weights.

    Follows densecrf's ``Permutohedral::init`` in float32. Returns ``(rem0 N x d int32, rank N x d
    int8, weights N x (d + 1) float32, lo d int32, hi d int32)`` with lo/hi the range of rem0 / (d + 1);
    the last coordinate of each is implied (the point lies on the hyperplane sum = 0, ranks are a
    permutation).

    The features are processed a block at a time, coordinate-major (one coordinate of every feature
    of the block, then the next), so that each step is a branch-free loop over the block's features
    that the compiler turns into SIMD code; the arithmetic, and its float32 rounding, is densecrf's
    per-feature code unchanged. Its scatter ``barycentric[d - rank[i]] += v_i`` is written as a gather
    of ``v`` by rank, which adds the same two numbers per slot (each slot gets exactly one ``+v`` and
    one ``-v``, and ``0 + a - b`` rounds as ``0 - b + a``).
    """
    n, d = features.shape
    f32 = np.float32
    inv_std_dev = math.sqrt(2.0 / 3.0) * (d + 1)
    scale = np.empty(d, dtype=np.float32)
    for i in range(d):
        scale[i] = f32(1.0 / math.sqrt((i + 2) * (i + 1)) * inv_std_dev)
    down_factor = f32(1.0) / f32(d + 1)
    up_factor = f32(d + 1)
    one = f32(1.0)
    rem0_out = np.empty((n, d), dtype=np.int32)
    rank_out = np.empty((n, d), dtype=np.int8)
    weights = np.empty((n, d + 1), dtype=np.float32)
    lo = np.full(d, 2**30, dtype=np.int32)
    hi = np.full(d, -(2**30), dtype=np.int32)
    block = _LOCATE_BLOCK
    coords = np.empty((d, block), dtype=np.float32)
    elevated = np.empty((d + 1, block), dtype=np.float32)
    rem0 = np.empty((d + 1, block), dtype=np.float32)
    point = np.empty((d + 1, block), dtype=np.int32)  # rem0 / (d + 1), an exact integer
    rank = np.empty((d + 1, block), dtype=np.int32)
    rest = np.empty((d + 1, block), dtype=np.float32)
    by_rank = np.empty((d + 1, block), dtype=np.float32)
    tile = np.empty((d + 1, block), dtype=np.float32)
    sm = np.empty(block, dtype=np.float32)
    shift = np.empty(block, dtype=np.int32)
    for begin in range(0, n, block):
        size = min(block, n - begin)
        for t in range(size):
            for j in range(d):
                coords[j, t] = features[begin + t, j]
        # Elevate onto the hyperplane sum(x) = 0 of R^(d+1).
        for t in range(size):
            sm[t] = 0.0
        for j in range(d, 0, -1):
            sj = scale[j - 1]
            fj = f32(j)
            for t in range(size):
                cf = coords[j - 1, t] * sj
                elevated[j, t] = sm[t] - fj * cf
                sm[t] += cf
        for t in range(size):
            elevated[0, t] = sm[t]
            shift[t] = 0
        # The closest remainder-0 point, coordinate by coordinate (ties round down). Its coordinates
        # are small multiples of d + 1, exact in float32, so their sum over d + 1 (densecrf's
        # float32 sum, then an integer division) is the integer sum of rem0 / (d + 1).
        for i in range(d + 1):
            for t in range(size):
                e = elevated[i, t]
                down = np.floor(down_factor * e)
                up = np.ceil(down_factor * e)
                pick_up = up * up_factor - e < e - down * up_factor
                q = up if pick_up else down
                rem0[i, t] = q * up_factor
                point[i, t] = np.int32(q)
                shift[t] += np.int32(q)
        # The enclosing simplex: rank of each coordinate's remainder (pairwise counts).
        for i in range(d + 1):
            for t in range(size):
                rest[i, t] = elevated[i, t] - rem0[i, t]
                rank[i, t] = shift[t]
        for i in range(d):
            for j in range(i + 1, d + 1):
                for t in range(size):
                    smaller = np.int32(rest[i, t] < rest[j, t])
                    rank[i, t] += smaller
                    rank[j, t] += 1 - smaller
        for i in range(d + 1):
            for t in range(size):
                rk = rank[i, t]
                below = np.int32(rk < 0)
                above = np.int32(rk > d)
                rank[i, t] = rk + (d + 1) * (below - above)
                point[i, t] += below - above
                # densecrf adds / subtracts d + 1 to rem0 here; exact in float32.
                rest[i, t] = (elevated[i, t] - f32(point[i, t]) * up_factor) * down_factor
        # Barycentric coordinates (Adams et al. 2010, p. 10): slot j is v[rank d - j] - v[rank d - j + 1],
        # slot 0 wraps around (v[rank d] + 1 - v[rank 0]).
        for k in range(d + 1):
            for t in range(size):
                by_rank[k, t] = 0.0
            for i in range(d + 1):
                for t in range(size):
                    if rank[i, t] == k:
                        by_rank[k, t] = rest[i, t]
        # Rows of the block's weights, then one transposing copy (strided stores of computed
        # values would not vectorise).
        for t in range(size):
            tile[0, t] = by_rank[d, t] + (one - by_rank[0, t])
        for j in range(1, d + 1):
            for t in range(size):
                tile[j, t] = by_rank[d - j, t] - by_rank[d - j + 1, t]
        for t in range(size):
            for j in range(d + 1):
                weights[begin + t, j] = tile[j, t]
        for i in range(d):
            low = lo[i]
            high = hi[i]
            for t in range(size):
                low = min(low, point[i, t])
                high = max(high, point[i, t])
            lo[i] = low
            hi[i] = high
        for t in range(size):
            for i in range(d):
                rem0_out[begin + t, i] = point[i, t]
                rank_out[begin + t, i] = rank[i, t]
    return rem0_out, rank_out, weights, lo, hi


@nb.njit(**_JIT)
def _canonical(d):
    canonical = np.empty((d + 1, d + 1), dtype=np.int32)
    for i in range(d + 1):
        for j in range(d + 1):
            canonical[i, j] = i if j <= d - i else i - (d + 1)
    return canonical


@nb.njit(**_JIT)
def _simplex_codes(rem0, rank, lo, simplex_mult):
    """Per feature, its enclosing simplex (remainder-0 point and ranks) packed into one int64."""
    n, d = rem0.shape
    codes = np.empty(n, dtype=np.int64)
    for k in range(n):
        code = np.int64(0)
        for i in range(d):
            code += np.int64(rem0[k, i] - lo[i]) * simplex_mult[i] + np.int64(rank[k, i]) * simplex_mult[d + i]
        codes[k] = code
    return codes


@nb.njit(**_JIT)
def _distinct_simplices(codes, order):
    """(simplex index of each feature, the first feature of each distinct simplex), from the codes' sort order.

    Simplices are numbered in the order of their first feature, so that the corners are computed
    reading the features in order.
    """
    n = codes.shape[0]
    sorted_index = np.empty(n, dtype=np.int32)
    count = -1
    previous = np.int64(-1)
    for t in range(n):
        k = order[t]
        if count < 0 or codes[k] != previous:
            count += 1
            previous = codes[k]
        sorted_index[k] = count
    first_seen = np.full(count + 1, -1, dtype=np.int32)
    representative = np.empty(count + 1, dtype=np.int32)
    simplex_of = np.empty(n, dtype=np.int32)
    seen = 0
    for k in range(n):
        s = sorted_index[k]
        if first_seen[s] < 0:
            first_seen[s] = seen
            representative[seen] = k
            seen += 1
        simplex_of[k] = first_seen[s]
    return simplex_of, representative


@nb.njit(**_JIT)
def _simplex_vertex_codes(rem0, rank, representative, key_lo, key_mult):
    """Packed keys of the d + 1 vertices of each distinct simplex: ``(d + 1) rem0[i] + canonical[r][rank[i]]``."""
    d = rem0.shape[1]
    canonical = _canonical(d)
    full_rank = np.empty(d + 1, dtype=np.int32)
    codes = np.empty(representative.shape[0] * (d + 1), dtype=np.int64)
    for s in range(representative.shape[0]):
        k = representative[s]
        # The implied last rank: ranks are a permutation of 0..d.
        rank_sum = 0
        for i in range(d):
            full_rank[i] = rank[k, i]
            rank_sum += rank[k, i]
        full_rank[d] = d * (d + 1) // 2 - rank_sum
        for r in range(d + 1):
            code = np.int64(0)
            for i in range(d):
                code += np.int64((d + 1) * rem0[k, i] + canonical[r, full_rank[i]] - key_lo[i]) * key_mult[i]
            codes[s * (d + 1) + r] = code
    return codes


@nb.njit(**_JIT)
def _distinct_vertices(codes, order):
    """(vertex index of each simplex corner, numbered in code order; the distinct codes, sorted)."""
    vertex_of = np.empty(codes.shape[0], dtype=np.int32)
    distinct = np.empty(codes.shape[0], dtype=np.int64)
    count = -1
    for t in range(codes.shape[0]):
        c = order[t]
        if count < 0 or codes[c] != distinct[count]:
            count += 1
            distinct[count] = codes[c]
        vertex_of[c] = count
    return vertex_of, distinct[: count + 1]


@nb.njit(**_JIT)
def _feature_offsets(simplex_of, vertex_of, d):
    n = simplex_of.shape[0]
    offsets = np.empty((n, d + 1), dtype=np.int32)
    for k in range(n):
        base = simplex_of[k] * (d + 1)
        for r in range(d + 1):
            offsets[k, r] = vertex_of[base + r]
    return offsets


@nb.njit(**_JIT)
def _merge_neighbours(sorted_codes, deltas):
    """Blur neighbours of vertices numbered in code order: a merge of the codes with themselves shifted.

    Moving a vertex key along a lattice axis adds the same constant to its packed code whatever the
    key, so ``sorted_codes + delta`` is sorted too and one linear merge finds every neighbour. The
    neighbour indices of an axis then increase with the vertex index, so the blur reads its
    neighbours in order (a hash lookup per vertex and axis would be a cache miss on large lattices).
    """
    axes = deltas.shape[0]
    m = sorted_codes.shape[0]
    neighbours = np.empty((axes, 2, m), dtype=np.int32)
    for j in range(axes):
        delta = deltas[j]
        for s in range(m):
            neighbours[j, 1, s] = m
        t = 0
        for s in range(m):
            target = sorted_codes[s] + delta
            while t < m and sorted_codes[t] < target:
                t += 1
            if t < m and sorted_codes[t] == target:
                neighbours[j, 0, s] = t
                neighbours[j, 1, t] = s  # the relation is symmetric: s is t's neighbour on the other side
            else:
                neighbours[j, 0, s] = m
    return neighbours


def sort_order(codes: np.ndarray) -> np.ndarray:
    """An order that sorts the non-negative int64 ``codes`` (ties in any order).

    When the codes leave room, each is shifted up and its index packed into the low bits: a plain
    ``np.sort`` of those (SIMD sorting networks) is 3-4x faster than ``np.argsort``, and the low bits
    are the order. The callers only group equal codes, so how ties are ordered does not matter.
    """
    n = codes.shape[0]
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    index_bits = max(int(n - 1).bit_length(), 1)
    if int(codes.max()) < (1 << (63 - index_bits)):
        packed = np.left_shift(codes, index_bits)
        packed |= np.arange(n, dtype=np.int64)
        packed.sort()
        packed &= (1 << index_bits) - 1
        return packed
    return np.argsort(codes, kind="quicksort")


def connect(rem0, rank, lo, key_lo, key_mult, simplex_mult):
    """Pass 2 of the lattice: vertex indices of each feature's simplex, and the blur neighbours.

    Distinct simplices are found by sorting their packed codes, their d + 1 vertex keys likewise
    (sorting beats hashing here: a photo at DeepLab's colour width has a simplex per pixel and
    2-3 vertices per pixel, and hash probes over tables that size are cache misses). Vertices are
    numbered in the order of their packed keys. ``key_lo``/``key_mult`` pack a vertex key (with a
    margin for the blur neighbours) into one int64, ``lo``/``simplex_mult`` a simplex.
    Returns ``(offsets N x (d + 1) int32, neighbours (d + 1) x 2 x M int32, M)``.
    """
    d = rem0.shape[1]
    codes = _simplex_codes(rem0, rank, lo, simplex_mult)
    simplex_of, representative = _distinct_simplices(codes, sort_order(codes))
    corner_codes = _simplex_vertex_codes(rem0, rank, representative, key_lo, key_mult)
    vertex_of, vertex_codes = _distinct_vertices(corner_codes, sort_order(corner_codes))
    offsets = _feature_offsets(simplex_of, vertex_of, d)
    # Along axis j: key - 1 except key[j] + d, and key + 1 except key[j] - d (j < d); along the
    # implied axis d every coordinate moves by one. The margin in key_lo keeps codes in range.
    total = int(np.sum(key_mult))
    deltas = np.array([-total + ((d + 1) * int(key_mult[j]) if j < d else 0) for j in range(d + 1)], dtype=np.int64)
    return offsets, _merge_neighbours(vertex_codes, deltas), int(vertex_codes.shape[0])


def build_lattice(features: np.ndarray):
    """(offsets N x (d + 1) int32, weights N x (d + 1) float32, neighbours (d + 1) x 2 x M int32, M).

    ``features``: N x d float32 (pydensecrf's scaled features).

    Raises:
        ValueError: features so spread out that a lattice key does not fit 62 bits.
    """
    features = np.ascontiguousarray(features, dtype=np.float32)
    n, d = features.shape
    rem0, rank, weights, lo, hi = locate(features)
    lo64, hi64 = lo.astype(np.int64), hi.astype(np.int64)
    simplex_spans = np.concatenate([hi64 - lo64 + 1, np.full(d, d + 1, dtype=np.int64)])
    # Vertex keys lie in (d + 1) [lo - 1, hi + 1]; blur neighbours move a coordinate by up to d.
    key_lo = (d + 1) * (lo64 - 1) - 2 * d
    key_spans = (d + 1) * (hi64 - lo64 + 2) + 4 * d + 1
    for spans in (simplex_spans, key_spans):
        if float(np.prod(spans.astype(np.float64))) >= 2.0**62:
            raise ValueError("lattice coordinates out of range (features far too large for their kernel width)")
    simplex_mult = np.cumprod(np.concatenate([[1], simplex_spans[:-1]])).astype(np.int64)
    key_mult = np.cumprod(np.concatenate([[1], key_spans[:-1]])).astype(np.int64)
    offsets, neighbours, m = connect(rem0, rank, lo, key_lo.astype(np.int32), key_mult, simplex_mult)
    return offsets, weights, neighbours, int(m)


@nb.njit(**_JIT)
def splat(offsets, weights, values, rows, num_vertices):
    """(M + 1) x C lattice values of the pixels ``rows`` (N' indices) with values ``values`` (N' x C)."""
    out = np.zeros((num_vertices + 1, values.shape[1]), dtype=values.dtype)
    splat_rows_labels(offsets, weights, rows, values, out)
    return out


@nb.njit(**_JIT)
def splat_all(offsets, weights, values, num_vertices):
    """(M + 1) x C lattice values of all N pixels (values N x C)."""
    n, k = offsets.shape
    c = values.shape[1]
    out = np.zeros((num_vertices + 1, c), dtype=values.dtype)
    for p in range(n):
        for r in range(k):
            o = offsets[p, r]
            w = weights[p, r]
            for ch in range(c):
                out[o, ch] += w * values[p, ch]
    return out


@nb.njit(**_JIT)
def blur_into(current, other, neighbours):
    """The ``[1/2, 1, 1/2]`` blur along the d + 1 lattice axes of (M + 1) x C values, ping-ponging
    between ``current`` (the input, overwritten) and ``other``; returns the one holding the result."""
    axes, _, m = neighbours.shape
    c = current.shape[1]
    half = current.dtype.type(0.5)
    for j in range(axes):
        for v in range(m):
            a = neighbours[j, 0, v]
            b = neighbours[j, 1, v]
            for ch in range(c):
                other[v, ch] = current[v, ch] + half * (current[a, ch] + current[b, ch])
        current, other = other, current
    return current


@nb.njit(**_JIT)
def blur(values, neighbours):
    """The ``[1/2, 1, 1/2]`` blur along the d + 1 lattice axes of (M + 1) x C values (row M stays 0)."""
    return blur_into(values.copy(), np.zeros_like(values), neighbours)


@nb.njit(**_JIT)
def slice_all(offsets, weights, lattice_values, factor):
    """N x C: ``factor * sum_r w_r * values[offset_r]`` at every pixel."""
    n, k = offsets.shape
    c = lattice_values.shape[1]
    out = np.zeros((n, c), dtype=np.float32)
    for p in range(n):
        for r in range(k):
            o = offsets[p, r]
            w = weights[p, r]
            for ch in range(c):
                out[p, ch] += w * lattice_values[o, ch]
        for ch in range(c):
            out[p, ch] *= factor
    return out


@nb.njit(**_JIT)
def kernel_norm(offsets, weights, neighbours, num_vertices, alpha):
    """``(K 1)^-1/2`` per pixel (pydensecrf's symmetric normalisation)."""
    n, k = offsets.shape
    ones = np.zeros((num_vertices + 1, 1), dtype=np.float32)
    for p in range(n):
        for r in range(k):
            ones[offsets[p, r], 0] += weights[p, r]
    blurred = blur(ones, neighbours)
    norm = np.empty(n, dtype=np.float32)
    for p in range(n):
        s = np.float32(0.0)
        for r in range(k):
            s += weights[p, r] * blurred[offsets[p, r], 0]
        norm[p] = np.float32(1.0 / math.sqrt(float(s * alpha) + 1e-20))
    return norm


# One two-label problem's active-set iterations: one channel, the pixels' values read from the
# problem's N marginals (no gathered copies), lattice values in float64.

@nb.njit(**_JIT)
def splat_pixels(offsets, weights, rows, q, sign, out):
    """``out += sign * splat`` of the pixels ``rows`` with values ``q[rows]`` into M + 1 float64."""
    k = offsets.shape[1]
    for t in range(rows.shape[0]):
        p = rows[t]
        value = sign * np.float64(q[p])
        for r in range(k):
            out[offsets[p, r]] += weights[p, r] * value


@nb.njit(**_JIT)
def splat_pixels_masked(offsets, weights, rows, q, mask, out):
    """``out += splat`` of the pixels ``rows[mask]`` (values ``q[row]``)."""
    k = offsets.shape[1]
    for t in range(rows.shape[0]):
        if mask[t]:
            p = rows[t]
            value = np.float64(q[p])
            for r in range(k):
                out[offsets[p, r]] += weights[p, r] * value


@nb.njit(**_JIT)
def add_lattice_message(x, offsets, weights, neighbours, frozen, rows, q, factor, work, scratch):
    """``x += factor * K (frozen + splat(rows, q[rows]))`` sliced at ``rows``.

    ``work`` and ``scratch``: M + 1 float64 buffers (row M of ``scratch`` zero) reused across
    iterations; the blur ping-pongs between them.
    """
    work[:] = frozen
    splat_pixels(offsets, weights, rows, q, 1.0, work)
    axes, _, m = neighbours.shape
    current, other = work, scratch
    for j in range(axes):
        for v in range(m):
            other[v] = current[v] + 0.5 * (current[neighbours[j, 0, v]] + current[neighbours[j, 1, v]])
        current, other = other, current
    k = offsets.shape[1]
    for t in range(rows.shape[0]):
        p = rows[t]
        s = 0.0
        for r in range(k):
            s += weights[p, r] * current[offsets[p, r]]
        x[t] += np.float32(factor * s)


@nb.njit(**_JIT)
def add_window_message(x, blurred, rows, cols, top, left, norm, factor):
    """``x += blurred[row - top, col - left] * norm[pixel] * factor`` at the active pixels (a grid kernel's slice)."""
    for t in range(rows.shape[0]):
        r = rows[t]
        c = cols[t]
        x[t] += blurred[r - top, c - left] * norm[r, c] * factor


@nb.njit(**_JIT)
def settle_binary(x, q, rows, limit):
    """``q[rows] = sigmoid(x)`` (float32); returns (mask of ``|x| > limit``, its count)."""
    one = np.float32(1.0)
    done = np.empty(rows.shape[0], dtype=np.bool_)
    count = 0
    for t in range(rows.shape[0]):
        v = x[t]
        q[rows[t]] = one / (one + np.float32(math.exp(-v)))
        saturated = abs(v) > limit
        done[t] = saturated
        count += saturated
    return done, count


@nb.njit(**_JIT)
def softmax_rows(logits):
    """Per row (pixel) of N x L float32 logits: ``exp(x - max x) / sum`` (densecrf's ``expAndNormalize``)."""
    n, c = logits.shape
    out = np.empty((n, c), dtype=np.float32)
    for p in range(n):
        top = logits[p, 0]
        for ch in range(1, c):
            if logits[p, ch] > top:
                top = logits[p, ch]
        total = np.float32(0.0)
        for ch in range(c):
            e = np.float32(math.exp(logits[p, ch] - top))
            out[p, ch] = e
            total += e
        inverse = np.float32(1.0) / total
        for ch in range(c):
            out[p, ch] *= inverse
    return out


@nb.njit(**_JIT)
def saturated_rows(logits, margin):
    """Rows whose top logit beats the log-sum-exp of the others by more than ``margin`` (1 - max Q < e^-margin)."""
    n, c = logits.shape
    out = np.empty(n, dtype=np.bool_)
    bound = math.exp(-margin)
    for p in range(n):
        top = logits[p, 0]
        best = 0
        for ch in range(1, c):
            if logits[p, ch] > top:
                top = logits[p, ch]
                best = ch
        rest = 0.0
        for ch in range(c):
            if ch != best:
                rest += math.exp(float(logits[p, ch] - top))
        out[p] = rest < bound
    return out


@nb.njit(**_JIT)
def splat_rows_labels(offsets, weights, rows, values, out):
    """``out += splat`` of the pixels ``rows`` with ``values`` (N' x C) into (M + 1) x C lattice values."""
    k = offsets.shape[1]
    c = values.shape[1]
    for t in range(rows.shape[0]):
        p = rows[t]
        for r in range(k):
            o = offsets[p, r]
            w = weights[p, r]
            for ch in range(c):
                out[o, ch] += w * values[t, ch]


@nb.njit(**_JIT)
def slice_rows_labels(offsets, weights, lattice_values, rows, factor):
    """N' x C: ``factor * sum_r w_r * values[offset_r]`` at the pixels ``rows``."""
    k = offsets.shape[1]
    c = lattice_values.shape[1]
    out = np.zeros((rows.shape[0], c), dtype=np.float32)
    for t in range(rows.shape[0]):
        p = rows[t]
        for r in range(k):
            o = offsets[p, r]
            w = weights[p, r]
            for ch in range(c):
                out[t, ch] += w * lattice_values[o, ch]
        for ch in range(c):
            out[t, ch] *= factor
    return out


@nb.njit(**_JIT)
def filter_rows_labels(offsets, weights, neighbours, frozen, rows, values, factor, work, scratch):
    """``factor * K (frozen + splat(rows, values))`` sliced at ``rows`` (N' x C float32).

    ``frozen``: the (M + 1) x C lattice values of the pixels not in ``rows``; ``work`` and ``scratch``:
    (M + 1) x C buffers whose row M is zero (reused across iterations, no allocation).
    """
    work[:] = frozen
    splat_rows_labels(offsets, weights, rows, values, work)
    return slice_rows_labels(offsets, weights, blur_into(work, scratch, neighbours), rows, factor)
