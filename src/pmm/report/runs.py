"""Reading a run folder as ``python -m pmm.run`` leaves it: metrics, config, overrides, stage reports.

A run folder is recognised by its ``metrics.json``; everything else (``.hydra/``, the stage reports,
``figures/``) may be missing in a run that stopped early, and the pages show what there is.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from pmm.errors import PmmError

RUN_FOLDER_HINT = ("a run folder holds metrics.json (beside .hydra/ and figures/), as python -m pmm.run writes it; "
                   "give run folders or a sweep folder whose subfolders are runs")

# The stages of each `stage=` value, in order, for runs whose metrics.json predates its `stages` key.
PIPELINE_STAGES = {"cam": ("cam",), "pseudo": ("pseudo",), "seg": ("seg",), "eval": ("eval",),
                   "all": ("cam", "pseudo", "seg")}


@dataclass
class Run:
    """One run folder, read."""

    path: Path
    metrics: dict
    config_text: str | None = None  # .hydra/config.yaml as written
    overrides: list[str] = field(default_factory=list)  # .hydra/overrides.yaml
    reports: dict = field(default_factory=dict)  # "cam" / "pseudo" / "eval" -> <stage>_report.json

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def override_values(self) -> dict[str, str]:
        """``key -> value`` of the command-line overrides (``+key``/``++key`` as ``key``, ``~key`` as deleted)."""
        values = {}
        for item in self.overrides:
            key, sep, value = str(item).partition("=")
            if key.startswith("~"):
                values[key[1:]] = "(deleted)"
            else:
                values[key.lstrip("+")] = value if sep else ""
        return values

    @property
    def figures(self) -> list[str]:
        folder = self.path / "figures"
        return sorted(p.name for p in folder.glob("*.png") if not p.name.startswith(".")) if folder.is_dir() else []


def _read_json(path: Path) -> dict:
    try:
        payload = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise PmmError(f"{path}: not valid JSON ({error.msg} at line {error.lineno}); "
                       "the run that wrote it was cut short or the file was edited: rerun the stage") from None
    if not isinstance(payload, dict):
        raise PmmError(f"{path}: expected a JSON object of metrics, got {type(payload).__name__}")
    return payload


def is_run(path: Path) -> bool:
    return (path / "metrics.json").is_file()


def load_run(path: str | Path) -> Run:
    """Read the run folder ``path``; a PmmError naming it when it is not one."""
    path = Path(path)
    if not path.is_dir():
        raise PmmError(f"{path}: no such folder; {RUN_FOLDER_HINT}")
    if not is_run(path):
        raise PmmError(f"{path}: not a run folder (no metrics.json); {RUN_FOLDER_HINT}")
    run = Run(path=path, metrics=_read_json(path / "metrics.json"))
    config = path / ".hydra" / "config.yaml"
    if config.is_file():
        run.config_text = config.read_text(errors="replace")
    overrides = path / ".hydra" / "overrides.yaml"
    if overrides.is_file():
        import yaml

        listed = yaml.safe_load(overrides.read_text()) or []
        run.overrides = [str(item) for item in listed] if isinstance(listed, list) else []
    for stage in ("cam", "pseudo", "eval"):
        report = path / f"{stage}_report.json"
        if report.is_file():
            try:
                run.reports[stage] = _read_json(report)
            except PmmError:  # a stage report cut short: the page is drawn without it
                continue
    return run


def _natural_key(path: Path):
    """Sweep job folders 0, 1, ..., 10 in numeric order."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]


def find_runs(paths: list[str | Path]) -> tuple[list[Path], bool]:
    """The run folders the command line names, and whether a comparison page is asked for.

    A path is a run folder (it holds metrics.json) or a folder of runs (a Hydra sweep: its
    subfolders hold metrics.json). Several runs, or one folder of runs, ask for a comparison.
    """
    runs: list[Path] = []
    compare = len(paths) > 1
    for given in paths:
        path = Path(given)
        if not path.is_dir():
            raise PmmError(f"{path}: no such folder; {RUN_FOLDER_HINT}")
        if is_run(path):
            runs.append(path)
            continue
        inside = sorted((p for p in path.iterdir() if p.is_dir() and is_run(p)), key=_natural_key)
        if not inside:
            raise PmmError(f"{path}: not a run folder (no metrics.json, and no subfolder holds one); {RUN_FOLDER_HINT}")
        runs.extend(inside)
        compare = True
    return runs, compare
