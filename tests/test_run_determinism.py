"""Same seed, same machine and config: identical CAMs, masks and metrics."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from pmm.io import load_cams, load_mask


def _run_twice(tmp_path: Path, overrides: list[str]) -> tuple[Path, Path]:
    from test_run_pipeline import run_stage

    data = tmp_path / "data"
    first, second = tmp_path / "first", tmp_path / "second"
    for run in (first, second):
        run_stage(run, data, overrides)
    return first, second


@pytest.mark.slow
def test_same_seed_gives_bit_identical_cams_masks_and_metrics(tmp_path):
    overrides = ["stage=all", "data.generate.num_train=12", "data.generate.num_val=4", "data.num_workers=2",
                 "cam.scales=[1.0,1.5]", "seed=7"]
    first, second = _run_twice(tmp_path, overrides)
    a, b = (json.loads((run / "metrics.json").read_text()) for run in (first, second))
    for key in ("cam_miou", "cam_bg_threshold", "pseudo_miou", "pseudo_miou_rounds", "val_miou"):
        assert a[key] == b[key], key
    cams = sorted((first / "cams/train").glob("*.npz"))
    assert len(cams) == 12
    for path in cams:
        x, y = load_cams(path), load_cams(second / "cams/train" / path.name)
        np.testing.assert_array_equal(x[0], y[0])
    for folder in ("pseudo_masks/round_0", "pseudo_masks/round_1", "predictions/val"):
        for path in sorted((first / folder).glob("*.png")):
            np.testing.assert_array_equal(load_mask(path), load_mask(second / folder / path.name))
    weights = [torch.load(run / "checkpoints/seg/last.ckpt", map_location="cpu", weights_only=True)["state_dict"]
               for run in (first, second)]
    for key in weights[0]:
        assert torch.equal(weights[0][key], weights[1][key]), key
