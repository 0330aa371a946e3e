"""benchmarks/ablation.py: the run plan and the table/aggregation functions on hand-made metrics (no training)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from conftest import load_script

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def ablation():
    return load_script("benchmarks/ablation.py", "pmm_bench_ablation")


def fake_metrics(scale: float = 1.0, failed: tuple[str, ...] = ()) -> dict:
    """metrics.json dicts as the CLI writes them, one per run of one dataset and seed."""
    metrics = {
        "cam": {"cam_miou": 0.50 * scale, "cam_bg_threshold": 0.3},
        "pseudo_argmax": {"pseudo_miou": 0.40 * scale},
        "pseudo_crf": {"pseudo_miou": 0.55 * scale},
        "pseudo_ppmg_nocov": {"pseudo_miou": 0.60 * scale},
        "pseudo_ppmg": {"pseudo_miou": 0.65 * scale, "pseudo_alpha": 3.2},
        "pseudo_ppmg_fixed": {"pseudo_miou": 0.30 * scale},
        "seg_none": {"val_miou": 0.72 * scale, "pseudo_miou_rounds": [0.65 * scale]},
        "seg_clamp": {"val_miou": 0.50 * scale},
        "seg_pow": {"val_miou": 0.70 * scale},
        "seg_ignore": {"val_miou": 0.68 * scale},
        "seg_cyclic2": {"val_miou": 0.74 * scale, "pseudo_miou_rounds": [0.65 * scale, 0.70 * scale, 0.71 * scale]},
        "seg_gt": {"val_miou": 0.80 * scale},
    }
    for name in failed:
        metrics[name] = None
    return metrics


def test_extract_values_reads_every_row(ablation):
    values = ablation.extract_values(fake_metrics())
    assert set(values) == set(ablation.ROW_KEYS)
    assert values["cam"] == pytest.approx(0.50)
    assert values["pseudo_argmax"] == pytest.approx(0.40)
    assert values["pseudo_ppmg"] == pytest.approx(0.65)
    assert values["pseudo_ppmg_fixed"] == pytest.approx(0.30)
    assert values["alpha_auto"] == pytest.approx(3.2)
    assert values["val_ce"] == pytest.approx(0.72)
    assert values["val_clamp"] == pytest.approx(0.50)
    assert [values[f"round_{i}"] for i in range(3)] == pytest.approx([0.65, 0.70, 0.71])
    assert values["val_cyclic2"] == pytest.approx(0.74)
    assert values["val_gt"] == pytest.approx(0.80)
    assert values["ratio"] == pytest.approx(0.72 / 0.80)


def test_failed_runs_and_short_rounds_give_none(ablation):
    metrics = fake_metrics(failed=("seg_gt", "pseudo_crf"))
    metrics["seg_cyclic2"] = {"val_miou": 0.7, "pseudo_miou_rounds": [0.6]}
    metrics["seg_pow"] = {"val_miou": float("nan")}
    values = ablation.extract_values(metrics)
    assert values["val_gt"] is None and values["ratio"] is None
    assert values["pseudo_crf"] is None
    assert values["val_pow"] is None
    assert values["round_0"] == pytest.approx(0.6) and values["round_1"] is None and values["round_2"] is None


def test_weak_full_ratio(ablation):
    assert ablation.weak_full_ratio(0.45, 0.9) == pytest.approx(0.5)
    assert ablation.weak_full_ratio(None, 0.9) is None
    assert ablation.weak_full_ratio(0.5, None) is None
    assert ablation.weak_full_ratio(0.5, 0.0) is None


def test_mean_std_is_sample_std_over_present_values(ablation):
    mean, std, n = ablation.mean_std([0.6, 0.7, 0.8])
    assert n == 3 and mean == pytest.approx(0.7) and std == pytest.approx(0.1)
    mean, std, n = ablation.mean_std([0.6, None, 0.8, float("nan")])
    assert n == 2 and mean == pytest.approx(0.7) and std == pytest.approx(math.sqrt(0.02))
    assert ablation.mean_std([0.5]) == (pytest.approx(0.5), None, 1)
    assert ablation.mean_std([None]) == (None, None, 0)


def test_ratio_is_averaged_per_seed(ablation):
    # The ratio's mean is the mean of per-seed ratios, not the ratio of the means.
    by_seed = {0: ablation.extract_values(fake_metrics()), 1: ablation.extract_values(fake_metrics())}
    by_seed[1]["val_ce"], by_seed[1]["val_gt"] = 0.3, 0.6
    by_seed[1]["ratio"] = ablation.weak_full_ratio(0.3, 0.6)
    mean, std, n = ablation.aggregate({"embedded": by_seed})["embedded"]["ratio"]
    assert n == 2 and mean == pytest.approx((0.9 + 0.5) / 2)


def test_format_cell(ablation):
    assert ablation.format_cell(0.71234, 0.01234, 3) == "0.712 ± 0.012"
    assert ablation.format_cell(0.71234, None, 1) == "0.712"
    assert ablation.format_cell(None, None, 0) == "—"


def test_markdown_table(ablation):
    results = {
        "embedded": {s: ablation.extract_values(fake_metrics(scale)) for s, scale in ((0, 1.0), (1, 0.9), (2, 1.1))},
        "shapes": {0: ablation.extract_values(fake_metrics(failed=("seg_gt",)))},
    }
    table = ablation.markdown_table(results)
    lines = table.splitlines()
    assert lines[0] == ("| group | variant | embedded: mean ± std | embedded: seeds 0/1/2 | shapes: mean ± std "
                        "| shapes: seeds 0 |")
    assert lines[1] == "|" + "---|" * 6
    assert len(lines) == 2 + len(ablation.ROWS)
    ppmg = next(line for line in lines if "PPMG (CoV, alpha auto)" in line)
    cells = [c.strip() for c in ppmg.strip("|").split("|")]
    assert cells[2] == "0.650 ± 0.065"           # mean 0.65, sample std of 0.65*[1, .9, 1.1]
    assert cells[3] == "0.650 / 0.585 / 0.715"
    assert cells[4] == "0.650" and cells[5] == "0.650"
    gt = next(line for line in lines if "fully supervised" in line)
    assert [c.strip() for c in gt.strip("|").split("|")][4:] == ["—", "failed"]


def test_report_labels_quick_runs(ablation):
    results = {"embedded": {0: ablation.extract_values(fake_metrics())}}
    kwargs = dict(command="python benchmarks/ablation.py --quick", machine_line="m", date="d", commit_line="c",
                  wall_seconds=60, fixed_alpha=11, extra=[], failures=[])
    quick = ablation.report(results, quick=True, **kwargs)
    assert quick.startswith("> **QUICK SMOKE RUN")
    full = ablation.report(results, quick=False, **kwargs)
    assert "QUICK" not in full and full.startswith("# pmm ablation")
    assert ablation.markdown_table(results) in full


def test_plot_writes_png(ablation, tmp_path):
    results = {"embedded": {s: ablation.extract_values(fake_metrics(1 + s / 20)) for s in range(3)},
               "shapes": {0: ablation.extract_values(fake_metrics(failed=("seg_gt",)))}}
    ablation.plot(results, tmp_path / "a.png", "t")
    assert (tmp_path / "a.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plan_runs_wires_checkpoints_sources_and_seeds(ablation, tmp_path):
    runs = ablation.plan_runs(tmp_path, 2, ["data=voc"], extra=["trainer=cpu"], fixed_alpha=11)
    by_name = {run.name: run for run in runs}
    assert list(by_name)[0] == "cam"
    done = set()
    for run in runs:   # dependencies come first
        assert set(run.depends) <= done, run.name
        done.add(run.name)
    ckpt = f"cam_ckpt={tmp_path / 'cam' / 'checkpoints' / 'cam' / 'last.ckpt'}"
    for run in runs:
        assert run.overrides[0] == f"stage={run.stage}"
        assert "seed=2" in run.overrides and "data=voc" in run.overrides
        assert run.overrides[-2:] == ["trainer=cpu", f"hydra.run.dir={tmp_path / run.name}"]
        if run.name != "cam":
            assert ckpt in run.overrides
    assert {"pseudo.method=argmax", "pseudo.cov=false"} <= set(by_name["pseudo_argmax"].overrides)
    assert "pseudo.alpha=11" in by_name["pseudo_ppmg_fixed"].overrides
    assert {"pseudo.cov=true", "pseudo.alpha=auto"} <= set(by_name["pseudo_ppmg"].overrides)
    for mode in ablation.SEG_MODES:
        assert {f"seg.loss.mode={mode}", "cyclic.rounds=0", f"pseudo.source={tmp_path / 'pseudo_ppmg'}"} <= \
            set(by_name[f"seg_{mode}"].overrides)
    assert "cyclic.rounds=2" in by_name["seg_cyclic2"].overrides
    assert {"pseudo.source=ground_truth", "cyclic.rounds=0", "seg.loss.mode=none"} <= set(by_name["seg_gt"].overrides)


def test_finished_runs_are_reused(ablation, tmp_path):
    run = ablation.plan_runs(tmp_path, 0, [])[1]            # pseudo_argmax
    assert not ablation.finished(run)
    run.run_dir.mkdir(parents=True)
    (run.run_dir / "metrics.json").write_text(json.dumps({"cam_miou": 0.5}))   # the stage did not finish
    assert not ablation.finished(run)
    (run.run_dir / "metrics.json").write_text(json.dumps({"pseudo_miou": 0.6}))
    assert ablation.finished(run)
    metrics, seconds = ablation.execute(run, {}, tmp_path / "logs", timeout=1)
    assert metrics == {"pseudo_miou": 0.6} and seconds == 0.0
