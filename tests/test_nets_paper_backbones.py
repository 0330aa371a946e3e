"""The authors' CAM backbones: ResNet-38 (``resnet38d``) and ScaleNet-101 (``scalenet101``).

Built with random weights on 64-pixel inputs; weights files are written here in the reference key
layout, whose names the tests spell out from SEAM's and PMM's network definitions, independently
of pmm's modules.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from torch import nn

import pmm
from pmm.cam.seam import SEAMNet
from pmm.errors import PmmError
from pmm.nets.backbone import create_backbone
from pmm.nets.paper_backbones import load_reference_weights

CONF_DIR = Path(pmm.__file__).parent / "conf"
BN_KEYS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def one_line(error) -> str:
    message = str(error.value)
    assert "\n" not in message, message
    return message


# ------------------------------------------------------------------- the reference layouts, spelt out

def bn(prefix: str) -> list[str]:
    return [f"{prefix}.{key}" for key in BN_KEYS]


def seam_resnet38d_keys() -> list[str]:
    """SEAM's network/resnet38d.py ``Net`` state-dict names."""
    keys = ["conv1a.weight"]
    groups = {"b2": 2, "b3": 2, "b4": 5, "b5": 2}
    for group, extra in groups.items():
        for name in [group] + [f"{group}_{i}" for i in range(1, extra + 1)]:
            keys += bn(f"{name}.bn_branch2a") + [f"{name}.conv_branch2a.weight"]
            keys += bn(f"{name}.bn_branch2b1") + [f"{name}.conv_branch2b1.weight"]
            if name == group:  # the first block of a group changes the shape: a 1x1 shortcut conv
                keys.append(f"{name}.conv_branch1.weight")
    for name in ("b6", "b7"):
        keys += bn(f"{name}.bn_branch2a") + [f"{name}.conv_branch2a.weight"]
        keys += bn(f"{name}.bn_branch2b1") + [f"{name}.conv_branch2b1.weight"]
        keys += bn(f"{name}.bn_branch2b2") + [f"{name}.conv_branch2b2.weight", f"{name}.conv_branch1.weight"]
    return keys + bn("bn7")


# A ScaleNet-101 structure in the official scalenet101.json format, with small branches: one entry
# [c1, c2, c4, c7, side] per block (3 + 4 + 23 + 3), side = the block's feature size at 224 px.
def small_structure() -> list[list[int]]:
    sides = [56] * 3 + [28] * 4 + [14] * 23 + [7] * 3
    entries = []
    for index, side in enumerate(sides):
        entries.append([6, 3, 0 if index % 3 == 2 else 2, 1, side])  # every third block without its x4 branch
    return entries


def scalenet_keys(structure: list[list[int]]) -> list[str]:
    """PMM's network/scalenet.py ``ScaleNet`` (ImageNet's, without ``fc``) state-dict names."""
    keys = ["conv1.weight"] + bn("bn1")
    entries = iter(structure)
    for layer, count in enumerate((3, 4, 23, 3), start=1):
        for block in range(count):
            entry = next(entries)
            prefix = f"layer{layer}.{block}"
            if block == 0:
                keys += [f"{prefix}.downsample.0.weight"] + bn(f"{prefix}.downsample.1")
            keys += [f"{prefix}.conv1.weight"] + bn(f"{prefix}.bn1")
            keys += [f"{prefix}.conv2.{i}.weight" for i in range(4) if entry[i] > 0]
            keys += [key for i in range(4) if entry[i] > 0 for key in bn(f"{prefix}.bn2.{i}")]
            keys += [f"{prefix}.conv3.weight"] + bn(f"{prefix}.bn3")
    return keys


@pytest.fixture(scope="module")
def structure_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("scalenet") / "scalenet101.json"
    path.write_text(json.dumps(small_structure()))
    return path


@pytest.fixture(scope="module")
def resnet38d() -> nn.Module:
    torch.manual_seed(0)
    return create_backbone("resnet38d", output_stride=8, out_indices=(-3, -2, -1)).eval()


@pytest.fixture(scope="module")
def resnet38d_file(tmp_path_factory, resnet38d) -> Path:
    """SEAM's released model as it is saved: backbone + SEAM head (fc8, f8_3, f8_4, f9), under DataParallel."""
    state = {key: value.clone() for key, value in resnet38d.state_dict().items()}
    assert set(state) == set(seam_resnet38d_keys()) - {k for k in seam_resnet38d_keys() if k.endswith("num_batches_tracked")}
    state.update({"fc8.weight": torch.randn(21, 4096, 1, 1), "f8_3.weight": torch.randn(64, 512, 1, 1),
                  "f8_4.weight": torch.randn(128, 1024, 1, 1), "f9.weight": torch.randn(192, 195, 1, 1)})
    for key in ("b2.bn_branch2a.running_mean", "b4_5.bn_branch2b1.running_var", "bn7.running_var"):
        state[key] = torch.rand_like(state[key]) + 0.5  # statistics a fresh network does not have
    path = tmp_path_factory.mktemp("weights") / "resnet38_SEAM.pth"
    torch.save({f"module.{key}": value for key, value in state.items()}, path)
    return path


# --------------------------------------------------------------------------------------- ResNet-38

def test_resnet38d_has_seams_layout_and_shapes():
    model = create_backbone("resnet38d", output_stride=8, out_indices=(0, 1, 2, 3, 4), freeze=[], frozen_bn=False)
    state = model.state_dict()
    assert list(state) == seam_resnet38d_keys()
    shapes = {"conv1a.weight": [64, 3, 3, 3], "b2.conv_branch2a.weight": [128, 64, 3, 3],
              "b2_1.conv_branch2a.weight": [128, 128, 3, 3], "b5.conv_branch2a.weight": [512, 512, 3, 3],
              "b5.conv_branch1.weight": [1024, 512, 1, 1], "b6.conv_branch2a.weight": [512, 1024, 1, 1],
              "b7.conv_branch2b1.weight": [2048, 1024, 3, 3], "b7.conv_branch2b2.weight": [4096, 2048, 1, 1],
              "bn7.running_var": [4096]}
    assert {key: list(state[key].shape) for key in shapes} == shapes
    # Dilations of the reference (PMM's copy): b5 2 (its first conv 1), b6 4, b7 2; no stride after b4.
    assert model.b5.conv_branch2a.dilation == (1, 1) and model.b5_2.conv_branch2b1.dilation == (2, 2)
    assert model.b6.conv_branch2b1.dilation == (4, 4) and model.b7.conv_branch2b1.dilation == (2, 2)
    assert model.b6.dropout_2b1.p == 0.3 and model.b7.dropout_2b2.p == 0.5
    with torch.no_grad():
        maps = model.eval()(torch.rand(1, 3, 64, 64))
    assert [tuple(m.shape[1:]) for m in maps] == [(128, 32, 32), (256, 16, 16), (512, 8, 8), (1024, 8, 8), (4096, 8, 8)]
    assert model.feature_info.channels() == [128, 256, 512, 1024, 4096]
    assert model.feature_info.reduction() == [2, 4, 8, 8, 8]


def test_resnet38d_out_index_minus_one_is_seams_conv4_conv5_conv6(resnet38d):
    with torch.no_grad():
        maps = resnet38d(torch.rand(2, 3, 64, 96))
    assert [tuple(m.shape[1:]) for m in maps] == [(512, 8, 12), (1024, 8, 12), (4096, 8, 12)]
    assert resnet38d.feature_info.channels() == [512, 1024, 4096]
    assert min(float(m.min()) for m in maps) >= 0  # each is a BatchNorm + ReLU output


def test_resnet38d_loads_seams_released_file(resnet38d, resnet38d_file, caplog):
    with caplog.at_level(logging.INFO, logger="pmm"):
        loaded = create_backbone("resnet38d", weights=str(resnet38d_file), output_stride=8, out_indices=(-3, -2, -1)).eval()
    for key, value in resnet38d.state_dict().items():
        if key not in ("b2.bn_branch2a.running_mean", "b4_5.bn_branch2b1.running_var", "bn7.running_var"):
            assert torch.equal(loaded.state_dict()[key], value), key
    assert torch.equal(loaded.state_dict()["bn7.running_var"], torch.load(resnet38d_file)["module.bn7.running_var"])
    assert "ignored the head keys of f8_3, f8_4, f9, fc8" in caplog.text and str(resnet38d_file) in caplog.text


def test_resnet38d_shallower_stage_skips_the_later_layers_and_adapts_the_input(resnet38d_file, caplog):
    with caplog.at_level(logging.INFO, logger="pmm"):
        model = create_backbone("resnet38d", weights=str(resnet38d_file), output_stride=8, in_chans=4, out_indices=(1,))
    assert not hasattr(model, "b5") and not hasattr(model, "bn7") and set(dict(model.b4.named_children())) == {"bn_branch2a"}
    assert model.conv1a.weight.shape == (64, 4, 3, 3)
    assert "skipped" in caplog.text
    with torch.no_grad():
        (conv3,) = model.eval()(torch.rand(1, 4, 64, 64))
    assert conv3.shape == (1, 256, 16, 16)


@pytest.mark.parametrize("change, words", [
    (lambda s: s.pop("bn7.running_var"), "1 of resnet38d's tensors missing (e.g. bn7.running_var)"),
    (lambda s: s.update({"b2.conv_branch2a.weight": torch.zeros(128, 64, 1, 1)}), "b2.conv_branch2a.weight has shape [128, 64, 1, 1]"),
    (lambda s: s.update({"layer1.0.conv1.weight": torch.zeros(1)}), "1 key that resnet38d does not have (e.g. layer1.0.conv1.weight)"),
])
def test_resnet38d_file_that_does_not_fit_is_one_line(tmp_path, resnet38d, change, words):
    state = dict(resnet38d.state_dict())
    change(state)
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(PmmError) as error:
        load_reference_weights(resnet38d, path, "resnet38d")
    message = one_line(error)
    assert message.startswith(f"cam_net.weights={path}: ") and words in message


@pytest.mark.parametrize("content, words", [
    (b"not weights\n", "not readable as a torch state dict"),
    (None, "holds list, not a state dict of tensors"),
])
def test_a_file_that_is_not_a_state_dict_is_one_line(tmp_path, resnet38d, content, words):
    path = tmp_path / "weights.pth"
    if content is None:
        torch.save([torch.zeros(1)], path)
    else:
        path.write_bytes(content)
    with pytest.raises(PmmError) as error:
        load_reference_weights(resnet38d, path, "resnet38d")
    assert f"cam_net.weights={path}" in one_line(error) and words in str(error.value)


def test_mxnet_file_and_missing_file_are_one_line(tmp_path, resnet38d):
    params = tmp_path / "ilsvrc-cls_rna-a1_cls1000_ep-0001.params"
    params.write_bytes(b"\x12\x01\x00\x00")
    with pytest.raises(PmmError) as error:
        load_reference_weights(resnet38d, params, "resnet38d")
    assert "MXNet" in one_line(error) and "convert_mxnet_to_torch" in str(error.value)
    with pytest.raises(PmmError) as error:
        create_backbone("resnet38d", weights=str(tmp_path / "nope.pth"), output_stride=8, out_indices=(0,))
    assert "cam_net.weights=" in one_line(error) and "nope.pth: file not found" in str(error.value)


@pytest.mark.parametrize("name", ["resnet38d", "scalenet101"])
def test_pretrained_without_a_file_says_where_to_get_it(name, structure_file):
    with pytest.raises(PmmError) as error:
        create_backbone(name, pretrained=True, output_stride=8, structure=str(structure_file) if name == "scalenet101" else None)
    message = one_line(error)
    assert "does not download" in message and "cam_net.weights=FILE" in message
    assert ("github.com/YudeWang/SEAM" if name == "resnet38d" else "github.com/Eli-YiLi/PMM") in message


def test_other_output_strides_and_stray_structure_are_one_line(structure_file):
    with pytest.raises(PmmError) as error:
        create_backbone("resnet38d", output_stride=16)
    assert "cam_net.output_stride=16" in one_line(error) and "output_stride=8" in str(error.value)
    with pytest.raises(PmmError) as error:
        create_backbone("resnet38d", output_stride=8, structure=str(structure_file))
    assert "cam_net.structure=" in one_line(error) and "only scalenet101" in str(error.value)
    with pytest.raises(PmmError) as error:
        create_backbone("resnet18", output_stride=8, structure=str(structure_file))
    assert "only scalenet101" in one_line(error)


def test_resnet38d_freezes_the_references_parts():
    torch.manual_seed(1)
    model = create_backbone("resnet38d", output_stride=8, out_indices=(1,))  # conv1a .. b3 (b4 only its first BN)
    frozen_prefixes = ("conv1a.", "b2.", "b2_1.", "b2_2.")
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    assert trainable and not any(name.startswith(frozen_prefixes) for name in trainable)
    assert all(".conv_" in name for name in trainable)  # no BatchNorm affine is trained
    stats_before = {k: v.clone() for k, v in model.state_dict().items() if ".bn" in k}
    frozen_before = {k: v.clone() for k, v in model.state_dict().items() if k.startswith(frozen_prefixes)}
    trained_before = model.b3.conv_branch2a.weight.detach().clone()
    model.train()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    (conv3,) = model(torch.rand(2, 3, 32, 32) * 3)
    conv3.mean().backward()
    assert all(p.grad is None for n, p in model.named_parameters() if n.startswith(frozen_prefixes))
    assert model.b3.conv_branch2a.weight.grad is not None
    optimizer.step()
    after = model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in stats_before.items())
    assert all(torch.equal(after[k], v) for k, v in frozen_before.items())
    assert not torch.equal(after["b3.conv_branch2a.weight"], trained_before)


def test_freeze_and_frozen_bn_can_be_changed_and_are_checked():
    model = create_backbone("resnet38d", output_stride=8, out_indices=(0,), freeze=[], frozen_bn=False)
    assert all(p.requires_grad for p in model.parameters())
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    with pytest.raises(PmmError) as error:
        create_backbone("resnet38d", output_stride=8, out_indices=(0,), freeze=["layer1"])
    assert "cam_net.freeze=['layer1']" in one_line(error) and "conv1a" in str(error.value)
    timm_model = create_backbone("resnet18", output_stride=8, out_indices=(2,), freeze=["conv1", "bn1", "layer1"])
    assert not any(p.requires_grad for p in timm_model.layer1.parameters())
    assert all(p.requires_grad for p in timm_model.layer2.parameters())


@pytest.mark.slow  # the full 105M-parameter network, two passes forward and backward
def test_seam_on_resnet38d_trains_a_step():
    torch.manual_seed(0)
    net = SEAMNet("resnet38d", num_classes=3, output_stride=8, out_index=-1, dropout=0.5)
    net.train()
    batch = {"image": torch.rand(2, 3, 32, 32), "label": torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])}
    terms = net.training_loss(batch)
    assert set(terms) == {"cls", "rvmin", "er", "ecr", "total"} and torch.isfinite(terms["total"])
    terms["total"].backward()
    assert net.classifier.weight.grad is not None and net.project_mid.weight.grad is not None
    assert net.backbone.b2.conv_branch2a.weight.grad is None
    assert net.backbone.b7.conv_branch2b2.weight.grad is not None
    grouped = {id(p) for group in net.param_groups(0.01) for p in group["params"]}
    assert id(net.backbone.conv1a.weight) not in grouped and id(net.backbone.b3.conv_branch2a.weight) in grouped


def test_seam_head_weights_load_seams_released_head(resnet38d_file):
    """The authors' first round fine-tunes SEAM's whole released network: head_weights loads fc8 /
    f8_3 / f8_4 / f9 into the classifier, the two projections and the PCM feature."""
    state = {k[len("module."):]: v for k, v in torch.load(resnet38d_file, weights_only=True).items()}
    net = SEAMNet("resnet38d", num_classes=20, weights=str(resnet38d_file), output_stride=8, out_index=-1,
                  head_weights=True)
    for theirs, ours in SEAMNet.SEAM_HEAD.items():
        torch.testing.assert_close(getattr(net, ours).weight.detach(), state[f"{theirs}.weight"])
    fresh = SEAMNet("resnet38d", num_classes=20, weights=str(resnet38d_file), output_stride=8, out_index=-1)
    assert not torch.equal(fresh.classifier.weight, state["fc8.weight"])  # off: the head starts afresh
    with pytest.raises(PmmError) as error:  # another class count cannot take SEAM's 21-channel head
        SEAMNet("resnet38d", num_classes=5, weights=str(resnet38d_file), output_stride=8, out_index=-1, head_weights=True)
    assert "fc8.weight is [21, 4096, 1, 1]" in one_line(error) and "head_weights=false" in str(error.value)
    with pytest.raises(PmmError, match="head_weights=true needs cam_net.weights"):
        SEAMNet("resnet38d", num_classes=20, output_stride=8, out_index=-1, head_weights=True)


# ------------------------------------------------------------------------------------ ScaleNet-101

@pytest.fixture(scope="module")
def scalenet(structure_file) -> nn.Module:
    torch.manual_seed(0)
    return create_backbone("scalenet101", output_stride=8, out_indices=(-3, -2, -1), structure=str(structure_file)).eval()


def test_scalenet101_has_the_reference_layout_stride_8_without_dilation(structure_file):
    model = create_backbone("scalenet101", output_stride=8, out_indices=(0, 1, 2, 3, 4), structure=str(structure_file),
                            frozen_bn=False, freeze=[])
    structure = small_structure()
    state = model.state_dict()
    assert list(state) == scalenet_keys(structure)
    assert "layer1.0.conv2.0.weight" in state and "layer1.2.conv2.2.weight" not in state  # a 0-channel branch is absent
    assert state["layer1.0.conv2.0.weight"].shape == (6, 64, 3, 3)
    assert state["layer4.0.conv2.2.weight"].shape == (2, 512, 3, 3)  # side 7 / 4 > 1: 3x3
    assert state["layer4.0.conv2.3.weight"].shape == (1, 512, 1, 1)  # side 7 / 8 <= 1: 1x1
    assert state["layer3.0.downsample.0.weight"].shape == (1024, 512, 1, 1)
    assert all(m.dilation == (1, 1) for m in model.modules() if isinstance(m, nn.Conv2d))
    with torch.no_grad():
        maps = model.eval()(torch.rand(1, 3, 64, 64))
    assert [tuple(m.shape[1:]) for m in maps] == [(64, 32, 32), (256, 16, 16), (512, 8, 8), (1024, 8, 8), (2048, 8, 8)]
    assert model.feature_info.channels() == [64, 256, 512, 1024, 2048]
    assert model.feature_info.reduction() == [2, 4, 8, 8, 8]


def test_scalenet101_loads_imagenet_weights_in_the_reference_layout(tmp_path, scalenet, structure_file, caplog):
    state = {key: torch.randn_like(value) if value.is_floating_point() else value
             for key, value in scalenet.state_dict().items()}
    for key in [k for k in state if k.endswith("running_var")]:
        state[key] = state[key].abs() + 0.5
    state["fc.weight"], state["fc.bias"] = torch.randn(1000, 2048), torch.randn(1000)  # the ImageNet classifier
    path = tmp_path / "scalenet101.pth"
    torch.save(state, path)
    with caplog.at_level(logging.INFO, logger="pmm"):
        loaded = create_backbone("scalenet101", weights=str(path), output_stride=8, out_indices=(-3, -2, -1),
                                 structure=str(structure_file))
    assert all(torch.equal(loaded.state_dict()[key], state[key]) for key in loaded.state_dict())
    assert "ignored the head keys of fc" in caplog.text

    state.pop("layer2.0.bn2.1.running_mean")
    torch.save(state, path)
    with pytest.raises(PmmError) as error:
        load_reference_weights(scalenet, path, "scalenet101")
    assert one_line(error).startswith(f"cam_net.weights={path}: ") and "layer2.0.bn2.1.running_mean" in str(error.value)


def test_scalenet101_with_another_structure_is_a_shape_error(tmp_path, scalenet, structure_file):
    path = tmp_path / "scalenet101.pth"
    torch.save(scalenet.state_dict(), path)
    other = small_structure()
    other[5][0] = 9
    other_file = tmp_path / "other.json"
    other_file.write_text(json.dumps(other))
    with pytest.raises(PmmError) as error:
        create_backbone("scalenet101", weights=str(path), output_stride=8, structure=str(other_file))
    assert "layer2.2.conv2.0.weight has shape [6, 128, 3, 3] in the file" in one_line(error)


@pytest.mark.parametrize("content, words", [
    (None, "file not found"),
    ("[[1, 2", "not a JSON file"),
    (json.dumps([[1, 1, 1, 1, 56]] * 32), "expected a list of 33 [c1, c2, c4, c7, side] entries"),
    (json.dumps([[1, 1, 1, 1, 56]] * 32 + [[0, 0, 0, 0, 7]]), "entry 32 is [0, 0, 0, 0, 7]"),
])
def test_bad_structure_file_is_one_line(tmp_path, content, words):
    path = tmp_path / "scalenet101.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(PmmError) as error:
        create_backbone("scalenet101", output_stride=8, structure=str(path))
    assert one_line(error).startswith(f"cam_net.structure={path}: ") and words in str(error.value)
    with pytest.raises(PmmError) as error:
        create_backbone("scalenet101", output_stride=8)
    assert "cam_net.structure=null" in one_line(error) and "scalenet101.json" in str(error.value)


def test_scalenet101_frozen_parts_get_no_gradient_and_batchnorm_statistics_stay(structure_file):
    torch.manual_seed(2)
    model = create_backbone("scalenet101", output_stride=8, out_indices=(-3, -2, -1), structure=str(structure_file))
    frozen_prefixes = ("conv1.", "bn1.", "layer1.")
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    convs = {f"{name}.weight" for name, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    assert trainable and trainable <= convs and not any(name.startswith(frozen_prefixes) for name in trainable)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()  # training mode: a plain BatchNorm would update its running statistics here
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    maps = model(torch.rand(2, 3, 32, 32))
    sum(m.mean() for m in maps).backward()
    assert all(p.grad is None for name, p in model.named_parameters() if name.startswith(frozen_prefixes))
    assert model.layer2[0].conv1.weight.grad is not None
    optimizer.step()
    after = model.state_dict()
    statistics = [k for k in before if k.endswith(("running_mean", "running_var"))]
    norms = [k for k in before if ".bn" in k or k.startswith("bn1.") or ".downsample.1." in k]
    assert statistics and all(torch.equal(after[k], before[k]) for k in statistics + norms)
    assert all(torch.equal(after[k], before[k]) for k in before if k.startswith(frozen_prefixes))
    assert not torch.equal(after["layer2.0.conv1.weight"], before["layer2.0.conv1.weight"])


def test_seam_on_scalenet101_trains_a_step(structure_file):
    torch.manual_seed(0)
    net = SEAMNet("scalenet101", num_classes=2, output_stride=8, out_index=-1, structure=str(structure_file))
    # 32 px: the second pass's 9-pixel images leave 2 x 2 maps in layers 3-4, smaller than the
    # 4- and 7-pixel pooling windows (pooled to one pixel).
    terms = net.train().training_loss({"image": torch.rand(2, 3, 32, 32), "label": torch.tensor([[1.0, 0.0], [1.0, 1.0]])})
    terms["total"].backward()
    assert torch.isfinite(terms["total"]) and net.project_low.weight.grad is not None
    assert net.backbone.layer1[0].conv1.weight.grad is None and net.backbone.layer4[2].conv3.weight.grad is not None


# ------------------------------------------------------------------------------------------- config

@pytest.fixture(scope="module")
def compose_cfg():
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        yield lambda overrides=(): compose("config", overrides=list(overrides))
    GlobalHydra.instance().clear()


@pytest.mark.parametrize("name", ["resnet38d", "scalenet101"])
def test_backbone_groups_set_the_cam_network_only(compose_cfg, name):
    default = compose_cfg(["cam_net=seam"])
    cfg = compose_cfg(["cam_net=seam", f"backbone={name}"])
    assert (cfg.cam_net.backbone, cfg.cam_net.output_stride, cfg.cam_net.out_index) == (name, 8, -1)
    assert cfg.cam_net.pretrained is True and cfg.cam_net.structure is None and cfg.cam_net.freeze is None
    assert (cfg.segmenter.encoder, cfg.segmenter.pretrained) == (default.segmenter.encoder, default.segmenter.pretrained)


def test_checkpoint_spec_carries_the_scalenet_structure(compose_cfg, tmp_path):
    from pmm.nets.build import build_from_spec
    from pmm.stages.cam import build_cam_module

    path = tmp_path / "scalenet101.json"
    path.write_text(json.dumps(small_structure()))
    cfg = compose_cfg(["cam_net=seam", "backbone=scalenet101", "cam_net.pretrained=false", f"cam_net.structure={path}"])
    module = build_cam_module(SimpleNamespace(cfg=cfg, num_classes=3))
    spec = module.hparams.net_config
    assert spec["structure"] == small_structure()
    path.unlink()  # a checkpoint rebuilds its network without the file
    rebuilt = build_from_spec(spec, "cam_ckpt")
    assert rebuilt.backbone.state_dict().keys() == module.net.backbone.state_dict().keys()


def test_frozen_bn_setting_is_checked(compose_cfg):
    from pmm.settings import Settings

    with pytest.raises(PmmError) as error:
        Settings.from_config(compose_cfg(["cam_net=seam", "cam_net.frozen_bn=maybe"]))
    assert one_line(error) == "cam_net.frozen_bn=maybe: expected true or false or null"
