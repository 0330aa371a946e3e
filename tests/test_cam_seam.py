"""SEAM (pmm.cam.seam): the PCM, the losses against hand-computed values, the network; the
multi-crop round's crop sampler, crop labels and inference windows (pmm.cam.crops)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from pmm.cam.crops import crop_labels, sample_crop_box, sample_labelled_crop
from pmm.cam.seam import SEAMNet, max_norm, refine, seam_losses

A = (1 - 1e-5) / (1 + 1e-5)  # a unit peak after SEAM's max normalisation
BOX = {"area": (0.04, 1.0), "aspect": (3 / 5, 5 / 3)}  # the multi-crop round's (cam.multi_crop)
LABELS = {"min_share": 0.1, "min_object_share": 0.1}


# ---------------------------------------------------------------- refine (PCM)


def test_refine_by_hand_two_pixels():
    # C = 2 foreground classes, 1 x 2 pixels. Normalised: class 1 = [1, 0.5] -> [1, 0] (below the
    # pixel's foreground max), class 2 = [0, 1]; background = 1 - max = [0, 0].
    cam = torch.tensor([[[[5.0, -3.0]], [[2.0, 1.0]], [[0.0, 3.0]]]])
    # Features [3, 0] and [2, 2]: unit vectors [1, 0] and [s, s]; affinity [[1, s], [s, 1]], s = 1/sqrt 2.
    feature = torch.tensor([[[[3.0, 2.0]], [[0.0, 2.0]]]])
    s = 1 / math.sqrt(2)
    column = 1 + s  # every column sums to 1 + s
    expected = torch.tensor([[[[0.0, 0.0]], [[1 / column, s / column]], [[s / column, 1 / column]]]])
    torch.testing.assert_close(refine(cam, feature), expected, atol=1e-4, rtol=0)


def test_refine_relu_affinity_and_column_normalisation():
    torch.manual_seed(0)
    cam = torch.rand(2, 4, 3, 5) * 3
    # Opposite features: the negative affinity is cut by the ReLU, each pixel keeps its own value.
    feature = torch.zeros(2, 2, 3, 5)
    feature[:, 0] = torch.where(torch.rand(3, 5) > 0.5, 1.0, -1.0)
    refined = refine(cam, feature)
    # Within a group of equal features the refined CAM is the group's mean of the normalised CAM.
    from pmm.cam.seam import normalize_for_pcm

    normalised = normalize_for_pcm(cam)
    for n in range(2):
        for sign in (1.0, -1.0):
            group = feature[n, 0] == sign
            mean = normalised[n][:, group].mean(dim=1, keepdim=True)
            torch.testing.assert_close(refined[n][:, group], mean.expand(-1, int(group.sum())), atol=1e-4, rtol=0)
    # Columns normalised: a CAM that is 1 everywhere stays 1 (up to the 1e-5 guard).
    features = torch.randn(1, 6, 4, 4)
    ones = refine(torch.cat([torch.zeros(1, 1, 4, 4), torch.ones(1, 1, 4, 4)], dim=1), features)
    torch.testing.assert_close(ones[:, 1], torch.ones(1, 4, 4), atol=1e-3, rtol=0)


def test_refine_detaches_the_cam_and_trains_the_feature():
    cam = torch.randn(1, 3, 4, 4, requires_grad=True)
    feature = torch.randn(1, 5, 4, 4, requires_grad=True)
    refine(cam, feature).pow(2).sum().backward()
    assert cam.grad is None
    assert feature.grad is not None and feature.grad.abs().sum() > 0


def test_refine_column_blocks_equal_one_piece(monkeypatch):
    import pmm.cam.seam as seam

    torch.manual_seed(1)
    cam, feature = torch.randn(2, 3, 6, 7), torch.randn(2, 8, 6, 7)
    whole = refine(cam, feature)
    monkeypatch.setattr(seam, "_AFFINITY_BLOCK", 42 * 5)  # blocks of 5 columns
    torch.testing.assert_close(refine(cam, feature), whole, atol=1e-6, rtol=1e-5)


# ---------------------------------------------------------------- seam_losses


def _one_hot_maps(first: tuple[int, int], second: tuple[int, int], size: int = 2) -> torch.Tensor:
    """1 x 3 x size x size: background 0, class 1 peaks at ``first``, class 2 at ``second``."""
    cam = torch.zeros(1, 3, size, size)
    cam[0, 1][first] = 1.0
    cam[0, 2][second] = 1.0
    return cam


def _refined_like(cam: torch.Tensor) -> torch.Tensor:
    """A refined CAM consistent with ``cam``: background 1 where no class is."""
    rv = cam.clone()
    rv[:, 0] = 1 - cam[:, 1:].amax(dim=1)
    return rv


def test_losses_zero_when_the_passes_agree():
    cam = _one_hot_maps((0, 0), (1, 1))
    labels = torch.tensor([[1.0, 1.0]])
    out = seam_losses(cam, _refined_like(cam), cam.clone(), _refined_like(cam), labels)
    assert set(out) == {"cls", "rvmin", "er", "ecr", "total"}
    # cls: both classes present, each class's spatial mean is 1/4.
    cls = -math.log(1 / (1 + math.exp(-0.25)))
    assert out["cls"].item() == pytest.approx(cls, abs=1e-6)
    # rvmin: the lowest quarter (1 of 4 pixels) of the foreground max is 0.
    assert out["rvmin"].item() == pytest.approx(0.0, abs=1e-7)
    assert out["er"].item() == pytest.approx(0.0, abs=1e-7)
    # ecr: the background of c is 1 - A, not 0, where a class peaks: |1 - A - 0| ~ 2e-5.
    assert out["ecr"].item() == pytest.approx(0.0, abs=1e-4)
    assert out["total"].item() == pytest.approx(cls, abs=1e-4)


def test_losses_zero_across_scales_with_align_corners_resize():
    # Pass 1 at 3 x 3 whose corners are pass 2's 2 x 2 map: align_corners resizing keeps corners.
    cam1 = torch.zeros(1, 3, 3, 3)
    cam1[0, 1] = torch.tensor([[1.0, 0.5, 0.0], [0.5, 0.25, 0.0], [0.0, 0.0, 0.0]])
    cam1[0, 2] = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.25, 0.5], [0.0, 0.5, 1.0]])
    cam2 = _one_hot_maps((0, 0), (1, 1))
    labels = torch.tensor([[1.0, 1.0]])
    out = seam_losses(cam1, _refined_like(cam1), cam2, _refined_like(cam2), labels)
    assert out["er"].item() == pytest.approx(0.0, abs=1e-6)


def test_losses_positive_when_the_passes_disagree():
    cam1 = _one_hot_maps((0, 0), (1, 1))
    cam2 = _one_hot_maps((1, 1), (0, 0))  # the classes swapped
    labels = torch.tensor([[1.0, 1.0]])
    out = seam_losses(cam1, _refined_like(cam1), cam2, _refined_like(cam2), labels)
    # er: |c1 - c2| is A at 2 pixels of each of the 2 classes: 4 A over 2 x 4 entries.
    assert out["er"].item() == pytest.approx(A / 2, abs=1e-5)
    # ecr: per pass, 12 entries, the top int(12 * 0.2) = 2 are A (the misplaced peaks): A + A.
    assert out["ecr"].item() == pytest.approx(2 * A, abs=1e-4)
    torch.testing.assert_close(out["total"], out["cls"] + out["rvmin"] + out["er"] + out["ecr"])


def test_losses_min_pooling_and_absent_classes():
    # Refined CAM positive everywhere: the lowest quarter of the foreground max is still positive.
    cam = _one_hot_maps((0, 0), (1, 1))
    rv = torch.full((1, 3, 2, 2), 0.2)
    rv[0, 2, 1, 1] = 0.7
    labels = torch.tensor([[0.0, 1.0]])  # class 1 absent: its refined map is gated out
    out = seam_losses(cam, rv, cam.clone(), rv.clone(), labels)
    assert out["rvmin"].item() == pytest.approx(0.2, abs=1e-6)
    # cls with class 1 absent: mean of -log(1 - sigmoid(1/4)) and -log sigmoid(1/4).
    expected = (-math.log(1 - 1 / (1 + math.exp(-0.25))) - math.log(1 / (1 + math.exp(-0.25)))) / 2
    assert out["cls"].item() == pytest.approx(expected, abs=1e-6)


def test_ecr_gradient_reaches_only_the_refined_cams():
    torch.manual_seed(0)
    tensors = [torch.randn(2, 4, 6, 6, requires_grad=True), torch.rand(2, 4, 6, 6, requires_grad=True)]
    tensors += [torch.randn(2, 4, 3, 3, requires_grad=True), torch.rand(2, 4, 3, 3, requires_grad=True)]
    labels = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    seam_losses(*tensors, labels)["ecr"].backward()
    cam1, rv1, cam2, rv2 = tensors
    assert cam1.grad is None and cam2.grad is None
    assert rv1.grad.abs().sum() > 0 and rv2.grad.abs().sum() > 0


def test_max_norm_is_per_channel_min_max():
    x = torch.tensor([[[[-1.0, 2.0], [4.0, 6.0]]]])
    # ReLU -> [0, 2, 4, 6]; (x - 0 - eps) / (6 + eps)
    torch.testing.assert_close(max_norm(x), torch.tensor([[[[0.0, 2.0], [4.0, 6.0]]]]).sub(1e-5).clamp_min(0) / (6 + 1e-5))


# ---------------------------------------------------------------- SEAMNet


@pytest.fixture(scope="module")
def net() -> SEAMNet:
    torch.manual_seed(0)
    return SEAMNet("regnetx_002", num_classes=4, pretrained=False, output_stride=8, out_index=-2)


def test_seamnet_forward_shapes(net):
    out = net(torch.rand(2, 3, 64, 64))
    assert out["logits"].shape == (2, 4)
    assert out["cams"].shape == (2, 4, 8, 8)
    assert out["raw"].shape == out["refined"].shape == (2, 5, 8, 8)
    torch.testing.assert_close(out["logits"], out["cams"].mean(dim=(2, 3)))


def test_seamnet_training_loss_backpropagates(net):
    net.train()
    net.zero_grad()
    batch = {"image": torch.rand(2, 3, 64, 64), "label": torch.tensor([[1.0, 0, 1, 0], [0, 1, 0, 0]])}
    losses = net.training_loss(batch)
    assert set(losses) == {"cls", "rvmin", "er", "ecr", "total"}
    assert all(torch.isfinite(v) for v in losses.values())
    losses["total"].backward()
    for module in (net.classifier, net.project_low, net.project_mid, net.pcm_feature):
        assert module.weight.grad is not None and module.weight.grad.abs().sum() > 0
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in net.backbone.parameters())


def test_seamnet_pcm_reads_detached_features(net):
    net.zero_grad()
    net(torch.rand(2, 3, 64, 64))["refined"].sum().backward()
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in net.backbone.parameters())
    assert net.classifier.weight.grad is None or net.classifier.weight.grad.abs().sum() == 0
    assert net.pcm_feature.weight.grad.abs().sum() > 0


def test_seamnet_cams_refined_or_raw(net):
    net.eval()
    images = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        out = net(images)
        torch.testing.assert_close(net.cams(images), out["refined"][:, 1:])
        net.inference_cam = "raw"
        try:
            torch.testing.assert_close(net.cams(images), out["cams"])
        finally:
            net.inference_cam = "refined"


def test_seamnet_param_groups():
    net = SEAMNet("regnetx_002", num_classes=3, out_index=-2, bias_lr_mult=2, new_weight_lr_mult=10, new_bias_lr_mult=20)
    groups = {g["name"]: g for g in net.param_groups(0.01)}
    assert groups["weight"]["lr"] == pytest.approx(0.01) and groups["bias"]["lr"] == pytest.approx(0.02)
    assert groups["new_weight"]["lr"] == pytest.approx(0.1)
    assert "new_bias" not in groups  # SEAM's new layers have no biases
    assert groups["bias"]["weight_decay"] == 0.0 and "weight_decay" not in groups["weight"]
    new = {id(m.weight) for m in (net.classifier, net.project_low, net.project_mid, net.pcm_feature)}
    assert {id(p) for p in groups["new_weight"]["params"]} == new
    listed = [id(p) for g in groups.values() for p in g["params"]]
    assert sorted(listed) == sorted(id(p) for p in net.parameters())


def test_seam_yaml_instantiates():
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    import pmm

    # The group file reads the root input_encoding node, as it does inside the composed config.
    config = OmegaConf.merge({"input_encoding": {"mode": "rgb", "edge_sigma": 0.0}},
                             {"cam_net": OmegaConf.load(Path(pmm.__file__).parent / "conf" / "cam_net" / "seam.yaml")})
    net = instantiate(config.cam_net, num_classes=3)
    assert isinstance(net, SEAMNet) and net.num_classes == 3
    assert net.cams(torch.rand(1, 3, 48, 48)).shape == (1, 3, 6, 6)


# ---------------------------------------------------------------- multi-crop round


def _mask() -> np.ndarray:
    mask = np.zeros((10, 10), dtype=np.uint8)
    mask[:5, :5] = 1  # class 1: 25 pixels, top-left
    mask[9, 9] = 2  # class 2: one pixel, bottom-right
    mask[5:, :2] = 255  # ignored
    return mask


def test_crop_labels_by_share_of_the_crop_and_of_the_object():
    mask = _mask()
    # Whole image: class 1 covers 25 % of it; class 2 1 %, but the crop holds all of class 2.
    np.testing.assert_array_equal(crop_labels(mask, (0, 0, 10, 10), 3, 0.1, 0.1), [1, 1, 0])
    np.testing.assert_array_equal(crop_labels(mask, (0, 0, 10, 10), 3, 0.1, None), [1, 0, 0])
    # Bottom-right quarter: no class 1; class 2 is 1/25 of the crop but all of itself.
    np.testing.assert_array_equal(crop_labels(mask, (5, 5, 5, 5), 3, 0.1, 0.1), [0, 1, 0])
    np.testing.assert_array_equal(crop_labels(mask, (5, 5, 5, 5), 3, 0.1, None), [0, 0, 0])
    # A crop with one column of class 1 (5 of 50 pixels = 10 %: kept at >=; 5 of 25 class pixels too).
    np.testing.assert_array_equal(crop_labels(mask, (0, 4, 10, 5), 3, 0.1, None), [1, 0, 0])
    np.testing.assert_array_equal(crop_labels(mask, (0, 4, 10, 5), 3, 0.11, None), [0, 0, 0])
    np.testing.assert_array_equal(crop_labels(mask, (0, 4, 10, 5), 3, 0.11, 0.2), [1, 0, 0])


def test_crop_boxes_respect_area_and_aspect_and_the_seed():
    draws = [sample_crop_box(300, 400, np.random.default_rng(seed), **BOX) for seed in range(200)]
    assert draws[:20] == [sample_crop_box(300, 400, np.random.default_rng(seed), **BOX) for seed in range(20)]
    for top, left, h, w in draws:
        assert 0 <= top and top + h <= 300 and 0 <= left and left + w <= 400
        if (h, w) != (300, 400):  # not the fallback
            assert 0.04 * 120000 * 0.95 <= h * w <= 120000
            assert 3 / 5 * 0.95 <= w / h <= 5 / 3 * 1.05
    assert len(set(draws)) > 150


def test_crop_boxes_centred_on_the_heat():
    heat = np.zeros((100, 100))
    heat[80, 20] = 1.0  # one hot pixel
    rng = np.random.default_rng(0)
    for _ in range(50):
        top, left, h, w = sample_crop_box(100, 100, rng, heat=heat, **BOX)
        assert top <= 80 < top + h and left <= 20 < left + w


def test_labelled_crop_resamples_until_it_holds_a_class():
    mask = np.zeros((100, 100), dtype=np.uint8)
    mask[70:, 70:] = 3  # an object in a corner
    rng = np.random.default_rng(0)
    for _ in range(20):
        (top, left, h, w), labels = sample_labelled_crop(mask, 3, rng, area=(0.04, 0.1), aspect=BOX["aspect"], **LABELS)
        np.testing.assert_array_equal(labels, [0, 0, 1])
        window = mask[top : top + h, left : left + w]
        assert (window == 3).mean() >= 0.1 or (window == 3).sum() >= 10
    # Nothing to find: the last box, with no label.
    box, labels = sample_labelled_crop(np.zeros((50, 50), dtype=np.uint8), 3, rng, tries=5, **BOX, **LABELS)
    assert not labels.any() and len(box) == 4
