"""``comparison.html``: runs side by side (a sweep, or run folders named on the command line).

One row per run with the overrides that differ between the runs and the headline metrics; runs
that differ only in their seed are grouped into mean ± standard deviation over the seeds.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from urllib.parse import quote

from pmm.report.html import esc, is_number, number, page, seconds_text, table
from pmm.report.run_page import REPORT_NAME, status
from pmm.report.runs import Run

COMPARISON_NAME = "comparison.html"
# The figures a run is judged by, in pipeline order (the protocol keys when the evaluation wrote them).
HEADLINE_KEYS = ("cam_miou", "pseudo_miou", "val_miou", "val_miou_ss", "val_miou_ms", "val_miou_ms_crf", "val_miou_best")
MISSING = "—"


def differing_overrides(runs: list[Run]) -> list[str]:
    """The override keys whose value is not the same in every run (absent counts as a value), in first-seen order."""
    keys: list[str] = []
    for run in runs:
        keys += [k for k in run.override_values if k not in keys]
    return [k for k in keys if len({run.override_values.get(k, MISSING) for run in runs}) > 1]


def headline_keys(runs: list[Run]) -> list[str]:
    return [k for k in HEADLINE_KEYS if any(is_number(run.metrics.get(k)) for run in runs)]


def total_seconds(run: Run) -> float | None:
    seconds = run.metrics.get("stage_seconds")
    if not isinstance(seconds, dict):
        return None
    values = [float(s) for s in seconds.values() if is_number(s)]
    return sum(values) if values else None


def seed_groups(runs: list[Run], keys: list[str]) -> list[tuple[dict[str, str], list[Run]]]:
    """Runs whose differing overrides are the same but for ``seed``: (their shared overrides, the runs), 2+ seeds each."""
    groups: dict[tuple, list[Run]] = {}
    for run in runs:
        setting = tuple((k, run.override_values.get(k, MISSING)) for k in keys if k != "seed")
        groups.setdefault(setting, []).append(run)
    found = []
    for setting, members in groups.items():
        seeds = {str(run.metrics.get("seed", run.override_values.get("seed"))) for run in members}
        if len(members) > 1 and len(seeds) == len(members):
            found.append((dict(setting), members))
    return found


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n - 1 in the denominator: a handful of seeds estimate the spread)."""
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, float("nan")
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def _link(run: Run, output_dir: Path) -> str:
    target = os.path.relpath(run.path.resolve() / REPORT_NAME, output_dir.resolve())
    label = os.path.relpath(run.path.resolve(), output_dir.resolve())
    return f'<a href="{quote(Path(target).as_posix())}">{esc(label)}</a>'


def comparison_html(runs: list[Run], output_dir: Path) -> str:
    keys = differing_overrides(runs)
    shown = [k for k in keys if k != "seed"]  # the seed has its own column, from metrics.json
    metrics = headline_keys(runs)
    header = ["run", *shown, "seed", *metrics, "time", "status"]
    rows = []
    for run in runs:
        total = total_seconds(run)
        rows.append([_link(run, output_dir)]
                    + [f"<code>{esc(run.override_values.get(k, MISSING))}</code>" for k in shown]
                    + [esc(run.metrics.get("seed", MISSING))]
                    + [number(run.metrics.get(k)) for k in metrics]
                    + [esc(seconds_text(total)) if total is not None else MISSING, esc(status(run)[1])])
    numeric = range(len(shown) + 1, len(shown) + 2 + len(metrics))
    shared = sorted({o for o in runs[0].overrides if all(o in run.overrides for run in runs)})
    body = [f"<h1>pmm: {len(runs)} runs compared</h1>",
            f'<p class="small muted">{esc(output_dir.resolve())}</p>',
            "<p>overrides shared by every run: " + (" ".join(f"<code>{esc(o)}</code>" for o in shared) or "none") + "</p>",
            "<h2>Runs</h2>", table(header, rows, numeric=numeric)]
    groups = seed_groups(runs, keys)
    body.append("<h2>Over seeds</h2>")
    if groups:
        setting_keys = [k for k in keys if k != "seed"]
        group_rows = []
        for setting, members in groups:
            cells = [f"<code>{esc(setting.get(k, MISSING))}</code>" for k in setting_keys]
            cells.append(", ".join(esc(run.metrics.get("seed", "?")) for run in members))
            for key in metrics:
                values = [float(run.metrics[key]) for run in members if is_number(run.metrics.get(key))]
                if not values:
                    cells.append(MISSING)
                    continue
                mean, std = mean_std(values)
                cells.append(f"{number(mean)} ± {number(std)}" + (f" (n={len(values)})" if len(values) < len(members) else ""))
            group_rows.append(cells)
        body.append('<p class="small">mean ± sample standard deviation over the seeds of each setting</p>')
        body.append(table([*setting_keys, "seeds", *metrics], group_rows,
                          numeric=range(len(setting_keys) + 1, len(setting_keys) + 1 + len(metrics))))
    else:
        body.append('<p class="muted">no runs that differ only in their seed</p>')
    return page(f"pmm: {len(runs)} runs", "\n".join(body))


def comparison_folder(runs: list[Run]) -> Path:
    """The deepest folder holding every run (a sweep folder for its jobs)."""
    common = Path(os.path.commonpath([str(run.path.resolve()) for run in runs]))
    return common.parent if any(common == run.path.resolve() for run in runs) else common


def write_comparison(runs: list[Run], output_dir: str | Path | None = None) -> Path:
    """Write ``comparison.html`` into ``output_dir`` (default: the runs' common folder) and return its path."""
    from pmm.io import atomic_path

    folder = Path(output_dir) if output_dir is not None else comparison_folder(runs)
    path = folder / COMPARISON_NAME
    with atomic_path(path) as tmp:
        tmp.write_text(comparison_html(runs, folder), encoding="utf-8")
    return path
