"""The 'fast' and 'torch' dense-CRF backends agree with pydensecrf on real photos (not their speed).

Speed lives in benchmarks/bench_crf.py (benchmarks/RESULTS.md); here: pixel agreement and mIoU of
PPMG label maps on the 14 voc_samples photos with CAMs made from the ground truth, the exactness of
the numpy permutohedral lattice, and the torch backend under both CRF settings.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from pmm.crf import CRF_BACKENDS, PSEUDO_CRF, SEG_CRF, dense_crf, get_crf_backend, unary_from_probs
from pmm.io import load_image, load_mask
from pmm.metrics import confusion_matrix, mean_iou
from pmm.pseudo.cov import cov_smooth
from pmm.pseudo.ppmg import alpha_from_threshold, ppmg

ALPHA = alpha_from_threshold(0.14)  # these CAMs' best arg-max threshold (benchmarks/bench_crf.py)


def _gt_cams(mask: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stride-16-like CAMs from the ground truth, random sharpness (tests/test_pseudo_math.py's recipe)."""
    rng = np.random.default_rng(seed)
    height, width = mask.shape
    small_size = ((width + 15) // 16, (height + 15) // 16)
    labels = np.array([c for c in np.unique(mask) if c not in (0, 255)], dtype=np.int64)
    cams = []
    for c in labels:
        dist = cv2.distanceTransform((mask == c).astype(np.uint8), cv2.DIST_L2, 5)
        soft = (dist / max(float(dist.max()), 1e-8)) ** float(np.exp(rng.uniform(np.log(0.3), np.log(1.5))))
        small = cv2.GaussianBlur(cv2.resize(soft, small_size, interpolation=cv2.INTER_AREA), (0, 0), 1.0)
        noise = cv2.GaussianBlur(rng.standard_normal(small.shape).astype(np.float32), (0, 0), 1.0)
        cam = np.clip(cv2.resize(small + 0.15 * noise, (width, height), interpolation=cv2.INTER_LINEAR), 0, None)
        cams.append((cam - cam.min()) / max(float(cam.max() - cam.min()), 1e-8))
    return np.stack(cams).astype(np.float32), labels


@pytest.fixture(scope="module")
def photos(voc_samples):
    out = []
    for index, path in enumerate(sorted((voc_samples / "JPEGImages").glob("*.jpg"))):
        mask = load_mask(voc_samples / "SegmentationClass" / f"{path.stem}.png")
        cams, labels = _gt_cams(mask, seed=index)
        out.append((load_image(path), mask, cams, labels))
    assert len(out) == 14
    return out


@pytest.fixture(scope="module")
def reference_maps(photos):
    return [ppmg(image, cams, labels, alpha=ALPHA) for image, _, cams, labels in photos]


def _miou(photos, maps) -> float:
    return mean_iou(sum(confusion_matrix(m, mask, 21) for (_, mask, _, _), m in zip(photos, maps)))


def _agreement(maps, reference) -> float:
    return sum(int((a == b).sum()) for a, b in zip(maps, reference)) / sum(r.size for r in reference)


def test_backends_are_registered():
    get_crf_backend("fast")  # loads the built-in backends
    assert {"pydensecrf", "fast", "torch"} <= set(CRF_BACKENDS)


def test_fast_ppmg_agrees_with_the_reference_loop_on_voc_samples(photos, reference_maps):
    params = PSEUDO_CRF.with_backend("fast")
    maps = [ppmg(image, cams, labels, alpha=ALPHA, crf=params) for image, _, cams, labels in photos]
    agreement = _agreement(maps, reference_maps)
    ref_miou, fast_miou = _miou(photos, reference_maps), _miou(photos, maps)
    assert agreement >= 0.98, agreement
    assert fast_miou >= ref_miou - 0.005, (fast_miou, ref_miou)


def test_numpy_lattice_reproduces_pydensecrf_marginals(photos):
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


def test_fast_multi_label_problems_are_the_reference(photos):
    image, mask, cams, labels = photos[7]
    probs = np.concatenate([1 - cams.max(axis=0, keepdims=True), cams])
    np.testing.assert_array_equal(dense_crf(image, probs, SEG_CRF.with_backend("fast")), dense_crf(image, probs, SEG_CRF))


def _seg_softmax(mask: np.ndarray, labels: np.ndarray, seed: int) -> np.ndarray:
    """A segmenter-like softmax over background + the present classes, from the ground truth."""
    rng = np.random.default_rng(seed)
    classes = np.concatenate([[0], labels])
    noise = rng.standard_normal((classes.size, 33, 33)).astype(np.float32)
    logits = np.stack([4.0 * cv2.GaussianBlur((mask == c).astype(np.float32), (0, 0), 6.0)
                       + 1.5 * cv2.resize(noise[i], mask.shape[::-1]) for i, c in enumerate(classes)])
    probs = np.exp(logits - logits.max(axis=0))
    return probs / probs.sum(axis=0), classes


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
        q_ref = dense_crf(image, probs, SEG_CRF)
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
