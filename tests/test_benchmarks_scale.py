"""benchmarks/bench_scale.py: reading /usr/bin/time -v, the 4N / N ratios and their verdicts (no training)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from conftest import load_script

REPORT = """\tCommand being timed: "python -m pmm.run stage=eval"
\tUser time (seconds): 41.27
\tSystem time (seconds): 2.73
\tPercent of CPU this job got: 131%
\tElapsed (wall clock) time (h:mm:ss or m:ss): 1:02.50
\tAverage shared text size (kbytes): 0
\tMaximum resident set size (kbytes): 1572864
\tMajor (requiring I/O) page faults: 1
\tExit status: 0
"""


@pytest.fixture(scope="module")
def scale():
    return load_script("benchmarks/bench_scale.py", "pmm_bench_scale")


def test_time_report_is_read_in_seconds_and_mib(scale):
    figures = scale.parse_time_report(REPORT)
    assert figures == {"wall": pytest.approx(62.5), "cpu": pytest.approx(44.0), "rss_mib": pytest.approx(1536.0),
                       "exit": 0}
    assert scale.parse_time_report(REPORT.replace("1:02.50", "1:00:02"))["wall"] == pytest.approx(3602.0)
    with pytest.raises(ValueError, match="Maximum resident set size"):
        scale.parse_time_report(REPORT.replace("Maximum resident", "Largest resident"))


@pytest.mark.skipif(not Path("/usr/bin/time").is_file(), reason="GNU time is not installed")
def test_a_real_process_is_measured_and_a_failure_named(scale, tmp_path):
    """A process that holds 200 MiB shows at least that peak RSS; a failing one becomes a row with its last line."""
    hold = [sys.executable, "-c", "import time; block = bytearray(200 * 2**20); time.sleep(0.2)"]
    measure = scale.run_timed("hold", 1, hold, tmp_path)
    assert measure.error is None and 200 <= measure.rss_mib < 400 and measure.wall >= 0.2
    fail = [sys.executable, "-c", "raise SystemExit('pmm: error: data.root=/nowhere: not found')"]
    failed = scale.run_timed("fail", 1, fail, tmp_path)
    assert failed.error.startswith("exit 1: pmm: error: data.root=/nowhere") and "fail_1.log" in failed.error


def _measures(scale, step: str, cpu: dict[int, float], rss: dict[int, float] | None = None):
    return [scale.Measure(step, images, wall=seconds, cpu=seconds, rss_mib=(rss or {}).get(images, 1000.0))
            for images, seconds in cpu.items()]


def test_linear_steps_pass_and_a_quadratic_or_growing_one_is_named(scale):
    base, n = 16, 40
    fixed = 8.0
    linear = {size: fixed + 0.5 * size for size in (base, n, 4 * n)}
    quadratic = {size: fixed + 0.5 * size + 0.004 * size * size for size in (base, n, 4 * n)}
    measures = (_measures(scale, "cams", linear) + _measures(scale, "pseudo", linear)
                + _measures(scale, "pseudo_w1", linear) + _measures(scale, "relabel", quadratic)
                + _measures(scale, "eval", linear, rss={16: 1900.0, 40: 2000.0, 160: 2400.0}))
    rows = {r.step: r for r in scale.ratios(measures, base, n)}
    # The fixed cost makes the raw per-image ratio fall below 1; beyond the base tree it is exactly 1.
    assert rows["cams"].per_image < 0.8 and rows["cams"].marginal == pytest.approx(1.0)
    assert rows["relabel"].marginal > 1.15 and rows["eval"].rss == pytest.approx(1.2)
    time_line, rss_line = scale.verdicts(list(rows.values()))
    assert "**missed** by relabel" in time_line and "cams" not in time_line and "eval" not in time_line
    assert "**missed** by eval (1.20)" in rss_line and "relabel" not in rss_line
    cheaper = {size: fixed + 0.5 * size - 0.001 * size * size for size in (base, n, 4 * n)}
    rows["pseudo"] = scale.ratios(_measures(scale, "pseudo", cheaper), base, n)[1]
    time_line = scale.verdicts(list(rows.values()))[0]
    assert "**missed** by relabel" in time_line and "pseudo" in time_line.split("cheaper per image")[1]
    table = "\n".join(scale.ratio_table(list(rows.values())))
    assert "| 1.00 |" in table


def test_noisy_or_failed_steps_are_not_judged_and_failures_are_rows(scale):
    base, n = 16, 40
    noisy = {base: 20.0, n: 10.0, 4 * n: 60.0}  # the base tree slower than N: no marginal cost to compare
    measures = _measures(scale, "cams", noisy) + _measures(scale, "eval", {base: 9.0, n: 20.0})
    measures.append(scale.Measure("eval", 4 * n, error="exit 2: pmm: error: something"))
    rows = {r.step: r for r in scale.ratios(measures, base, n)}
    assert rows["cams"].marginal is None and rows["cams"].rss == pytest.approx(1.0)
    assert rows["eval"].per_image is None
    time_line, rss_line = scale.verdicts(list(rows.values()))
    assert "not judged" in time_line and "cams" in time_line.split("not judged")[1]
    assert "missed" not in rss_line and "eval" in rss_line.split("not judged")[1]
    assert any("failed: exit 2" in line for line in scale.table(measures))


def test_run_all_has_the_scale_section():
    run_all = load_script("benchmarks/run_all.py", "pmm_bench_run_all_scale")
    assert "scale" in run_all.SECTIONS
