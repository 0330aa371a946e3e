"""Training from scratch: the colour-blind edge input, step-based schedules, the encoder from the CAM backbone."""

from __future__ import annotations

import pytest
import torch

from pmm.cam.net import CAMNet
from pmm.errors import PmmError
from pmm.nets.encoding import InputEncoding, edge_magnitude
from pmm.seg.model import Segmenter
from pmm.runtime.trainer import epochs_for_min_steps


def two_colour_square(inside: tuple[float, float, float], outside: tuple[float, float, float]) -> torch.Tensor:
    image = torch.tensor(outside).view(1, 3, 1, 1).repeat(1, 1, 32, 32)
    image[:, :, 8:24, 8:24] = torch.tensor(inside).view(1, 3, 1, 1)
    return image


def test_flat_image_has_no_edges():
    assert edge_magnitude(torch.full((2, 3, 16, 16), 0.7)).abs().max() < 1e-5


def test_edges_lie_on_the_outline_only():
    edges = edge_magnitude(two_colour_square((1.0, 0.0, 0.0), (0.0, 0.0, 1.0)))[0, 0]
    outline = torch.zeros(32, 32, dtype=torch.bool)
    outline[7:25, 7:25] = True
    outline[9:23, 9:23] = False
    assert edges[outline].min() > 0.1
    assert edges[~outline].max() < 1e-5


def test_edges_ignore_which_colours_the_shape_has():
    red_on_blue = edge_magnitude(two_colour_square((1.0, 0.0, 0.0), (0.0, 0.0, 1.0)))
    blue_on_red = edge_magnitude(two_colour_square((0.0, 0.0, 1.0), (1.0, 0.0, 0.0)))
    green_on_blue = edge_magnitude(two_colour_square((0.0, 1.0, 0.0), (0.0, 0.0, 1.0)))
    torch.testing.assert_close(red_on_blue, blue_on_red)
    torch.testing.assert_close(red_on_blue, green_on_blue)


def test_sliced_sobel_equals_the_convolution():
    images = torch.rand(2, 3, 23, 29)
    sobel_x = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]) / 8
    kernels = torch.stack([sobel_x, sobel_x.t()]).unsqueeze(1)
    padded = torch.nn.functional.pad(images.reshape(6, 1, 23, 29), (1, 1, 1, 1), mode="replicate")
    gradients = torch.nn.functional.conv2d(padded, kernels).reshape(2, 3, 2, 23, 29)
    expected = gradients.pow(2).sum(dim=2).sqrt().amax(dim=1, keepdim=True)
    torch.testing.assert_close(edge_magnitude(images), expected, rtol=1e-4, atol=1e-5)


def test_blur_keeps_noise_out_of_the_edge_map_but_not_the_outline():
    generator = torch.Generator().manual_seed(0)
    noisy = two_colour_square((1.0, 0.0, 0.0), (0.0, 0.0, 1.0)) + 0.1 * torch.randn(1, 3, 32, 32, generator=generator)
    sharp, blurred = edge_magnitude(noisy)[0, 0], edge_magnitude(noisy, sigma=1.0)[0, 0]
    flat = torch.zeros(32, 32, dtype=torch.bool)
    flat[12:20, 12:20] = True  # inside the square, far from the outline: only noise there
    assert blurred[flat].mean() < 0.5 * sharp[flat].mean()
    outline = torch.zeros(32, 32, dtype=torch.bool)
    outline[8:24, 8] = True
    assert blurred[outline].mean() > 5 * blurred[flat].mean()


def test_blur_leaves_a_flat_image_flat_and_is_off_at_zero():
    assert edge_magnitude(torch.full((1, 3, 16, 16), 0.3), sigma=2.0).abs().max() < 1e-5
    images = torch.rand(1, 3, 16, 16)
    torch.testing.assert_close(InputEncoding("edges", edge_sigma=0.0)(images), edge_magnitude(images))


def test_negative_blur_names_the_key():
    with pytest.raises(PmmError, match=r"segmenter\.edge_sigma=-1: expected a blur in pixels >= 0"):
        InputEncoding("edges", edge_sigma=-1, config_key="segmenter")


@pytest.mark.parametrize(("mode", "channels"), [("rgb", 3), ("edges", 1), ("rgb+edges", 4)])
def test_encoding_channels(mode, channels):
    images = torch.rand(2, 3, 24, 24)
    encoded = InputEncoding(mode)(images)
    assert encoded.shape == (2, channels, 24, 24)
    if mode != "edges":
        torch.testing.assert_close(encoded[:, :3], images)


def test_unknown_mode_names_the_key_and_the_choices():
    with pytest.raises(PmmError, match=r"cam_net\.input=hsv: unknown input encoding; use one of rgb, edges, rgb\+edges"):
        InputEncoding("hsv")


def test_networks_take_rgb_whatever_their_encoding():
    images = torch.rand(2, 3, 64, 64)
    out = CAMNet("regnetx_002", num_classes=4, out_index=-2, input="edges")(images)
    logits, cams = out["logits"], out["cams"]
    assert logits.shape == (2, 4) and cams.shape == (2, 4, 4, 4)
    out = Segmenter("deeplabv3plus", "tu-regnetx_002", num_classes=5, decoder_channels=16, input="rgb+edges")(images)
    assert out["out"].shape == (2, 5, 64, 64)


@pytest.mark.parametrize(
    ("max_epochs", "min_steps", "images", "batch", "world", "expected"),
    [
        (20, None, 400, 16, 1, 20),  # no minimum: the epochs as configured
        (20, 1000, 400, 16, 1, 40),  # 25 steps an epoch -> 40 epochs
        (20, 1000, 600, 16, 1, 28),  # 37 steps an epoch -> ceil(27.03)
        (20, 100, 600, 16, 1, 20),  # the minimum is already met
        (20, 1000, 400, 16, 2, 84),  # two ranks share each epoch's images: 12 full batches each
        (1, 10, 4, 16, 1, 10),  # fewer images than a batch still counts one step an epoch
    ],
)
def test_epochs_for_min_steps(max_epochs, min_steps, images, batch, world, expected):
    assert epochs_for_min_steps(max_epochs, min_steps, images, batch, world) == expected


def test_segmenter_encoder_starts_from_the_cam_backbone():
    from pmm.seg.model import encoder_weights_from_cam

    cam_net = CAMNet("regnetx_002", num_classes=4, out_index=-2, input="edges")
    cam_state = {f"net.{key}": value for key, value in cam_net.state_dict().items()}
    segmenter = Segmenter("deeplabv3plus", "tu-regnetx_002", num_classes=5, decoder_channels=16, input="edges")
    last_stage_before = segmenter.encoder.model.s4.b1.conv1.conv.weight.clone()
    copied = encoder_weights_from_cam(segmenter.encoder, cam_state)
    # Every backbone tensor of the CAM network (stem to s3) lands in the encoder; s4 stays as it was.
    assert len(copied) == len(cam_net.backbone.state_dict())
    torch.testing.assert_close(segmenter.encoder.model.stem.conv.weight, cam_net.backbone.stem.conv.weight)
    torch.testing.assert_close(segmenter.encoder.model.s3.b1.conv1.conv.weight, cam_net.backbone.s3.b1.conv1.conv.weight)
    torch.testing.assert_close(segmenter.encoder.model.s4.b1.conv1.conv.weight, last_stage_before)


def test_unrelated_cam_backbone_copies_nothing():
    from pmm.seg.model import encoder_weights_from_cam

    cam_net = CAMNet("resnet18", num_classes=4, out_index=-1)
    cam_state = {f"net.{key}": value for key, value in cam_net.state_dict().items()}
    segmenter = Segmenter("deeplabv3plus", "tu-regnetx_002", num_classes=5, decoder_channels=16)
    assert encoder_weights_from_cam(segmenter.encoder, cam_state) == []


@pytest.mark.parametrize(
    ("max_epochs", "min_steps", "images", "expected"),
    [
        (None, None, 600, (5, 10)),  # cyclic.every_n_epochs per round, two rounds
        (None, 360, 600, (5, 10)),  # 37 steps an epoch: 10 epochs already make 370 steps
        (None, 360, 400, (8, 16)),  # 25 steps an epoch: 15 epochs needed, rounded up to whole rounds
        (3, 360, 400, (5, 3)),  # seg.max_epochs wins
    ],
)
def test_seg_schedule_lengthens_rounds_on_small_datasets(max_epochs, min_steps, images, expected):
    from types import SimpleNamespace

    from omegaconf import OmegaConf

    from pmm.stages.seg import seg_schedule

    cfg = OmegaConf.create({"seg": {"max_epochs": max_epochs, "lengthen_to_steps": min_steps, "batch_size": 16},
                            "cyclic": {"every_n_epochs": 5, "rounds": 1}})
    assert seg_schedule(SimpleNamespace(cfg=cfg), images) == expected


@pytest.mark.parametrize("sigma", [0.0, 1.0, 1.6])
def test_in_place_edges_are_bit_identical_to_the_autograd_path(sigma):
    """The inference / training-input path accumulates in place; a batch that needs a gradient takes
    the plain expressions. Both must give the same bits (checkpoints do not depend on the path)."""
    images = torch.randn(3, 3, 37, 41, generator=torch.Generator().manual_seed(1)) * 2
    fast = edge_magnitude(images, sigma)
    tracked_input = images.clone().requires_grad_(True)
    tracked = edge_magnitude(tracked_input, sigma)
    assert torch.equal(fast, tracked.detach())
    tracked.sum().backward()  # in-place ops on a tracked tensor would break this
    assert tracked_input.grad is not None and torch.isfinite(tracked_input.grad).all()
    assert tracked_input.grad.abs().sum() > 0
