"""pseudo.cams=DIR: CAMs written by other WSSS code bases give the same pseudo-masks as pmm's own.

Each format's files are written as that code base's inference script writes them (SEAM's per-class
dict, IRN's keys/cam/high_res with torch tensors inside, CLIP-ES's float16 attn_highres, pmm's
.npz) from the same CAM values; every run must give the masks of the baseline run, which reads
those values from its own cams/<split>/ folder. The bad inputs stop with one line naming the file.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFilter

from conftest import make_voc_aug_tree
from pmm.cam.formats import ExternalCams, normalize_cams, read_external_cams
from pmm.errors import PmmError
from pmm.io import load_mask, save_cams

NUM_CLASSES = 21  # VOC: background + 20


@pytest.fixture(scope="module")
def tree(tmp_path_factory, voc_samples) -> Path:
    return make_voc_aug_tree(voc_samples, tmp_path_factory.mktemp("byo") / "VOC2012", long_side=96)


def train_ids(tree: Path) -> list[str]:
    return (tree / "ImageSets/Segmentation/train.txt").read_text().split()


def image_cams(tree: Path, image_id: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """CAM-like maps of an image's labelled classes: its blurred class masks plus smooth noise, peak 1."""
    mask = load_mask(tree / "SegmentationClassAug" / f"{image_id}.png")
    labels = np.array(sorted(set(np.unique(mask).tolist()) - {0, 255}), np.int64)
    rng = np.random.default_rng(seed)
    maps = []
    for label in labels:
        blurred = Image.fromarray(((mask == label) * 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(4))
        noise = Image.fromarray((rng.random((mask.shape[0] // 8 + 1, mask.shape[1] // 8 + 1)) * 255).astype(np.uint8))
        noise = noise.resize(mask.shape[::-1], Image.BILINEAR)
        cam = np.asarray(blurred, np.float32) / 255 + 0.25 * np.asarray(noise, np.float32) / 255
        maps.append(cam / cam.max())
    return np.stack(maps).astype(np.float32), labels


@pytest.fixture(scope="module")
def values(tree) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """id -> (KxHxW float32 CAMs, 1-based labels): the values every format stores."""
    return {image_id: image_cams(tree, image_id, seed) for seed, image_id in enumerate(train_ids(tree))}


def base_overrides(tree: Path) -> list[str]:
    return ["stage=pseudo", "data=voc", f"data.root={tree}", "data.train_split=train",
            "data.mask_dir=SegmentationClassAug", "data.num_workers=0", "trainer=cpu", "logger=none",
            "pseudo.alpha=3", "pseudo.workers=1", "pseudo.figures=1", "cam.figures=1"]


def run(run_dir: Path, tree: Path, extra: list[str]) -> dict:
    from test_run_pipeline import run_stage

    return run_stage(run_dir, tree, base_overrides(tree) + extra, shrink=False)


@pytest.fixture(scope="module")
def baseline(tmp_path_factory, tree, values) -> tuple[Path, dict]:
    """stage=pseudo on the values placed in the run's own cams/train/ (as the CAM stage leaves them)."""
    run_dir = tmp_path_factory.mktemp("baseline")
    for image_id, (cams, labels) in values.items():
        save_cams(run_dir / "cams" / "train" / f"{image_id}.npz", cams, labels)
    return run_dir, run(run_dir, tree, [])


def masks_of(run_dir: Path) -> dict[str, np.ndarray]:
    return {p.stem: load_mask(p) for p in sorted((run_dir / "pseudo_masks" / "round_0").glob("*.png"))}


def assert_same_as_baseline(run_dir: Path, metrics: dict, baseline, folder: Path, fmt: str) -> None:
    base_dir, base_metrics = baseline
    expected, found = masks_of(base_dir), masks_of(run_dir)
    assert sorted(found) == sorted(expected) and len(found) == 6
    for image_id, mask in expected.items():
        np.testing.assert_array_equal(found[image_id], mask, err_msg=image_id)
    assert all((m > 0).any() for m in found.values()) and base_metrics["pseudo_miou"] > 0.5  # real masks
    for key in ("pseudo_miou", "cam_miou", "cam_bg_threshold", "cam_miou_curve"):
        assert metrics[key] == base_metrics[key], key
    assert metrics["pseudo_cams"] == str(folder.resolve()) and metrics["pseudo_cams_format"] == fmt
    report = json.loads((run_dir / "pseudo_report.json").read_text())
    assert report["pseudo_cams"] == str(folder.resolve()) and report["pseudo_cams_format"] == fmt
    assert json.loads((run_dir / "cam_report.json").read_text())["cam_miou"] == base_metrics["cam_miou"]
    for figure in ("cam_miou_curve.png", "pseudo_panel.png"):
        assert (run_dir / "figures" / figure).stat().st_size > 5_000


# ------------------------------------------------------------------ each format, as its code base writes it

def write_seam(folder: Path, values: dict) -> None:
    """SEAM / PMM's infer_SEAM.py: {fg index: HxW norm_cam} for the classes of the label vector."""
    folder.mkdir(parents=True)
    for image_id, (cams, labels) in values.items():
        cam_dict = {}
        for i in range(NUM_CLASSES - 1):
            if i + 1 in labels:
                cam_dict[i] = cams[list(labels).index(i + 1)]
        np.save(folder / f"{image_id}.npy", cam_dict)


def write_irn(folder: Path, values: dict, high_res: bool = True) -> None:
    """IRN's make_cam.py: keys (torch, 0-based fg), the stride-4 cam (torch) and high_res (numpy)."""
    import torch
    import torch.nn.functional as F

    folder.mkdir(parents=True)
    for image_id, (cams, labels) in values.items():
        height, width = cams.shape[1:]
        strided = F.interpolate(torch.from_numpy(cams)[None], size=(-(-height // 4), -(-width // 4)),
                                mode="bilinear", align_corners=False)[0]
        saved = {"keys": torch.from_numpy(labels - 1), "cam": strided.cpu()}
        if high_res:
            saved["high_res"] = cams
        np.save(folder / f"{image_id}.npy", saved)


def write_clip_es(folder: Path, values: dict) -> None:
    """CLIP-ES's generate_cams: keys (numpy, 0-based fg) and attn_highres (KxHxW float16)."""
    folder.mkdir(parents=True)
    for image_id, (cams, labels) in values.items():
        np.save(folder / f"{image_id}.npy", {"keys": labels - 1, "attn_highres": cams.astype(np.float16)})


def test_seam_cams_give_the_masks_of_pmms_own(tmp_path, tree, values, baseline, caplog):
    folder = tmp_path / "seam_cams"
    write_seam(folder, values)
    # A map of a class the first image is not labelled with is dropped (and said), other files are listed.
    first = train_ids(tree)[0]
    cam_dict = np.load(folder / f"{first}.npy", allow_pickle=True).item()
    extra = next(i for i in range(NUM_CLASSES - 1) if i + 1 not in values[first][1])
    cam_dict[extra] = np.ones_like(next(iter(cam_dict.values())))
    np.save(folder / f"{first}.npy", cam_dict)
    stray = train_ids(tree)[-1].replace("_", "x") + "_9"
    np.save(folder / f"{stray}.npy", {0: np.zeros((4, 4), np.float32)})
    (folder / "log.txt").write_text("inference log\n")
    with caplog.at_level(logging.WARNING, logger="pmm"):
        metrics = run(tmp_path / "run", tree, [f"pseudo.cams={folder}"])
    assert_same_as_baseline(tmp_path / "run", metrics, baseline, folder, "seam")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("1 CAM file(s)" in w and f"{stray}.npy" in w for w in warnings), warnings
    assert any("log.txt" in w for w in warnings), warnings
    from pmm.data.voc import VOC_CLASS_NAMES

    assert any("dropped" in w and first in w and VOC_CLASS_NAMES[extra + 1] in w for w in warnings), warnings


def test_irn_cams_give_the_masks_of_pmms_own(tmp_path, tree, values, baseline):
    folder = tmp_path / "irn_cams"
    write_irn(folder, values)
    metrics = run(tmp_path / "run", tree, [f"pseudo.cams={folder}"])
    assert_same_as_baseline(tmp_path / "run", metrics, baseline, folder, "irn")


def test_clip_es_cams_give_the_masks_of_pmms_own(tmp_path, tree, values, baseline):
    folder = tmp_path / "clip_es_cams"
    write_clip_es(folder, values)
    metrics = run(tmp_path / "run", tree, [f"pseudo.cams={folder}"])
    assert_same_as_baseline(tmp_path / "run", metrics, baseline, folder, "clip_es")


def test_another_pmm_run_folder_gives_the_masks_of_pmms_own(tmp_path, tree, baseline):
    """pseudo.cams=<a pmm run>: its cams/<split>/*.npz are found and read."""
    base_dir, _ = baseline
    metrics = run(tmp_path / "run", tree, [f"pseudo.cams={base_dir}"])
    assert_same_as_baseline(tmp_path / "run", metrics, baseline, base_dir, "pmm")


# ----------------------------------------------------------------- the conversions (pure functions)

def test_strided_irn_cams_are_upsampled_by_their_stride_from_the_top_left(tmp_path):
    """Without high_res, IRN's stride-4 cam is upsampled x4 (bilinear) and cut to the image: a ramp
    sampled at the cell centres 4i + 1.5 comes back as the ramp at every pixel between the centres."""
    import torch

    height, width = 37, 50  # not multiples of 4: the last cells reach past the image
    rows, cols = -(-height // 4), -(-width // 4)
    centre_y, centre_x = np.meshgrid(4 * np.arange(rows) + 1.5, 4 * np.arange(cols) + 1.5, indexing="ij")
    ramp = (0.01 * centre_y + 0.005 * centre_x).astype(np.float32)
    np.save(tmp_path / "a.npy", {"keys": torch.tensor([6]), "cam": torch.from_numpy(ramp[None])})
    read = read_external_cams(tmp_path / "a.npy", NUM_CLASSES, image_size=(height, width))
    assert read.format == "irn" and read.key == "cam" and read.labels.tolist() == [7]
    assert read.cams.shape == (1, height, width)
    y, x = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    inside = (y >= 1.5) & (y <= 4 * (rows - 1) + 1.5) & (x >= 1.5) & (x <= 4 * (cols - 1) + 1.5)
    np.testing.assert_allclose(read.cams[0][inside], (0.01 * y + 0.005 * x)[inside], atol=1e-5)
    # cam_key picks the strided map even when high_res is there; a size no stride explains is refused.
    np.save(tmp_path / "b.npy", {"keys": np.array([6]), "cam": ramp[None], "high_res": np.zeros((1, height, width))})
    assert read_external_cams(tmp_path / "b.npy", NUM_CLASSES, image_size=(height, width)).cams.max() == 0
    assert read_external_cams(tmp_path / "b.npy", NUM_CLASSES, cam_key="cam", image_size=(height, width)).cams.max() > 0
    with pytest.raises(PmmError, match=r"b\.npy: 'cam' is 10x13 \(HxW\) but the image is 30x50"):
        read_external_cams(tmp_path / "b.npy", NUM_CLASSES, cam_key="cam", image_size=(30, 50))


def test_minmax_is_relu_then_division_by_the_peak(tmp_path):
    raw = np.array([[[-2.0, 0.0], [3.0, 7.0]], [[0.0, 0.0], [0.0, 0.0]]], np.float32)
    expected = np.array([[[0, 0], [3 / (7 + 1e-5), 7 / (7 + 1e-5)]], [[0, 0], [0, 0]]], np.float32)
    np.testing.assert_allclose(normalize_cams(raw, "minmax"), expected, rtol=1e-6)
    np.save(tmp_path / "raw.npy", {3: raw[0], 1: raw[1]})
    read = read_external_cams(tmp_path / "raw.npy", NUM_CLASSES, normalize="minmax", image_size=(2, 2))
    assert read == ExternalCams(read.cams, read.labels, "seam", None) and read.labels.tolist() == [2, 4]
    np.testing.assert_allclose(read.cams, expected[::-1], rtol=1e-6)  # ascending class order


def one_line(error: pytest.ExceptionInfo, path: Path) -> str:
    message = str(error.value)
    assert "\n" not in message and str(path) in message, message
    return message


@pytest.mark.parametrize(("contents", "words"), [
    ({0: np.full((4, 5), np.nan, np.float32)}, "NaN"),
    ({0: np.full((4, 5), np.inf, np.float32)}, "inf"),
    ({0: np.full((4, 5), 2.5, np.float32)}, "values reach 2.5 (expected [0, 1]"),
    ({0: np.full((4, 5), -0.5, np.float32)}, "values go down to -0.5"),
    ({20: np.zeros((4, 5), np.float32)}, "class index 20 in 'class index' is outside the 20 foreground classes"),
    ({0: np.zeros((4, 6), np.float32)}, "maps are 4x6 (HxW) but the image is 4x5"),
    ({"keys": np.array([0, 1]), "high_res": np.zeros((1, 4, 5))}, "shape (1, 4, 5) for 2 class(es)"),
    ({"keys": np.array([-1]), "attn_highres": np.zeros((1, 4, 5))}, "class index -1 in 'keys'"),
    ({"keys": np.array([0]), "other": np.zeros((1, 4, 5)), "more": 1}, "set pseudo.cam_key"),
    ({"name": "x"}, "not a CAM format pmm reads"),
])
def test_bad_cam_files_are_one_line_naming_the_file(tmp_path, contents, words):
    path = tmp_path / "2007_000032.npy"
    np.save(path, contents)
    with pytest.raises(PmmError) as error:
        read_external_cams(path, NUM_CLASSES, image_size=(4, 5))
    message = one_line(error, path)
    assert words in message, message
    if "values" in words:
        assert "pseudo.normalize=minmax" in message


def test_plain_arrays_damaged_files_and_wrong_cam_keys_are_refused(tmp_path):
    np.save(tmp_path / "plain.npy", np.zeros((2, 4, 5), np.float32))
    with pytest.raises(PmmError) as error:
        read_external_cams(tmp_path / "plain.npy", NUM_CLASSES)
    assert "plain array of shape (2, 4, 5)" in one_line(error, tmp_path / "plain.npy")
    (tmp_path / "cut.npy").write_bytes(b"\x93NUMPY\x01\x00")
    with pytest.raises(PmmError) as error:
        read_external_cams(tmp_path / "cut.npy", NUM_CLASSES)
    assert "cannot be read" in one_line(error, tmp_path / "cut.npy")
    np.save(tmp_path / "irn.npy", {"keys": np.array([0]), "high_res": np.zeros((1, 4, 5))})
    with pytest.raises(PmmError) as error:
        read_external_cams(tmp_path / "irn.npy", NUM_CLASSES, cam_key="attn_highres")
    assert "pseudo.cam_key=attn_highres but the file holds high_res" in one_line(error, tmp_path / "irn.npy")
    np.savez(tmp_path / "other.npz", maps=np.zeros((1, 4, 5)))
    with pytest.raises(PmmError) as error:
        read_external_cams(tmp_path / "other.npz", NUM_CLASSES)
    assert "a .npz with arrays maps" in one_line(error, tmp_path / "other.npz")


# ------------------------------------------------------------- the folder against the split (the stage)

def test_missing_files_and_missing_classes_stop_before_any_mask(tmp_path, tree, values):
    ids = train_ids(tree)
    folder = tmp_path / "cams"
    write_clip_es(folder, values)
    for image_id in ids[2:4]:
        (folder / f"{image_id}.npy").unlink()
    with pytest.raises(PmmError) as error:
        run(tmp_path / "a", tree, [f"pseudo.cams={folder}"])
    message = one_line(error, folder)
    assert f"2 of the 6 images of split 'train' have no CAM file ({folder / ids[2]}.npy" in message
    assert ids[3] in message
    write_clip_es(tmp_path / "cams2", {i: values[i] for i in ids})
    cams, labels = values[ids[2]]
    np.save(tmp_path / "cams2" / f"{ids[2]}.npy", dict(zip((labels - 1).tolist(), cams)))  # SEAM's among CLIP-ES'
    with pytest.raises(PmmError) as error:
        run(tmp_path / "b", tree, [f"pseudo.cams={tmp_path / 'cams2'}"])
    assert "a seam CAM file among clip_es ones" in one_line(error, tmp_path / "cams2" / f"{ids[2]}.npy")
    write_clip_es(tmp_path / "cams3", {i: values[i] for i in ids})
    cams, labels = values[ids[1]]
    np.save(tmp_path / "cams3" / f"{ids[1]}.npy", {"keys": labels[:-1] - 1, "attn_highres": cams[:-1]})
    with pytest.raises(PmmError) as error:
        run(tmp_path / "b", tree, [f"pseudo.cams={tmp_path / 'cams3'}"])
    message = one_line(error, tmp_path / "cams3" / f"{ids[1]}.npy")
    assert f"no map for class id(s) [{labels[-1]}]" in message
    # Nothing half-done: no CAM folder, no pseudo-mask.
    assert not (tmp_path / "b" / "cams" / "train").exists() and not (tmp_path / "b" / "pseudo_masks").exists()


def test_two_sources_of_cams_are_refused(tmp_path, tree):
    with pytest.raises(PmmError, match="both give the CAMs"):
        run(tmp_path, tree, [f"pseudo.cams={tmp_path}", f"cam_ckpt={tmp_path / 'x.ckpt'}"])
    own = tmp_path / "own"
    save_cams(own / "cams" / "train" / "a.npz", np.zeros((0, 2, 2)), np.zeros(0))
    with pytest.raises(PmmError, match="is this run's own CAM folder"):
        run(own, tree, [f"pseudo.cams={own}"])


def test_stage_all_with_pseudo_cams_skips_the_cam_stage(tmp_path, caplog):
    from test_run_pipeline import make_cfg

    from pmm.run import stages_to_run

    assert stages_to_run(make_cfg(tmp_path, tmp_path, ["stage=all"]), tmp_path) == ("cam", "pseudo", "seg")
    with caplog.at_level(logging.INFO, logger="pmm"):
        stages = stages_to_run(make_cfg(tmp_path, tmp_path, ["stage=all", f"pseudo.cams={tmp_path}"]), tmp_path)
    assert stages == ("pseudo", "seg")
    assert any("the CAM stage is skipped" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(("override", "message"), [
    ("pseudo.normalize=max", "pseudo.normalize=max: expected one of none|minmax"),
    ("pseudo.cams=3", "pseudo.cams=3: expected a non-empty string or null"),
])
def test_bad_settings_are_one_line(tmp_path, override, message):
    from test_run_pipeline import make_cfg

    from pmm.settings import Settings

    with pytest.raises(PmmError) as error:
        Settings.from_config(make_cfg(tmp_path, tmp_path, [override]))
    assert str(error.value) == message
