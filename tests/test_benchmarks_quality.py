"""benchmarks/bench_quality.py: reading a run's metrics.json, the table and the target verdicts (no training)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from conftest import load_script

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def quality():
    return load_script("benchmarks/bench_quality.py", "pmm_bench_quality")


def test_verdicts_name_the_trees_that_miss_a_target(quality):
    good = quality.TreeResult(303, 0, cam=0.6, round0=0.70, round1=0.80, val=quality.MIN_VAL + 0.01)
    flat = quality.TreeResult(404, 0, cam=0.6, round0=0.90, round1=0.91, val=quality.MIN_VAL - 0.01)
    lines = quality.verdicts([good, flat])
    assert len(lines) == 2
    assert "met on every tree" not in lines[0] and "tree 404 seed 0" in lines[0] and "303" not in lines[0]
    assert "tree 404 seed 0" in lines[1] and "303" not in lines[1]
    assert all("met on every tree" in line for line in quality.verdicts([good]))


def test_failed_run_is_a_row_and_misses_every_target(quality):
    failed = quality.TreeResult(303, 1, error="exit 2: pmm: error: something", seconds=3.0)
    rows = quality.table([failed])
    assert "failed: exit 2" in rows[-1]
    assert all("**missed** on tree 303 seed 1" in line for line in quality.verdicts([failed]))


def test_run_tree_reads_metrics_json(quality, tmp_path, monkeypatch):
    """run_tree takes its figures from the run's metrics.json: rounds 0/1 and val, the gain between them."""
    (tmp_path / "tree303" / "ImageSets" / "Segmentation").mkdir(parents=True)
    (tmp_path / "tree303" / "ImageSets" / "Segmentation" / "val.txt").write_text("val_0000\n")

    def fake_run(command, **kwargs):
        run_dir = Path(next(arg.split("=", 1)[1] for arg in command if arg.startswith("hydra.run.dir=")))
        run_dir.mkdir(parents=True)
        (run_dir / "metrics.json").write_text(json.dumps(
            {"cam_miou": 0.5, "pseudo_miou_rounds": [0.6, 0.7], "val_miou": 0.75}))
        assert "data=voc" in command and "seed=2" in command and "cyclic.rounds=1" in command
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(quality.subprocess, "run", fake_run)
    result = quality.run_tree(tmp_path, 303, 2, ["cyclic.rounds=1"])
    assert (result.cam, result.round0, result.round1, result.val) == (0.5, 0.6, 0.7, 0.75)
    assert result.gain == pytest.approx(0.1)
    assert result.error is None


def test_run_all_update_replaces_one_section_and_keeps_the_others():
    run_all = load_script("benchmarks/run_all.py", "pmm_bench_run_all")
    old = "# pmm benchmarks\n\n- commit: abc\n\n## Dense CRF\n\ncrf table\n\n## Default pipeline\n\nold pipeline\n"
    merged = run_all.merge_sections(old, ["## Default pipeline\n\nnew pipeline\n", "## Quality\n\nq table\n"])
    assert "crf table" in merged and "new pipeline" in merged and "old pipeline" not in merged
    assert merged.index("## Dense CRF") < merged.index("## Default pipeline") < merged.index("## Quality")
    assert merged.startswith("# pmm benchmarks\n\n- commit: abc\n")
