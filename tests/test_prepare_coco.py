"""COCO -> VOC-layout conversion on a tiny hand-made COCO dataset."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pmm.prepare import main
from pmm.prepare.coco import coco_class_names, convert_coco_to_voc
from pmm.data.voc import load_voc_split
from pmm.errors import PmmError
from pmm.io import load_mask

# Sparse ids, listed out of order: class ids follow the sorted category ids (1, 7, 90).
CATEGORIES = [
    {"id": 90, "name": "toothbrush", "supercategory": "indoor"},
    {"id": 1, "name": "person", "supercategory": "person"},
    {"id": 7, "name": "train", "supercategory": "vehicle"},
]
EXPECTED_NAMES = ("background", "person", "train", "toothbrush")
PERSON, TRAIN, TOOTHBRUSH = 1, 2, 3


def _box(x0: float, y0: float, x1: float, y1: float) -> list[list[float]]:
    return [[x0, y0, x1, y0, x1, y1, x0, y1]]


def _uncompressed_rle(mask: np.ndarray) -> dict:
    """COCO's crowd format: run lengths over the column-major mask, starting with a run of zeros."""
    flat = mask.flatten(order="F").astype(np.uint8)
    counts, current, run = [], 0, 0
    for value in flat:
        if value == current:
            run += 1
        else:
            counts.append(run)
            current, run = value, 1
    counts.append(run)
    return {"counts": [int(c) for c in counts], "size": [int(mask.shape[0]), int(mask.shape[1])]}


def _write_jpeg(path: Path, width: int, height: int, seed: int) -> None:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, format="JPEG")


CROWD_BOX = (16, 4, 29, 21)  # x0, y0, x1, y1 (exclusive) of the crowd region in image 2


def make_coco(root: Path) -> tuple[Path, Path]:
    """Three JPEGs and an instances JSON: polygons, an overlap, an uncompressed-RLE crowd, an empty image."""
    images = root / "train2014"
    images.mkdir(parents=True)
    _write_jpeg(images / "img_b.jpg", 40, 30, 0)  # id 1
    _write_jpeg(images / "img_a.jpg", 32, 24, 1)  # id 2
    _write_jpeg(images / "img_c.jpg", 20, 16, 2)  # id 3: no annotations
    crowd = np.zeros((24, 32), np.uint8)
    x0, y0, x1, y1 = CROWD_BOX
    crowd[y0:y1, x0:x1] = 1
    annotations = [
        # Image 1: a small toothbrush inside a large train. The small one has the lower id, so
        # "later annotation wins" would hide it; smaller-on-top must keep it visible.
        {"id": 10, "image_id": 1, "category_id": 90, "segmentation": _box(10, 8, 18, 16), "area": 64.0,
         "bbox": [10, 8, 8, 8], "iscrowd": 0},
        {"id": 11, "image_id": 1, "category_id": 7, "segmentation": _box(2, 2, 30, 25), "area": 644.0,
         "bbox": [2, 2, 28, 23], "iscrowd": 0},
        # Image 2: a person polygon and a crowd of people (uncompressed RLE) overlapping it on x 16..19.
        {"id": 20, "image_id": 2, "category_id": 1, "segmentation": _box(2, 2, 20, 20), "area": 324.0,
         "bbox": [2, 2, 18, 18], "iscrowd": 0},
        {"id": 21, "image_id": 2, "category_id": 1, "segmentation": _uncompressed_rle(crowd),
         "area": float(crowd.sum()), "bbox": [16, 4, 13, 17], "iscrowd": 1},
    ]
    dataset = {
        "info": {"description": "tiny"},
        "images": [
            {"id": 3, "file_name": "img_c.jpg", "height": 16, "width": 20},
            {"id": 1, "file_name": "img_b.jpg", "height": 30, "width": 40},
            {"id": 2, "file_name": "img_a.jpg", "height": 24, "width": 32},
        ],
        "annotations": annotations,
        "categories": CATEGORIES,
    }
    annotation_file = root / "instances_train2014.json"
    annotation_file.write_text(json.dumps(dataset))
    return annotation_file, images


@pytest.fixture
def coco(tmp_path: Path) -> tuple[Path, Path]:
    return make_coco(tmp_path / "coco")


def _one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


def test_class_names_follow_sorted_category_ids(coco):
    annotation_file, _ = coco
    assert coco_class_names(annotation_file) == EXPECTED_NAMES


def test_conversion_writes_voc_tree(coco, tmp_path):
    annotation_file, images = coco
    out = tmp_path / "voc"
    root = convert_coco_to_voc(annotation_file, images, out, "train", progress=False)
    assert root == out.resolve()
    assert (out / "ImageSets/Segmentation/train.txt").read_text().split() == ["img_a", "img_b", "img_c"]
    assert json.loads((out / "class_names.json").read_text()) == list(EXPECTED_NAMES)
    for stem in ("img_a", "img_b", "img_c"):
        link = out / "JPEGImages" / f"{stem}.jpg"
        assert link.is_symlink() and link.resolve() == (images / f"{stem}.jpg").resolve()
    assert not list(out.rglob(".*.tmp*"))  # no temporaries left behind

    # Image 1: train everywhere in its box, toothbrush on top inside it, background outside.
    mask = load_mask(out / "SegmentationClass/img_b.png")
    assert mask.shape == (30, 40)
    assert mask[20, 5] == TRAIN and mask[4, 25] == TRAIN
    assert mask[12, 14] == TOOTHBRUSH  # the smaller instance wins the overlap
    assert mask[28, 35] == 0 and mask[0, 0] == 0
    assert set(np.unique(mask)) == {0, TRAIN, TOOTHBRUSH}
    assert np.count_nonzero(mask == TOOTHBRUSH) == pytest.approx(64, abs=20)

    # Image 2: person polygon, crowd -> 255 only where the individual person does not cover it.
    mask = load_mask(out / "SegmentationClass/img_a.png")
    assert mask.shape == (24, 32)
    assert mask[10, 8] == PERSON
    assert mask[10, 18] == PERSON  # inside both the person and the crowd: the individual wins
    assert mask[10, 25] == 255 and mask[20, 28] == 255  # crowd only
    assert mask[22, 8] == 0 and mask[1, 30] == 0
    x0, y0, x1, y1 = CROWD_BOX
    crowd_only = np.zeros_like(mask, bool)
    crowd_only[y0:y1, x0:x1] = True
    crowd_only &= mask != PERSON
    assert np.all(mask[crowd_only] == 255) and np.count_nonzero(mask == 255) == crowd_only.sum()
    assert set(np.unique(mask)) == {0, PERSON, 255}

    # Image 3 has no annotations: listed, all background, with its image's size.
    mask = load_mask(out / "SegmentationClass/img_c.png")
    assert mask.shape == (16, 20) and not mask.any()

    split = load_voc_split(out, "train", EXPECTED_NAMES, cache_dir=tmp_path / "cache")
    assert split.ids == ("img_a", "img_b", "img_c")
    assert split.labels("img_b") == (TRAIN, TOOTHBRUSH)
    assert split.labels("img_a") == (PERSON,)  # the crowd (255) adds no label
    assert split.labels("img_c") == ()
    assert split.label_vector("img_b").tolist() == [0.0, 1.0, 1.0]
    assert split.load_image("img_b").shape == (30, 40, 3)


def test_copy_and_limit_and_rerun_overwrites_list(coco, tmp_path):
    annotation_file, images = coco
    out = tmp_path / "voc"
    convert_coco_to_voc(annotation_file, images, out, "train", progress=False)
    # Copies, first image only (by COCO id: id 1 is img_b); the list from the first run is replaced.
    convert_coco_to_voc(annotation_file, images, out, "train", link_images=False, limit=1, progress=False)
    assert (out / "ImageSets/Segmentation/train.txt").read_text().split() == ["img_b"]
    copied = out / "JPEGImages/img_b.jpg"
    assert copied.is_file() and not copied.is_symlink()
    assert copied.read_bytes() == (images / "img_b.jpg").read_bytes()
    split = load_voc_split(out, "train", EXPECTED_NAMES, cache_dir=tmp_path / "cache")
    assert split.ids == ("img_b",) and split.labels("img_b") == (TRAIN, TOOTHBRUSH)


def test_missing_image_is_named(coco, tmp_path):
    annotation_file, images = coco
    (images / "img_a.jpg").unlink()
    with pytest.raises(PmmError) as error:
        convert_coco_to_voc(annotation_file, images, tmp_path / "voc", "train", progress=False)
    message = _one_line(error)
    assert "img_a.jpg" in message and "missing" in message
    assert not (tmp_path / "voc/ImageSets/Segmentation/train.txt").exists()


def test_non_jpeg_image_is_refused(coco, tmp_path):
    annotation_file, images = coco
    Image.new("RGB", (40, 30)).save(images / "img_b.jpg", format="PNG")  # a PNG under a .jpg name
    with pytest.raises(PmmError) as error:
        convert_coco_to_voc(annotation_file, images, tmp_path / "voc", "train", progress=False)
    message = _one_line(error)
    assert "img_b.jpg" in message and "JPEG" in message


@pytest.mark.parametrize(
    "content, expected",
    [
        (None, "not found"),
        ("{not json", "not valid JSON"),
        ("[1, 2]", "not an object"),
        ('{"images": [], "categories": [{"id": 1, "name": "x"}]}', "'annotations' is missing"),
        ('{"images": [], "annotations": [], "categories": []}', "'categories' is empty"),
    ],
)
def test_bad_annotation_file(tmp_path, content, expected):
    annotation_file = tmp_path / "instances.json"
    if content is not None:
        annotation_file.write_text(content)
    (tmp_path / "images").mkdir()
    with pytest.raises(PmmError) as error:
        convert_coco_to_voc(annotation_file, tmp_path / "images", tmp_path / "voc", "train", progress=False)
    message = _one_line(error)
    assert expected in message and "instances.json" in message
    with pytest.raises(PmmError):
        coco_class_names(annotation_file)


def test_other_category_set_is_refused(coco, tmp_path):
    annotation_file, images = coco
    out = tmp_path / "voc"
    convert_coco_to_voc(annotation_file, images, out, "train", progress=False)
    dataset = json.loads(annotation_file.read_text())
    dataset["categories"] = dataset["categories"][1:]
    dataset["annotations"] = [a for a in dataset["annotations"] if a["category_id"] != 90]
    other = annotation_file.with_name("instances_other.json")
    other.write_text(json.dumps(dataset))
    with pytest.raises(PmmError) as error:
        convert_coco_to_voc(other, images, out, "val", progress=False)
    assert "class_names.json" in _one_line(error)
    assert not (out / "ImageSets/Segmentation/val.txt").exists()


def test_cli(coco, tmp_path, capsys):
    annotation_file, images = coco
    out = tmp_path / "voc"
    argv = ["coco", "--annotations", str(annotation_file), "--images", str(images), "--out", str(out),
            "--split", "val", "--copy", "--limit", "2", "--no-progress"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "4 classes" in printed and "data.class_names=" in printed
    assert '"background","person","train","toothbrush"' in printed
    assert (out / "ImageSets/Segmentation/val.txt").read_text().split() == ["img_a", "img_b"]
    assert not os.path.islink(out / "JPEGImages/img_a.jpg")
    (images / "img_a.jpg").unlink()
    assert main(argv) == 2
    assert "img_a.jpg" in capsys.readouterr().err
