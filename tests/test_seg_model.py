"""Segmenter: shapes per arch and encoder, the auxiliary head, local encoder weights."""

import pytest
import segmentation_models_pytorch as smp
import torch

from pmm.errors import PmmError
from pmm.seg import model as seg_model
from pmm.seg.model import ARCHS, Segmenter

NUM_CLASSES = 5


@pytest.mark.parametrize(
    "arch, encoder",
    [("deeplabv3plus", "resnet18"), ("pspnet", "resnet18"), ("deeplabv3plus", "tu-resnet18"), ("pspnet", "tu-resnet18")],
)
def test_output_shapes_and_default_aux(arch, encoder):
    torch.manual_seed(0)
    model = Segmenter(arch=arch, encoder=encoder, num_classes=NUM_CLASSES)
    out = model(torch.randn(2, 3, 64, 64))
    assert out["out"].shape == (2, NUM_CLASSES, 64, 64)
    if arch == "pspnet":
        assert out["aux"].shape == (2, NUM_CLASSES, 64, 64)
    else:
        assert "aux" not in out
    (out["out"].mean() + out.get("aux", torch.zeros(())).mean()).backward()
    assert next(model.encoder.parameters()).grad is not None


def test_aux_override_and_paper_style_pspnet():
    x = torch.randn(1, 3, 64, 64)
    with_aux = Segmenter("deeplabv3plus", num_classes=3, aux=True).eval()
    assert with_aux(x)["aux"].shape == (1, 3, 64, 64)
    assert "aux" not in Segmenter("pspnet", num_classes=3, aux=False).eval()(x)
    # The paper's PSPNet: dilated ResNet (stride 8, full depth), aux on the stride-8 layer3 features.
    paper = Segmenter("pspnet", num_classes=3, encoder_depth=5, output_stride=8).eval()
    assert paper.encoder.output_stride == 8
    assert paper.aux_head[0].in_channels == 256
    out = paper(x)
    assert out["out"].shape == out["aux"].shape == (1, 3, 64, 64)


def test_smp_defaults_per_arch():
    assert Segmenter("pspnet").encoder.out_channels == [3, 64, 64, 128]  # SMP's PSPNet depth 3
    assert Segmenter("deeplabv3plus").encoder.output_stride == 16


def test_unknown_arch_lists_choices():
    with pytest.raises(ValueError, match="deeplabv3plus.*pspnet"):
        Segmenter(arch="unet")


def test_encoder_weights_round_trip(tmp_path):
    torch.manual_seed(0)
    source = Segmenter("pspnet", "resnet18", num_classes=NUM_CLASSES).eval()
    path = tmp_path / "encoder.pt"
    torch.save(source.encoder.state_dict(), path)

    torch.manual_seed(1)
    loaded = Segmenter("pspnet", "resnet18", num_classes=NUM_CLASSES, weights=str(path)).eval()
    torch.manual_seed(1)
    fresh = Segmenter("pspnet", "resnet18", num_classes=NUM_CLASSES).eval()

    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = source.encoder(x)[-1]
        assert torch.equal(loaded.encoder(x)[-1], expected)
        assert not torch.allclose(fresh.encoder(x)[-1], expected)
        # Same seed, same decoder init: only the encoder weights differ between loaded and fresh.
        loaded.model.decoder.load_state_dict(source.model.decoder.state_dict())
        loaded.model.segmentation_head.load_state_dict(source.model.segmentation_head.state_dict())
        loaded.aux_head.load_state_dict(source.aux_head.state_dict())
        for key, value in source(x).items():
            assert torch.equal(loaded(x)[key], value)


def test_mismatched_encoder_weights_name_file_and_keys(tmp_path):
    state = Segmenter("deeplabv3plus", "resnet18").encoder.state_dict()
    state.pop("conv1.weight")
    state["bogus.weight"] = torch.zeros(1)
    state["bn1.weight"] = torch.zeros(7)
    path = tmp_path / "wrong_encoder.pt"
    torch.save(state, path)
    with pytest.raises(PmmError) as info:
        Segmenter("deeplabv3plus", "resnet18", weights=path)
    message = str(info.value)
    assert "wrong_encoder.pt" in message
    assert "conv1.weight" in message and "bogus.weight" in message and "bn1.weight" in message
    assert "\n" not in message


def test_timm_encoder_rejects_smp_encoder_weights(tmp_path):
    path = tmp_path / "smp_resnet18.pt"
    torch.save(Segmenter("pspnet", "resnet18").encoder.state_dict(), path)
    with pytest.raises(PmmError, match="smp_resnet18.pt.*missing"):
        Segmenter("pspnet", "tu-resnet18", weights=path)


def test_missing_weights_file(tmp_path):
    with pytest.raises(PmmError, match="no_such_file.pt"):
        Segmenter("pspnet", weights=tmp_path / "no_such_file.pt")


def test_failed_download_is_a_pmm_error(monkeypatch):
    def offline_deeplab(encoder_weights=None, **kwargs):
        if encoder_weights is not None:
            raise OSError("network is unreachable")
        return smp.DeepLabV3Plus(encoder_weights=None, **kwargs)

    monkeypatch.setitem(ARCHS, "deeplabv3plus", seg_model._Arch(offline_deeplab, "encoder_output_stride", "decoder_channels", False))
    with pytest.raises(PmmError, match="could not download pretrained weights for resnet18.*pretrained=false.*weights=FILE"):
        Segmenter("deeplabv3plus", "resnet18", pretrained=True)


def test_bad_encoder_name_is_not_reported_as_download_failure():
    with pytest.raises(KeyError, match="no_such_encoder"):
        Segmenter("deeplabv3plus", "no_such_encoder", pretrained=True)
