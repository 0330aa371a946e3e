"""Start-up check of the composed config: every numeric setting a user touches, before any work.

:func:`validate_config` reads each known key with ``OmegaConf.select`` (a key absent from the
config is skipped, so renamed or preset-specific keys cost nothing) and raises one
:class:`PmmError` line naming the key, the value and what was expected::

    pseudo.alpha=-5: expected a number > 0 or auto
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from pmm.errors import PmmError

CROP_MULTIPLE = 32  # training crops go straight into the segmenter: SMP needs sizes divisible by 2**depth

_ABSENT = object()


def _select(cfg: DictConfig, key: str) -> Any:
    """The resolved value at ``key``, or ``_ABSENT`` when the key is absent, ``???`` or unresolvable here."""
    try:
        value = OmegaConf.select(cfg, key, default=_ABSENT, throw_on_missing=True)
    except Exception:  # noqa: BLE001 - missing/unresolvable values are reported by the code that needs them
        return _ABSENT
    if isinstance(value, (ListConfig, DictConfig)):
        try:
            value = OmegaConf.to_container(value, resolve=True)
        except Exception:  # noqa: BLE001
            return _ABSENT
    return value


def _show(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_show(item) for item in value) + "]"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


# ------------------------------------------------------------------------------------------- checks

@dataclass(frozen=True)
class Num:
    """A number (or an int) within bounds; ``words`` are accepted strings (``auto``), ``nullable`` allows null."""

    gt: float | None = None
    ge: float | None = None
    lt: float | None = None
    le: float | None = None
    integer: bool = False
    nullable: bool = False
    words: tuple[str, ...] = ()
    multiple_of: int | None = None

    def expected(self) -> str:
        kind = "an integer" if self.integer else "a number"
        bounds = [f"{op} {_show(v)}" for op, v in ((">", self.gt), (">=", self.ge), ("<", self.lt), ("<=", self.le))
                  if v is not None]
        if self.gt is not None and self.lt is not None:
            bounds = [f"in ({_show(self.gt)}, {_show(self.lt)})"]
        text = f"{kind} {' and '.join(bounds)}".strip()
        if self.multiple_of:
            text += f", a multiple of {self.multiple_of}"
        extras = list(self.words) + (["null"] if self.nullable else [])
        return text + (f" or {' or '.join(extras)}" if extras else "")

    def ok(self, value: Any) -> bool:
        if value is None:
            return self.nullable
        if isinstance(value, str):
            return value in self.words
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if self.integer and not isinstance(value, int):
            return False
        if not math.isfinite(value):
            return False
        if self.gt is not None and not value > self.gt:
            return False
        if self.ge is not None and not value >= self.ge:
            return False
        if self.lt is not None and not value < self.lt:
            return False
        if self.le is not None and not value <= self.le:
            return False
        return not (self.multiple_of and value % self.multiple_of)


@dataclass(frozen=True)
class Seq:
    """A list of ``item`` (non-empty; exactly ``length`` items when given), or null when ``nullable``."""

    item: Num
    length: int | None = None
    nullable: bool = False

    def expected(self) -> str:
        count = f"a list of {self.length}" if self.length else "a non-empty list of"
        item = self.item.expected().replace("an integer", "integers").replace("a number", "numbers", 1)
        return f"{count} {item}" + (" or null" if self.nullable else "")

    def ok(self, value: Any) -> bool:
        if value is None:
            return self.nullable
        if not isinstance(value, (list, tuple)) or not value:
            return False
        if self.length is not None and len(value) != self.length:
            return False
        return all(self.item.ok(item) for item in value)


@dataclass(frozen=True)
class One:
    """One of fixed strings (or null when ``nullable``)."""

    options: tuple[str, ...]
    nullable: bool = False

    def expected(self) -> str:
        return "one of " + "|".join(self.options) + ("|null" if self.nullable else "")

    def ok(self, value: Any) -> bool:
        return (value is None and self.nullable) or (isinstance(value, str) and value in self.options)


@dataclass(frozen=True)
class Flag:
    """true or false."""

    def expected(self) -> str:
        return "true or false"

    def ok(self, value: Any) -> bool:
        return isinstance(value, bool)


POSITIVE = Num(gt=0)
NON_NEGATIVE = Num(ge=0)
COUNT = Num(integer=True, ge=1)          # batch sizes, epochs, iterations
NON_NEGATIVE_INT = Num(integer=True, ge=0)
OPTIONAL_COUNT = Num(integer=True, ge=1, nullable=True)
OPTIONAL_STEPS = Num(integer=True, ge=0, nullable=True)
SIZE = Num(integer=True, gt=0)
OPTIONAL_SIZE = Num(integer=True, gt=0, nullable=True)
FRACTION = Num(gt=0, lt=1)               # thresholds
SCALES = Seq(Num(gt=0))
MODES = One(("whole", "slide", "multi_crop"))

# Every settable key and its rule. Keys absent from a config are skipped.
RULES: dict[str, Num | Seq | One | Flag] = {
    "seed": Num(integer=True, ge=0, lt=2**32),
    # data
    "data.crop_size": Num(integer=True, gt=0, nullable=True, multiple_of=CROP_MULTIPLE),
    "data.scale_range": Seq(Num(gt=0), length=2),
    "data.batch_size": COUNT,
    "data.num_workers": NON_NEGATIVE_INT,
    "data.labels": One(("masks", "xml", "auto")),
    "data.generate.seed": Num(integer=True, ge=0),
    "data.generate.num_train": COUNT,
    "data.generate.num_val": COUNT,
    "data.generate.image_size": SIZE,
    # CAM network (cam_net/*.yaml)
    "cam_net.output_stride": Num(integer=True, gt=0, nullable=True),
    "cam_net.dropout": Num(ge=0, lt=1),
    "cam_net.edge_sigma": NON_NEGATIVE,
    "cam_net.new_layer_lr_mult": POSITIVE,
    "cam_net.bias_lr_mult": POSITIVE,
    "cam_net.new_weight_lr_mult": POSITIVE,
    "cam_net.new_bias_lr_mult": POSITIVE,
    "cam_net.bias_weight_decay": Num(ge=0, nullable=True),
    "cam_net.scale": Num(gt=0, le=1),
    "cam_net.top": Num(gt=0, le=1),
    "cam_net.input": One(("rgb", "edges", "rgb+edges")),
    "input.encoding": One(("rgb", "edges", "rgb+edges")),
    "input.edge_sigma": NON_NEGATIVE,
    # segmentation network (segmenter/*.yaml)
    "segmenter.decoder_channels": OPTIONAL_SIZE,
    "segmenter.output_stride": Num(integer=True, gt=0, nullable=True),
    "segmenter.encoder_depth": Num(integer=True, ge=1, le=5, nullable=True),
    "segmenter.edge_sigma": NON_NEGATIVE,
    # CAM stage
    "cam.max_epochs": OPTIONAL_COUNT,
    "cam.lengthen_to_steps": OPTIONAL_STEPS,
    "cam.batch_size": COUNT,
    "cam.lr": POSITIVE,
    "cam.new_layer_lr_mult": POSITIVE,
    "cam.poly_power": NON_NEGATIVE,
    "cam.optimizer.weight_decay": NON_NEGATIVE,
    "cam.optimizer.momentum": Num(ge=0, lt=1),
    "cam.mode": One(("whole", "multi_crop")),
    "cam.scales": SCALES,
    "cam.flip": Flag(),
    "cam.window": SIZE,
    "cam.stride": SIZE,
    "cam.infer_batch_size": COUNT,
    "cam.thresholds": Seq(FRACTION, nullable=True),
    "cam.figures": NON_NEGATIVE_INT,
    # pseudo-masks
    "pseudo.method": One(("argmax", "crf", "ppmg")),
    "pseudo.cov": Flag(),
    "pseudo.cov_scale": NON_NEGATIVE,
    "pseudo.cov_threshold": Num(ge=0, lt=1),
    "pseudo.alpha": Num(gt=0, words=("auto",)),
    "pseudo.alpha_range": Seq(Num(gt=0), length=2),
    "pseudo.bg_threshold": Num(gt=0, lt=1, words=("auto",)),
    "pseudo.workers": NON_NEGATIVE_INT,
    "pseudo.resume": Flag(),
    "pseudo.figures": NON_NEGATIVE_INT,
    # segmentation stage
    "seg.max_epochs": OPTIONAL_COUNT,
    "seg.lengthen_to_steps": OPTIONAL_STEPS,
    "seg.max_steps": Num(integer=True, ge=1, nullable=True),
    "seg.batch_size": COUNT,
    "seg.lr": POSITIVE,
    "seg.head_lr_mult": POSITIVE,
    "seg.poly_power": NON_NEGATIVE,
    "seg.min_lr": NON_NEGATIVE,
    "seg.optimizer.weight_decay": NON_NEGATIVE,
    "seg.optimizer.momentum": Num(ge=0, lt=1),
    "seg.loss.mode": One(("clamp", "pow", "ignore", "none")),
    "seg.loss.beta": NON_NEGATIVE,
    "seg.loss.k": NON_NEGATIVE,
    "seg.loss.warmup_epochs": NON_NEGATIVE_INT,
    "seg.aux_weight": NON_NEGATIVE,
    "seg.check_val_every_n_epoch": Num(integer=True, ge=1, nullable=True),  # null: validate every seg.val_check_interval steps
    "seg.val_check_interval": Num(gt=0, nullable=True),
    # cyclic pseudo-masks
    "cyclic.rounds": NON_NEGATIVE_INT,
    "cyclic.every_n_epochs": COUNT,
    "cyclic.every_n_steps": OPTIONAL_COUNT,
    "cyclic.reinit": Flag(),
    "cyclic.puf_first_round_only": Flag(),
    "cyclic.restrict_to_labels": Flag(),
    "cyclic.scales": SCALES,
    "cyclic.flip": Flag(),
    "cyclic.mode": MODES,
    "cyclic.window": SIZE,
    "cyclic.stride": SIZE,
    "cyclic.short_side": OPTIONAL_SIZE,
    "cyclic.max_long": OPTIONAL_SIZE,
    "cyclic.crf": Flag(),
    "cyclic.batch_size": COUNT,
    "cyclic.relabel_from": One(("last", "best")),
    "eval.export": One(("voc_test",), nullable=True),
    "cam.round": One(("standard", "multi_crop")),
    "cam.multi_crop.epochs": COUNT,
    "cam.multi_crop.crop": OPTIONAL_SIZE,
    "cam.multi_crop.lr": Num(gt=0, nullable=True),
    "cam.multi_crop.min_share": Num(gt=0, le=1),
    "cam.multi_crop.rough_alpha": Num(gt=0),
    # evaluation
    "eval.scales": SCALES,
    "eval.flip": Flag(),
    "eval.crf": Flag(),
    "eval.mode": MODES,
    "eval.window": SIZE,
    "eval.stride": SIZE,
    "eval.short_side": OPTIONAL_SIZE,
    "eval.max_long": OPTIONAL_SIZE,
    "eval.batch_size": COUNT,
    "eval.figures": NON_NEGATIVE_INT,
    # trainer
    "trainer.max_steps": Num(integer=True, ge=-1),
    "trainer.log_every_n_steps": COUNT,
    "trainer.accumulate_grad_batches": COUNT,
    "trainer.gradient_clip_val": Num(ge=0, nullable=True),
}


def _fail(key: str, value: Any, expected: str) -> PmmError:
    return PmmError(f"{key}={_show(value)}: expected {expected}")


def _pair(cfg: DictConfig, low_key: str, high_key: str, what: str) -> None:
    """``low_key`` <= ``high_key`` when both are set numbers."""
    low, high = _select(cfg, low_key), _select(cfg, high_key)
    if isinstance(low, (int, float)) and isinstance(high, (int, float)) and low > high:
        raise PmmError(f"{low_key}={_show(low)}, {high_key}={_show(high)}: expected {what}")


def _ordered_range(cfg: DictConfig, key: str) -> None:
    value = _select(cfg, key)
    if isinstance(value, list) and len(value) == 2 and value[0] > value[1]:
        raise _fail(key, value, "[low, high] with low <= high")


def _check_crf(cfg: DictConfig) -> None:
    node = _select(cfg, "crf")
    if not isinstance(node, dict):
        return
    from pmm.crf import CRFParams

    numeric = {"iterations": Num(integer=True, ge=1), "gauss_sxy": POSITIVE, "gauss_compat": NON_NEGATIVE,
               "bilateral_sxy": POSITIVE, "bilateral_srgb": POSITIVE, "bilateral_compat": NON_NEGATIVE}
    for name, params in node.items():
        if not isinstance(params, dict):
            continue
        key = f"crf.{name}"
        for field, rule in numeric.items():
            if field in params and not rule.ok(params[field]):
                raise _fail(f"{key}.{field}", params[field], rule.expected())
        CRFParams.from_config(params, key=key)  # unknown settings and ranges, one line naming the key
        backend = params.get("backend")
        if backend is None:
            continue
        if not isinstance(backend, str) or not backend:
            raise _fail(f"{key}.backend", backend, "a CRF backend name or a dotted class path")
        if "." not in backend:
            try:
                from pmm.crf import CRF_BACKENDS, _load_builtin_backends

                _load_builtin_backends()
            except ImportError:
                continue
            if CRF_BACKENDS and backend not in CRF_BACKENDS:
                raise _fail(f"{key}.backend", backend, f"one of {'|'.join(sorted(CRF_BACKENDS))} or a dotted class path")


# Checks that involve two keys, run after the per-key rules.
CROSS_CHECKS: tuple[Callable[[DictConfig], None], ...] = (
    lambda cfg: _ordered_range(cfg, "pseudo.alpha_range"),
    lambda cfg: _ordered_range(cfg, "data.scale_range"),
    lambda cfg: _pair(cfg, "eval.stride", "eval.window", "a stride <= the window (windows would leave gaps)"),
    lambda cfg: _pair(cfg, "cyclic.stride", "cyclic.window", "a stride <= the window (windows would leave gaps)"),
    lambda cfg: _pair(cfg, "cam.stride", "cam.window", "a stride <= the window (crops would leave gaps)"),
    lambda cfg: _pair(cfg, "eval.short_side", "eval.max_long", "short_side <= max_long"),
    lambda cfg: _pair(cfg, "cyclic.short_side", "cyclic.max_long", "short_side <= max_long"),
    lambda cfg: _pair(cfg, "seg.min_lr", "seg.lr", "min_lr <= lr (the poly schedule decays from lr to min_lr)"),
    _check_crf,
)


def validate_config(cfg: DictConfig, rules: dict | None = None, keys: Sequence[str] | None = None) -> None:
    """Check the ranges and types of the composed config's user settings; nothing else is touched.

    Args:
        cfg: the composed config.
        rules: key -> rule (default :data:`RULES`).
        keys: only these keys (default: all of ``rules``); the cross-key checks run only by default.

    Raises:
        PmmError: one line, ``<key>=<value>: expected <what>``, for the first bad setting.
    """
    rules = RULES if rules is None else rules
    for key in keys if keys is not None else rules:
        rule = rules[key]
        value = _select(cfg, key)
        if value is _ABSENT:
            continue
        if not rule.ok(value):
            raise _fail(key, value, rule.expected())
    if keys is None:
        for check in CROSS_CHECKS:
            check(cfg)
