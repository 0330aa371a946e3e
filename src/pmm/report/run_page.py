"""``report.html``: one page per run folder, drawn from what the run wrote.

Images are linked by relative paths (``figures/<name>.png``), not embedded as base64: the run
folder is the unit that is kept, copied and archived, and it already holds the PNGs; embedding them
would double the folder's figure bytes (the panels of a VOC run are megabytes each) and a page
re-drawn after a figure changed would still show the old one. Relative paths open from
``file://`` with no network, wherever the folder is moved.
"""

from __future__ import annotations

import datetime as _dt
import logging
from pathlib import Path
from urllib.parse import quote

from pmm.report.html import esc, iou_bar, is_number, number, page, seconds_text, share_bar, table, value_text
from pmm.report.runs import PIPELINE_STAGES, Run, is_run, load_run

log = logging.getLogger("pmm")

REPORT_NAME = "report.html"

# The mIoU of each evaluation protocol of the segmenter (val_protocol names the headline one).
PROTOCOLS = (
    ("val_miou_ss", "ss", "single scale"),
    ("val_miou_ms", "ms", "multi-scale (+ flip)"),
    ("val_miou_ms_crf", "ms_crf", "multi-scale + dense CRF"),
)
STAGE_TITLES = {"cam": "CAMs", "pseudo": "Pseudo-masks", "seg": "Segmenter", "eval": "Evaluation"}
# metrics.json keys shown in their own section rather than in the tables of metrics by stage.
SHOWN_ELSEWHERE = {"stages", "cam_miou_curve", "cam_per_class_iou", "val_per_class_iou", "val_protocol",
                   "val_protocols", "class_names",
                   "environment", "stage_seconds", "interrupted", "interrupted_stage", "interrupted_epoch",
                   "interrupted_step", "resume_checkpoint"} | {key for key, _, _ in PROTOCOLS}
# Figures the stages draw, by section, with their captions; any other PNG of figures/ follows them.
FIGURES = {
    "curve": [("cam_miou_curve.png", "CAM mIoU against the background threshold; the star is the threshold kept")],
    "iou": [("pseudo_iou.png", "per-class IoU of the round-0 pseudo-masks"),
            ("val_iou.png", "per-class IoU of the segmenter on val")],
    "panels": [("cam_panel.png", "CAMs of the first training images (one column per labelled class)"),
               ("cam_raw_vs_refined.png", "raw and refined CAMs"),
               ("pseudo_panel.png", "pseudo-masks of the first training images"),
               ("val_predictions.png", "segmenter predictions on the first val images")],
    "pipeline": [("miou_by_stage.png", "mIoU through the pipeline: CAMs, pseudo-mask rounds, segmenter")],
}


def _figure(run: Run, name: str, caption: str) -> str:
    return (f'<figure><img src="figures/{quote(name)}" alt="{esc(name)}">'
            f"<figcaption><code>figures/{esc(name)}</code>: {esc(caption)}</figcaption></figure>")


def _figures(run: Run, section: str, css: str = "") -> str:
    present = set(run.figures)
    shown = "".join(_figure(run, name, caption) for name, caption in FIGURES[section] if name in present)
    return f'<div class="figures {css}">{shown}</div>' if shown else ""


def _stage_of(key: str) -> str:
    for prefix, stage in (("cam_", "cam"), ("pseudo_", "pseudo"), ("seg_", "seg"), ("val_", "seg")):
        if key.startswith(prefix):
            return stage
    return "run"


def status(run: Run, stopped: BaseException | None = None) -> tuple[str, str]:
    """(css class, sentence): finished, interrupted (and where) or stopped during a stage (and why, when known)."""
    metrics = run.metrics
    expected = metrics.get("stages") or PIPELINE_STAGES.get(str(metrics.get("stage")), ())
    finished = metrics.get("stage_seconds")
    if stopped is not None and not isinstance(finished, dict):
        finished = {}  # stopped in its first stage (runs of older pmm versions hold no timings at all)
    missing = [stage for stage in expected if isinstance(finished, dict) and stage not in finished]
    if metrics.get("interrupted"):
        if stopped is not None:  # the line pmm.run prints, with the overrides that resume the run
            return "stopped", str(stopped)
        resume = metrics.get("resume_checkpoint")
        return "stopped", (f"interrupted during stage {metrics.get('interrupted_stage', '?')}"
                           + (f"; last checkpoint {resume}" if resume else ""))
    if stopped is not None or missing:
        where = f" during stage {missing[0]}" if missing else ""
        if stopped is None:
            return "stopped", f"stopped{where} (its error is at the end of run.log)"
        from pmm.errors import PmmError

        why = str(stopped) if isinstance(stopped, PmmError) else f"{type(stopped).__name__}: {stopped}"
        return "stopped", f"stopped{where}: {why}"
    return "done", "finished: " + (", ".join(expected) or "no stage")


def _summary(run: Run, stopped) -> str:
    css, sentence = status(run, stopped)
    metrics = run.metrics
    chips = [(key, metrics[key]) for key in ("cam_miou", "pseudo_miou", "val_miou") if is_number(metrics.get(key))]
    headline = " · ".join(f"<b>{esc(k)}</b> {number(v)}" for k, v in chips)
    facts = [f"stage={esc(metrics.get('stage', '?'))}", f"seed {esc(metrics.get('seed', '?'))}"]
    if "num_train_images" in metrics:
        facts.append(f"{esc(metrics['num_train_images'])} train / {esc(metrics.get('num_val_images', '?'))} val images")
    if "data_root" in metrics:
        facts.append(f"data <code>{esc(metrics['data_root'])}</code>")
    return (f'<div class="status {css}">{esc(sentence)}</div>'
            f"<p>{headline}</p><p class=\"small muted\">{' · '.join(facts)}</p>")


def _metrics_by_stage(run: Run) -> str:
    grouped: dict[str, list] = {}
    for key, value in run.metrics.items():
        if key in SHOWN_ELSEWHERE or (key.endswith("_per_class_iou")):
            continue
        grouped.setdefault(_stage_of(key), []).append((key, value))
    parts = []
    for stage, title in (("cam", "CAMs"), ("pseudo", "Pseudo-masks"), ("seg", "Segmenter (seg/val)"), ("run", "Run")):
        rows = [(f"<code>{esc(k)}</code>", value_text(v)) for k, v in grouped.get(stage, [])]
        if rows:
            parts.append(f"<div><h3>{esc(title)}</h3>" + table(["key", "value"], rows) + "</div>")
    if not parts:
        return '<p class="muted">metrics.json holds no stage metrics yet.</p>'
    return f'<div class="cols">{"".join(parts)}</div>'


def _protocol(run: Run) -> str:
    metrics = run.metrics
    chosen = str(metrics.get("val_protocol", ""))
    described = metrics.get("val_protocols") or {}
    rows, classes = [], []

    def settings(short: str) -> str:
        """The scales, flip and CRF of a protocol (metrics.json's val_protocols)."""
        what = described.get(short) or {}
        if not what:
            return ""
        scales = ", ".join(f"{float(v):g}" for v in what.get("scales", []))
        return esc(f"scales {scales}" + (" + flip" if what.get("flip") else "") + (" + CRF" if what.get("crf") else ""))

    for key, short, words in PROTOCOLS + (("val_miou", "custom", "eval.scales / flip / crf"),):
        if short == "custom":
            if chosen != "custom" or "val_miou" not in metrics:
                continue
        elif key not in metrics:
            continue
        headline = chosen in (key, short)
        rows.append([f"<code>{esc(key)}</code>", esc(words), settings(short), number(metrics[key]),
                     "headline" if headline else ""])
        classes.append("headline" if headline else "")
    if not rows:
        return ('<p class="muted">No per-protocol mIoU in metrics.json (<code>val_miou_ss</code>, <code>val_miou_ms</code>, '
                "<code>val_miou_ms_crf</code>); the segmenter's <code>val_miou</code> is under Metrics.</p>")
    note = f'<p class="small">val_protocol: <code>{esc(chosen)}</code></p>' if chosen else ""
    return table(["key", "protocol", "settings", "mIoU", ""], rows, numeric=(3,), row_classes=classes) + note


def per_class_iou(run: Run) -> dict[str, dict]:
    """Source title -> {class: IoU} for the CAMs, the round-0 pseudo-masks and the segmenter on val."""
    metrics, reports = run.metrics, run.reports
    found = {}
    cam = metrics.get("cam_per_class_iou") or reports.get("cam", {}).get("cam_per_class_iou")
    if isinstance(cam, dict):
        found["CAMs"] = cam
    pseudo = reports.get("pseudo", {}).get("per_class_iou")
    if isinstance(pseudo, dict):
        found["pseudo-masks (round 0)"] = pseudo
    val = metrics.get("val_per_class_iou") or reports.get("eval", {}).get("per_class_iou")
    if isinstance(val, dict):
        found["segmenter (val)"] = val
    return found


def _iou_table(run: Run) -> str:
    sources = per_class_iou(run)
    if not sources:
        return ""
    names = list(run.metrics.get("class_names") or [])
    for values in sources.values():
        names += [n for n in values if n not in names]
    rows = [[esc(name)] + [iou_bar(values.get(name)) for values in sources.values()] for name in names]
    return table(["class", *sources], rows)


def _timings(run: Run) -> str:
    seconds = run.metrics.get("stage_seconds")
    if not isinstance(seconds, dict) or not seconds:
        return '<p class="muted">No stage timings in metrics.json (<code>stage_seconds</code>).</p>'
    total = sum(float(s) for s in seconds.values() if is_number(s)) or 1.0
    rows = [[esc(STAGE_TITLES.get(stage, stage)) + f" <code>{esc(stage)}</code>", number(float(s), 1),
             esc(seconds_text(s)), share_bar(float(s) / total)]
            for stage, s in seconds.items() if is_number(s)]
    rows.append(["<b>total</b>", number(total, 1), esc(seconds_text(total)), ""])
    return table(["stage", "wall seconds", "time", "share"], rows, numeric=(1,))


def _environment(run: Run) -> str:
    env = run.metrics.get("environment")
    if not isinstance(env, dict):
        return '<p class="muted">Not recorded by this run (<code>environment</code> is missing from metrics.json).</p>'
    git = env.get("git")
    if isinstance(git, dict):
        commit = f"<code>{esc(git.get('commit'))}</code>" + (" (with uncommitted changes)" if git.get("dirty") else "")
    else:
        commit = '<span class="muted">not a git work tree</span>'
    rows = [
        ("python", esc(env.get("python"))), ("torch", esc(env.get("torch")) + (
            f" (CUDA {esc(env['cuda'])})" if env.get("cuda") else "")),
        ("lightning", esc(env.get("lightning"))), ("pmm", esc(env.get("pmm"))),
        ("accelerator", esc(env.get("accelerator"))), ("devices", "<br>".join(esc(d) for d in env.get("devices") or [])),
        ("nodes", esc(env.get("num_nodes"))),
        ("world size", esc(run.metrics.get("world_size", env.get("world_size")))),
        ("seed", esc(env.get("seed", run.metrics.get("seed")))), ("hostname", esc(env.get("hostname"))),
        ("platform", esc(env.get("platform"))), ("working directory", f"<code>{esc(env.get('working_dir'))}</code>"),
        ("git commit", commit),
    ]
    return table(["", ""], rows)


def _config(run: Run) -> str:
    if run.overrides:
        overrides = "<p>overrides: " + " ".join(f"<code>{esc(o)}</code>" for o in run.overrides) + "</p>"
    else:
        overrides = '<p class="muted">no command-line overrides (<code>.hydra/overrides.yaml</code>)</p>'
    if run.config_text is None:
        return overrides + '<p class="muted">no <code>.hydra/config.yaml</code> in this folder</p>'
    return (overrides + "<details><summary>composed config (<code>.hydra/config.yaml</code>, interpolations as written)</summary>"
            f"<pre>{esc(run.config_text)}</pre></details>")


def run_page_html(run: Run, stopped: BaseException | None = None) -> str:
    """The HTML of ``report.html`` for ``run`` (``stopped``: what ended the run early, when known)."""
    known = {name for names in FIGURES.values() for name, _ in names}
    others = "".join(_figure(run, name, "") for name in run.figures if name not in known)
    others = f'<div class="figures">{others}</div>' if others else ""
    sections = [
        ("metrics", "Metrics by stage", _metrics_by_stage(run)),
        ("protocol", "Evaluation protocols", _protocol(run)),
        ("curve", "Threshold curve", _figures(run, "curve") or '<p class="muted">no figures/cam_miou_curve.png</p>'),
        ("iou", "Per-class IoU", _iou_table(run) + _figures(run, "iou", "pair")),
        ("panels", "CAMs, pseudo-masks, predictions", _figures(run, "panels") + _figures(run, "pipeline") + others),
        ("timings", "Timings", _timings(run)),
        ("environment", "Environment", _environment(run)),
        ("config", "Config", _config(run)),
    ]
    nav = "<nav class=\"small\">" + "".join(f'<a href="#{anchor}">{esc(title)}</a>' for anchor, title, _ in sections) + "</nav>"
    written = _dt.datetime.now().isoformat(timespec="seconds")
    body = [f"<h1>pmm run <code>{esc(run.name)}</code></h1>",
            f'<p class="small muted">{esc(run.path.resolve())} · page written {esc(written)}</p>', nav,
            _summary(run, stopped)]
    body += [f'<h2 id="{anchor}">{esc(title)}</h2>{content or "<p class=muted>nothing written yet</p>"}'
             for anchor, title, content in sections]
    return page(f"pmm run {run.name}", "\n".join(body))


def write_run_page(run_dir: str | Path, stopped: BaseException | None = None) -> Path:
    """Write ``<run_dir>/report.html`` (atomically) and return its path."""
    from pmm.io import atomic_path

    run = load_run(run_dir)
    path = run.path / REPORT_NAME
    with atomic_path(path) as tmp:
        tmp.write_text(run_page_html(run, stopped), encoding="utf-8")
    return path


def write_run_report(run_dir: str | Path, stopped: BaseException | None = None) -> Path | None:
    """``report.html`` at the end of ``python -m pmm.run`` (main process): never raises, a warning instead.

    Nothing is drawn before metrics.json exists (a run stopped by its config has nothing to show).
    """
    from pmm.runtime.distributed import is_main

    try:
        if not is_main() or not is_run(Path(run_dir)):
            return None
        path = write_run_page(run_dir, stopped)
        log.info("report: %s", path)
        return path
    except Exception as error:  # the page is a view of the run: drawing it must never fail the run
        log.warning("report.html not written in %s: %s: %s", run_dir, type(error).__name__, error)
        return None
