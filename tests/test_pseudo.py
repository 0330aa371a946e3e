"""Tests of the pseudo-mask maths (pmm.pseudo): CoV smoothing, dense CRF, PPMG and its baselines."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from pmm.crf import CRF_BACKENDS, CRFParams, dense_crf
from pmm.io import load_image, load_mask
from pmm.scoring.metrics import confusion_matrix, mean_iou
from pmm.pseudo import (
    alpha_from_threshold,
    cam_argmax,
    cov_smooth,
    crf_baseline,
    make_pseudo_mask,
    ppmg,
    proportional_labels,
)


# --------------------------------------------------------------------------- cov_smooth


def _cov_reference(cams: np.ndarray, scale: float, threshold: float) -> np.ndarray:
    """CoV smoothing written out per class with plain numpy, as the oracle."""
    out = np.zeros_like(cams, dtype=np.float64)
    for k, cam in enumerate(cams.astype(np.float64)):
        active = cam[cam > threshold]
        cv = float(np.std(active) / np.mean(active) * scale) if active.size else 0.0
        out[k] = np.where(cam < threshold, 0.0, cam ** (1.0 - cv))
    return out


def test_cov_smooth_matches_per_class_formula_on_random_input():
    rng = np.random.default_rng(0)
    cams = rng.random((4, 23, 31)) ** rng.uniform(0.5, 4.0, size=(4, 1, 1))
    cams[2] *= 0.04  # a class with no activated value at all: cv must be 0
    got = cov_smooth(cams, scale=0.3, threshold=0.05)
    assert got.dtype == np.float32 and got.shape == cams.shape
    np.testing.assert_allclose(got, _cov_reference(cams, 0.3, 0.05), rtol=1e-5, atol=1e-6)
    # Classes are smoothed independently: permuting them permutes the result.
    order = [3, 1, 0, 2]
    np.testing.assert_allclose(cov_smooth(cams[order]), got[order], rtol=1e-6)


def test_cov_smooth_raises_a_peaky_cam_more_than_a_flat_one():
    probe = (0, 0)
    peaky = np.zeros((1, 10, 10))
    peaky[0, 0, 1:6] = 1.0  # a few strong values...
    peaky[0, 1:5, :] = 0.1  # ...and many weak activated ones: large cv
    peaky[0][probe] = 0.5
    flat = np.zeros((1, 10, 10))
    flat[0, :5, :] = 0.5  # every activated value equal: cv = 0
    flat[0, 5, :] = 0.52
    s_peaky, s_flat = cov_smooth(peaky)[0], cov_smooth(flat)[0]
    ratio_peaky = s_peaky[probe] / peaky[0][probe]
    ratio_flat = s_flat[probe] / flat[0][probe]
    assert ratio_peaky > 1.2  # 0.5 ** (1 - cv) with cv ~ 0.3 * 1.07
    assert ratio_flat < 1.01
    assert ratio_peaky > ratio_flat
    active = peaky[0][peaky[0] > 0.05]
    cv = 0.3 * active.std() / active.mean()
    assert s_peaky[probe] == pytest.approx(0.5 ** (1 - cv), rel=1e-5)


def test_cov_smooth_zeroes_values_below_threshold_and_leaves_empty_activation_unchanged():
    cams = np.array([[[0.03, 0.2, 0.9, 0.049]], [[0.05, 0.01, 0.0, 0.04]]])
    s = cov_smooth(cams, threshold=0.05)
    assert s[0, 0, 0] == 0 and s[0, 0, 3] == 0  # below t
    assert s[0, 0, 1] > 0.2 and s[0, 0, 2] > 0.9  # raised (cv > 0)
    # Class 2 has no value strictly above t, so cv = 0: values >= t unchanged, those below zeroed.
    np.testing.assert_allclose(s[1, 0], [0.05, 0.0, 0.0, 0.0], rtol=1e-6)


def test_cov_smooth_scale_zero_is_threshold_only_and_empty_k_is_fine():
    rng = np.random.default_rng(1)
    cams = rng.random((2, 8, 8))
    np.testing.assert_allclose(cov_smooth(cams, scale=0.0), np.where(cams < 0.05, 0, cams), rtol=1e-6)
    assert cov_smooth(np.zeros((0, 5, 6))).shape == (0, 5, 6)
    with pytest.raises(ValueError, match="KxHxW"):
        cov_smooth(np.zeros((5, 6)))


# --------------------------------------------------------------------------- proportional rule, argmax, alpha


def test_proportional_labels_gives_the_overlap_to_the_smaller_class():
    cams = np.zeros((2, 20, 20))
    cams[0, :, :12] = 0.8  # class 7: large extent, stronger in the overlap
    cams[1, 8:14, 8:14] = 0.6  # class 15: small extent, weaker in the overlap
    fg = cams > 0
    labels = [7, 15]
    out = proportional_labels(cams, fg, labels)
    overlap = fg[0] & fg[1]
    assert overlap.sum() == 24
    # Plain arg-max of the CAMs would give the overlap to class 7 (0.8 > 0.6)...
    assert np.all(cam_argmax(cams, labels, 0.5)[overlap] == 7)
    # ...but I_k = M_k / (1 + total_k) = 0.8 / 193 vs 0.6 / 22.6 gives it to the small class 15.
    assert np.all(out[overlap] == 15)
    assert np.all(out[fg[0] & ~fg[1]] == 7)
    assert np.all(out[fg[1] & ~fg[0]] == 15)
    assert np.all(out[~fg.any(axis=0)] == 0)
    assert out.dtype == np.uint8


def test_proportional_labels_background_where_no_mask_or_zero_score():
    cams = np.array([[[0.9, 0.0, 0.5]], [[0.9, 0.0, 0.0]]])
    fg = np.array([[[False, True, False]], [[False, True, False]]])  # pixel 1: masks set but CAMs 0
    out = proportional_labels(cams, fg, [3, 4])
    np.testing.assert_array_equal(out, [[0, 0, 0]])
    assert proportional_labels(np.zeros((0, 2, 2)), np.zeros((0, 2, 2), bool), []).sum() == 0
    with pytest.raises(ValueError, match="fg_masks"):
        proportional_labels(cams, fg[:, :, :2], [3, 4])


def test_cam_argmax_hand_case():
    cams = np.array(
        [
            [[0.9, 0.2, 0.6], [0.1, 0.4, 0.0]],
            [[0.3, 0.7, 0.6], [0.2, 0.45, 0.0]],
        ]
    )
    out = cam_argmax(cams, [5, 12], bg_threshold=0.5)
    np.testing.assert_array_equal(out, [[5, 12, 5], [0, 0, 0]])  # tie -> first class; max < 0.5 -> bg
    np.testing.assert_array_equal(cam_argmax(cams, [5, 12], 0.3), [[5, 12, 5], [0, 12, 0]])
    assert cam_argmax(np.zeros((0, 2, 3)), [], 0.5).shape == (2, 3)
    with pytest.raises(ValueError, match="cams has 2 maps but labels has 3 ids"):
        cam_argmax(cams, [1, 2, 3], 0.5)
    with pytest.raises(ValueError, match="1-based"):
        cam_argmax(cams, [0, 2], 0.5)


def test_alpha_from_threshold():
    assert alpha_from_threshold(0.16) == pytest.approx(10.51, abs=0.01)
    assert alpha_from_threshold(0.5) == pytest.approx(1.0)
    for t in (0.1, 0.16, 0.3):  # the defining property: (1 - t) ** alpha == t
        assert (1 - t) ** alpha_from_threshold(t) == pytest.approx(t)
    assert alpha_from_threshold(0.01) == 24.0  # 458 clipped to high
    assert alpha_from_threshold(0.9) == 1.0  # 0.05 clipped to low
    assert alpha_from_threshold(0.01, high=math.inf) == pytest.approx(math.log(0.01) / math.log(0.99))
    for bad in (0.0, 1.0, -0.2, 1.5):
        with pytest.raises(ValueError, match=r"\(0, 1\)"):
            alpha_from_threshold(bad)


# --------------------------------------------------------------------------- dense CRF


def _two_region_case(seed: int = 0, size: int = 64):
    """A left-dark / right-bright image and 2-label unaries with 25% of the pixels flipped."""
    rng = np.random.default_rng(seed)
    truth = np.zeros((size, size), dtype=np.int64)
    truth[:, size // 2 :] = 1
    image = np.where(truth[..., None] == 1, 200, 40).astype(np.uint8).repeat(3, axis=2)
    image = np.clip(image + rng.normal(0, 4, image.shape), 0, 255).astype(np.uint8)
    noisy = np.where(rng.random(truth.shape) < 0.25, 1 - truth, truth)
    fg = np.where(noisy == 1, 0.7, 0.3)
    return image, np.stack([1 - fg, fg]), truth, noisy


def test_dense_crf_returns_normalised_marginals_and_removes_noise():
    image, probs, truth, noisy = _two_region_case()
    q = dense_crf(image, probs)
    assert q.shape == probs.shape and q.dtype == np.float32
    np.testing.assert_allclose(q.sum(axis=0), 1.0, atol=1e-4)
    assert (noisy != truth).mean() > 0.2
    assert (q.argmax(axis=0) != truth).mean() < 0.01


def test_dense_crf_accepts_non_contiguous_inputs_and_validates():
    image, probs, _, _ = _two_region_case(1)
    ref = dense_crf(image, probs)
    # A BGR view (negative stride) and float64 probabilities: colour order does not change the result
    # beyond the permutohedral lattice's rounding (~1e-4 in Q, labels identical).
    bgr = dense_crf(image[..., ::-1], probs.astype(np.float64))
    np.testing.assert_allclose(bgr, ref, atol=1e-3)
    np.testing.assert_array_equal(bgr.argmax(axis=0), ref.argmax(axis=0))
    with pytest.raises(ValueError, match="image is 64x64 but probs are 64x32"):
        dense_crf(image, probs[:, :, :32])
    with pytest.raises(ValueError, match="unknown CRF backend"):
        dense_crf(image, probs, CRFParams(backend="nope"))
    assert "pydensecrf" in CRF_BACKENDS


def test_pipelines_on_small_synthetic_image():
    image, _, truth, _ = _two_region_case(2)
    cam = np.clip(truth + np.random.default_rng(3).normal(0, 0.1, truth.shape), 0, 1)[None]
    cam[:, :, 20:32] *= 0.3  # a weak part of the object next to the border
    labels = [9]
    for out in (ppmg(image, cam, labels), crf_baseline(image, cam, labels)):
        assert out.dtype == np.uint8 and set(np.unique(out)) <= {0, 9}
        assert (out == truth * 9).mean() > 0.97
    # Dispatch: cov=False is PPMG with cov_scale 0; argmax with cov applies cov_smooth first.
    np.testing.assert_array_equal(
        make_pseudo_mask("ppmg", image, cam, labels, alpha=11, cov=False), ppmg(image, cam, labels, cov_scale=0.0)
    )
    np.testing.assert_array_equal(
        make_pseudo_mask("argmax", image, cam, labels, alpha=11, bg_threshold=0.4),
        cam_argmax(cov_smooth(cam), labels, 0.4),
    )
    np.testing.assert_array_equal(
        make_pseudo_mask("crf", image, cam, labels, alpha=24, cov=False), crf_baseline(image, cam, labels, 24)
    )
    with pytest.raises(ValueError, match="argmax, crf, ppmg"):
        make_pseudo_mask("grabcut", image, cam, labels, alpha=11)
    with pytest.raises(ValueError, match="image is 64x64 but cams are 64x60: resize the CAMs to the image"):
        ppmg(image, cam[:, :, :60], labels)
    for fn in (ppmg, crf_baseline):
        assert not fn(image, np.zeros((0, 64, 64)), []).any()


# --------------------------------------------------------------------------- real VOC photographs


def gt_cams(mask: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stride-16-like CAMs derived from ground truth, with per-class sharpness varying as real CAMs do.

    Per present class: the distance-to-boundary map raised to a random power (peaky, centre-heavy
    CAMs for powers > 1, flat ones for < 1), area-downsampled to 1/16, Gaussian-blurred
    (sigma 1 cell = 16 px), plus mild smooth noise, bilinearly upsampled, min-max normalised.
    """
    rng = np.random.default_rng(seed)
    height, width = mask.shape
    small_size = ((width + 15) // 16, (height + 15) // 16)
    labels = np.array([c for c in np.unique(mask) if c not in (0, 255)], dtype=np.int64)
    cams = []
    for c in labels:
        dist = cv2.distanceTransform((mask == c).astype(np.uint8), cv2.DIST_L2, 5)
        sharpness = float(np.exp(rng.uniform(np.log(0.3), np.log(1.5))))
        soft = (dist / max(float(dist.max()), 1e-8)) ** sharpness
        small = cv2.GaussianBlur(cv2.resize(soft, small_size, interpolation=cv2.INTER_AREA), (0, 0), 1.0)
        noise = cv2.GaussianBlur(rng.standard_normal(small.shape).astype(np.float32), (0, 0), 1.0)
        cam = cv2.resize(small + 0.15 * noise, (width, height), interpolation=cv2.INTER_LINEAR)
        cam = np.clip(cam, 0, None)
        cams.append((cam - cam.min()) / max(float(cam.max() - cam.min()), 1e-8))
    return np.stack(cams).astype(np.float32), labels


@pytest.fixture(scope="module")
def voc_split(voc_samples: Path):
    images = sorted((voc_samples / "JPEGImages").glob("*.jpg"))
    assert len(images) == 14, f"{voc_samples}: expected the 14 shared VOC photographs, found {len(images)}"
    split = []
    for index, path in enumerate(images):
        mask = load_mask(voc_samples / "SegmentationClass" / f"{path.stem}.png")
        cams, labels = gt_cams(mask, seed=index)
        split.append((load_image(path), mask, cams, labels))
    return split


def _split_miou(split, predict) -> float:
    """mIoU over the split from ONE confusion matrix (the usual evaluation conventions)."""
    cm = np.zeros((21, 21), dtype=np.int64)
    for image, mask, cams, labels in split:
        cm += confusion_matrix(predict(image, cams, labels), mask, 21)
    return mean_iou(cm)


def test_ppmg_beats_best_threshold_cam_argmax_on_voc_samples(voc_split):
    assert voc_split[0][0].shape == (513, 513, 3)
    thresholds = np.round(np.arange(0.02, 0.90, 0.01), 2)
    curve = [_split_miou(voc_split, lambda i, c, l, t=t: cam_argmax(c, l, t)) for t in thresholds]
    best_t = float(thresholds[int(np.argmax(curve))])
    best_argmax = max(curve)
    # The CAMs' own calibration sets alpha: background and foreground tie at S = best_t.
    alpha = alpha_from_threshold(best_t)
    ppmg_miou = _split_miou(voc_split, lambda i, c, l: ppmg(i, c, l, alpha=alpha))
    assert 0.10 <= best_t <= 0.25  # these CAMs are calibrated like VOC CAMs (t ~ 0.16)
    assert ppmg_miou >= best_argmax + 0.03, (best_t, best_argmax, alpha, ppmg_miou)


@pytest.mark.parametrize("backend", ["fast", pytest.param("pydensecrf", marks=pytest.mark.pydensecrf)])
def test_crf_backend_is_deterministic_on_a_real_photo(voc_split, backend):
    image, _, cams, labels = voc_split[13]  # two overlapping classes (motorbike, person)
    crf = CRFParams(backend=backend)
    s = cov_smooth(cams)
    probs = np.stack([(1 - s[0]) ** 11, s[0]])
    np.testing.assert_array_equal(dense_crf(image, probs, crf), dense_crf(image, probs, crf))
    np.testing.assert_array_equal(ppmg(image, cams, labels, crf=crf), ppmg(image, cams, labels, crf=crf))


def test_confident_crf_mask_is_the_crf_argmax_where_its_marginal_is_sure(voc_split):
    from pmm.pseudo import confident_crf_mask

    rough = CRFParams(gauss_sxy=3, gauss_compat=3, bilateral_sxy=80, bilateral_srgb=13, bilateral_compat=10)
    image, mask, cams, labels = voc_split[13]
    out = confident_crf_mask(image, cams, labels, alpha=24, confidence=0.9, crf=rough)
    q = dense_crf(image, np.concatenate([((1 - cams.max(axis=0)) ** 24)[None], cams]), rough)
    argmax = crf_baseline(image, cams, labels, alpha=24, crf=rough)
    sure = q.max(axis=0) > 0.9
    assert 0.2 < sure.mean() < 1.0  # some pixels are unsure on a real photo, most are not
    np.testing.assert_array_equal(out[sure], argmax[sure])
    assert np.all(out[~sure] == 255)
    # A stricter confidence only turns sure pixels into unsure ones.
    stricter = confident_crf_mask(image, cams, labels, alpha=24, confidence=0.99, crf=rough)
    assert np.all((stricter == out) | (stricter == 255)) and (stricter == 255).sum() > (out == 255).sum()
    with pytest.raises(ValueError, match="confidence must be in"):
        confident_crf_mask(image, cams, labels, alpha=24, confidence=0.3, crf=rough)
