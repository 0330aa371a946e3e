"""The real Hydra config, shrunk, run end to end into tmp_path: every stage and the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict
from PIL import Image

import pmm
from pmm.errors import PmmError
from pmm.io import load_mask
from pmm.scoring.metrics import confusion_matrix, mean_iou
from pmm.run import run_pipeline

CONF_DIR = str(Path(pmm.__file__).parent / "conf")

# Small but real: 20 training / 8 val images, one epoch per stage, one cyclic round.
SHRINK = [
    "debug=default",
    "data.generate.num_train=20",
    "data.generate.num_val=8",
    "logger=csv",
    "cyclic.every_n_epochs=1",
    "cyclic.scales=[1.0]",
    "cyclic.flip=false",
    "cyclic.rounds=1",
    "eval.ms_scales=[1.0,1.25]",
]


def make_cfg(tmp_path: Path, data_dir: Path, overrides: list[str], shrink: bool = True):
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=CONF_DIR):
        cfg = compose("config", overrides=(SHRINK if shrink else []) + overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.root_dir = str(tmp_path)
        cfg.paths.data_dir = str(data_dir)
        cfg.paths.output_dir = str(tmp_path)
    return cfg


def run_stage(run_dir: Path, data_dir: Path, overrides: list[str], shrink: bool = True) -> dict:
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg = make_cfg(run_dir, data_dir, overrides, shrink)
    return run_pipeline(cfg, run_dir)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="module")
def cam_run(tmp_path_factory, data_dir) -> tuple[Path, dict]:
    run_dir = tmp_path_factory.mktemp("cam_run")
    return run_dir, run_stage(run_dir, data_dir, ["stage=cam"])


@pytest.mark.slow
def test_cam_stage_end_to_end(cam_run, data_dir):
    run_dir, metrics = cam_run
    for key in ("cam_miou", "cam_bg_threshold", "cam_miou_curve", "data_root", "num_classes", "train_split",
                "val_split", "world_size"):
        assert key in metrics, key
    assert Path(metrics["data_root"]).is_absolute() and Path(metrics["data_root"]).is_dir()
    assert metrics["num_classes"] == 7 and metrics["world_size"] == 1
    assert (metrics["train_split"], metrics["val_split"]) == ("train", "val")
    curve = metrics["cam_miou_curve"]
    assert len(curve) == 51 and metrics["cam_miou"] == pytest.approx(max(curve.values()), abs=1e-6)
    assert curve[f"{metrics['cam_bg_threshold']:.2f}"] == pytest.approx(metrics["cam_miou"], abs=1e-6)
    assert json.loads((run_dir / "metrics.json").read_text()) == metrics
    # One CAM file per training image, holding exactly that image's labelled classes in [0, 1].
    ids = (Path(metrics["data_root"]) / "ImageSets/Segmentation/train.txt").read_text().split()
    cams_dir = run_dir / "cams" / "train"
    assert sorted(p.stem for p in cams_dir.glob("*.npz")) == sorted(ids)
    with np.load(cams_dir / f"{ids[0]}.npz") as data:
        mask = np.array(Image.open(Path(metrics["data_root"]) / "SegmentationClass" / f"{ids[0]}.png"))
        assert sorted(data["labels"].tolist()) == sorted(set(np.unique(mask).tolist()) - {0, 255})
        assert data["cams"].shape[1:] == mask.shape and 0 <= data["cams"].min() and data["cams"].max() <= 1.0
    assert (run_dir / "checkpoints" / "cam" / "last.ckpt").is_file()
    for figure in ("cam_miou_curve.png", "cam_panel.png"):
        with Image.open(run_dir / "figures" / figure) as image:
            assert image.size[0] > 200 and image.size[1] > 200


@pytest.mark.slow
def test_alpha_search_picks_the_candidate_that_scores_best(cam_run, data_dir, tmp_path):
    """pseudo.alpha=search: scores each candidate on a sample; the masks are written with the best one."""
    cam_dir, _ = cam_run
    overrides = ["stage=pseudo", f"cam_ckpt={cam_dir / 'checkpoints/cam/last.ckpt'}", "pseudo.alpha=search",
                 "pseudo.alpha_candidates=[0.5,2.0,24.0]", "pseudo.alpha_search_images=20"]
    metrics = run_stage(tmp_path / "search", data_dir, overrides)
    scores = metrics["pseudo_alpha_search"]
    assert set(scores) == {"0.5", "2", "24"}
    # the best score, ties to the smaller alpha
    assert metrics["pseudo_alpha"] == max((float(a) for a in scores), key=lambda a: (scores[f"{a:g}"], -a))
    # The sample is the whole 20-image split here, so the chosen candidate's score is the recorded mIoU.
    assert scores[f"{metrics['pseudo_alpha']:g}"] == pytest.approx(metrics["pseudo_miou"], abs=1e-6)


def test_search_sample_spreads_over_the_split():
    from pmm.stages.pseudo import search_sample

    ids = [f"{i:03d}" for i in range(100)]
    sample = search_sample(ids, 4)
    assert sample == ["000", "025", "050", "075"]
    assert search_sample(ids[:3], 48) == ids[:3]


@pytest.mark.slow
def test_pseudo_stage_from_a_checkpoint_and_resume(cam_run, data_dir, tmp_path):
    cam_dir, cam_metrics = cam_run
    overrides = ["stage=pseudo", f"cam_ckpt={cam_dir / 'checkpoints/cam/last.ckpt'}", "pseudo.alpha=3"]
    metrics = run_stage(tmp_path, data_dir, overrides)
    assert metrics["pseudo_alpha"] == 3.0 and metrics["pseudo_split"] == "train"
    assert metrics["pseudo_miou_rounds"] == [metrics["pseudo_miou"]]
    masks = sorted((tmp_path / "pseudo_masks" / "round_0").glob("*.png"))
    assert len(masks) == 20
    # The recorded mIoU is the one the PNGs give.
    root = Path(metrics["data_root"])
    total = sum(confusion_matrix(load_mask(p), load_mask(root / "SegmentationClass" / p.name), 7) for p in masks)
    assert mean_iou(total) == pytest.approx(metrics["pseudo_miou"], abs=1e-9)
    report = json.loads((tmp_path / "pseudo_report.json").read_text())
    assert report["split"] == "train" and len(report["confusion_matrix"]) == 7
    # Resume: only the missing masks are made again.
    masks[0].unlink()
    kept = {p: p.stat().st_mtime_ns for p in masks[1:]}
    run_stage(tmp_path, data_dir, overrides + ["pseudo.resume=true"])
    assert masks[0].is_file()
    assert all(p.stat().st_mtime_ns == stamp for p, stamp in kept.items())


@pytest.mark.slow
def test_all_stage_end_to_end(data_dir, tmp_path):
    metrics = run_stage(tmp_path, data_dir, ["stage=all", "seed=3"])
    for key in ("cam_miou", "pseudo_miou", "pseudo_miou_rounds", "val_miou", "pseudo_alpha", "data_root",
                "num_classes", "world_size"):
        assert key in metrics, key
    assert len(metrics["pseudo_miou_rounds"]) == 2
    ids = (Path(metrics["data_root"]) / "ImageSets/Segmentation/train.txt").read_text().split()
    for round_index in (0, 1):
        assert sorted(p.stem for p in (tmp_path / f"pseudo_masks/round_{round_index}").glob("*.png")) == sorted(ids)
    # val_miou is exactly what the written predictions score.
    root = Path(metrics["data_root"])
    val_ids = (root / "ImageSets/Segmentation/val.txt").read_text().split()
    predictions = tmp_path / "predictions" / "val"
    assert sorted(p.stem for p in predictions.glob("*.png")) == sorted(val_ids)
    total = sum(confusion_matrix(load_mask(predictions / f"{i}.png"), load_mask(root / f"SegmentationClass/{i}.png"), 7)
                for i in val_ids)
    assert mean_iou(total) == pytest.approx(metrics["val_miou"], abs=1e-9)
    # Every protocol's figure is what its own folder scores; the default's headline is single scale.
    assert metrics["val_protocol"] == "ss" and metrics["val_miou_ss"] == metrics["val_miou"]
    for name in ("ms", "ms_crf"):
        folder = tmp_path / "predictions" / f"val_{name}"
        total = sum(confusion_matrix(load_mask(folder / f"{i}.png"), load_mask(root / f"SegmentationClass/{i}.png"), 7)
                    for i in val_ids)
        assert mean_iou(total) == pytest.approx(metrics[f"val_miou_{name}"], abs=1e-9)
        assert metrics["val_protocols"][name]["flip"] is True
    assert metrics["val_protocols"]["ms_crf"]["crf"] and not metrics["val_protocols"]["ms"]["crf"]
    assert metrics["cam_split"] == "train" and metrics["cyclic_split"] == "train"
    with Image.open(predictions / f"{val_ids[0]}.png") as image:
        assert image.mode == "P"
    for figure in ("val_iou.png", "val_predictions.png", "pseudo_panel.png", "miou_by_stage.png"):
        assert (tmp_path / "figures" / figure).stat().st_size > 10_000
    assert (tmp_path / "checkpoints" / "seg" / "last.ckpt").is_file()

    # stage=eval on the checkpoint reproduces the figure.
    eval_dir = tmp_path / "eval"
    evaluated = run_stage(eval_dir, data_dir, ["stage=eval", f"seg_ckpt={tmp_path / 'checkpoints/seg/last.ckpt'}"])
    assert evaluated["val_miou"] == pytest.approx(metrics["val_miou"], abs=1e-9)
    for name in ("ms", "ms_crf"):
        assert evaluated[f"val_miou_{name}"] == pytest.approx(metrics[f"val_miou_{name}"], abs=1e-9)


@pytest.mark.slow
def test_seg_on_ground_truth_and_resume_from_checkpoint(data_dir, tmp_path):
    first = run_stage(tmp_path / "a", data_dir, ["stage=seg", "pseudo.source=ground_truth", "seg.max_epochs=1"])
    assert first["seg_source"] == "ground_truth" and "val_miou" in first
    checkpoint = tmp_path / "a" / "checkpoints" / "seg" / "last.ckpt"
    import torch

    steps_one_epoch = torch.load(checkpoint, map_location="cpu", weights_only=True)["global_step"]
    assert steps_one_epoch > 0
    resumed = run_stage(tmp_path / "a", data_dir,
                        ["stage=seg", "pseudo.source=ground_truth", "seg.max_epochs=2", f"ckpt_path={checkpoint}"])
    # Resumed, not restarted: the second fit only added the second epoch's steps.
    assert torch.load(checkpoint, map_location="cpu", weights_only=True)["global_step"] == 2 * steps_one_epoch
    assert "val_miou" in resumed


@pytest.mark.slow
def test_validation_with_the_eval_pipeline_and_a_schedule_per_cyclic_round(data_dir, tmp_path):
    """seg.val_pipeline=eval validates with eval's TTA + CRF; val_miou_best is the best of those
    validations, val_miou the last weights'; each cyclic round of an iteration-based run gets its
    own whole schedule (2 steps a round here, so 4, not seg.max_steps=3)."""
    import torch

    metrics = run_stage(tmp_path, data_dir, [
        "stage=seg", "pseudo.source=ground_truth", "seg.max_steps=3", "cyclic.rounds=1", "cyclic.every_n_steps=2",
        "cyclic.reinit=true", "seg.val_pipeline=eval", "eval.crf=true", "data.batch_size=16"])
    assert metrics["val_pipeline"] == "eval" and metrics["seg_steps_per_round"] == 2 and metrics["seg_steps"] == 4
    checkpoint = torch.load(tmp_path / "checkpoints" / "seg" / "last.ckpt", map_location="cpu", weights_only=False)
    assert checkpoint["hyper_parameters"]["val_crf"]["gauss_sxy"] == 1  # crf.seg, DeepLab's
    # The final evaluation (last weights, same pipeline) equals the last validation; the best is at least that.
    assert metrics["val_miou_best"] >= metrics["val_miou"] - 1e-6
    assert Path(metrics["val_miou_best_ckpt"]).is_file()
    # Scale 1 with the CRF is none of the three protocols: its own headline, the others beside it,
    # in the periodic validation as well (one value per validation in the CSV log).
    assert metrics["val_protocol"] == "custom" and {"val_miou_ss", "val_miou_ms", "val_miou_ms_crf"} <= set(metrics)
    import csv

    rows = list(csv.DictReader(next((tmp_path / "csv").rglob("metrics.csv")).open()))
    for name in ("custom", "ss", "ms", "ms_crf"):
        assert any(row.get(f"val/miou_{name}") for row in rows), name


def test_bad_data_root_is_one_line_from_the_cli(tmp_path):
    env = dict(os.environ, PMM_DATA_DIR=str(tmp_path / "data"))
    result = subprocess.run(
        [sys.executable, "-m", "pmm.run", "stage=cam", "data=voc", f"data.root={tmp_path / 'missing'}",
         f"hydra.run.dir={tmp_path / 'run'}"],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("pmm: error: data.root=") and "missing" in last and "JPEGImages" in last
    assert "Traceback" not in result.stderr


def test_unknown_stage_and_missing_checkpoint_are_clear(tmp_path, data_dir):
    with pytest.raises(PmmError, match="stage=nope: unknown stage"):
        run_stage(tmp_path, data_dir, ["stage=nope"])
    with pytest.raises(PmmError, match="seg_ckpt"):
        run_stage(tmp_path, data_dir, ["stage=eval"])
    with pytest.raises(PmmError, match=r"cam_ckpt=.*file not found"):
        run_stage(tmp_path, data_dir, ["stage=pseudo", f"cam_ckpt={tmp_path / 'none.ckpt'}"])
