"""How often the stages validate, and the networks' memory format: speed settings that must not
change what is trained (the validation period) or only the rounding (channels-last)."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from pmm.errors import PmmError
from pmm.runtime.memory_format import MemoryFormat
from pmm.stages.seg import validation_period


def seg_cfg(**seg):
    return OmegaConf.create({"seg": {"check_val_every_n_epoch": None, "val_check_interval": None, **seg}})


def test_seg_validates_once_a_cyclic_round_by_default():
    assert validation_period(seg_cfg(), round_epochs=5) == 5
    assert validation_period(seg_cfg(), round_epochs=8) == 8


def test_seg_validation_period_a_number_or_steps():
    assert validation_period(seg_cfg(check_val_every_n_epoch=1), round_epochs=5) == 1
    # Iteration-based validation (the paper presets): Lightning's None, val_check_interval decides.
    assert validation_period(seg_cfg(val_check_interval=2000), round_epochs=5) is None


def test_memory_format_converts_every_convolution():
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8), torch.nn.Conv2d(8, 4, 1))
    MemoryFormat("channels_last").setup(None, net, "fit")
    convs = [m.weight for m in net if isinstance(m, torch.nn.Conv2d)]
    assert all(w.is_contiguous(memory_format=torch.channels_last) for w in convs)
    assert not convs[0].is_contiguous()  # a 3 x 3 kernel's NHWC strides differ from NCHW (a 1 x 1's do not)
    out = net(torch.rand(2, 3, 16, 16))  # an NCHW batch: the first convolution converts it
    assert out.is_contiguous(memory_format=torch.channels_last)
    MemoryFormat("contiguous").setup(None, net, "predict")
    assert all(m.weight.is_contiguous() for m in net if isinstance(m, torch.nn.Conv2d))


def test_memory_format_unknown_is_one_line():
    with pytest.raises(PmmError, match=r"callbacks.seg.memory_format.memory_format=nhwc: expected one of "
                                        r"channels_last \| contiguous"):
        MemoryFormat("nhwc", config_key="callbacks.seg.memory_format")


def test_inference_trainers_take_only_the_stages_memory_format(tmp_path):
    """CAM inference and evaluation build the stage's memory-format callback, none of its checkpoint ones."""
    from test_run_pipeline import make_cfg

    from pmm.runtime.trainer import inference_callbacks

    cfg = make_cfg(tmp_path, tmp_path / "data", ["callbacks.seg.memory_format.memory_format=channels_last"])
    seg, cam = inference_callbacks(cfg, "seg"), inference_callbacks(cfg, "cam")
    assert [type(c) for c in seg + cam] == [MemoryFormat, MemoryFormat]
    assert (seg[0].memory_format, cam[0].memory_format) == ("channels_last", "contiguous")


def test_channels_last_predicts_as_contiguous_up_to_rounding():
    from pmm.cam.net import CAMNet
    from pmm.seg.model import Segmenter

    torch.manual_seed(0)
    images = torch.rand(2, 3, 64, 64)
    for net, key in ((CAMNet(backbone="regnetx_002", num_classes=3, input="edges"), "logits"),
                     (Segmenter(arch="deeplabv3plus", encoder="tu-regnetx_002", num_classes=4, decoder_channels=16,
                                input="edges"), "out")):
        net.eval()
        with torch.no_grad():
            reference = net(images)[key]
            MemoryFormat("channels_last").convert(net)
            converted = net(images)[key]
        torch.testing.assert_close(converted, reference, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_validating_less_often_trains_bit_identical_weights(tmp_path):
    """Skipping validation epochs moves no random stream: the same last.ckpt, and it is the last epoch's
    even when that epoch was not validated."""
    from test_robust import pmm_cli

    args = ["stage=cam", "debug=default", "data.generate.num_train=16", "data.generate.num_val=4", "cam.scales=[1.0]",
            "cam.max_epochs=3", "logger=none"]
    saved = {}
    for every in (1, 2):
        run = tmp_path / f"every{every}"
        done = pmm_cli([*args, f"cam.check_val_every_n_epoch={every}", f"hydra.run.dir={run}"], tmp_path)
        assert done.returncode == 0, done.stderr[-3000:]
        saved[every] = torch.load(run / "checkpoints" / "cam" / "last.ckpt", map_location="cpu", weights_only=True)
        best = [p.name for p in (run / "checkpoints" / "cam").glob("epoch*.ckpt")]
        assert len(best) == 1, best
        if every == 2:  # the best checkpoint is a validated epoch: of epochs 0..2 only epoch 1 is
            assert best == ["epoch01.ckpt"]
    assert (saved[2]["epoch"], saved[2]["global_step"]) == (saved[1]["epoch"], saved[1]["global_step"]) == (2, 6)
    for key, value in saved[1]["state_dict"].items():
        assert torch.equal(value, saved[2]["state_dict"][key]), key
