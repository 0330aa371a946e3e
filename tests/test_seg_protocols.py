"""The evaluation protocols: which one a config describes, and one shared pass = separate passes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from pmm.crf import SEG_CRF
from pmm.nets.tta import TTAConfig
from pmm.seg.inference import segment_images, segment_images_protocols
from pmm.seg.protocols import CUSTOM, PAPER_MS_SCALES, headline_protocol, plan_protocols

PAPER = PAPER_MS_SCALES


@pytest.mark.parametrize("scales, flip, crf, expected", [
    ((1.0,), False, False, "ss"),
    (PAPER, True, False, "ms"),
    (PAPER, True, True, "ms_crf"),
    ((1.0,), False, True, CUSTOM),       # single scale + CRF is no protocol of the three
    (PAPER, False, False, CUSTOM),       # multi-scale without flips
    ((0.75, 1.0, 1.25), True, True, CUSTOM),
])
def test_the_headline_is_the_protocol_the_eval_node_describes(scales, flip, crf, expected):
    assert headline_protocol(TTAConfig(scales=scales, flip=flip), crf, PAPER) == expected


def test_the_plan_reports_the_headline_and_keeps_mode_and_rescale():
    tta = TTAConfig(scales=PAPER, flip=True, mode="slide", window=64, stride=48, short_side=96, max_long=200)
    plan = plan_protocols(tta, True, SEG_CRF, PAPER, ["ss"])
    assert plan.headline == "ms_crf" and plan.protocols == ("ms_crf", "ss") and plan.wanted == plan.protocols
    assert plan.ss_tta == TTAConfig(scales=(1.0,), flip=False, mode="slide", window=64, stride=48, short_side=96,
                                    max_long=200)
    assert plan.shares_ss  # scale 1 is one of the multi-scale passes
    custom = plan_protocols(TTAConfig(scales=(1.0,)), True, SEG_CRF, PAPER, ["ss", "ms"])
    assert custom.wanted == ("ss", "ms", CUSTOM) and custom.describe(CUSTOM)["crf"]
    with pytest.raises(ValueError, match="unknown protocol"):
        plan_protocols(tta, False, SEG_CRF, PAPER, ["ms_flip"])


class ColourNet(torch.nn.Module):
    """A fixed 'segmenter' whose logits depend on colour and position, so scales and flips differ."""

    num_classes = 4

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 4, 5, padding=2)
        self.mix = torch.nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x):
        return {"out": 4 * self.mix(torch.tanh(self.conv(x)))}


@pytest.fixture(scope="module")
def photos(voc_samples):
    paths = sorted((voc_samples / "JPEGImages").glob("*.jpg"))[:3]
    images = []
    for path in paths:
        with Image.open(path) as image:
            images.append(np.asarray(image.convert("RGB").resize((96, 72))))
    return images


@pytest.mark.parametrize("ms_scales", [(0.75, 1.0, 1.5), (0.75, 1.5)])
def test_shared_passes_equal_one_pass_per_protocol(photos, ms_scales):
    """ss from the multi-scale pass (or its own pass when 1.0 is not among the scales), ms and ms_crf
    give exactly the label maps of the protocols run one by one."""
    net = ColourNet().eval()
    plan = plan_protocols(TTAConfig(scales=(1.0,)), False, SEG_CRF, ms_scales, ["ss", "ms", "ms_crf"])
    assert plan.shares_ss == (1.0 in ms_scales)
    shared = segment_images_protocols(net, photos, plan, batch_size=2)
    ms = TTAConfig(scales=ms_scales, flip=True)
    alone = {"ss": segment_images(net, photos, tta=TTAConfig(), batch_size=2),
             "ms": segment_images(net, photos, tta=ms, batch_size=2),
             "ms_crf": segment_images(net, photos, tta=ms, crf=SEG_CRF, batch_size=2)}
    for name, masks in alone.items():
        for position, mask in enumerate(masks):
            np.testing.assert_array_equal(shared[position][name], mask, err_msg=name)
    # The protocols are different predictions, not one map three times.
    assert any((s["ss"] != s["ms"]).any() for s in shared)
    assert any((s["ms"] != s["ms_crf"]).any() for s in shared)


def test_threaded_crf_gives_the_masks_of_one_thread(photos, monkeypatch):
    """The fast CRF refines a batch's images on several threads: each image alone, in order, so the
    masks (relabelling with the labels, the protocols' ms_crf) equal a one-thread run's."""
    import pmm.seg.inference as inference

    net = ColourNet().eval()
    plan = plan_protocols(TTAConfig(scales=(1.0,)), False, SEG_CRF, (0.75, 1.0), ["ss", "ms_crf"])
    labels = [[1, 2], [3], [1, 3]]
    assert inference.crf_threads(SEG_CRF, 3) == min(3, torch.get_num_threads())
    assert inference.crf_threads(SEG_CRF.with_backend("pydensecrf"), 3) == 1  # it holds the GIL
    assert inference.crf_threads(None, 3) == 1
    runs = {}
    for threads in (1, 3):
        monkeypatch.setattr(inference, "crf_threads", lambda crf, count, n=threads: n)
        runs[threads] = (segment_images(net, photos, labels, crf=SEG_CRF, batch_size=3),
                         segment_images_protocols(net, photos, plan, batch_size=3))
    for one, many in zip(runs[1][0], runs[3][0]):
        np.testing.assert_array_equal(one, many)
    for one, many in zip(runs[1][1], runs[3][1]):
        for name in ("ss", "ms_crf"):
            np.testing.assert_array_equal(one[name], many[name], err_msg=name)
    # Restricted to each image's labels: no other class appears.
    for mask, keep in zip(runs[3][0], labels):
        assert set(np.unique(mask)) <= {0, *keep}
