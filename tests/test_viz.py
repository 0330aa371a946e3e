"""Pictures: palette colours, overlays, and PNGs that decode at the expected size, written atomically."""

import numpy as np
import pytest
from PIL import Image

from pmm import viz


def png_size(path):
    with Image.open(path) as image:
        image.load()
        assert image.format == "PNG"
        return image.size  # (width, height)


def only_file(directory, name):
    assert sorted(p.name for p in directory.iterdir()) == [name]  # no temporary file left behind


def test_colorize_mask_uses_voc_palette():
    mask = np.array([[0, 1, 2], [15, 255, 1]], dtype=np.uint8)
    rgb = viz.colorize_mask(mask)
    assert rgb.shape == (2, 3, 3) and rgb.dtype == np.uint8
    assert tuple(rgb[0, 0]) == (0, 0, 0)
    assert tuple(rgb[0, 1]) == (128, 0, 0)
    assert tuple(rgb[0, 2]) == (0, 128, 0)
    assert tuple(rgb[1, 0]) == (192, 128, 128)  # person
    assert rgb[1, 1].min() >= 192  # ignore: near white


def test_overlay_cam_blends_jet_colours():
    image = np.full((4, 5, 3), 100, dtype=np.uint8)
    cam = np.zeros((4, 5), dtype=np.float32)
    cam[0, 0] = 1.0
    assert np.array_equal(viz.overlay_cam(image, cam, alpha=0.0), image)
    heat = viz.overlay_cam(image, cam, alpha=1.0)
    assert heat.dtype == np.uint8 and heat.shape == (4, 5, 3)
    assert heat[0, 0, 0] > 100 and heat[0, 0, 2] < 10  # hot: red
    assert heat[1, 1, 2] > 100 and heat[1, 1, 0] < 10  # cold: blue
    with pytest.raises(ValueError, match="size"):
        viz.overlay_cam(image, np.zeros((2, 2)))


def test_overlay_mask_keeps_background():
    image = np.full((2, 2, 3), 200, dtype=np.uint8)
    mask = np.array([[0, 1], [0, 0]], dtype=np.uint8)
    out = viz.overlay_mask(image, mask, alpha=1.0)
    assert tuple(out[0, 0]) == (200, 200, 200)
    assert tuple(out[0, 1]) == (128, 0, 0)
    half = viz.overlay_mask(image, mask, alpha=0.5)
    assert tuple(half[0, 1]) == (164, 100, 100)


def test_save_panel_grid_size(tmp_path):
    image = np.zeros((32, 64, 3), dtype=np.uint8)  # aspect 2:1
    mask = viz.colorize_mask(np.ones((32, 64), dtype=np.uint8))
    rows = [[("image", image), ("mask", mask), ("grey", np.zeros((32, 64)))], [("image", image), ("mask", mask)]]
    path = tmp_path / "panel.png"
    viz.save_panel(path, rows, title="sample 0")
    width, height = png_size(path)
    # 3 columns x 3 in wide, 2 rows x 1.5 in tall + 0.65 in of titles (figure + column), at 100 dpi.
    assert width == pytest.approx(900, abs=2)
    assert height == pytest.approx(365, abs=2)
    only_file(tmp_path, "panel.png")


def test_save_curve(tmp_path):
    path = tmp_path / "curve.png"
    viz.save_curve(path, [0.1, 0.2, 0.3, 0.4], [0.40, 0.55, float("nan"), 0.50], "threshold", "mIoU", title="CAM")
    assert png_size(path) == pytest.approx((600, 400), abs=2)
    only_file(tmp_path, "curve.png")


def test_save_iou_bars_with_missing_classes(tmp_path):
    path = tmp_path / "sub" / "iou.png"
    names = ["background", "aeroplane", "bicycle", "bird"]
    viz.save_iou_bars(path, names, [0.9, None, float("nan"), 0.5], title="val")
    width, height = png_size(path)
    assert width == pytest.approx(600, abs=2)
    assert height == pytest.approx(100 * (1.0 + 0.25 * len(names)), abs=2)
    only_file(path.parent, "iou.png")
    with pytest.raises(ValueError, match="4 class names but 3"):
        viz.save_iou_bars(path, names, [0.1, 0.2, 0.3])


def test_save_rounds(tmp_path):
    path = tmp_path / "rounds.png"
    viz.save_rounds(path, ["CAM", "round 0", "round 1", "val"], [48.0, 62.5, None, 66.1])
    width, height = png_size(path)
    assert height == pytest.approx(400, abs=2) and width > height
    only_file(tmp_path, "rounds.png")


def test_failed_save_leaves_no_file(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    def write_half_then_fail(self, fname, **kwargs):
        with open(fname, "wb") as handle:
            handle.write(b"\x89PNG half")
        raise OSError("disk full")

    monkeypatch.setattr(Figure, "savefig", write_half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        viz.save_curve(tmp_path / "curve.png", [0, 1], [0.1, 0.2], "x", "y")
    assert list(tmp_path.iterdir()) == []
