"""PUF loss against hand-computed values, in every mode and both regimes."""

import math

import pytest
import torch

from pmm.losses import PUFLoss, puf_loss


def logits_with_ce(ce_values, ignored_ce=5.0):
    """2-class logits for pixels of target class 0 whose cross-entropy is exactly ``ce_values``.

    With logits (z, 0) and target 0, CE = log(1 + exp(-z)), so z = -log(exp(ce) - 1). One more pixel,
    labelled 255, has cross-entropy ``ignored_ce`` and must never count.
    """
    values = list(ce_values) + [ignored_ce]
    z = torch.tensor([-math.log(math.exp(c) - 1.0) for c in values], dtype=torch.float64)
    logits = torch.stack([z, torch.zeros_like(z)]).reshape(1, 2, 1, len(values))
    target = torch.zeros(1, 1, len(values), dtype=torch.long)
    target[..., -1] = 255
    return logits.requires_grad_(True), target


LOW = [0.1, 0.2, 0.3, 1.2]  # mean 0.45 < beta = 0.5: the bounding rule applies
HIGH = [0.1, 0.2, 0.3, 2.0]  # mean 0.65 >= beta: plain cross-entropy


@pytest.mark.parametrize(
    "mode, expected",
    [
        ("clamp", (0.1 + 0.2 + 0.3 + 0.5) / 4),
        ("pow", (math.sqrt(0.1) + math.sqrt(0.2) + math.sqrt(0.3) + math.sqrt(1.2)) / 4),
        ("ignore", (0.1 + 0.2 + 0.3 + 0.0) / 4),
        ("none", 0.45),
    ],
)
def test_low_loss_regime_applies_mode(mode, expected):
    logits, target = logits_with_ce(LOW)
    loss_fn = PUFLoss(mode=mode, beta=0.5, k=0.5)
    loss = loss_fn(logits, target)
    assert loss.item() == pytest.approx(expected, abs=1e-7)
    assert not bool(loss_fn.last_under_fitting)


@pytest.mark.parametrize("mode", ["clamp", "pow", "ignore", "none"])
def test_high_loss_regime_is_plain_cross_entropy(mode):
    logits, target = logits_with_ce(HIGH)
    loss_fn = PUFLoss(mode=mode, beta=0.5, k=0.5)
    loss = loss_fn(logits, target)
    # 0.65 is the mean over the 4 labelled pixels; counting the ignored one (as 0 or as 5.0) would differ.
    assert loss.item() == pytest.approx(0.65, abs=1e-7)
    assert bool(loss_fn.last_under_fitting)


def test_mean_equal_to_beta_counts_as_under_fitting():
    per_pixel = torch.tensor([0.5, 0.5])
    valid = torch.tensor([True, True])
    assert puf_loss(per_pixel, valid, "clamp", beta=0.5, k=0.3).item() == pytest.approx(0.5)
    assert puf_loss(per_pixel, valid, "clamp", beta=0.6, k=0.3).item() == pytest.approx(0.3)


def test_functional_excludes_invalid_pixels_in_pow_mode():
    # pow(0 + 1e-9, k) of an ignored pixel is not 0: it must still not enter the mean.
    per_pixel = torch.tensor([0.04, 0.16, 0.0])
    valid = torch.tensor([True, True, False])
    assert puf_loss(per_pixel, valid, "pow", beta=0.5, k=0.5).item() == pytest.approx((0.2 + 0.4) / 2, abs=1e-6)


def test_clamp_gradient_is_zero_only_for_clamped_pixels():
    logits, target = logits_with_ce(LOW)
    PUFLoss("clamp", beta=0.5, k=0.5)(logits, target).backward()
    grad_norm = logits.grad.abs().sum(dim=1).flatten()
    assert torch.all(grad_norm[:3] > 0)  # below k: still trained
    assert grad_norm[3] == 0  # 1.2 > k: clamped
    assert grad_norm[4] == 0  # ignored


def test_gradient_flows_to_every_labelled_pixel_when_under_fitting():
    logits, target = logits_with_ce(HIGH)
    PUFLoss("clamp", beta=0.5, k=0.5)(logits, target).backward()
    grad_norm = logits.grad.abs().sum(dim=1).flatten()
    assert torch.all(grad_norm[:4] > 0)
    assert grad_norm[4] == 0


def test_all_ignored_gives_zero_with_grad():
    logits = torch.randn(2, 3, 4, 4, requires_grad=True)
    target = torch.full((2, 4, 4), 255, dtype=torch.long)
    for mode in ["clamp", "pow", "ignore", "none"]:
        loss = PUFLoss(mode)(logits, target)
        assert loss.item() == 0.0 and not torch.isnan(loss)
        assert loss.requires_grad
        loss.backward()
        assert torch.all(logits.grad == 0)


def test_real_logits_match_cross_entropy_when_mode_none():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 8, 8)
    target = torch.randint(0, 5, (2, 8, 8))
    target[0, :3] = 255
    expected = torch.nn.functional.cross_entropy(logits, target, ignore_index=255)
    assert PUFLoss("none")(logits, target).item() == pytest.approx(expected.item(), rel=1e-6)


def test_unknown_mode_lists_valid_modes():
    with pytest.raises(ValueError, match="clamp.*pow.*ignore.*none"):
        PUFLoss(mode="huber")
    with pytest.raises(ValueError, match="clamp"):
        puf_loss(torch.zeros(2), torch.ones(2, dtype=torch.bool), mode="huber")


def test_size_mismatch_is_a_clear_error():
    with pytest.raises(ValueError, match="upsample"):
        PUFLoss()(torch.zeros(1, 2, 4, 4), torch.zeros(1, 8, 8, dtype=torch.long))


@pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`")
def test_seg_module_trains_with_plain_cross_entropy_during_puf_warmup():
    from functools import partial

    from pmm.seg.model import Segmenter
    from pmm.seg.module import SegModule

    torch.manual_seed(0)
    net = Segmenter("deeplabv3plus", "tu-regnetx_002", num_classes=3, decoder_channels=16)
    # beta=100: PUF always applies; mode ignore with k=0 drops every pixel, so PUF's loss is exactly 0.
    module = SegModule(net, partial(torch.optim.SGD), loss={"mode": "ignore", "beta": 100.0, "k": 0.0,
                                                             "warmup_epochs": 1})
    batch = {"image": torch.rand(2, 3, 32, 32), "mask": torch.randint(0, 3, (2, 32, 32))}
    net.eval()  # deterministic forward: the same logits in both calls
    with torch.no_grad():
        expected = torch.nn.functional.cross_entropy(net(batch["image"])["out"], batch["mask"])
        warmup_loss = module.training_step(batch, 0)  # epoch 0 < warmup_epochs
        module.puf_warmup_epochs = 0
        puf_loss = module.training_step(batch, 0)
    torch.testing.assert_close(warmup_loss, expected)
    assert puf_loss.item() == 0.0
