"""report.html of a real smoke run, opened in headless Chromium; comparison.html of a sweep; bad input."""

from __future__ import annotations

import json
import os
import statistics
from html.parser import HTMLParser
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from pmm.errors import PmmError
from pmm.report.__main__ import main as report_main
from pmm.report.run_page import write_run_report
from pmm.run import run_pipeline

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
# Smaller than debug=smoke alone: 4 images a split, 32-pixel crops, the default's small encoder, no cyclic round.
SMOKE = ["stage=all", "debug=smoke", "data.generate.num_train=6", "data.generate.num_val=4", "smoke.images=4", "smoke.crop=32",
         "smoke.backbone=null", "cyclic.rounds=0", "cam.figures=2", "pseudo.figures=2", "eval.figures=2", "logger=csv"]


def launch(run_dir: Path, data_dir: Path, overrides: list[str]) -> dict:
    """run_pipeline as ``python -m pmm.run`` calls it, with the .hydra/ files Hydra writes before the job."""
    from test_run_pipeline import make_cfg

    run_dir.mkdir(parents=True, exist_ok=True)
    cfg = make_cfg(run_dir, data_dir, overrides, shrink=False)
    (run_dir / ".hydra").mkdir()
    job = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
    (run_dir / ".hydra" / "config.yaml").write_text(OmegaConf.to_yaml(job))
    (run_dir / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    return run_pipeline(cfg, run_dir)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory, data_dir) -> tuple[Path, dict]:
    run_dir = tmp_path_factory.mktemp("smoke") / "run"
    return run_dir, launch(run_dir, data_dir, SMOKE)


class Tables(HTMLParser):
    """The text of every table cell, one list of rows per table, and every <img src>."""

    def __init__(self):
        super().__init__()
        self.tables, self.images, self._cell = [], [], None

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "img":
            self.images.append(dict(attrs)["src"])

    def handle_endtag(self, tag):
        if tag in ("td", "th"):
            self.tables[-1][-1].append(" ".join("".join(self._cell).split()))
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def parse(path: Path) -> Tables:
    parser = Tables()
    parser.feed(path.read_text())
    return parser


def chromium(profile: Path):
    """A headless Chromium through chromedriver; skipped without them, except under CI (where it must run)."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        missing.append("the selenium package (pip install -e '.[dev]')")
    if missing:
        reason = f"headless Chromium unavailable: missing {', '.join(missing)} (apt-get install chromium chromium-driver)"
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; CI must run the browser test")
        pytest.skip(reason)
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    # The background-networking flags keep Chromium from dialling out (refused connections on a closed network).
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run", f"--user-data-dir={profile}", "--window-size=1280,1600"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)


PAGE_CHECK = """
return {
  images: Array.from(document.images).map(i => [i.getAttribute('src'), i.complete && i.naturalWidth > 0]),
  tables: Array.from(document.querySelectorAll('table')).map(t => t.tBodies.length ? t.tBodies[0].rows.length : 0),
  details: Array.from(document.querySelectorAll('details pre')).map(p => p.textContent.length),
};
"""


def test_the_report_of_a_smoke_run_opens_in_chromium(smoke_run, tmp_path):
    run_dir, metrics = smoke_run
    page = run_dir / "report.html"
    assert page.is_file()  # written by the run itself
    figures = sorted(p.name for p in (run_dir / "figures").glob("*.png"))
    assert {"cam_miou_curve.png", "cam_panel.png", "pseudo_panel.png", "val_predictions.png", "val_iou.png"} <= set(figures)
    driver = chromium(tmp_path / "profile")
    try:
        driver.get(page.as_uri())
        found = driver.execute_script(PAGE_CHECK)
        broken = tmp_path / "broken.html"  # the same check on a page with a missing image and an empty table
        broken.write_text('<html><body><img src="figures/none.png"><table><tbody></tbody></table></body></html>')
        driver.get(broken.as_uri())
        control = driver.execute_script(PAGE_CHECK)
    finally:
        driver.quit()
    assert sorted(Path(src).name for src, _ in found["images"]) == figures
    assert all(loaded for _, loaded in found["images"]), found["images"]
    assert found["tables"] and min(found["tables"]) >= 1, found["tables"]
    assert found["details"] and found["details"][0] > 100  # the composed config, collapsed
    assert control == {"images": [["figures/none.png", False]], "tables": [0], "details": []}


def test_the_report_shows_the_runs_metrics_timings_and_environment(smoke_run):
    run_dir, metrics = smoke_run
    seconds = metrics["stage_seconds"]
    assert metrics["stages"] == ["cam", "pseudo", "seg"] == list(seconds) and all(s > 0 for s in seconds.values())
    assert "finished: cam, pseudo, seg" in (run_dir / "report.html").read_text()
    env = metrics["environment"]
    import pytorch_lightning
    import torch

    assert (env["torch"], env["lightning"], env["world_size"], env["seed"]) == (
        torch.__version__, pytorch_lightning.__version__, 1, 0)
    assert env["devices"] and env["hostname"]
    parsed = parse(run_dir / "report.html")
    rows = {row[0]: row[1:] for table in parsed.tables for row in table if row}
    assert rows["val_miou"] == [f"{metrics['val_miou']:.4f}"]
    assert rows["pseudo_miou"] == [f"{metrics['pseudo_miou']:.4f}"]
    background = rows["background"]  # per-class IoU: CAMs, pseudo-masks, segmenter
    assert background[-1] == f"{metrics['val_per_class_iou']['background']:.4f}" and len(background) == 3
    assert rows["Segmenter seg"][0] == f"{seconds['seg']:.1f}" and rows["CAMs cam"][0] == f"{seconds['cam']:.1f}"
    assert rows["python"] == [env["python"]] and rows["seed"] == ["0"]
    assert "debug=smoke" in (run_dir / "report.html").read_text()


def test_a_failed_stage_still_gets_its_report(data_dir, tmp_path, caplog):
    run_dir = tmp_path / "failed"
    with pytest.raises(PmmError) as stop:  # stage=pseudo in a fresh folder: no CAMs to turn into masks
        launch(run_dir, data_dir, [o.replace("stage=all", "stage=pseudo") for o in SMOKE])
    text = (run_dir / "report.html").read_text()
    assert "stopped during stage pseudo" in text and str(stop.value).split(":")[0] in text
    # A page that cannot be drawn is a warning, never a failure of the run.
    (run_dir / "metrics.json").write_text("{ cut short")
    with caplog.at_level("WARNING", logger="pmm"):
        assert write_run_report(run_dir) is None
    assert "report.html not written" in caplog.text and "metrics.json" in caplog.text


def fake_run(folder: Path, overrides: list[str], seed: int, val: float) -> Path:
    """A run folder as pmm.run writes it, without the work: metrics.json and .hydra/."""
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    (folder / ".hydra" / "config.yaml").write_text(f"stage: all\nseed: {seed}\n")
    (folder / "metrics.json").write_text(json.dumps({
        "stage": "all", "seed": seed, "cam_miou": 0.4 + seed / 100, "pseudo_miou": 0.5, "val_miou": val,
        "val_miou_ss": val, "val_protocol": "ss", "stage_seconds": {"cam": 10.0, "pseudo": 2.0, "seg": 30.0},
        "val_protocols": {"ss": {"scales": [1.0], "flip": False, "crf": False, "miou": val}}}))
    return folder


def test_comparison_of_a_sweep_groups_the_seeds(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    fake_run(sweep / "0", ["stage=all", "seg.lr=0.01", "seed=0"], 0, 0.50)
    fake_run(sweep / "1", ["stage=all", "seg.lr=0.01", "seed=1"], 1, 0.60)
    fake_run(sweep / "2", ["stage=all", "seg.lr=0.1", "seed=0"], 0, 0.30)
    assert report_main([str(sweep)]) == 0
    written = capsys.readouterr().out.split()
    assert written[-1] == str(sweep / "comparison.html") and len(written) == 4
    runs, grouped = parse(sweep / "comparison.html").tables
    header = runs[0]
    assert header[:4] == ["run", "seg.lr", "seed", "cam_miou"] and "stage" not in header  # the overrides that differ
    assert [row[:3] for row in runs[1:]] == [["0", "0.01", "0"], ["1", "0.01", "1"], ["2", "0.1", "0"]]
    assert runs[3][header.index("val_miou")] == "0.3000"
    # Runs 0 and 1 differ only in their seed: one row of mean ± sample std; run 2 has a single seed.
    assert grouped[0][:2] == ["seg.lr", "seeds"] and len(grouped) == 2
    row = dict(zip(grouped[0], grouped[1]))
    mean, std = statistics.mean([0.5, 0.6]), statistics.stdev([0.5, 0.6])
    assert (row["seg.lr"], row["seeds"], row["val_miou"]) == ("0.01", "0, 1", f"{mean:.4f} ± {std:.4f}")
    assert row["pseudo_miou"] == "0.5000 ± 0.0000"
    page = {row[0]: row[1:] for table in parse(sweep / "0" / "report.html").tables for row in table if row}
    assert page["val_miou_ss"] == ["single scale", "scales 1", "0.5000", "headline"]  # the one val_protocol names
    # Two run folders named on the command line, page elsewhere.
    assert report_main([str(sweep / "0"), str(sweep / "2"), "--output", str(tmp_path / "out")]) == 0
    assert len(parse(tmp_path / "out" / "comparison.html").tables[0]) == 3


def test_a_folder_that_is_not_a_run_is_one_line(tmp_path, capsys):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    assert report_main([str(tmp_path / "empty")]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and str(tmp_path / "empty") in error and "metrics.json" in error
