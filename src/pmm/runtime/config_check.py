"""Command-line overrides that Hydra refuses, or that it accepts but pmm would never read, as one line.

Hydra reports a typo (``pseudo.alpah=3``, ``data=vco``) in several lines and suggests ``+pseudo.alpah=3``,
which Hydra then accepts and pmm silently ignores. Here:

- :func:`explain_config_error` turns Hydra's composition / override-parse exception into one line
  naming the override, what exists and the closest keys or group options ("did you mean ..."),
  computed with difflib against the keys of the composed config and the group's options;
- :func:`check_added_keys` refuses a ``+key=`` / ``++key=`` that adds a key pmm never reads. A key is
  read when the config without that override has it, or when it becomes an argument of a
  ``_target_`` node that is instantiated (``+trainer.gradient_clip_val=1`` goes to Lightning's
  Trainer, which takes it). Hydra's own keys (``hydra.*``) and config groups are Hydra's business.

``HYDRA_FULL_ERROR=1`` keeps Hydra's own report with its full trace (:func:`hydra_errors_raised`).
"""

from __future__ import annotations

import contextlib
import difflib
import inspect
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from pmm.errors import PmmError

# Nodes whose every child with a ``_target_`` is instantiated (a logger, a stage's callbacks): a ``+``
# may add a whole new child there.
INSTANTIATED_CHILDREN = ("logger", "callbacks.cam", "callbacks.seg")
FULL_ERROR = "HYDRA_FULL_ERROR"
_ABSENT = object()


# ------------------------------------------------------------------------------------ Hydra's errors

_raised_by_us = False


@contextlib.contextmanager
def hydra_errors_raised() -> Iterator[bool]:
    """Let Hydra's composition errors reach the caller instead of Hydra's multi-line report.

    Hydra re-raises them only when ``HYDRA_FULL_ERROR`` is set, so it is set for the composition
    (unless the user set it: then Hydra's full report is what they asked for) and taken away again
    by :func:`restore_hydra_error_reporting` when the task starts. Yields whether the user set it.
    """
    global _raised_by_us
    user_set = FULL_ERROR in os.environ
    if not user_set:
        os.environ[FULL_ERROR] = "1"
        _raised_by_us = True
    try:
        yield user_set
    finally:
        restore_hydra_error_reporting()


def restore_hydra_error_reporting() -> None:
    """Hydra reports errors of the task itself as usual (set by :func:`hydra_errors_raised` for composition only)."""
    global _raised_by_us
    if _raised_by_us:
        os.environ.pop(FULL_ERROR, None)
        _raised_by_us = False


def config_error_types() -> tuple[type[BaseException], ...]:
    """The exceptions Hydra raises for a bad command line or a config it cannot compose."""
    from hydra.errors import ConfigCompositionException, OverrideParseException

    return ConfigCompositionException, OverrideParseException


def _first_line(error: BaseException) -> str:
    text = " ".join(line.strip() for line in str(error).strip().splitlines()[:1])
    return text or type(error).__name__


def config_paths(node: Any, prefix: str = "") -> list[str]:
    """Every dotted key of a config (nodes and leaves), interpolations left unresolved."""
    container = OmegaConf.to_container(node, resolve=False) if isinstance(node, (DictConfig, ListConfig)) else node
    paths: list[str] = []

    def walk(value: Any, path: str) -> None:
        if isinstance(value, dict):
            for key, child in value.items():
                child_path = f"{path}.{key}" if path else str(key)
                paths.append(child_path)
                walk(child, child_path)

    walk(container, prefix)
    return paths


def closest(word: str, candidates: Sequence[str], cutoff: float = 0.6) -> list[str]:
    """The candidates nearest ``word`` (difflib's ratio >= cutoff): the best, and a second only if nearly as good."""
    scored = {}
    for candidate in dict.fromkeys(candidates):
        matcher = difflib.SequenceMatcher(None, word, candidate)
        if matcher.real_quick_ratio() >= cutoff and matcher.quick_ratio() >= cutoff and matcher.ratio() >= cutoff:
            scored[candidate] = matcher.ratio()
    ranked = sorted(scored, key=lambda c: -scored[c])[:2]
    return [c for c in ranked if scored[c] >= scored[ranked[0]] - 0.05]


def did_you_mean(key: str, candidates: Sequence[str], prefix: str = "") -> str:
    """``; did you mean a?`` for the candidates closest to ``key`` (its siblings first), else ``''``."""
    parent = key.rpartition(".")[0]
    siblings = [c for c in candidates if c.rpartition(".")[0] == parent] if parent else []
    close = closest(key, siblings) if siblings else []
    if not close:
        close = closest(key, candidates)
    if not close:
        return ""
    return "; did you mean " + " or ".join(f"{prefix}{c}" for c in close) + "?"


def _select(cfg: DictConfig, key: str) -> Any:
    try:
        return OmegaConf.select(cfg, key, default=_ABSENT, throw_on_missing=False, throw_on_resolution_failure=False)
    except Exception:  # noqa: BLE001 - a path through a value (seed.x): not there
        return _ABSENT


def _all_groups(loader, parent: str = "") -> list[str]:
    groups = []
    for name in loader.list_groups(parent):
        path = f"{parent}/{name}" if parent else name
        groups.append(path)
        groups.extend(_all_groups(loader, path))
    return groups


def _parse(overrides: Sequence[str]) -> list:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return OverridesParser.create().parse_overrides(list(overrides))


def _override_values(override) -> list[Any]:
    if override.is_sweep_override():
        try:
            return list(override.sweep_string_iterator())
        except Exception:  # noqa: BLE001 - a range or an interval is not a list of options
            return []
    value = override.value()
    return [] if value is None else [str(value)]


def explain_config_error(error: BaseException, argv: Sequence[str], conf_dir: str, default_config: str) -> str:
    """One line for a command line Hydra could not parse or compose: the override, what exists, the fix.

    Falls back on the first line of Hydra's own message when the cause is elsewhere (a broken YAML file).
    """
    from hydra import compose, initialize_config_dir
    from hydra._internal.utils import get_args_parser
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import OverrideParseException

    fallback = f"{_first_line(error)} (Hydra's full report: rerun with {FULL_ERROR}=1)"
    try:
        args, _ = get_args_parser().parse_known_args(list(argv))
    except SystemExit:
        return fallback
    overrides = list(args.overrides or [])
    config_name = args.config_name or default_config
    parsed = []
    for text in overrides:
        try:
            parsed.extend(_parse([text]))
        except OverrideParseException as parse_error:
            return (f"{text}: not an override Hydra can read ({_first_line(parse_error)}); write key=value "
                    "(pseudo.alpha=3), a list as key=[1,2], quote a value with spaces or brackets")
    if isinstance(error, OverrideParseException):
        return fallback
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(version_base="1.3", config_dir=conf_dir):
            loader = GlobalHydra.instance().config_loader()
            groups = _all_groups(loader)
            is_group = {o.input_line: (o.key_or_group in groups and o.package is None) for o in parsed}
            for override in parsed:
                if not is_group[override.input_line] or override.is_delete():
                    continue
                group = override.key_or_group
                options = sorted(loader.get_group_options(group))
                for value in _override_values(override):
                    if value not in options and value != "null":
                        close = closest(value, options, cutoff=0.5)
                        hint = f"; did you mean {' or '.join(f'{group}={c}' for c in close)}?" if close else ""
                        return (f"{override.input_line}: config group {group} has no option '{value}' "
                                f"(options: {', '.join(options)}){hint}")
            chosen = [o.input_line for o in parsed if is_group[o.input_line] and not o.is_sweep_override()]
            try:
                cfg = compose(config_name, overrides=chosen, return_hydra_config=True)
            except Exception:  # noqa: BLE001 - the groups alone do not compose: Hydra's line says why
                return fallback
            candidates = config_paths(cfg) + groups
            for override in parsed:
                if is_group[override.input_line]:
                    continue
                key = override.key_or_group
                pool = [c for c in candidates if c.startswith("hydra.") == key.startswith("hydra.")]
                found = _select(cfg, key)
                if found is _ABSENT and not (override.is_add() or override.is_force_add()):
                    what = "to delete" if override.is_delete() else "in the config"
                    return f"{override.input_line}: there is no key {key} {what}{did_you_mean(key, pool)}"
                if override.is_add() and found is not _ABSENT and found is not None:
                    return (f"{override.input_line}: {key} already exists, so it cannot be added; "
                            f"set it without the +: {override.input_line[1:]}")
    finally:
        GlobalHydra.instance().clear()
    return fallback


def run_hydra_main(entry, default_config: str, interrupted_exit: int = 130) -> None:
    """Run a ``@hydra.main`` entry point of pmm; a command line Hydra refuses is one ``pmm: error:`` line, exit 2.

    ``HYDRA_FULL_ERROR=1`` keeps Hydra's own report with its full trace.
    """
    conf_dir = str(Path(__file__).resolve().parents[1] / "conf")
    try:
        with hydra_errors_raised() as user_wants_hydra_report:
            entry()
    except config_error_types() as error:
        if user_wants_hydra_report:
            raise
        print(f"pmm: error: {explain_config_error(error, sys.argv[1:], conf_dir, default_config)}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("pmm: interrupted before the run started", file=sys.stderr)
        sys.exit(interrupted_exit)


# ------------------------------------------------------------------------------------ added keys

def _target_arguments(target: str) -> tuple[set[str], bool] | None:
    """(explicit argument names, takes ``**kwargs`` that reach the object) of a ``_target_``; None if unknown."""
    from hydra.utils import get_object

    try:
        obj = get_object(target)
        signature = inspect.signature(obj)
    except Exception:  # noqa: BLE001 - not importable here: instantiation will say so
        return None
    names = {name for name, p in signature.parameters.items() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
    # pmm's own classes take **kwargs only to ignore the loader settings of their node.
    open_ended = any(p.kind == p.VAR_KEYWORD for p in signature.parameters.values())
    return names, open_ended and not getattr(obj, "__module__", "").startswith("pmm.")


def _reads(base: DictConfig, final: DictConfig, key: str, value: Any) -> str | None:
    """None when pmm (or the object a node builds) reads ``key``; else why not, with the closest keys."""
    if _select(base, key) is not _ABSENT:
        return None
    parts = key.split(".")
    for depth in range(len(parts) - 1, 0, -1):
        owner = ".".join(parts[:depth])
        node = _select(final, owner)
        if not isinstance(node, DictConfig) or "_target_" not in node:
            continue
        argument = parts[depth]
        new_node = _select(base, owner) is _ABSENT
        if new_node and ".".join(parts[: depth - 1]) not in INSTANTIATED_CHILDREN:
            return f"pmm never builds a {owner} node"
        if argument in ("_target_", "_partial_", "_args_", "_convert_", "_recursive_"):
            return None
        target = str(node._get_node("_target_")._value())
        known = _target_arguments(target)
        if known is None or argument in known[0] or known[1]:
            return None
        names = [f"{owner}.{name}" for name in sorted(known[0])]
        return f"{target} takes no argument {argument}{did_you_mean(key, names + config_paths(base))}"
    if parts[-1] == "_target_" and ".".join(parts[:-2]) in INSTANTIATED_CHILDREN:
        return None
    if isinstance(value, dict) and "_target_" in value and ".".join(parts[:-1]) in INSTANTIATED_CHILDREN:
        return None
    return f"pmm never reads {key} (not a key of its config){did_you_mean(key, config_paths(base))}"


def check_added_keys(config: DictConfig, config_name: str | None, multirun: bool = False) -> None:
    """Refuse a ``+key=`` / ``++key=`` of the command line that adds a key pmm never reads.

    ``config`` is the composed config of the run (with its ``hydra`` node): its task overrides are
    read back and the config is composed once more without the added keys, to tell a key pmm's
    YAML has (``+cam_ckpt=x`` on a null key is harmless) from a new one.

    Raises:
        PmmError: ``+pseudo.alpah=3: pmm never reads pseudo.alpah (...); did you mean pseudo.alpha?``
    """
    from hydra.core.global_hydra import GlobalHydra
    from hydra.types import RunMode

    task = [str(o) for o in config.hydra.overrides.task]
    parsed = _parse(task)
    choices = set(config.hydra.runtime.choices or {})
    added = [o for o in parsed if (o.is_add() or o.is_force_add()) and not o.is_hydra_override()
             and o.package is None and o.key_or_group not in choices]
    if not added:
        return
    others = [o.input_line for o in parsed if o not in added]
    hydra_overrides = [str(o) for o in config.hydra.overrides.hydra]
    base = GlobalHydra.instance().hydra.compose_config(
        config_name, hydra_overrides + others, run_mode=RunMode.MULTIRUN if multirun else RunMode.RUN)
    for override in added:
        values = [override.value()] if not override.is_sweep_override() else [None]
        why = _reads(base, config, override.key_or_group, values[0])
        if why is not None:
            raise PmmError(f"{override.input_line}: {why}")
