"""CAM network (the plain head and its protocol), CAM inference through the TTA module, the threshold sweep."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pmm.cam.module import normalize_cams
from pmm.scoring.sweep import ThresholdSweep, default_thresholds
from pmm.cam.net import CAMNet, CAMNetwork
from pmm.errors import PmmError
from pmm.scoring.metrics import confusion_matrix


@pytest.fixture(scope="module")
def net() -> CAMNet:
    torch.manual_seed(0)
    return CAMNet("resnet18", num_classes=5, output_stride=16, out_index=-2).eval()


def test_logits_are_the_mean_of_the_cams(net):
    out = net(torch.rand(2, 3, 96, 128))
    assert out["logits"].shape == (2, 5)
    assert out["cams"].shape == (2, 5, 6, 8)  # layer3 at output stride 16
    torch.testing.assert_close(out["logits"], out["cams"].mean(dim=(2, 3)))
    torch.testing.assert_close(net.cams(torch.zeros(1, 3, 32, 32)), net(torch.zeros(1, 3, 32, 32))["cams"])


def test_plain_head_implements_the_cam_network_protocol(net):
    assert isinstance(net, CAMNetwork)
    batch = {"image": torch.rand(2, 3, 64, 64), "label": torch.tensor([[1.0, 0, 0, 0, 1], [0, 1, 0, 0, 0]])}
    terms = net.training_loss(batch)
    expected = torch.nn.functional.multilabel_soft_margin_loss(net(batch["image"])["logits"], batch["label"])
    torch.testing.assert_close(terms["total"], expected)
    groups = CAMNet("resnet18", num_classes=3, new_layer_lr_mult=10.0).param_groups(0.01)
    assert [g["lr"] for g in groups] == [0.01, pytest.approx(0.1)]


def test_network_normalises_with_its_backbones_statistics(net):
    # timm's data config of resnet18 is ImageNet's; the input is [0, 1] RGB.
    torch.testing.assert_close(net.normalize.mean.flatten(), torch.tensor([0.485, 0.456, 0.406]))
    assert "normalize.mean" not in net.state_dict()  # old checkpoints load unchanged


def test_output_stride_8_doubles_the_cam_resolution():
    net = CAMNet("resnet18", num_classes=3, output_stride=8, out_index=-2)
    assert net(torch.rand(1, 3, 64, 64))["cams"].shape[-2:] == (8, 8)


def test_threshold_grid_is_fine_where_voc_thresholds_lie():
    grid = default_thresholds()
    assert 0.16 in grid and 0.17 in grid and 0.01 in grid and 0.95 in grid
    assert np.all(np.diff(grid) > 0)


def test_normalize_keeps_labelled_classes_in_unit_range():
    cams = torch.rand(5, 10, 10) * 7
    kept = normalize_cams(cams, torch.tensor([2, 5]))
    assert kept.shape == (2, 10, 10)
    assert torch.isclose(kept.amax(dim=(1, 2)), torch.ones(2)).all() and torch.isclose(kept.amin(dim=(1, 2)), torch.zeros(2)).all()
    # The order follows the labels: the first map is class 2's (index 1).
    assert torch.argmax(kept[0]) == torch.argmax(cams[1])
    assert normalize_cams(cams, torch.tensor([], dtype=torch.long)).shape == (0, 10, 10)


def test_threshold_sweep_matches_hand_built_predictions():
    cams = np.array([[[0.9, 0.4], [0.1, 0.0]], [[0.2, 0.6], [0.05, 0.0]]], dtype=np.float32)
    labels = np.array([1, 3])
    target = np.array([[1, 3], [0, 255]])
    sweep = ThresholdSweep(num_classes=4, thresholds=[0.3, 0.7])
    sweep.update(cams, labels, target)
    # t = 0.3: [[1, 3], [0, 0]] ; t = 0.7: [[1, 0], [0, 0]]
    np.testing.assert_array_equal(sweep.confusions[0], confusion_matrix(np.array([[1, 3], [0, 0]]), target, 4))
    np.testing.assert_array_equal(sweep.confusions[1], confusion_matrix(np.array([[1, 0], [0, 0]]), target, 4))


def test_missing_local_weights_file_is_a_clear_error(tmp_path):
    with pytest.raises(PmmError, match=r"cam_net.weights=.*nope.pth: file not found"):
        CAMNet("resnet18", num_classes=3, weights=str(tmp_path / "nope.pth"))


def test_local_weights_file_is_loaded(tmp_path):
    import timm

    source = timm.create_model("resnet18", pretrained=False)
    torch.nn.init.constant_(source.conv1.weight, 0.01)
    path = tmp_path / "resnet18.pth"
    torch.save(source.state_dict(), path)
    net = CAMNet("resnet18", num_classes=3, weights=str(path))
    torch.testing.assert_close(net.backbone.conv1.weight, source.conv1.weight)
