"""The VOC-layout reader on the real samples and on broken trees."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from pmm.data.voc import VOC_CLASS_NAMES, load_voc_split
from pmm.errors import PmmError


def test_reads_real_voc_samples(voc_samples, tmp_path):
    split = load_voc_split(voc_samples, "val", cache_dir=tmp_path)
    assert len(split) == 14 and split.num_classes == 21
    names = {VOC_CLASS_NAMES[label] for image_id in split.ids for label in split.labels(image_id)}
    # Checked by eye on the photos (the samples' README list is not accurate): sheep, cow, a car...
    assert names == {"aeroplane", "bicycle", "bird", "bottle", "bus", "car", "cow", "horse", "motorbike",
                     "person", "sheep"}
    assert split.labels("voc_sample_10") == (7, 15)  # car + person behind a window
    first = split.ids[0]
    image, mask = split.load_image(first), split.load_mask(first)
    assert image.shape == (513, 513, 3) and image.dtype == np.uint8
    assert mask.shape == (513, 513)
    present = set(np.unique(mask)) - {0, 255}
    assert tuple(sorted(present)) == split.labels(first)
    vector = split.label_vector(first)
    assert vector.shape == (20,) and set(np.flatnonzero(vector) + 1) == present


def test_label_cache_is_reused_and_refreshed(voc_copy, tmp_path):
    cache = tmp_path / "cache"
    first = load_voc_split(voc_copy, "train", cache_dir=cache)
    cache_file = next(cache.glob("labels-train-*.json"))
    stamp = cache_file.stat().st_mtime_ns
    again = load_voc_split(voc_copy, "train", cache_dir=cache)
    assert again.image_labels == first.image_labels
    assert cache_file.stat().st_mtime_ns == stamp  # nothing rescanned, nothing rewritten
    # Repaint one mask entirely as class 3: the cache must notice and relabel that image.
    image_id = first.ids[0]
    mask_path = voc_copy / "SegmentationClass" / f"{image_id}.png"
    with Image.open(mask_path) as original:
        palette = original.getpalette()
        repainted = Image.fromarray(np.full((513, 513), 3, np.uint8), mode="P")
    repainted.putpalette(palette)
    repainted.save(mask_path)
    refreshed = load_voc_split(voc_copy, "train", cache_dir=cache)
    assert refreshed.labels(image_id) == (3,)


def test_class_names_set_the_class_count(voc_copy, tmp_path):
    with pytest.raises(PmmError, match=r"label \d+ is beyond the 3 classes.*data.class_names"):
        load_voc_split(voc_copy, "train", ["background", "a", "b"], cache_dir=tmp_path)


def _one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


def test_missing_root(tmp_path):
    with pytest.raises(PmmError) as error:
        load_voc_split(tmp_path / "nowhere", "train", cache_dir=tmp_path)
    assert "data.root=" in _one_line(error) and "JPEGImages" in str(error.value)


def test_missing_list_names_the_available_ones(voc_copy, tmp_path):
    with pytest.raises(PmmError) as error:
        load_voc_split(voc_copy, "train_aug", cache_dir=tmp_path)
    message = _one_line(error)
    assert "train_aug.txt" in message and "'train'" in message and "'val'" in message


def test_missing_image(voc_copy, tmp_path):
    (voc_copy / "JPEGImages" / "voc_sample_02.jpg").unlink()
    with pytest.raises(PmmError) as error:
        load_voc_split(voc_copy, "train", cache_dir=tmp_path)
    assert "voc_sample_02.jpg" in _one_line(error) and "missing" in str(error.value)


def test_missing_mask(voc_copy, tmp_path):
    (voc_copy / "SegmentationClass" / "voc_sample_03.png").unlink()
    with pytest.raises(PmmError) as error:
        load_voc_split(voc_copy, "train", cache_dir=tmp_path)
    assert "voc_sample_03.png" in _one_line(error)


def test_size_mismatch(voc_copy, tmp_path):
    mask_path = voc_copy / "SegmentationClass" / "voc_sample_04.png"
    with Image.open(mask_path) as mask:
        mask.crop((0, 0, 400, 513)).save(mask_path)
    with pytest.raises(PmmError) as error:
        load_voc_split(voc_copy, "train", cache_dir=tmp_path)
    assert "voc_sample_04.png" in _one_line(error) and "400x513" in str(error.value) and "513x513" in str(error.value)


def test_label_beyond_class_list(voc_copy, tmp_path):
    mask_path = voc_copy / "SegmentationClass" / "voc_sample_05.png"
    with Image.open(mask_path) as mask:
        values = np.array(mask)
        palette = mask.getpalette()
    values[:10, :10] = 42
    broken = Image.fromarray(values, mode="P")
    broken.putpalette(palette)
    broken.save(mask_path)
    with pytest.raises(PmmError) as error:
        load_voc_split(voc_copy, "train", cache_dir=tmp_path)
    assert "voc_sample_05.png" in _one_line(error) and "label 42" in str(error.value)


def test_rgb_mask_is_refused(voc_copy, tmp_path):
    mask_path = voc_copy / "SegmentationClass" / "voc_sample_06.png"
    with Image.open(mask_path) as mask:
        mask.convert("RGB").save(mask_path)
    with pytest.raises(PmmError) as error:
        load_voc_split(voc_copy, "train", cache_dir=tmp_path)
    assert "voc_sample_06.png" in _one_line(error) and "palette" in str(error.value)


def test_empty_list(voc_copy, tmp_path):
    (voc_copy / "ImageSets/Segmentation/train.txt").write_text("\n")
    with pytest.raises(PmmError, match="empty"):
        load_voc_split(voc_copy, "train", cache_dir=tmp_path)
