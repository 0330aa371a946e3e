"""data=folder: your own images and a labels file, masks optional (pmm.data.folder, FolderDataset)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pmm.data.folder import read_labels_file, seeded_val_ids, split_label
from pmm.data.sources import FolderDataset
from pmm.errors import PmmError
from pmm.io import load_mask, save_mask


@pytest.fixture(scope="module")
def folder_tree(tmp_path_factory, voc_samples: Path) -> Path:
    """The 14 shared photos at 120 px in ``images/``, their labels (the classes of their masks) as a
    names CSV, a 0/1 CSV and a JSON, and the masks in ``masks/`` with their ids renumbered to the
    class order the labels file gives (background, then the names sorted)."""
    from pmm.prepare.cli import main as prepare

    root = tmp_path_factory.mktemp("folder")
    assert prepare(["folder", "--voc", str(voc_samples), "--out", str(root), "--long-side", "120", "--masks",
                    "--no-progress"]) == 0
    labels = {line.split(",")[0]: line.split(",")[1].split() for line in (root / "labels.csv").read_text().splitlines()[1:]}
    names = ["background", *sorted({n for found in labels.values() for n in found})]
    # The masks were renumbered to the labels file's order: each one holds exactly its image's classes.
    assert len(labels) == 14
    for image_id, found in labels.items():
        with Image.open(root / "images" / f"{image_id}.jpg") as image:
            assert max(image.size) == 120
        present = {names[v] for v in np.unique(load_mask(root / "masks" / f"{image_id}.png")) if v != 255} - {"background"}
        assert present == set(found) and found
    (root / "onehot.csv").write_text("image_id," + ",".join(names[1:]) + "\n" + "".join(
        f"{i}," + ",".join("1" if n in v else "0" for n in names[1:]) + "\n" for i, v in labels.items()))
    (root / "labels.json").write_text(json.dumps(labels, indent=1))
    return root


def dataset(root: Path, labels: str = "labels.csv", **kwargs) -> FolderDataset:
    return FolderDataset(root / "images", root / labels, cache_dir=root / "cache", **kwargs)


def test_the_three_label_forms_give_the_same_labels(folder_tree):
    forms = [dataset(folder_tree, name, val_fraction=0.25) for name in ("labels.csv", "onehot.csv", "labels.json")]
    first = forms[0].every_image
    assert first.class_names[0] == "background" and list(first.class_names[1:]) == sorted(first.class_names[1:])
    assert len(first.ids) == 14 and all(first.image_labels[i] for i in first.ids)
    assert first.labels("voc_sample_10") == tuple(first.class_names.index(n) for n in ("car", "person"))
    for other in forms[1:]:
        split = other.every_image
        assert split.class_names == first.class_names and split.image_labels == first.image_labels
        assert other.split("val").ids == forms[0].split("val").ids
    # Masks are read with the labels' class order; every image's mask holds exactly its labelled classes.
    scored = dataset(folder_tree, masks=folder_tree / "masks").split("train")
    assert scored.has_all_masks
    image_id = scored.ids[0]
    assert set(np.unique(scored.load_mask(image_id))) - {0, 255} == set(scored.labels(image_id))
    assert not first.has_all_masks and not first.with_masks().ids


def test_the_val_fraction_split_is_seeded_and_split_files_work(folder_tree, tmp_path):
    ids = dataset(folder_tree).every_image.ids
    one, again = (dataset(folder_tree, val_fraction=0.25, split_seed=3) for _ in range(2))
    assert one.split("val").ids == again.split("val").ids and len(one.split("val")) == 4
    assert set(one.split("train").ids) | set(one.split("val").ids) == set(ids)
    assert not set(one.split("train").ids) & set(one.split("val").ids)
    other_seeds = {dataset(folder_tree, val_fraction=0.25, split_seed=s).split("val").ids for s in range(4)}
    assert len(other_seeds) > 1
    # Adding an image never moves an already chosen one out of its rank: the held-out ids mostly stay.
    assert seeded_val_ids(ids[:13], 0.25, 3) <= seeded_val_ids(ids, 0.25, 3) | set(ids[13:])
    # A val list file: train is the rest, and the run folder calls the split by the file's stem.
    val_list = tmp_path / "held_out.txt"
    val_list.write_text("voc_sample_02\nvoc_sample_05\n")
    listed = dataset(folder_tree, val_split=str(val_list))
    assert listed.split(str(val_list)).ids == ("voc_sample_02", "voc_sample_05")
    assert listed.split(str(val_list)).split == split_label(str(val_list)) == "held_out"
    assert len(listed.split("train")) == 12 and "voc_sample_02" not in listed.split("train").ids
    assert dataset(folder_tree, val_fraction=0).split("val").ids == ids  # 0: val is every image


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


BAD_INPUTS = {
    "unknown class": ("labels.csv", "image_id,labels\nvoc_sample_00,aeroplane\nvoc_sample_01,aeroplne\n",
                      {"class_names": ["background", "aeroplane"]}, ":3: class 'aeroplne'"),
    "unknown header class": ("bad.csv", "image_id,aeroplane,dog\nvoc_sample_00,1,0\n",
                             {"class_names": ["background", "aeroplane"]}, ":1: class 'dog'"),
    "no image": ("labels.csv", "image_id,labels\nvoc_sample_00,aeroplane\nmissing_photo,dog\n", {},
                 ":3: id 'missing_photo' has no image"),
    "malformed row": ("labels.csv", "image_id,labels\nvoc_sample_00,aeroplane\nvoc_sample_01,dog,cat\n", {},
                      ":3: 3 fields"),
    "not 0/1": ("bad.csv", "image_id,aeroplane,dog\nvoc_sample_00,1,yes\n", {}, ":2: column 'dog' holds 'yes'"),
    "no header": ("labels.csv", "voc_sample_00,aeroplane\n", {}, ":1: expected a header"),
    "duplicate csv": ("labels.csv", "image_id,labels\nvoc_sample_00,aeroplane\n\nvoc_sample_00,dog\n", {},
                      ":4: id 'voc_sample_00' is listed again (first on line 2)"),
    "duplicate json": ("labels.json", '{\n "voc_sample_00": ["dog"],\n "voc_sample_00": ["cat"]\n}', {},
                       ":3: id 'voc_sample_00' is listed again (first on line 2)"),
    "json not a list": ("labels.json", '{\n "voc_sample_00": "dog"\n}', {}, ":2: the labels of 'voc_sample_00'"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_labels_files_are_one_line_errors_naming_file_and_line(case, folder_tree, tmp_path):
    name, text, kwargs, expected = BAD_INPUTS[case]
    labels = write(tmp_path, name, text)
    with pytest.raises(PmmError) as error:
        FolderDataset(folder_tree / "images", labels, cache_dir=tmp_path / "cache", **kwargs).split("train")
    message = str(error.value)
    assert "\n" not in message and message.startswith(str(labels)) and expected in message, message


def test_masks_of_another_size_unlabelled_images_and_background_only_images(folder_tree, tmp_path, caplog):
    masks = tmp_path / "masks"
    masks.mkdir()
    save_mask(masks / "voc_sample_00.png", np.zeros((50, 60), np.uint8))
    labels = write(tmp_path, "labels.csv", "image_id,labels\nvoc_sample_00,aeroplane\nvoc_sample_01,\n")
    with pytest.raises(PmmError, match=r"voc_sample_00\.png: mask is 60x50 but its image is 120x120"):
        FolderDataset(folder_tree / "images", labels, masks=masks, cache_dir=tmp_path / "cache").split("train")
    with caplog.at_level(logging.WARNING, logger="pmm"):
        every = FolderDataset(folder_tree / "images", labels, cache_dir=tmp_path / "cache").every_image
    assert every.ids == ("voc_sample_00", "voc_sample_01") and every.labels("voc_sample_01") == ()
    assert "12 images in" in caplog.text and "voc_sample_02" in caplog.text and "left out" in caplog.text
    assert read_labels_file(labels).names["voc_sample_01"] == ()


def run_folder(run_dir: Path, root: Path, overrides: list[str]) -> dict:
    from test_run_pipeline import run_stage

    return run_stage(run_dir, root / "data", [
        "debug=smoke", "smoke.images=4", "data=folder", f"data.images={root / 'images'}",
        f"data.labels_file={root / 'labels.csv'}", "data.val_fraction=0.25", "logger=csv", "cam.scales=[1.0]",
        "cam.flip=false", "cyclic.crf=false", *overrides], shrink=False)


@pytest.fixture(scope="module")
def unmasked_run(tmp_path_factory, folder_tree) -> tuple[Path, dict]:
    run_dir = tmp_path_factory.mktemp("folder_run")
    metrics = run_folder(run_dir, folder_tree, ["stage=all", "pseudo.alpha=auto", "pseudo.bg_threshold=0.3",
                                                "cyclic.relabel_from=best"])
    return run_dir, metrics


@pytest.mark.slow
def test_stage_all_without_masks_reaches_the_predictions_and_says_what_it_skipped(unmasked_run, folder_tree):
    run_dir, metrics = unmasked_run
    assert metrics["cam_scored"] is False and metrics["pseudo_scored"] is False
    assert metrics["seg_validated"] is False and metrics["val_scored"] is False
    assert not {"cam_miou", "cam_bg_threshold", "pseudo_miou", "val_miou", "val_miou_best"} & set(metrics)
    assert metrics["pseudo_alpha"] == pytest.approx(np.log(0.3) / np.log(0.7))  # auto, with bg_threshold for t*
    val_ids = dataset(folder_tree, val_fraction=0.25, limit_images=4).split("val").ids
    predictions = run_dir / "predictions" / "val"
    assert sorted(p.stem for p in predictions.glob("*.png")) == sorted(val_ids)
    prediction = load_mask(predictions / f"{val_ids[0]}.png")
    assert prediction.shape == (120, 120) and prediction.max() < metrics["num_classes"]
    assert len(list((run_dir / "pseudo_masks" / "round_0").glob("*.png"))) == metrics["num_train_images"]
    assert (run_dir / "checkpoints" / "seg" / "last.ckpt").is_file()
    # Every protocol is predicted and drawn even where nothing can be scored.
    assert sorted(p.stem for p in (run_dir / "predictions" / "val_ms_crf").glob("*.png")) == sorted(val_ids)
    assert metrics["val_protocol"] == "ss"


@pytest.mark.slow
def test_a_run_with_masks_scores_the_cams_the_pseudo_masks_and_val(unmasked_run, folder_tree, tmp_path):
    trained, _ = unmasked_run
    masks = [f"data.masks={folder_tree / 'masks'}"]
    pseudo = run_folder(tmp_path / "pseudo", folder_tree, ["stage=pseudo", *masks, f"cam_ckpt={trained}/checkpoints/cam/last.ckpt",
                                                           "pseudo.alpha=search", "pseudo.alpha_candidates=[4,11]"])
    assert pseudo["cam_scored"] is True and 0 <= pseudo["cam_miou"] <= 1 and "cam_bg_threshold" in pseudo
    assert pseudo["pseudo_scored"] is True and 0 <= pseudo["pseudo_miou"] <= 1
    assert set(pseudo["pseudo_alpha_search"]) == {"4", "11"}
    # The panel gains its ground-truth column (the same 4 rows: a wider picture).
    sizes = []
    for run_dir in (trained, tmp_path / "pseudo"):
        with Image.open(run_dir / "figures" / "pseudo_panel.png") as panel:
            sizes.append(panel.size)
    assert sizes[1][0] > sizes[0][0] and sizes[1][1] == sizes[0][1]
    evaluated = run_folder(tmp_path / "eval", folder_tree, ["stage=eval", *masks, f"seg_ckpt={trained}/checkpoints/seg/last.ckpt"])
    assert evaluated["val_scored"] is True and 0 <= evaluated["val_miou"] <= 1
    # The prediction panel gains its ground-truth column too.
    sizes = []
    for run_dir in (trained, tmp_path / "eval"):
        with Image.open(run_dir / "figures" / "val_predictions.png") as panel:
            sizes.append(panel.size)
    assert sizes[1][0] > sizes[0][0] and sizes[1][1] == sizes[0][1]


@pytest.mark.parametrize(("overrides", "expected"), [
    ([], "pseudo.alpha=search scores each candidate against ground-truth masks"),
    (["pseudo.alpha=auto"], "pseudo.alpha=auto derives alpha from the CAM threshold t*"),
    (["pseudo.method=argmax", "pseudo.alpha=auto"], "set pseudo.bg_threshold=T"),
])
def test_settings_that_need_ground_truth_fail_before_any_training(overrides, expected, folder_tree, tmp_path):
    with pytest.raises(PmmError) as error:
        run_folder(tmp_path, folder_tree, ["stage=all", *overrides])
    assert expected in str(error.value) and "\n" not in str(error.value)
    assert not (tmp_path / "checkpoints").exists()
