"""The 'fast' and 'torch' dense-CRF backends agree with pydensecrf on real photos (not their speed).

Speed lives in benchmarks/bench_crf.py (benchmarks/RESULTS.md); here: pixel agreement and mIoU of
PPMG label maps on the 14 voc_samples photos with CAMs made from the ground truth, the exactness of
the compiled permutohedral lattice (against densecrf's algorithm written plainly), and the torch backend under both CRF settings.
The comparisons with pydensecrf carry the ``pydensecrf`` marker (the optional extra ``pmm[pydensecrf]``).
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from pmm.crf import CRF_BACKENDS, PSEUDO_CRF, SEG_CRF, dense_crf, get_crf_backend, unary_from_probs
from pmm.io import load_image, load_mask
from pmm.scoring.metrics import confusion_matrix, mean_iou
from pmm.pseudo.cov import cov_smooth
from pmm.pseudo.ppmg import alpha_from_threshold, ppmg
from test_pseudo import gt_cams  # CAMs made from the ground truth (also benchmarks/bench_crf.py's)

ALPHA = alpha_from_threshold(0.14)  # these CAMs' best arg-max threshold (benchmarks/bench_crf.py)
REFERENCE = PSEUDO_CRF.with_backend("pydensecrf")
SEG_REFERENCE = SEG_CRF.with_backend("pydensecrf")


@pytest.fixture(scope="module")
def photos(voc_samples):
    out = []
    for index, path in enumerate(sorted((voc_samples / "JPEGImages").glob("*.jpg"))):
        mask = load_mask(voc_samples / "SegmentationClass" / f"{path.stem}.png")
        cams, labels = gt_cams(mask, seed=index)
        out.append((load_image(path), mask, cams, labels))
    assert len(out) == 14
    return out


@pytest.fixture(scope="module")
def reference_maps(photos):
    return [ppmg(image, cams, labels, alpha=ALPHA, crf=REFERENCE) for image, _, cams, labels in photos]


def _miou(photos, maps) -> float:
    return mean_iou(sum(confusion_matrix(m, mask, 21) for (_, mask, _, _), m in zip(photos, maps)))


def _agreement(maps, reference) -> float:
    return sum(int((a == b).sum()) for a, b in zip(maps, reference)) / sum(r.size for r in reference)


def test_backends_are_registered():
    get_crf_backend("fast")  # loads the built-in backends
    assert {"pydensecrf", "fast", "torch"} <= set(CRF_BACKENDS)


@pytest.mark.pydensecrf
def test_fast_ppmg_agrees_with_the_reference_loop_on_voc_samples(photos, reference_maps):
    params = PSEUDO_CRF.with_backend("fast")
    maps = [ppmg(image, cams, labels, alpha=ALPHA, crf=params) for image, _, cams, labels in photos]
    agreement = _agreement(maps, reference_maps)
    ref_miou, fast_miou = _miou(photos, reference_maps), _miou(photos, maps)
    assert agreement >= 0.98, agreement
    assert fast_miou >= ref_miou - 0.005, (fast_miou, ref_miou)


@pytest.mark.pydensecrf
def test_fast_path_without_shortcuts_reproduces_pydensecrf_marginals(photos):
    """Without its two shortcuts (grid Gaussian, frozen pixels) the fast path is pydensecrf's arithmetic."""
    from pmm.crf.fast_backend import FastBackend

    image, _, cams, _ = photos[13]  # two overlapping classes
    smoothed = cov_smooth(cams).astype(np.float64)
    unaries = unary_from_probs(np.stack([(1 - smoothed) ** ALPHA, smoothed], axis=1))
    exact = FastBackend()
    exact.grid_gaussian, exact.freeze_logit = False, None
    q = exact.solve(image, unaries, PSEUDO_CRF)
    q_ref = get_crf_backend("pydensecrf").solve(image, unaries, PSEUDO_CRF)
    assert q.shape == q_ref.shape
    np.testing.assert_allclose(q.sum(axis=1), 1.0, atol=1e-5)
    assert np.abs(q - q_ref).max() < 0.05
    assert ((q[:, 1] > 0.5) == (q_ref[:, 1] > 0.5)).mean() > 0.9999


def _reference_lattice(features: np.ndarray) -> tuple[dict, np.ndarray, np.ndarray]:
    """densecrf's ``Permutohedral::init`` and ``seqCompute`` written plainly (dicts, float32 scalars).

    Returns (vertex key -> index, per-feature vertex indices, per-feature barycentric weights) and is
    used to filter values the slow, obvious way.
    """
    import math

    f32 = np.float32
    n, d = features.shape
    inv_std = math.sqrt(2.0 / 3.0) * (d + 1)
    scale = [f32(1.0 / math.sqrt((i + 2) * (i + 1)) * inv_std) for i in range(d)]
    index, offsets, weights = {}, np.zeros((n, d + 1), np.int64), np.zeros((n, d + 1), np.float32)
    for k in range(n):
        elevated, sm = [f32(0)] * (d + 1), f32(0)
        for j in range(d, 0, -1):
            cf = f32(features[k, j - 1] * scale[j - 1])
            elevated[j], sm = f32(sm - f32(j) * cf), f32(sm + cf)
        elevated[0] = sm
        rem0, total = [0] * (d + 1), 0
        for i in range(d + 1):
            v = f32(f32(1) / f32(d + 1) * elevated[i])
            up, down = f32(math.ceil(v)) * f32(d + 1), f32(math.floor(v)) * f32(d + 1)
            rem0[i] = int(up) if f32(up - elevated[i]) < f32(elevated[i] - down) else int(down)
            total += rem0[i]
        total //= d + 1
        rank = [0] * (d + 1)
        for i in range(d):
            for j in range(i + 1, d + 1):
                if f32(elevated[i] - rem0[i]) < f32(elevated[j] - rem0[j]):
                    rank[i] += 1
                else:
                    rank[j] += 1
        for i in range(d + 1):
            rank[i] += total
            if rank[i] < 0:
                rank[i], rem0[i] = rank[i] + d + 1, rem0[i] + d + 1
            elif rank[i] > d:
                rank[i], rem0[i] = rank[i] - d - 1, rem0[i] - d - 1
        bary = [f32(0)] * (d + 2)
        for i in range(d + 1):
            v = f32((elevated[i] - rem0[i]) * f32(1) / f32(d + 1))
            bary[d - rank[i]] = f32(bary[d - rank[i]] + v)
            bary[d - rank[i] + 1] = f32(bary[d - rank[i] + 1] - v)
        bary[0] = f32(bary[0] + f32(1) + bary[d + 1])
        for r in range(d + 1):
            key = tuple(rem0[i] + (r if rank[i] <= d - r else r - (d + 1)) for i in range(d))
            offsets[k, r] = index.setdefault(key, len(index))
            weights[k, r] = bary[r]
    return index, offsets, weights


def _reference_filter(index, offsets, weights, values):
    d = offsets.shape[1] - 1
    keys = list(index)
    lattice = np.zeros((len(keys),) + values.shape[1:])
    np.add.at(lattice, offsets, weights[..., None] * values[:, None].astype(np.float64))
    for j in range(d + 1):
        blurred = lattice.copy()
        for v, key in enumerate(keys):
            for sign in (1, -1):
                moved = [c - sign for c in key]
                if j < d:
                    moved[j] = key[j] + sign * d
                u = index.get(tuple(moved))
                if u is not None:
                    blurred[v] += 0.5 * lattice[u]
        lattice = blurred
    return (weights[..., None] * lattice[offsets]).sum(axis=1) / (1 + 2.0 ** -d)


@pytest.mark.parametrize("shape, sxy, srgb", [((1, 1), 80, 13), ((1, 9), 3, None), ((6, 1), 80, 13),
                                              ((17, 23), 80, 13), ((12, 15), 1, 1), ((20, 20), 3, None)])
def test_compiled_lattice_is_densecrfs_lattice(shape, sxy, srgb):
    """Same vertices, weights and blur neighbours as densecrf's algorithm, so the same filter."""
    from pmm.crf import _lattice_jit
    from pmm.crf.fast_backend import pixel_features

    rng = np.random.default_rng(shape[0] * 100 + shape[1])
    image = rng.integers(0, 256, shape + (3,), dtype=np.uint8)
    image[: shape[0] // 2] = image[0, 0]  # flat regions share simplices, as in photos
    features = pixel_features(image, sxy, srgb)
    offsets, weights, neighbours, m = _lattice_jit.build_lattice(features)
    index, ref_offsets, ref_weights = _reference_lattice(features)
    assert m == len(index)
    np.testing.assert_allclose(weights, ref_weights, atol=2e-6)
    # One-to-one vertex correspondence, consistent over all features.
    pairs = np.unique(np.stack([offsets.ravel(), ref_offsets.ravel()]), axis=1)
    assert pairs.shape[1] == m and np.unique(pairs[0]).size == m and np.unique(pairs[1]).size == m
    values = rng.random((features.shape[0], 2)).astype(np.float32)
    alpha = np.float32(1.0 / (1.0 + 2.0 ** -features.shape[1]))
    filtered = _lattice_jit.slice_all(offsets, weights, _lattice_jit.blur(
        _lattice_jit.splat_all(offsets, weights, values, m), neighbours), alpha)
    np.testing.assert_allclose(filtered, _reference_filter(index, ref_offsets, ref_weights, values), rtol=1e-4, atol=1e-4)


def test_compiled_lattice_refuses_features_out_of_range():
    from pmm.crf import _lattice_jit

    with pytest.raises(ValueError, match="out of range"):
        _lattice_jit.build_lattice(np.array([[0.0, 0.0, 0.0, 0.0, 0.0], [3e6, -3e6, 3e6, -3e6, 3e6]], np.float32))


def _seg_softmax(mask: np.ndarray, labels: np.ndarray, seed: int) -> np.ndarray:
    """A segmenter-like softmax over background + the present classes, from the ground truth."""
    rng = np.random.default_rng(seed)
    classes = np.concatenate([[0], labels])
    noise = rng.standard_normal((classes.size, 33, 33)).astype(np.float32)
    logits = np.stack([4.0 * cv2.GaussianBlur((mask == c).astype(np.float32), (0, 0), 6.0)
                       + 1.5 * cv2.resize(noise[i], mask.shape[::-1]) for i, c in enumerate(classes)])
    probs = np.exp(logits - logits.max(axis=0))
    return probs / probs.sum(axis=0), classes


@pytest.mark.pydensecrf
@pytest.mark.parametrize("index", [13])
def test_torch_backend_agrees_with_pydensecrf_under_both_settings(photos, reference_maps, index):
    import torch

    backend = get_crf_backend("torch")
    backend.device = "cpu"
    try:
        image, mask, cams, labels = photos[index]
        torch_map = ppmg(image, cams, labels, alpha=ALPHA, crf=PSEUDO_CRF.with_backend("torch"))
        assert (torch_map == reference_maps[index]).mean() >= 0.98

        probs, classes = _seg_softmax(mask, labels, seed=index)
        q_torch = dense_crf(image, probs, SEG_CRF.with_backend("torch"))
        q_ref = dense_crf(image, probs, SEG_REFERENCE)
        np.testing.assert_allclose(q_torch.sum(axis=0), 1.0, atol=1e-4)
        seg_torch, seg_ref = classes[q_torch.argmax(0)], classes[q_ref.argmax(0)]
        assert (seg_torch == seg_ref).mean() >= 0.98
        cm = lambda pred: confusion_matrix(pred.astype(np.uint8), mask, 21)  # noqa: E731
        assert mean_iou(cm(seg_torch)) >= mean_iou(cm(seg_ref)) - 0.005
        # The tensor entry point keeps the work on the tensors' device.
        q_t = backend.solve_tensors(torch.from_numpy(image), torch.from_numpy(unary_from_probs(probs[None])), SEG_CRF)
        assert isinstance(q_t, torch.Tensor) and q_t.shape == (1,) + probs.shape
    finally:
        backend.device = None
