"""python -m pmm.prepare voc|coco on small raw fixtures: VOC tree with XML, SBD .mat files, the archives."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from PIL import Image

from pmm.data.voc import VOC_CLASS_NAMES, load_voc_split
from pmm.errors import PmmError
from pmm.io import load_mask, save_mask
from pmm.prepare import main, prepare_voc, read_class_names
from pmm.prepare.voc import read_sbd_mat

# VOC 2012 segmentation lists, and SBD's. a1 is in both VOC train and SBD train (VOC's mask wins),
# v1 is in SBD train but VOC val (so not in train_aug), sx exists only in SBD's img/.
VOC_TRAIN, VOC_VAL = ["a1", "a2"], ["v1", "v2"]
SBD_TRAIN, SBD_VAL = ["s1", "s2", "a1", "v1"], ["s3", "sx"]
TRAIN_AUG = ["a1", "a2", "s1", "s2", "s3", "sx"]  # (VOC train + SBD train + SBD val) - VOC val
ALL_IDS = sorted(set(VOC_TRAIN + VOC_VAL + SBD_TRAIN + SBD_VAL))
SIZES = {image_id: (10 + 2 * index, 14 + index) for index, image_id in enumerate(ALL_IDS + ["d1"])}  # (h, w)


def _label_map(image_id: str, seed: int, border: bool) -> np.ndarray:
    height, width = SIZES[image_id]
    rng = np.random.default_rng(seed)
    mask = np.zeros((height, width), np.uint8)
    mask[2:-2, 3:-3] = rng.integers(1, 21)
    mask[height // 2 :, : width // 2] = rng.integers(1, 21)
    if border:
        mask[2, 3:-3] = 255  # VOC draws object borders as 255
    return mask


def _jpeg(path: Path, image_id: str, seed: int) -> None:
    height, width = SIZES[image_id]
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, format="JPEG")


def _xml(image_id: str, classes: list[str]) -> str:
    objects = "".join(f"<object><name>{name}</name><difficult>0</difficult></object>" for name in classes)
    return f"<annotation><folder>VOC2012</folder><filename>{image_id}.jpg</filename>{objects}</annotation>"


def _sbd_mat(path: Path, segmentation: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    present = np.unique(segmentation[segmentation > 0]).astype(np.uint8)
    scipy.io.savemat(path, {"GTcls": {"Segmentation": segmentation, "CategoriesPresent": present}})


def make_raw(root: Path) -> tuple[Path, Path, dict[str, np.ndarray]]:
    """A VOC2012 tree and an SBD tree; returns (voc, sbd, the label map each id must end up with)."""
    voc = root / "VOCdevkit" / "VOC2012"
    sbd = root / "benchmark_RELEASE" / "dataset"
    expected: dict[str, np.ndarray] = {}
    lists = voc / "ImageSets" / "Segmentation"
    lists.mkdir(parents=True)
    (lists / "train.txt").write_text("\n".join(VOC_TRAIN) + "\n")
    (lists / "val.txt").write_text("\n".join(VOC_VAL) + "\n")
    (lists / "trainval.txt").write_text("\n".join(VOC_TRAIN + VOC_VAL) + "\n")
    (voc / "Annotations").mkdir()
    for seed, image_id in enumerate(ALL_IDS + ["d1"]):
        if image_id != "sx":
            _jpeg(voc / "JPEGImages" / f"{image_id}.jpg", image_id, seed)
            classes = ["cat"] if image_id != "d1" else ["dog"]
            (voc / "Annotations" / f"{image_id}.xml").write_text(_xml(image_id, classes))
    for seed, image_id in enumerate(VOC_TRAIN + VOC_VAL):
        mask = _label_map(image_id, 100 + seed, border=True)
        save_mask(voc / "SegmentationClass" / f"{image_id}.png", mask)
        expected[image_id] = mask
    sbd.mkdir(parents=True)
    (sbd / "train.txt").write_text("\n".join(SBD_TRAIN) + "\n")
    (sbd / "val.txt").write_text("\n".join(SBD_VAL) + "\n")
    for seed, image_id in enumerate(SBD_TRAIN + SBD_VAL):
        segmentation = _label_map(image_id, 200 + seed, border=False)
        _sbd_mat(sbd / "cls" / f"{image_id}.mat", segmentation)
        expected.setdefault(image_id, segmentation)  # VOC's mask stays where VOC has one
    _jpeg(sbd / "img" / "sx.jpg", "sx", 99)
    return voc, sbd, expected


@pytest.fixture
def raw(tmp_path: Path) -> tuple[Path, Path, dict[str, np.ndarray]]:
    return make_raw(tmp_path / "raw")


def _run(argv: list[str], capsys) -> tuple[int, str, str]:
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _lists(out: Path) -> dict[str, list[str]]:
    return {p.stem: p.read_text().split() for p in sorted((out / "ImageSets/Segmentation").glob("*.txt"))}


def _check_tree(out: Path, voc: Path, sbd: Path, expected: dict[str, np.ndarray], linked: bool) -> None:
    assert _lists(out) == {
        "train": VOC_TRAIN, "val": VOC_VAL, "trainval": VOC_TRAIN + VOC_VAL, "train_aug": TRAIN_AUG,
    }
    # Label maps, pixel by pixel: VOC's where VOC has a mask (a1, v1 too), SBD's elsewhere.
    assert sorted(p.stem for p in (out / "SegmentationClassAug").glob("*.png")) == ALL_IDS
    for image_id in ALL_IDS:
        mask = load_mask(out / "SegmentationClassAug" / f"{image_id}.png")
        np.testing.assert_array_equal(mask, expected[image_id], err_msg=image_id)
        with Image.open(out / "SegmentationClassAug" / f"{image_id}.png") as png:
            assert png.mode == "P"
    assert 255 in load_mask(out / "SegmentationClassAug/a1.png")  # VOC's, with borders, not SBD's
    assert 255 not in load_mask(out / "SegmentationClassAug/s1.png")
    assert sorted(p.stem for p in (out / "SegmentationClass").glob("*.png")) == sorted(VOC_TRAIN + VOC_VAL)
    for image_id in ALL_IDS:
        source = (sbd / "img" if image_id == "sx" else voc / "JPEGImages") / f"{image_id}.jpg"
        target = out / "JPEGImages" / f"{image_id}.jpg"
        assert target.is_symlink() == linked
        assert target.read_bytes() == source.read_bytes()
        if linked:
            assert target.resolve() == source.resolve()
    assert not (out / "JPEGImages/d1.jpg").exists()  # detection-only image, in no list
    assert sorted(p.stem for p in (out / "Annotations").glob("*.xml")) == [i for i in ALL_IDS if i != "sx"]
    assert (out / "Annotations/a1.xml").read_text() == (voc / "Annotations/a1.xml").read_text()
    assert (out / "Annotations/a1.xml").is_symlink() == linked
    assert (out / "SegmentationClass/v1.png").is_symlink() == linked
    assert read_class_names(out) == list(VOC_CLASS_NAMES)
    assert json.loads((out / "class_names.json").read_text()) == list(VOC_CLASS_NAMES)
    assert not list(out.rglob(".*.tmp*"))


def test_prepare_voc_tree(raw, tmp_path, capsys):
    voc, sbd, expected = raw
    out = tmp_path / "out"
    code, printed, err = _run(["voc", "--voc", str(voc), "--sbd", str(sbd), "--out", str(out), "--workers", "1", "--no-progress"], capsys)
    assert code == 0, err
    _check_tree(out, voc, sbd, expected, linked=True)
    summary = printed.splitlines()[0]
    assert summary == (
        f"prepared {out}: 8 images (linked, 8 new), 8 SegmentationClassAug masks (8 written, 0 up to date), "
        "4 SegmentationClass, 7 Annotations; ids per split: train 2, val 2, trainval 4, train_aug 6; 21 classes"
    )
    assert "data.mask_dir=SegmentationClassAug data.train_split=train_aug" in printed

    # The reader takes the tree as it is: train_aug with the Aug masks, image labels from them.
    split = load_voc_split(out, "train_aug", VOC_CLASS_NAMES, mask_dir="SegmentationClassAug", cache_dir=tmp_path / "cache")
    assert split.ids == tuple(TRAIN_AUG)
    for image_id in TRAIN_AUG:
        values = np.unique(expected[image_id])
        assert split.labels(image_id) == tuple(int(v) for v in values if 0 < v < 255)
        assert split.load_image(image_id).shape[:2] == SIZES[image_id]

    # Rerun: nothing to do, nothing rewritten.
    stamps = {p: p.lstat().st_mtime_ns for p in out.rglob("*") if p.is_file() and ".raw" not in p.parts and "ImageSets" not in p.parts}
    code, printed, _ = _run(["voc", "--voc", str(voc), "--sbd", str(sbd), "--out", str(out), "--no-progress"], capsys)
    assert code == 0
    assert "8 images (linked, 0 new), 8 SegmentationClassAug masks (0 written, 8 up to date)" in printed
    assert all(p.lstat().st_mtime_ns == stamp for p, stamp in stamps.items() if p.suffix != ".json" and p.suffix != ".txt")
    # A changed source is picked up again.
    changed = _label_map("s2", 7, border=False)
    _sbd_mat(sbd / "cls" / "s2.mat", changed)
    os.utime(sbd / "cls" / "s2.mat", ns=(1 << 62, 1 << 62))
    result = prepare_voc(voc, sbd, out, workers=1, progress=False)
    assert result.masks_written == 1
    np.testing.assert_array_equal(load_mask(out / "SegmentationClassAug/s2.png"), changed)


def test_prepare_voc_copy_with_workers(raw, tmp_path, capsys):
    voc, sbd, expected = raw
    out = tmp_path / "out"
    code, printed, err = _run(
        ["voc", "--voc", str(voc.parent), "--sbd", str(sbd.parent.parent), "--out", str(out), "--copy", "--workers", "2", "--no-progress"],
        capsys,
    )  # the folders above VOC2012 and dataset are found too
    assert code == 0, err
    assert "8 images (copied, 8 new)" in printed
    _check_tree(out, voc, sbd, expected, linked=False)
    assert prepare_voc(voc, sbd, out, link_images=False, workers=2, progress=False).images_written == 0


def _tar(path: Path, source: Path, arcname: str, mode: str) -> Path:
    with tarfile.open(path, mode) as tar:
        tar.add(source, arcname=arcname)
    return path


def test_prepare_voc_from_archives(raw, tmp_path, capsys):
    voc, sbd, expected = raw
    archives = tmp_path / "downloads"
    archives.mkdir()
    voc_tar = _tar(archives / "VOCtrainval_11-May-2012.tar", voc.parent, "VOCdevkit", "w")
    sbd_tgz = _tar(archives / "benchmark.tgz", sbd.parent, "benchmark_RELEASE", "w:gz")
    out = tmp_path / "out"
    argv = ["voc", "--voc", str(voc_tar), "--sbd", str(sbd_tgz), "--out", str(out), "--workers", "1", "--no-progress"]
    code, printed, err = _run(argv, capsys)
    assert code == 0, err
    raw_voc = out / ".raw/VOCtrainval_11-May-2012/VOCdevkit/VOC2012"
    raw_sbd = out / ".raw/benchmark/benchmark_RELEASE/dataset"
    assert raw_voc.is_dir() and raw_sbd.is_dir()
    _check_tree(out, raw_voc, raw_sbd, expected, linked=True)
    # Rerun: the archives are not unpacked again.
    marker = raw_voc / "JPEGImages/a1.jpg"
    before = marker.stat().st_ino
    code, printed, _ = _run(argv, capsys)
    assert code == 0 and "(0 written, 8 up to date)" in printed
    assert marker.stat().st_ino == before

    # A truncated archive: one line naming it, no partial extraction left.
    broken = archives / "broken" / "benchmark.tgz"
    broken.parent.mkdir()
    broken.write_bytes(sbd_tgz.read_bytes()[: sbd_tgz.stat().st_size // 2])
    out2 = tmp_path / "out2"
    code, _, err = _run(["voc", "--voc", str(voc), "--sbd", str(broken), "--out", str(out2), "--no-progress"], capsys)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("pmm: error: ") and "benchmark.tgz" in err and "cannot be extracted" in err
    assert not (out2 / ".raw/benchmark").exists() and not list((out2 / ".raw").glob(".benchmark.partial-*"))
    assert not (out2 / "ImageSets").exists()


def _break_val_list(voc: Path, sbd: Path) -> str:
    (voc / "ImageSets/Segmentation/val.txt").unlink()
    return "val.txt: split list not found"


def _break_missing_mat(voc: Path, sbd: Path) -> str:
    (sbd / "cls/s2.mat").unlink()
    return "s2.mat: mask of id 's2'"


def _break_missing_image(voc: Path, sbd: Path) -> str:
    (voc / "JPEGImages/a2.jpg").unlink()
    return "a2.jpg: image of id 'a2'"


def _break_missing_voc_mask(voc: Path, sbd: Path) -> str:
    (voc / "SegmentationClass/v2.png").unlink()
    return "v2.png: mask of id 'v2'"


def _break_no_cls(voc: Path, sbd: Path) -> str:
    (sbd / "cls/s1.mat").unlink()
    for path in (sbd / "cls").iterdir():
        path.unlink()
    (sbd / "cls").rmdir()
    return "dataset: no cls in this folder (it has train.txt and val.txt); point --sbd at"  # the one that is missing


def _break_field(voc: Path, sbd: Path) -> str:
    scipy.io.savemat(sbd / "cls/s3.mat", {"GTcls": {"Boundaries": np.zeros((3, 3))}})
    return "s3.mat: GTcls has no field 'Segmentation'"


def _break_not_struct(voc: Path, sbd: Path) -> str:
    scipy.io.savemat(sbd / "cls/s3.mat", {"GTinst": {"Segmentation": np.zeros((3, 3))}})
    return "s3.mat: has no variable 'GTcls'"


def _break_garbage_mat(voc: Path, sbd: Path) -> str:
    (sbd / "cls/s1.mat").write_bytes(b"not a mat file" * 20)
    return "s1.mat: not a readable MATLAB file"


def _break_size(voc: Path, sbd: Path) -> str:
    _sbd_mat(sbd / "cls/s1.mat", np.zeros((5, 5), np.uint8))
    return "s1.mat: mask is 5x5 but its image"


def _break_label(voc: Path, sbd: Path) -> str:
    mask = _label_map("s2", 0, border=False)
    mask[0, 0] = 40
    _sbd_mat(sbd / "cls/s2.mat", mask)
    return "s2.mat: label 40 is beyond the 21 VOC classes"


@pytest.mark.parametrize(
    "breaker",
    [_break_val_list, _break_missing_mat, _break_missing_image, _break_missing_voc_mask, _break_no_cls,
     _break_field, _break_not_struct, _break_garbage_mat, _break_size, _break_label],
)
def test_bad_voc_input(raw, tmp_path, capsys, breaker):
    voc, sbd, _ = raw
    expected = breaker(voc, sbd)
    out = tmp_path / "out"
    code, printed, err = _run(["voc", "--voc", str(voc), "--sbd", str(sbd), "--out", str(out), "--workers", "2", "--no-progress"], capsys)
    assert code == 2 and printed == ""
    assert err.startswith("pmm: error: ") and err.count("\n") == 1, err
    assert expected in err
    # Nothing half-written: no lists, no class names, no temporaries (complete masks at most).
    assert not (out / "ImageSets").exists() and not (out / "class_names.txt").exists()
    assert not list(out.rglob(".*.tmp*")) if out.exists() else True


def _without(voc: Path, folder: str, tmp: Path) -> Path:
    """A copy of the VOC folder lacking ``folder``, inside a VOC2012 folder (its own name)."""
    copy = tmp / "partial" / "VOC2012"
    shutil.copytree(voc, copy, symlinks=True)
    shutil.rmtree(copy / folder)
    return copy.parent


@pytest.mark.parametrize(
    "argv_of, expected",
    [
        (lambda voc, sbd, tmp: ["--voc", str(tmp / "nowhere"), "--sbd", str(sbd)], "nowhere: not found; point --voc at"),
        (lambda voc, sbd, tmp: ["--voc", str(voc), "--sbd", str(voc / "ImageSets/Segmentation/train.txt")],
         "train.txt: neither a folder nor a tar archive; point --sbd at"),
        (lambda voc, sbd, tmp: ["--voc", str(sbd), "--sbd", str(sbd)], "no JPEGImages + SegmentationClass"),
        (lambda voc, sbd, tmp: ["--voc", str(_without(voc, "SegmentationClass", tmp)), "--sbd", str(sbd)],
         "VOC2012: no SegmentationClass in this folder (it has JPEGImages and ImageSets/Segmentation); point --voc at"),
        (lambda voc, sbd, tmp: ["--voc", str(voc), "--sbd", str(sbd), "--workers", "0"], "workers=0"),
    ],
)
def test_bad_voc_arguments(raw, tmp_path, capsys, argv_of, expected):
    voc, sbd, _ = raw
    out = tmp_path / "out"
    code, _, err = _run(["voc", *argv_of(voc, sbd, tmp_path), "--out", str(out), "--no-progress"], capsys)
    assert code == 2 and err.count("\n") == 1 and expected in err, err
    assert not out.exists()


def test_read_sbd_mat_struct_forms(tmp_path):
    segmentation = np.arange(12, dtype=np.uint8).reshape(3, 4)
    _sbd_mat(tmp_path / "a.mat", segmentation)
    np.testing.assert_array_equal(read_sbd_mat(tmp_path / "a.mat"), segmentation)
    # As MATLAB writes it: a 1x1 struct array (record), field holding a double matrix.
    record = np.zeros((1, 1), dtype=[("Segmentation", object), ("Boundaries", object)])
    record[0, 0]["Segmentation"] = segmentation.astype(np.float64)
    record[0, 0]["Boundaries"] = np.zeros((1, 1))
    scipy.io.savemat(tmp_path / "b.mat", {"GTcls": record})
    np.testing.assert_array_equal(read_sbd_mat(tmp_path / "b.mat"), segmentation)
    with pytest.raises(PmmError, match="c.mat: SBD mask file not found"):
        read_sbd_mat(tmp_path / "c.mat")


def test_module_entry_point(raw, tmp_path):
    voc, sbd, _ = raw
    out = tmp_path / "out"
    command = [sys.executable, "-m", "pmm.prepare", "voc", "--voc", str(voc), "--sbd", str(sbd), "--out", str(out), "--no-progress"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "ids per split: train 2, val 2, trainval 4, train_aug 6; 21 classes" in done.stdout
    (voc / "JPEGImages/v1.jpg").unlink()
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "v1.jpg" in done.stderr


# ---- COCO through the same entry point, and the class names files ----


def test_prepare_coco(tmp_path, capsys):
    from test_prepare_coco import EXPECTED_NAMES, make_coco

    annotation_file, images = make_coco(tmp_path / "coco")
    out = tmp_path / "coco_voc"
    argv = ["coco", "--annotations", str(annotation_file), "--images", str(images), "--out", str(out),
            "--split", "train", "--workers", "2", "--no-progress"]
    code, printed, err = _run(argv, capsys)
    assert code == 0, err
    assert (out / "class_names.txt").read_text() == "".join(f"{name}\n" for name in EXPECTED_NAMES)
    assert read_class_names(out) == list(EXPECTED_NAMES)
    assert "converted 3 images" in printed and "ids per split: train 3" in printed and "4 classes" in printed
    assert "pmm data=coco" in printed
    mask = load_mask(out / "SegmentationClass/img_b.png")
    assert mask[12, 14] == 3 and mask[20, 5] == 2  # toothbrush on the train, as in test_prepare_coco
    # Rerun skips the masks (newer than the annotation file).
    stamp = (out / "SegmentationClass/img_b.png").stat().st_mtime_ns
    assert _run(argv, capsys)[0] == 0
    assert (out / "SegmentationClass/img_b.png").stat().st_mtime_ns == stamp
    # Bad input through the same entry point: exit code 2, one line.
    annotation_file.write_text("{broken")
    code, _, err = _run(argv, capsys)
    assert code == 2 and err.count("\n") == 1 and "not valid JSON" in err and "instances_train2014.json" in err


@pytest.mark.parametrize(
    "files, expected",
    [
        ({}, "class_names.txt: class names file not found"),
        ({"class_names.txt": "background\n\ncat\n"}, "class_names.txt: line 2 is blank"),
        ({"class_names.txt": "cat\ndog\n"}, "the first class is 'cat'"),
        ({"class_names.txt": "background\ncat\ncat\n"}, "class 'cat' is listed more than once"),
        ({"class_names.txt": "background\n"}, "holds 1 class name(s)"),
        ({"class_names.json": "{bad"}, "class_names.json: not valid JSON"),
        ({"class_names.json": '{"a": 1}'}, "class_names.json: expected a JSON list"),
    ],
)
def test_read_class_names_errors(tmp_path, files, expected):
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    with pytest.raises(PmmError) as error:
        read_class_names(tmp_path)
    assert expected in str(error.value) and "\n" not in str(error.value)


def test_read_class_names_forms(tmp_path):
    (tmp_path / "class_names.json").write_text('["background", "cat"]')
    assert read_class_names(tmp_path) == ["background", "cat"]
    (tmp_path / "class_names.txt").write_text("background\n  dog \ncat\n\n")  # the .txt wins; trailing blank lines ok
    assert read_class_names(tmp_path) == ["background", "dog", "cat"]
