"""Scale-out through the real CLI: DDP on two CPU processes, multiruns, wandb offline."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pmm.io import load_mask
from pmm.scoring.metrics import confusion_matrix, mean_iou

TINY = ["debug=default", "data.generate.num_train=16", "data.generate.num_val=6", "cyclic.every_n_epochs=1",
        "cyclic.scales=[1.0]", "cyclic.flip=false"]


def cli(args: list[str], data_dir: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    env = dict(os.environ, PMM_DATA_DIR=str(data_dir), WANDB_MODE="offline")
    result = subprocess.run([sys.executable, "-m", "pmm.run", *args], capture_output=True, text=True, env=env,
                            timeout=timeout)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.mark.slow
def test_ddp_two_cpu_processes_all_stages(tmp_path):
    run_dir = tmp_path / "ddp"
    cli(["stage=all", *TINY, "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2",
         f"hydra.run.dir={run_dir}"], tmp_path / "data")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["world_size"] == 2
    for key in ("cam_miou", "pseudo_miou", "pseudo_miou_rounds", "val_miou", "data_root", "num_classes"):
        assert key in metrics, key
    root = Path(metrics["data_root"])
    train_ids = sorted((root / "ImageSets/Segmentation/train.txt").read_text().split())
    val_ids = sorted((root / "ImageSets/Segmentation/val.txt").read_text().split())
    # Both ranks' shards landed: every round and the predictions are complete, nothing else is there.
    assert len(metrics["pseudo_miou_rounds"]) == 2
    for folder in ("pseudo_masks/round_0", "pseudo_masks/round_1"):
        assert sorted(p.stem for p in (run_dir / folder).glob("*.png")) == train_ids, folder
    assert sorted(p.stem for p in (run_dir / "cams/train").glob("*.npz")) == train_ids
    predictions = run_dir / "predictions" / "val"
    assert sorted(p.stem for p in predictions.glob("*.png")) == val_ids
    # The recorded mIoU is over the whole split, not rank 0's shard.
    total = sum(confusion_matrix(load_mask(predictions / f"{i}.png"), load_mask(root / f"SegmentationClass/{i}.png"), 7)
                for i in val_ids)
    assert mean_iou(total) == pytest.approx(metrics["val_miou"], abs=1e-9)


@pytest.mark.slow
def test_multirun_keeps_going_after_a_failed_point(tmp_path):
    sweep_dir = tmp_path / "sweep"
    result = cli(["-m", "stage=cam", *TINY, "cam.scales=[1.0]", "data.train_split=train,missing_split",
                  f"hydra.sweep.dir={sweep_dir}"], tmp_path / "data")
    good = json.loads((sweep_dir / "0" / "metrics.json").read_text())
    assert good["train_split"] == "train" and "cam_miou" in good
    assert not (sweep_dir / "1" / "metrics.json").exists() or "cam_miou" not in json.loads(
        (sweep_dir / "1" / "metrics.json").read_text())
    assert "missing_split.txt" in result.stdout + result.stderr + (sweep_dir / "1" / "run.log").read_text()


@pytest.mark.slow
def test_seed_sweep_gives_one_directory_per_seed(tmp_path):
    sweep_dir = tmp_path / "seeds"
    cli(["-m", "stage=cam", *TINY, "cam.scales=[1.0]", "seed=1,2", f"hydra.sweep.dir={sweep_dir}"], tmp_path / "data")
    seeds = [json.loads((sweep_dir / str(i) / "metrics.json").read_text())["seed"] for i in (0, 1)]
    assert seeds == [1, 2]


@pytest.mark.slow
def test_wandb_offline_run_logs_images_and_config(tmp_path):
    run_dir = tmp_path / "wandb_run"
    cli(["stage=all", *TINY, "logger=wandb", "cyclic.rounds=1", f"hydra.run.dir={run_dir}"], tmp_path / "data")
    runs = list((run_dir / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, "one wandb run for the whole pipeline"
    media = runs[0] / "files" / "media" / "images"
    assert list(media.glob("cams_*.png")), "CAM overlays are logged"
    for key in ("pseudo_masks", "predictions"):
        assert list((media / key).glob("*.png")), key
        assert list((media / "mask" / key).glob("*.png")), f"{key} carry class-labelled mask overlays"
    assert list((media / "pseudo_masks").glob("round_0_*.png")) and list((media / "pseudo_masks").glob("round_1_*.png"))
    # Offline runs keep the run config in the run's record: the resolved config and the git commit.
    record = next(runs[0].glob("run-*.wandb")).read_bytes()
    assert b"git_commit" in record and b"cyclic" in record
