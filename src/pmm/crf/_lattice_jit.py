"""Compiled (numba) kernels of the fast dense-CRF backend: the permutohedral lattice and its filter.

The lattice is densecrf's ``Permutohedral`` (Adams et al. 2010; Krähenbühl's ``permutohedral.cpp``),
rewritten for numba, float32 step for step, with two changes that only affect speed:

- a pixel whose enclosing simplex (remainder-0 point and ranks) is the previous pixel's reuses its
  d + 1 vertex indices instead of hashing them again (neighbouring pixels of similar colour mostly
  share a simplex);
- the filter is split into splat, blur and slice so that mean-field iterations can update the blurred
  lattice values incrementally: only the pixels whose marginals changed are splatted, and their
  splat is blurred over the vertices it reaches (a sparse blur), not over the whole lattice.

Vertex index ``M`` (one past the last vertex) stands for a missing blur neighbour; arrays of lattice
values carry a zero row there.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

_JIT = dict(cache=True, nogil=True)


_EMPTY = -1
_FIB = np.uint64(11400714819323198485)  # 2^64 / golden ratio: Fibonacci hashing of int64 codes


@nb.njit(inline="always", **_JIT)
def _slot(code, bits):
    return np.int64((np.uint64(code) * _FIB) >> np.uint64(64 - bits))


@nb.njit(inline="always", **_JIT)
def _probe(table_keys, code, bits):
    """The slot of ``code`` in an open-addressing table, or the empty slot where it would go."""
    mask = (1 << bits) - 1
    slot = _slot(code, bits)
    while True:
        stored = table_keys[slot]
        if stored == code or stored == _EMPTY:
            return slot
        slot = (slot + 1) & mask


@nb.njit(**_JIT)
def _grow(table_keys, table_values, bits):
    bits += 1
    keys = np.full(1 << bits, _EMPTY, dtype=np.int64)
    values = np.empty(1 << bits, dtype=np.int32)
    for s in range(table_keys.shape[0]):
        code = table_keys[s]
        if code != _EMPTY:
            slot = _probe(keys, code, bits)
            keys[slot] = code
            values[slot] = table_values[s]
    return keys, values, bits


@nb.njit(**_JIT)
def locate(features):
    """Pass 1 of the lattice: per feature, the remainder-0 point (in units of d + 1), ranks, weights.

    Follows densecrf's ``Permutohedral::init`` in float32. Returns ``(rem0 N x d int32, rank N x d
    int8, weights N x (d + 1) float32, lo d int32, hi d int32)`` with lo/hi the range of rem0 / (d + 1);
    the last coordinate of each is implied (the point lies on the hyperplane sum = 0, ranks are a
    permutation).
    """
    n, d = features.shape
    f32 = np.float32
    inv_std_dev = math.sqrt(2.0 / 3.0) * (d + 1)
    scale = np.empty(d, dtype=np.float32)
    for i in range(d):
        scale[i] = f32(1.0 / math.sqrt((i + 2) * (i + 1)) * inv_std_dev)
    down_factor = f32(1.0) / f32(d + 1)
    up_factor = f32(d + 1)
    rem0_out = np.empty((n, d), dtype=np.int32)
    rank_out = np.empty((n, d), dtype=np.int8)
    weights = np.empty((n, d + 1), dtype=np.float32)
    lo = np.full(d, 2**30, dtype=np.int32)
    hi = np.full(d, -(2**30), dtype=np.int32)
    elevated = np.empty(d + 1, dtype=np.float32)
    rem0 = np.empty(d + 1, dtype=np.float32)
    rank = np.empty(d + 1, dtype=np.int32)
    barycentric = np.empty(d + 2, dtype=np.float32)
    for k in range(n):
        # Elevate onto the hyperplane sum(x) = 0 of R^(d+1).
        sm = f32(0.0)
        for j in range(d, 0, -1):
            cf = features[k, j - 1] * scale[j - 1]
            elevated[j] = sm - f32(j) * cf
            sm += cf
        elevated[0] = sm
        # The closest remainder-0 point, coordinate by coordinate (ties round down).
        total = f32(0.0)
        for i in range(d + 1):
            e = elevated[i]
            down = np.floor(down_factor * e)
            up = np.ceil(down_factor * e)
            r = up * up_factor if up * up_factor - e < e - down * up_factor else down * up_factor
            rem0[i] = r
            total += r
        shift = np.int32(total) // (d + 1)
        # The enclosing simplex: rank of each coordinate's remainder (branch-free pairwise counts).
        for i in range(d + 1):
            rank[i] = shift
        for i in range(d):
            di = elevated[i] - rem0[i]
            for j in range(i + 1, d + 1):
                smaller = np.int32(di < elevated[j] - rem0[j])
                rank[i] += smaller
                rank[j] += 1 - smaller
        for i in range(d + 1):
            if rank[i] < 0:
                rank[i] += d + 1
                rem0[i] += up_factor
            elif rank[i] > d:
                rank[i] -= d + 1
                rem0[i] -= up_factor
        # Barycentric coordinates (Adams et al. 2010, p. 10), with the wrap-around of slot d + 1.
        for i in range(d + 2):
            barycentric[i] = 0.0
        for i in range(d + 1):
            v = (elevated[i] - rem0[i]) * down_factor
            barycentric[d - rank[i]] += v
            barycentric[d - rank[i] + 1] -= v
        barycentric[0] += f32(1.0) + barycentric[d + 1]
        for r in range(d + 1):
            weights[k, r] = barycentric[r]
        for i in range(d):
            q = np.int32(rem0[i]) // (d + 1)
            rem0_out[k, i] = q
            rank_out[k, i] = rank[i]
            if q < lo[i]:
                lo[i] = q
            if q > hi[i]:
                hi[i] = q
    return rem0_out, rank_out, weights, lo, hi


@nb.njit(**_JIT)
def _canonical(d):
    canonical = np.empty((d + 1, d + 1), dtype=np.int32)
    for i in range(d + 1):
        for j in range(d + 1):
            canonical[i, j] = i if j <= d - i else i - (d + 1)
    return canonical


@nb.njit(**_JIT)
def _connect_run(start, rem0, rank, lo, key_lo, key_mult, simplex_mult, canonical, offsets,
                 s_keys, s_values, s_bits, s_count, s_vertices,
                 v_keys, v_values, v_bits, v_count, vertex_keys):
    """Assign vertices from feature ``start`` on, until done or a table needs to grow.

    No array is re-bound inside the loop (numba would reference-count it at every step): the caller
    grows the tables and calls again. Returns ``(next feature, simplices, vertices)``.
    """
    n, d = rem0.shape
    full_rank = np.empty(d + 1, dtype=np.int32)
    key = np.empty(d, dtype=np.int32)
    previous = np.int64(-1)
    previous_simplex = 0
    for k in range(start, n):
        code = np.int64(0)
        for i in range(d):
            code += np.int64(rem0[k, i] - lo[i]) * simplex_mult[i] + np.int64(rank[k, i]) * simplex_mult[d + i]
        if code == previous:
            simplex = previous_simplex
        else:
            slot = _probe(s_keys, code, s_bits)
            if s_keys[slot] == code:
                simplex = s_values[slot]
            else:
                if (2 * (s_count + 1) > s_keys.shape[0] or s_count == s_vertices.shape[0]
                        or 2 * (v_count + d + 1) > v_keys.shape[0] or v_count + d + 1 > vertex_keys.shape[0]):
                    return k, s_count, v_count
                simplex = s_count
                s_keys[slot] = code
                s_values[slot] = simplex
                s_count += 1
                # The implied last rank: ranks are a permutation of 0..d.
                rank_sum = 0
                for i in range(d):
                    full_rank[i] = rank[k, i]
                    rank_sum += rank[k, i]
                full_rank[d] = d * (d + 1) // 2 - rank_sum
                for r in range(d + 1):
                    vcode = np.int64(0)
                    for i in range(d):
                        key[i] = (d + 1) * rem0[k, i] + canonical[r, full_rank[i]]
                        vcode += np.int64(key[i] - key_lo[i]) * key_mult[i]
                    vslot = _probe(v_keys, vcode, v_bits)
                    if v_keys[vslot] == vcode:
                        vertex = v_values[vslot]
                    else:
                        vertex = v_count
                        v_keys[vslot] = vcode
                        v_values[vslot] = vertex
                        v_count += 1
                        for i in range(d):
                            vertex_keys[vertex, i] = key[i]
                    s_vertices[simplex, r] = vertex
            previous = code
            previous_simplex = simplex
        for r in range(d + 1):
            offsets[k, r] = s_vertices[simplex, r]
    return n, s_count, v_count


@nb.njit(**_JIT)
def _grown_rows(rows, count):
    grown = np.empty((2 * rows.shape[0], rows.shape[1]), dtype=rows.dtype)
    grown[:count] = rows[:count]
    return grown


@nb.njit(**_JIT)
def _vertex_codes(vertex_keys, m, key_lo, key_mult):
    d = vertex_keys.shape[1]
    codes = np.empty(m, dtype=np.int64)
    for v in range(m):
        code = np.int64(0)
        for i in range(d):
            code += np.int64(vertex_keys[v, i] - key_lo[i]) * key_mult[i]
        codes[v] = code
    return codes


@nb.njit(**_JIT)
def _merge_neighbours(sorted_codes, deltas):
    """Blur neighbours of vertices numbered in code order: a merge of the codes with themselves shifted.

    Moving a vertex key along a lattice axis adds the same constant to its packed code whatever the
    key, so ``sorted_codes + delta`` is sorted too and one linear merge finds every neighbour (no
    hash probe per vertex and axis: those are cache misses on large lattices). The neighbour indices
    of an axis then increase with the vertex index, so the blur reads its neighbours in order.
    """
    axes = deltas.shape[0]
    m = sorted_codes.shape[0]
    neighbours = np.empty((axes, 2, m), dtype=np.int32)
    for j in range(axes):
        for side in range(2):
            delta = deltas[j, side]
            t = 0
            for s in range(m):
                target = sorted_codes[s] + delta
                while t < m and sorted_codes[t] < target:
                    t += 1
                neighbours[j, side, s] = t if t < m and sorted_codes[t] == target else m
    return neighbours


@nb.njit(**_JIT)
def _renumber(offsets, new_index):
    n, k = offsets.shape
    for p in range(n):
        for r in range(k):
            offsets[p, r] = new_index[offsets[p, r]]


def _neighbours(vertex_keys, m, key_lo, key_mult):
    """(neighbours (d + 1) x 2 x M in code order, the code-order index of each vertex)."""
    # Along axis j: key - 1 except key[j] + d, and key + 1 except key[j] - d (j < d); along the
    # implied axis d every coordinate moves by one. The margin in key_lo keeps codes in range.
    d = vertex_keys.shape[1]
    codes = _vertex_codes(vertex_keys, m, key_lo, key_mult)
    order = np.argsort(codes, kind="stable")
    new_index = np.empty(m, dtype=np.int32)
    new_index[order] = np.arange(m, dtype=np.int32)
    total = int(np.sum(key_mult))
    deltas = np.empty((d + 1, 2), dtype=np.int64)
    for j in range(d + 1):
        forward = -total + ((d + 1) * int(key_mult[j]) if j < d else 0)
        deltas[j, 0], deltas[j, 1] = forward, -forward
    return _merge_neighbours(codes[order], deltas), new_index


def connect(rem0, rank, lo, key_lo, key_mult, simplex_mult):
    """Pass 2 of the lattice: vertex indices of each feature's simplex, and the blur neighbours.

    Simplices are hashed once per distinct (rem0, rank) code; a new simplex hashes its d + 1 vertex
    keys ``(d + 1) rem0[i] + canonical[r][rank[i]]``. ``key_lo``/``key_mult`` pack a vertex key (with
    a margin for the blur neighbours) into one int64, ``lo``/``simplex_mult`` a simplex.
    Returns ``(offsets N x (d + 1) int32, neighbours (d + 1) x 2 x M int32, M)``.
    """
    n, d = rem0.shape
    canonical = _canonical(d)
    offsets = np.empty((n, d + 1), dtype=np.int32)
    s_bits = v_bits = 12
    s_keys = np.full(1 << s_bits, _EMPTY, dtype=np.int64)
    s_values = np.empty(1 << s_bits, dtype=np.int32)
    v_keys = np.full(1 << v_bits, _EMPTY, dtype=np.int64)
    v_values = np.empty(1 << v_bits, dtype=np.int32)
    s_vertices = np.empty((1 << (s_bits - 1), d + 1), dtype=np.int32)
    vertex_keys = np.empty((1 << (v_bits - 1), d), dtype=np.int32)
    start = s_count = v_count = 0
    while True:
        start, s_count, v_count = _connect_run(start, rem0, rank, lo, key_lo, key_mult, simplex_mult, canonical,
                                               offsets, s_keys, s_values, s_bits, s_count, s_vertices,
                                               v_keys, v_values, v_bits, v_count, vertex_keys)
        if start == n:
            break
        if 2 * (s_count + 1) > s_keys.shape[0] or s_count == s_vertices.shape[0]:
            s_keys, s_values, s_bits = _grow(s_keys, s_values, s_bits)
            s_vertices = _grown_rows(s_vertices, s_count)
        if 2 * (v_count + d + 1) > v_keys.shape[0] or v_count + d + 1 > vertex_keys.shape[0]:
            v_keys, v_values, v_bits = _grow(v_keys, v_values, v_bits)
            vertex_keys = _grown_rows(vertex_keys, v_count)
    # Vertices are renumbered in the order of their packed keys (see _merge_neighbours).
    neighbours, new_index = _neighbours(vertex_keys, v_count, key_lo, key_mult)
    _renumber(offsets, new_index)
    return offsets, neighbours, v_count


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
    k = offsets.shape[1]
    c = values.shape[1]
    out = np.zeros((num_vertices + 1, c), dtype=values.dtype)
    for t in range(rows.shape[0]):
        p = rows[t]
        for r in range(k):
            o = offsets[p, r]
            w = weights[p, r]
            for ch in range(c):
                out[o, ch] += w * values[t, ch]
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
def blur(values, neighbours):
    """The ``[1/2, 1, 1/2]`` blur along the d + 1 lattice axes of (M + 1) x C values (row M stays 0)."""
    axes, _, m = neighbours.shape
    c = values.shape[1]
    current = values.copy()
    scratch = np.zeros_like(values)
    half = values.dtype.type(0.5)
    for j in range(axes):
        for v in range(m):
            a = neighbours[j, 0, v]
            b = neighbours[j, 1, v]
            for ch in range(c):
                scratch[v, ch] = current[v, ch] + half * (current[a, ch] + current[b, ch])
        current, scratch = scratch, current
    return current


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


@nb.njit(**_JIT)
def sparse_blur_add(delta_vertices, delta_values, neighbours, target, touched_mark, scratch_a, scratch_b):
    """``target += blur(delta)`` for a delta that is non-zero only at ``delta_vertices`` (float64).

    The blur is linear and, along an axis, each vertex spreads half its value to its two neighbours
    (the neighbour relation is symmetric), so a sparse delta is blurred by scattering over the
    vertices it has reached so far. ``touched_mark`` (M + 1 int32, all -1) and the scratch rows
    (M + 1 float64, all 0) are returned clean.
    """
    axes, _, m = neighbours.shape
    cur_list = np.empty(delta_vertices.shape[0] * 3 ** axes if delta_vertices.shape[0] * 3 ** axes < m else m,
                        dtype=np.int32)
    count = 0
    for t in range(delta_vertices.shape[0]):
        v = delta_vertices[t]
        if touched_mark[v] < 0:
            touched_mark[v] = 0
            cur_list[count] = v
            count += 1
        scratch_a[v] += delta_values[t]
    cur, nxt = scratch_a, scratch_b
    for j in range(axes):
        stamp = j + 1
        start_count = count
        for t in range(start_count):
            v = cur_list[t]
            val = cur[v]
            if val == 0.0:
                continue
            nxt[v] += val
            half = 0.5 * val
            for side in range(2):
                u = neighbours[j, side, v]
                if u == m:
                    continue
                nxt[u] += half
                if touched_mark[u] < 0:
                    touched_mark[u] = stamp
                    if count == cur_list.shape[0]:
                        grown = np.empty(min(2 * count, m), dtype=np.int32)
                        grown[:count] = cur_list[:count]
                        cur_list = grown
                    cur_list[count] = u
                    count += 1
        for t in range(start_count):
            cur[cur_list[t]] = 0.0
        cur, nxt = nxt, cur
    for t in range(count):
        v = cur_list[t]
        target[v] += cur[v]
        cur[v] = 0.0
        touched_mark[v] = -1
    return count


@nb.njit(**_JIT)
def splat_rows(offsets, weights, rows, values, sign, out):
    """``out += sign * splat`` of the pixels ``rows`` with ``values`` (one per row) into M + 1 float64."""
    k = offsets.shape[1]
    for t in range(rows.shape[0]):
        p = rows[t]
        value = sign * np.float64(values[t])
        for r in range(k):
            out[offsets[p, r]] += weights[p, r] * value


@nb.njit(**_JIT)
def splat_rows_masked(offsets, weights, rows, values, mask, sign, out):
    """``out += sign * splat`` of the rows where ``mask`` is set."""
    k = offsets.shape[1]
    for t in range(rows.shape[0]):
        if mask[t]:
            p = rows[t]
            value = sign * np.float64(values[t])
            for r in range(k):
                out[offsets[p, r]] += weights[p, r] * value


@nb.njit(**_JIT)
def blur_vector(values, neighbours):
    """:func:`blur` of one channel of M + 1 float64 lattice values."""
    axes, _, m = neighbours.shape
    current = values.copy()
    scratch = np.zeros_like(values)
    for j in range(axes):
        for v in range(m):
            scratch[v] = current[v] + 0.5 * (current[neighbours[j, 0, v]] + current[neighbours[j, 1, v]])
        current, scratch = scratch, current
    return current


@nb.njit(**_JIT)
def slice_rows(offsets, weights, lattice_values, rows, factor):
    """``factor * sum_r w_r * values[offset_r]`` at the pixels ``rows`` (float32)."""
    k = offsets.shape[1]
    out = np.empty(rows.shape[0], dtype=np.float32)
    for t in range(rows.shape[0]):
        p = rows[t]
        s = 0.0
        for r in range(k):
            s += weights[p, r] * lattice_values[offsets[p, r]]
        out[t] = np.float32(factor * s)
    return out


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
