"""The embedded synthetic dataset: reproducible, in the VOC layout, and a non-trivial WSSS problem."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from pmm.data.synthetic import (
    SYNTHETIC_CLASS_NAMES,
    ensure_synthetic,
    generate_synthetic,
    render_sample,
)
from pmm.errors import PmmError
from pmm.io import load_image, load_mask, save_image

NUM_CLASSES = len(SYNTHETIC_CLASS_NAMES)
SMALL = dict(num_train=12, num_val=6)
K3 = np.ones((3, 3), np.uint8)


def _ids(root: Path, split: str) -> list[str]:
    return (root / "ImageSets" / "Segmentation" / f"{split}.txt").read_text().split()


def _all_ids(root: Path) -> list[str]:
    return _ids(root, "train") + _ids(root, "val")


@pytest.fixture(scope="module")
def draws() -> list[tuple[np.ndarray, np.ndarray]]:
    return [render_sample(np.random.default_rng([123, index])) for index in range(60)]


def _present(mask: np.ndarray) -> list[int]:
    return [int(v) for v in np.unique(mask) if 0 < v < 255]


# ---------------------------------------------------------------------------------------- determinism


def test_same_seed_gives_identical_trees_and_another_seed_differs(tmp_path: Path) -> None:
    first = generate_synthetic(tmp_path / "a", seed=7, **SMALL)
    second = generate_synthetic(tmp_path / "b", seed=7, **SMALL)
    other = generate_synthetic(tmp_path / "c", seed=8, **SMALL)
    assert _all_ids(first) == _all_ids(second) == _all_ids(other)
    differing = 0
    for image_id in _all_ids(first):
        mask_a = (first / "SegmentationClass" / f"{image_id}.png").read_bytes()
        assert mask_a == (second / "SegmentationClass" / f"{image_id}.png").read_bytes()
        image_a = load_image(first / "JPEGImages" / f"{image_id}.jpg")
        np.testing.assert_array_equal(image_a, load_image(second / "JPEGImages" / f"{image_id}.jpg"))
        image_c = load_image(other / "JPEGImages" / f"{image_id}.jpg")
        differing += int(np.abs(image_a.astype(int) - image_c).mean() > 10)
    assert differing == len(_all_ids(first))
    assert json.loads((first / "meta.json").read_text()) == json.loads((second / "meta.json").read_text())


def test_each_image_depends_only_on_seed_split_and_index(tmp_path: Path) -> None:
    root = generate_synthetic(tmp_path / "d", seed=3, num_train=5, num_val=2)
    bigger = generate_synthetic(tmp_path / "e", seed=3, num_train=9, num_val=4)
    for image_id in _all_ids(root):
        assert (root / "SegmentationClass" / f"{image_id}.png").read_bytes() == (
            bigger / "SegmentationClass" / f"{image_id}.png"
        ).read_bytes()
    # The documented seeding: val image 1 of seed 3 is render_sample(default_rng([3, 1, 1])).
    image, mask = render_sample(np.random.default_rng([3, 1, 1]))
    np.testing.assert_array_equal(load_mask(root / "SegmentationClass" / "val_00001.png"), mask)
    save_image(tmp_path / "expected.jpg", image, quality=95)
    written = load_image(root / "JPEGImages" / "val_00001.jpg")
    np.testing.assert_array_equal(written, load_image(tmp_path / "expected.jpg"))


def test_train_and_val_images_differ(tmp_path: Path) -> None:
    root = generate_synthetic(tmp_path / "f", seed=0, num_train=3, num_val=3)
    for index in range(3):
        train = load_image(root / "JPEGImages" / f"train_{index:05d}.jpg").astype(int)
        val = load_image(root / "JPEGImages" / f"val_{index:05d}.jpg").astype(int)
        assert np.abs(train - val).mean() > 10


# --------------------------------------------------------------------------------------------- layout


def test_tree_has_the_voc_layout(tmp_path: Path) -> None:
    root = generate_synthetic(tmp_path / "voc", seed=1, image_size=96, **SMALL)
    train, val = _ids(root, "train"), _ids(root, "val")
    assert train == [f"train_{i:05d}" for i in range(12)]
    assert val == [f"val_{i:05d}" for i in range(6)]
    assert sorted(p.stem for p in (root / "JPEGImages").iterdir()) == sorted(train + val)
    assert sorted(p.stem for p in (root / "SegmentationClass").iterdir()) == sorted(train + val)
    assert {p.suffix for p in (root / "JPEGImages").iterdir()} == {".jpg"}
    labels_seen: set[int] = set()
    for image_id in train + val:
        with Image.open(root / "SegmentationClass" / f"{image_id}.png") as png:
            assert png.format == "PNG" and png.mode == "P"
        with Image.open(root / "JPEGImages" / f"{image_id}.jpg") as jpg:
            assert jpg.format == "JPEG" and jpg.size == (96, 96)
        mask = load_mask(root / "SegmentationClass" / f"{image_id}.png")
        assert mask.shape == (96, 96)
        assert set(np.unique(mask).tolist()) <= set(range(NUM_CLASSES)) | {255}
        assert 1 <= len(_present(mask)) <= 2
        labels_seen.update(_present(mask))
    assert len(labels_seen) >= 4  # 18 images do not all show the same class or two
    meta = json.loads((root / "meta.json").read_text())
    assert meta["class_names"] == list(SYNTHETIC_CLASS_NAMES)
    assert (meta["seed"], meta["num_train"], meta["num_val"], meta["image_size"]) == (1, 12, 6, 96)
    assert "format_version" in meta
    assert not [p for p in tmp_path.iterdir() if p.name != "voc"], "temporary build folders were left behind"


def test_tree_goes_through_the_voc_reader(tmp_path: Path) -> None:
    from pmm.data.voc import load_voc_split

    root = generate_synthetic(tmp_path / "voc", seed=2, **SMALL)
    split = load_voc_split(root, "val", SYNTHETIC_CLASS_NAMES, cache_dir=tmp_path / "cache")
    assert split.ids == tuple(_ids(root, "val"))
    for image_id in split.ids:
        assert split.labels(image_id) == tuple(_present(load_mask(root / "SegmentationClass" / f"{image_id}.png")))
        assert 1 <= len(split.labels(image_id)) <= 2


# ------------------------------------------------------------------------------------------ content


def test_render_sample_shapes_and_values(draws: list) -> None:
    for image, mask in draws:
        assert image.shape == (160, 160, 3) and image.dtype == np.uint8
        assert mask.shape == (160, 160) and mask.dtype == np.uint8
        assert set(np.unique(mask).tolist()) <= set(range(NUM_CLASSES)) | {255}
    image, mask = render_sample(np.random.default_rng(0), image_size=96, num_classes=3)
    assert image.shape == (96, 96, 3) and mask.shape == (96, 96)
    assert set(np.unique(mask).tolist()) <= {0, 1, 2, 255}


def test_one_or_two_classes_per_image_and_both_counts_occur(draws: list) -> None:
    counts = [len(_present(mask)) for _, mask in draws]
    assert set(counts) == {1, 2}
    assert 0.2 <= counts.count(2) / len(counts) <= 0.8


def test_classes_are_roughly_balanced(draws: list) -> None:
    occurrences = np.zeros(NUM_CLASSES, int)
    for _, mask in draws:
        occurrences[_present(mask)] += 1
    assert occurrences[0] == 0 and (occurrences[1:] > 0).all()
    assert occurrences[1:].max() <= 2.5 * occurrences[1:].min()


def test_every_object_contour_is_a_255_band(draws: list) -> None:
    for _, mask in draws:
        band = mask == 255
        assert band.any()
        labels = [0] + _present(mask)
        # No pixel of one label is within one pixel (8-neighbourhood) of another label: the band is >= 2 px.
        for label in labels:
            grown = cv2.dilate((mask == label).astype(np.uint8), K3).astype(bool)
            others = (mask != label) & ~band
            assert not (grown & others).any(), f"label {label} touches another label without a 255 band"
        # ... and it is a thin band, not a blob: no pixel sits 3 px deep inside it.
        assert not cv2.erode(band.astype(np.uint8), np.ones((7, 7), np.uint8)).any()
        # Every object is outlined: its pixels are surrounded by 255 at a distance of at most 3 px.
        foreground = ((mask > 0) & (mask < 255)).astype(np.uint8)
        ring = cv2.dilate(foreground, np.ones((7, 7), np.uint8)).astype(bool) & ~foreground.astype(bool)
        assert band[ring].mean() > 0.5


def test_foreground_fraction_is_sensible(draws: list) -> None:
    fractions = np.array([((mask > 0) & (mask < 255)).mean() for _, mask in draws])
    assert fractions.min() > 0.003  # no image loses its objects
    assert fractions.max() < 0.7
    assert 0.06 < fractions.mean() < 0.35
    assert fractions.max() > 2.5 * fractions.min()  # object sizes vary


def test_objects_touch_or_overlap_in_some_images(draws: list) -> None:
    touching = two_class = 0
    for _, mask in draws:
        present = _present(mask)
        if len(present) == 2:
            two_class += 1
            near_first = cv2.dilate((mask == present[0]).astype(np.uint8), np.ones((7, 7), np.uint8)).astype(bool)
            touching += int((near_first & (mask == present[1])).any())
    assert touching >= max(3, 0.25 * two_class)


def test_colour_does_not_identify_a_class(draws: list) -> None:
    # Mean colours of the objects of each class vary widely from image to image.
    per_class: dict[int, list[np.ndarray]] = {}
    for image, mask in draws:
        for label in _present(mask):
            per_class.setdefault(label, []).append(image[mask == label].mean(axis=0))
    for label, colours in per_class.items():
        if len(colours) >= 4:
            assert np.std(np.array(colours), axis=0).mean() > 25, f"class {label} has near-constant colour"


def test_background_is_cluttered(draws: list) -> None:
    # Distractors put strong edges into the background region of (almost) every image.
    cluttered = 0
    for image, mask in draws:
        grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32)
        magnitude = np.hypot(cv2.Sobel(grey, cv2.CV_32F, 1, 0), cv2.Sobel(grey, cv2.CV_32F, 0, 1))
        inner_bg = cv2.erode((mask == 0).astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
        cluttered += int((magnitude[inner_bg] > 150).mean() > 0.005)
    assert cluttered >= 0.9 * len(draws)


def test_bad_arguments_raise_pmm_error(tmp_path: Path) -> None:
    with pytest.raises(PmmError, match="num_classes"):
        render_sample(np.random.default_rng(0), num_classes=NUM_CLASSES + 1)
    with pytest.raises(PmmError, match="image_size"):
        render_sample(np.random.default_rng(0), image_size=16)
    with pytest.raises(PmmError, match="rng"):
        render_sample(0)  # type: ignore[arg-type]
    with pytest.raises(PmmError, match="num_train"):
        generate_synthetic(tmp_path / "x", num_train=0)
    with pytest.raises(PmmError, match="seed"):
        ensure_synthetic(tmp_path / "x", seed=-1)
    assert not (tmp_path / "x").exists()


# ---------------------------------------------------------------------------------- ensure_synthetic


def _stamps(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


def test_ensure_synthetic_reuses_a_matching_tree(tmp_path: Path) -> None:
    root = ensure_synthetic(tmp_path / "syn", seed=4, **SMALL)
    before = _stamps(root)
    inode = root.stat().st_ino
    assert ensure_synthetic(str(tmp_path / "syn"), seed=4, **SMALL) == root
    assert _stamps(root) == before and root.stat().st_ino == inode


def test_ensure_synthetic_regenerates_on_changed_parameters(tmp_path: Path) -> None:
    root = ensure_synthetic(tmp_path / "syn", seed=4, **SMALL)
    old_mask = (root / "SegmentationClass" / "train_00000.png").read_bytes()
    ensure_synthetic(root, seed=5, **SMALL)
    assert json.loads((root / "meta.json").read_text())["seed"] == 5
    assert (root / "SegmentationClass" / "train_00000.png").read_bytes() != old_mask
    ensure_synthetic(root, seed=5, num_train=4, num_val=2)
    assert len(_ids(root, "train")) == 4 and len(_ids(root, "val")) == 2
    assert len(list((root / "JPEGImages").iterdir())) == 6  # the old tree is gone, not merged
    assert [p.name for p in tmp_path.iterdir()] == ["syn"]  # and no temporary folder is left


def test_ensure_synthetic_repairs_an_incomplete_tree(tmp_path: Path) -> None:
    root = ensure_synthetic(tmp_path / "syn", seed=4, **SMALL)
    missing = root / "JPEGImages" / "val_00003.jpg"
    missing.unlink()
    ensure_synthetic(root, seed=4, **SMALL)
    assert missing.is_file()


def test_ensure_synthetic_never_replaces_a_foreign_folder(tmp_path: Path) -> None:
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "precious.txt").write_text("keep me")
    with pytest.raises(PmmError, match=str(foreign)):
        ensure_synthetic(foreign, **SMALL)
    (foreign / "meta.json").write_text(json.dumps({"seed": 0, "note": "someone else's"}))
    with pytest.raises(PmmError, match="not a pmm synthetic dataset"):
        ensure_synthetic(foreign, **SMALL)
    with pytest.raises(PmmError):
        generate_synthetic(foreign, **SMALL)
    assert (foreign / "precious.txt").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]

    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(PmmError, match="not a folder"):
        ensure_synthetic(a_file, **SMALL)


def test_ensure_synthetic_fills_an_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    root = ensure_synthetic(tmp_path / "empty", seed=0, num_train=2, num_val=1)
    assert _ids(root, "train") == ["train_00000", "train_00001"]
