"""The multi-crop CAM round (``stage=cam cam.round=multi_crop``): the crop dataset's labels on a
hand-made rough mask, its determinism, the raw vs refined panel, and a tiny end-to-end round."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pmm.cam.crop_dataset import CropClassificationDataset, EpochSampler, split_key
from pmm.settings import MultiCropSettings
from pmm.io import save_mask


class StubSplit:
    """The part of a VOCSplit the crop dataset reads: ids, classes, images, image labels."""

    def __init__(self, images: dict[str, np.ndarray], labels: dict[str, tuple[int, ...]], num_classes: int) -> None:
        self.ids = list(images)
        self.images, self.image_labels, self.num_classes = images, labels, num_classes
        self.split = "train"

    def __len__(self) -> int:
        return len(self.ids)

    def load_image(self, image_id: str) -> np.ndarray:
        return self.images[image_id]

    def labels(self, image_id: str) -> tuple[int, ...]:
        return self.image_labels[image_id]

    def label_vector(self, image_id: str) -> np.ndarray:
        vector = np.zeros(self.num_classes - 1, np.float32)
        vector[[k - 1 for k in self.image_labels[image_id]]] = 1
        return vector


@pytest.fixture()
def rough(tmp_path) -> tuple[StubSplit, Path]:
    """One 100 x 100 image; rough mask: class 1 fills the top-left quarter, class 2 a 10 x 10
    square at rows / columns 80..89, class 3 (labelled on the image, absent from the mask) nowhere."""
    mask = np.zeros((100, 100), np.uint8)
    mask[:50, :50] = 1
    mask[80:90, 80:90] = 2
    save_mask(tmp_path / "a.png", mask)
    image = np.random.default_rng(0).integers(0, 256, (100, 100, 3), dtype=np.uint8)
    return StubSplit({"a": image}, {"a": (1, 2, 3)}, num_classes=4), tmp_path


def crop_dataset(split, folder, **settings) -> CropClassificationDataset:
    """The multi-crop round's dataset with cam.multi_crop's defaults, overridden by ``settings``."""
    defaults = MultiCropSettings()
    chosen = {name: getattr(defaults, name) for name in ("area", "aspect", "min_share", "min_object_share", "jitter")}
    return CropClassificationDataset(split, folder, **{**chosen, **settings})


def test_whole_image_crop_labels_follow_both_rules(rough):
    split, folder = rough
    whole = dict(area=(1.0, 1.0), aspect=(1.0, 1.0), jitter=None)
    # Class 1 covers 25 % of the crop; class 2 only 1 %, but the crop holds all of it ("mask in box").
    data = crop_dataset(split, folder, crop=32, seed=0, **whole)
    item = data[0]
    assert item["box"].tolist() == [0, 0, 100, 100]
    assert item["label"].tolist() == [1.0, 1.0, 0.0]
    assert item["image"].shape == (3, 32, 32) and 0 <= float(item["image"].min()) and float(item["image"].max()) <= 1
    # The share rule alone: class 2 (1 % of the crop) is dropped, class 1 (25 %) kept.
    share_only = crop_dataset(split, folder, crop=32, seed=0, min_object_share=None, **whole)
    assert share_only[0]["label"].tolist() == [1.0, 0.0, 0.0]
    strict = crop_dataset(split, folder, crop=32, seed=0, min_share=0.3, min_object_share=None, **whole)
    assert strict.sample(0)[1].tolist() == [0.0, 0.0, 0.0]  # no class reaches 30 %: 100 draws, then unlabelled


def test_heat_centres_the_crop_on_the_small_object(rough, tmp_path):
    split, folder = rough
    heat = np.zeros((1, 100, 100), np.float32)
    heat[0, 85, 85] = 1.0
    cams_dir = tmp_path / "cams"
    cams_dir.mkdir()
    np.savez(cams_dir / "a.npz", cams=heat, labels=np.array([2]))
    data = crop_dataset(split, folder, crop=16, seed=3, area=(0.04, 0.04), aspect=(1.0, 1.0),
                                     heat_dir=cams_dir, jitter=None)
    for epoch in range(3):
        box, labels, _ = data.sample(0, epoch)
        assert box == (75, 75, 20, 20)  # 20 x 20 centred on (85, 85): class 2 covers 25 % of it
        assert labels.tolist() == [0.0, 1.0, 0.0]


def test_items_depend_on_seed_epoch_and_index_only(rough):
    split, folder = rough
    data = crop_dataset(split, folder, crop=24, seed=5)
    first, again = data[0], data[0]
    assert first["box"].tolist() == again["box"].tolist()
    assert np.array_equal(first["image"].numpy(), again["image"].numpy())
    boxes = {tuple(data[epoch * len(data)]["box"].tolist()) for epoch in range(6)}
    assert len(boxes) > 1  # a new crop every epoch
    other = crop_dataset(split, folder, crop=24, seed=6)
    assert any(other[e]["box"].tolist() != data[e]["box"].tolist() for e in range(4))


def test_epoch_sampler_keys():
    sampler = EpochSampler(5, seed=1)
    first = list(sampler)
    assert sorted(split_key(k, 5)[1] for k in first) == list(range(5))
    assert {split_key(k, 5)[0] for k in first} == {0}
    assert {split_key(k, 5)[0] for k in sampler} == {1}  # no set_epoch: each pass is the next epoch
    sampler.set_epoch(0)
    assert list(sampler) == first  # Lightning's set_epoch replays an epoch (resume)
    sampler.set_epoch(7)
    assert {split_key(k, 5)[0] for k in sampler} == {7}


def test_raw_refined_panel(tmp_path):
    from pmm import viz

    image = np.zeros((20, 30, 3), np.uint8)
    ramp = np.tile(np.linspace(0, 1, 30, dtype=np.float32), (20, 1))
    pictures = viz.save_raw_refined_panel(tmp_path / "p.png", [image] * 2, [ramp] * 2, [1 - ramp] * 2,
                                          [np.zeros((20, 30), np.uint8)] * 2)
    assert len(pictures) == 2 and pictures[0].shape == (20, 60, 3)
    with Image.open(tmp_path / "p.png") as png:
        assert png.size[0] > 100
    with pytest.raises(ValueError):
        viz.save_raw_refined_panel(tmp_path / "q.png", [image], [ramp, ramp], [ramp])


@pytest.mark.slow
def test_multi_crop_round_end_to_end(tmp_path):
    """A tiny SEAM first round (debug config), then the multi-crop round from its checkpoint."""
    from test_run_pipeline import run_stage

    data_dir = tmp_path / "data"
    tiny = ["cam_net=seam", "cam.scales=[1.0]", "cam.flip=false", "cam.figures=2"]
    first_dir = tmp_path / "first"
    first = run_stage(first_dir, data_dir, ["stage=cam", *tiny])
    assert first["cam_round"] == "standard"
    assert (first_dir / "figures" / "cam_raw_vs_refined.png").is_file()
    ckpt = first_dir / "checkpoints" / "cam" / "last.ckpt"

    run_dir = tmp_path / "second"
    overrides = ["stage=cam", "cam.round=multi_crop", f"cam_ckpt={ckpt}", "cam.multi_crop.epochs=1",
                 "cam.crop_size=64", *tiny]
    metrics = run_stage(run_dir, data_dir, overrides)
    assert metrics["cam_round"] == "multi_crop"
    assert 0.0 <= metrics["cam_miou"] <= 1.0 and 0.0 <= metrics["cam_rough_miou"] <= 1.0
    assert metrics["cam_multi_crop"]["crop"] == 64 and metrics["cam_multi_crop"]["rough_alpha"] == 24
    ids = (Path(metrics["data_root"]) / "ImageSets/Segmentation/train.txt").read_text().split()
    for folder, suffix in (("cams/train", ".npz"), ("multi_crop/first_round_cams", ".npz"), ("multi_crop/rough_masks", ".png")):
        assert sorted(p.stem for p in (run_dir / folder).glob(f"*{suffix}")) == sorted(ids), folder
    assert (run_dir / "checkpoints" / "cam" / "last.ckpt").is_file()
    for figure in ("cam_panel.png", "cam_miou_curve.png", "cam_raw_vs_refined.png"):
        assert (run_dir / "figures" / figure).is_file(), figure
    assert json.loads((run_dir / "cam_report.json").read_text())["cam_round"] == "multi_crop"
    # The round's checkpoint is a CAM checkpoint the pseudo stage can load.
    from pmm.checkpoints import load_network

    net, spec, _ = load_network(run_dir / "checkpoints" / "cam" / "last.ckpt", "cam_ckpt", "cam")
    assert spec["_target_"].endswith("SEAMNet")


# ----------------------------------------------------------------------- the authors' tile sampler

def confident_rough_mask() -> np.ndarray:
    """100 x 100: class 1 fills [0:50, 0:50] (2,500 px), class 2 a 10 x 10 square at 80..89,
    the right half of the bottom rows unsure (255: no marginal above the confidence)."""
    from pmm.cam.crops import UNSURE

    mask = np.zeros((100, 100), np.uint8)
    mask[:50, :50] = 1
    mask[80:90, 80:90] = 2
    mask[95:, 50:] = UNSURE
    return mask


def test_tile_labels_each_ratio_alone_labels_the_tile():
    from pmm.cam.crops import tile_labels

    mask = confident_rough_mask()
    # x 0..10, y 0..20: all class 1, so 100 % of the tile but 200 / 2,500 = 8 % of the class.
    assert tile_labels(mask, (0, 0, 10, 20), 3, 0.1).tolist() == [1.0, 0.0, 0.0]
    assert tile_labels(mask, (0, 0, 10, 20), 3, threshold=float("inf"), object_threshold=0.1).tolist() == [0.0, 0.0, 0.0]
    # x 60..100, y 60..100: class 2 is 100 / 1,600 = 6 % of the tile but all of the class.
    assert tile_labels(mask, (60, 60, 100, 100), 3, 0.1).tolist() == [0.0, 1.0, 0.0]
    assert tile_labels(mask, (60, 60, 100, 100), 3, threshold=0.1, object_threshold=float("inf")).tolist() == [0.0, 0.0, 0.0]


def test_tile_labels_are_strict_and_ignore_unsure_pixels():
    from pmm.cam.crops import UNSURE, tile_labels

    mask = confident_rough_mask()
    # x 45..95, y 0..20 (1,000 px): class 1 holds exactly 100 px = 10 % of it and 4 % of the class: not > 0.1.
    assert tile_labels(mask, (45, 0, 95, 20), 3, 0.1).tolist() == [0.0, 0.0, 0.0]
    assert tile_labels(mask, (45, 0, 95, 20), 3, 0.099).tolist() == [1.0, 0.0, 0.0]
    unsure = np.full((10, 10), UNSURE, np.uint8)
    assert tile_labels(unsure, (0, 0, 10, 10), 3, 0.1).tolist() == [0.0, 0.0, 0.0]


def test_sample_labelled_tile_redraws_and_keeps_the_last_draw():
    from pmm.cam.crops import sample_labelled_tile

    mask = confident_rough_mask()
    background_only = [(50, 0, 60, 10), (60, 0, 70, 10), (70, 0, 80, 10)]  # no class anywhere in them
    corners, labels = sample_labelled_tile(mask, [background_only], 3, np.random.default_rng(4), 0.1)
    assert not labels.any()
    replay = np.random.default_rng(4)
    replay.integers(1)  # the scale draw
    draws = [int(replay.integers(3)) for _ in range(3)]  # as many draws as tiles, the last one kept
    assert corners == background_only[draws[-1]]
    mixed = [(50, 0, 60, 10)] * 20 + [(0, 0, 10, 20)]
    corners, labels = sample_labelled_tile(mask, [[(50, 0, 60, 10)], mixed], 3, np.random.default_rng(0), 0.1)
    if labels.any():
        assert corners == (0, 0, 10, 20) and labels.tolist() == [1.0, 0.0, 0.0]
    else:
        assert corners == (50, 0, 60, 10)


def test_tile_sampler_items_are_grid_tiles_with_their_labels(tmp_path):
    from pmm.cam.crops import tile_grid, tile_labels

    mask = confident_rough_mask()
    save_mask(tmp_path / "a.png", mask)
    image = np.random.default_rng(0).integers(0, 256, (100, 100, 3), dtype=np.uint8)
    split = StubSplit({"a": image}, {"a": (1, 2)}, num_classes=4)
    data = crop_dataset(split, tmp_path, crop=32, seed=1, jitter=None, sampler="tiles", tile_scales=(1.0, 2.0),
                        tile_size=64, tile_stride=48)
    grid = {box for scale in tile_grid(100, 100, (1.0, 2.0), 64, 48) for box in scale}
    seen = set()
    for epoch in range(12):
        item = data[epoch * len(data)]
        top, left, h, w = item["box"].tolist()
        corners = (left, top, left + w, top + h)
        assert corners in grid
        assert item["label"].tolist() == tile_labels(mask, corners, 3, 0.1).tolist()
        assert item["image"].shape == (3, 32, 32)  # stretched to the crop
        seen.add(corners)
    assert len(seen) > 1


def test_multi_crop_round_trains_its_first_round_and_a_fresh_network(tmp_path):
    """Without cam_ckpt the round trains the first round (cam_net) itself, then a fresh network
    (cam.multi_crop.net) on the authors' tiles labelled from confident rough masks."""
    from test_run_pipeline import run_stage

    from pmm.checkpoints import load_network
    from pmm.io import load_mask

    run_dir = tmp_path / "run"
    fresh = "{_target_:pmm.cam.net.CAMNet,backbone:resnet18,out_index:-2,input:rgb}"
    metrics = run_stage(run_dir, tmp_path / "data", [
        "stage=cam", "cam_net=seam", "cam.round=multi_crop", "cam.scales=[1.0,1.5]", "cam.flip=false",
        "cam.figures=1", "cam.crop_size=64", "cam.window=64", "cam.stride=48", "cam.multi_crop.epochs=1",
        "cam.multi_crop.sampler=tiles", "cam.multi_crop.rough_confidence=0.9", "cam.multi_crop.rough_scales=[1.0]",
        "cam.multi_crop.rough_flip=false", "cam.multi_crop.batch_size=4", f"cam.multi_crop.net={fresh}"])
    first = run_dir / "checkpoints" / "cam_first_round" / "last.ckpt"
    assert metrics["cam_round"] == "multi_crop" and metrics["cam_first_round_ckpt"] == str(first.resolve())
    assert load_network(first, "cam_ckpt", "cam")[1]["_target_"].endswith("SEAMNet")
    net, spec, _ = load_network(run_dir / "checkpoints" / "cam" / "last.ckpt", "cam_ckpt", "cam")
    assert spec["_target_"] == "pmm.cam.net.CAMNet" and spec["backbone"] == "resnet18"
    assert metrics["cam_multi_crop"]["sampler"] == "tiles" and metrics["cam_multi_crop"]["batch_size"] == 4
    assert metrics["cam_multi_crop"]["net"] == "pmm.cam.net.CAMNet"
    # Confident rough masks: some pixels unsure (255), scored on the sure ones only.
    values = set()
    for path in (run_dir / "multi_crop" / "rough_masks").glob("*.png"):
        values |= set(np.unique(load_mask(path)).tolist())
    assert 255 in values and 0 in values
    assert 0.0 < metrics["cam_rough_coverage"] < 1.0 and 0.0 <= metrics["cam_rough_miou"] <= 1.0
