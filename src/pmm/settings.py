"""The composed config as typed settings: one dataclass per config node, built and checked at start-up.

:meth:`Settings.from_config` (``pmm.run``) and :meth:`PredictSettings.from_config` (``pmm.predict``)
run before any work. Each field names its range with a small :class:`Check` (:func:`number`,
:func:`integer`, :func:`numbers`, :func:`choice`, :func:`flag`); a key absent from the config (or
``???``, or unresolvable here) keeps the field's default, so partial configs build. A bad value is
one :class:`PmmError` line naming the key, the value and what was expected::

    pseudo.alpha=-5: expected a number > 0 or auto

The defaults are those of ``conf/config.yaml`` (tests/test_settings.py keeps them equal);
:class:`MultiCropSettings` is the one home of the ``cam.multi_crop`` defaults. The stages still
read ``ctx.cfg``; the TTA nodes give their :class:`pmm.nets.tta.TTAConfig` (``.tta``) and the
``crf`` node is a name -> :class:`pmm.crf.CRFParams` mapping built by ``CRFParams.from_config``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any, ClassVar

from omegaconf import DictConfig, ListConfig, OmegaConf

from pmm.crf.base import CRFParams
from pmm.errors import PmmError
from pmm.nets.tta import TTAConfig

CROP_MULTIPLE = 32  # training crops go straight into the networks: SMP needs sizes divisible by 2**depth

_ABSENT = object()


def _show(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_show(item) for item in value) + "]"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _get(node: Any, name: str) -> Any:
    """``node[name]`` (a config node stays one), or ``_ABSENT`` when absent, ``???`` or unresolvable."""
    if isinstance(node, DictConfig):
        try:
            return OmegaConf.select(node, name, default=_ABSENT, throw_on_missing=True)
        except Exception:  # noqa: BLE001 - missing/unresolvable values are reported by the code that needs them
            return _ABSENT
    return node.get(name, _ABSENT) if isinstance(node, Mapping) else _ABSENT


def _plain(value: Any) -> Any:
    """A leaf value as plain Python (lists as tuples), or ``_ABSENT`` when it cannot be resolved here."""
    if isinstance(value, (ListConfig, DictConfig)):
        try:
            value = OmegaConf.to_container(value, resolve=True)
        except Exception:  # noqa: BLE001
            return _ABSENT
    return tuple(value) if isinstance(value, list) else value


def _fail(key: str, value: Any, expected: str) -> PmmError:
    return PmmError(f"{key}={_show(value)}: expected {expected}")


# ------------------------------------------------------------------------------------------- checks

@dataclass(frozen=True)
class Check:
    """What one setting accepts; :meth:`expected` is the wording of its error.

    ``kind``: number | integer | choice | flag | text (any non-empty string: a name or a path). ``words``: a choice's options, or the strings a
    number also accepts (``auto``). ``length``: a list of such values (0: any non-empty length).
    """

    kind: str = "number"
    gt: float | None = None
    ge: float | None = None
    lt: float | None = None
    le: float | None = None
    multiple_of: int | None = None
    words: tuple[str, ...] = ()
    nullable: bool = False
    length: int | None = None

    def expected(self) -> str:
        null = " or null" if self.nullable else ""
        if self.length is not None:
            count = f"a list of {self.length}" if self.length else "a non-empty list of"
            item = replace(self, length=None, nullable=False).expected()
            return f"{count} {item.replace('an integer', 'integers').replace('a number', 'numbers', 1)}{null}"
        if self.kind == "flag":
            return "true or false" + null
        if self.kind == "text":
            return "a non-empty string" + null
        if self.kind == "choice":
            return "one of " + "|".join(self.words) + ("|null" if self.nullable else "")
        bounds = [f"{op} {_show(v)}" for op, v in ((">", self.gt), (">=", self.ge), ("<", self.lt), ("<=", self.le))
                  if v is not None]
        if self.gt is not None and self.lt is not None:
            bounds = [f"in ({_show(self.gt)}, {_show(self.lt)})"]
        text = f"{'an integer' if self.kind == 'integer' else 'a number'} {' and '.join(bounds)}".strip()
        if self.multiple_of:
            text += f", a multiple of {self.multiple_of}"
        extras = list(self.words) + (["null"] if self.nullable else [])
        return text + (f" or {' or '.join(extras)}" if extras else "")

    def ok(self, value: Any) -> bool:
        if value is None:
            return self.nullable
        if self.length is not None:
            item = replace(self, length=None, nullable=False)
            return (isinstance(value, (list, tuple)) and len(value) > 0 and len(value) == (self.length or len(value))
                    and all(item.ok(v) for v in value))
        if self.kind == "flag":
            return isinstance(value, bool)
        if self.kind == "text":
            return isinstance(value, str) and bool(value.strip())
        if isinstance(value, str) or self.kind == "choice":
            return isinstance(value, str) and value in self.words
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return False
        return not ((self.kind == "integer" and not isinstance(value, int))
                    or (self.gt is not None and not value > self.gt) or (self.ge is not None and not value >= self.ge)
                    or (self.lt is not None and not value < self.lt) or (self.le is not None and not value <= self.le)
                    or (self.multiple_of and value % self.multiple_of))


def number(default: Any, **check: Any) -> Any:
    """A dataclass field holding a number (``integer=True``: an int) within the bounds of :class:`Check`."""
    kind = "integer" if check.pop("integer", False) else "number"
    return field(default=default, metadata={"check": Check(kind=kind, **check)})


def integer(default: Any, **check: Any) -> Any:
    return number(default, integer=True, **check)


def numbers(default: Any, length: int = 0, **check: Any) -> Any:
    """A list field (a tuple in the settings): ``length`` items (0: any, at least one), each checked."""
    return number(default, length=length, **check)


def choice(default: Any, *options: str, nullable: bool = False) -> Any:
    return field(default=default, metadata={"check": Check(kind="choice", words=options, nullable=nullable)})


def flag(default: bool | None, nullable: bool = False) -> Any:
    return field(default=default, metadata={"check": Check(kind="flag", nullable=nullable)})


def text(default: str | None, nullable: bool = False) -> Any:
    return field(default=default, metadata={"check": Check(kind="text", nullable=nullable)})


def node(cls: type) -> Any:
    """A nested config node: its own settings class, built from the node under the field's name."""
    return field(default_factory=cls, metadata={"build": cls.from_node})


class Node:
    """Base of the settings dataclasses: :meth:`from_node` checks each field present in the node."""

    @classmethod
    def from_node(cls, config: Any, key: str) -> "Node":
        """Build from the config node at dotted ``key``; a key that is absent keeps its default."""
        values = {}
        for f in fields(cls):
            if f.metadata.get("derived"):
                continue
            raw = _get(config, f.name)
            name = f"{key}.{f.name}" if key else f.name
            if "build" in f.metadata:
                if raw is not _ABSENT and raw is not None:
                    values[f.name] = f.metadata["build"](raw, name)
                continue
            value = _plain(raw)
            if value is _ABSENT:
                continue
            if not f.metadata["check"].ok(value):
                raise _fail(name, value, f.metadata["check"].expected())
            values[f.name] = value
        settings = cls(**values)
        settings.check_together(key)
        return settings

    def check_together(self, key: str) -> None:
        """Checks that involve two fields (after the per-field checks); ``key`` is the node's."""


def _ordered(key: str, value: tuple | None) -> None:
    if value is not None and value[0] > value[1]:
        raise _fail(key, value, "[low, high] with low <= high")


def _at_most(key: str, low: str, low_value: Any, high: str, high_value: Any, what: str) -> None:
    if low_value is not None and high_value is not None and low_value > high_value:
        raise PmmError(f"{key}.{low}={_show(low_value)}, {key}.{high}={_show(high_value)}: expected {what}")


# ----------------------------------------------------------------------------------------- the nodes

POSITIVE = {"gt": 0}
NON_NEGATIVE = {"ge": 0}
FRACTION = {"gt": 0, "lt": 1}       # thresholds
MOMENTUM = {"ge": 0, "lt": 1}
ENCODINGS = ("rgb", "edges", "rgb+edges")


@dataclass(frozen=True)
class GenerateSettings(Node):
    """``data.generate``: the synthetic dataset's generator."""

    seed: int = integer(0, ge=0)
    num_train: int = integer(600, ge=1)
    num_val: int = integer(150, ge=1)
    image_size: int = integer(160, gt=0)


@dataclass(frozen=True)
class DataSettings(Node):
    """``data`` (the loaders' settings; the dataset object checks its own paths and labels)."""

    scale_range: tuple[float, float] = numbers((0.7, 1.3), length=2, gt=0)
    batch_size: int = integer(16, ge=1)
    num_workers: int = integer(2, ge=0)
    labels: str = choice("masks", "masks", "xml", "auto")
    generate: GenerateSettings = node(GenerateSettings)

    def check_together(self, key: str) -> None:
        _ordered(f"{key}.scale_range", self.scale_range)


@dataclass(frozen=True)
class InputEncodingSettings(Node):
    """``input_encoding``: what both networks see."""

    mode: str = choice("edges", *ENCODINGS)
    edge_sigma: float = number(1.0, **NON_NEGATIVE)


@dataclass(frozen=True)
class CAMNetSettings(Node):
    """``cam_net``: the CAM network's numeric settings (``scale`` .. ``bias_weight_decay``: SEAM's)."""

    output_stride: int | None = integer(16, gt=0, nullable=True)
    dropout: float = number(0.0, **MOMENTUM)
    input: str = choice("edges", *ENCODINGS)
    edge_sigma: float = number(1.0, **NON_NEGATIVE)
    new_layer_lr_mult: float = number(1.0, **POSITIVE)
    scale: float = number(0.3, gt=0, le=1)
    top: float = number(0.2, gt=0, le=1)
    bias_lr_mult: float = number(1.0, **POSITIVE)
    new_weight_lr_mult: float = number(1.0, **POSITIVE)
    new_bias_lr_mult: float = number(1.0, **POSITIVE)
    bias_weight_decay: float | None = number(0.0, ge=0, nullable=True)
    head_weights: bool = flag(False)
    frozen_bn: bool | None = flag(None, nullable=True)


@dataclass(frozen=True)
class SegmenterSettings(Node):
    """``segmenter``: the segmentation network's numeric settings."""

    decoder_channels: int | None = integer(64, gt=0, nullable=True)
    output_stride: int | None = integer(None, gt=0, nullable=True)
    encoder_depth: int | None = integer(None, ge=1, le=5, nullable=True)
    edge_sigma: float = number(1.0, **NON_NEGATIVE)


@dataclass(frozen=True)
class OptimizerSettings(Node):
    """``cam.optimizer`` / ``seg.optimizer`` (the partial optimizer's numbers; momentum: SGD's)."""

    weight_decay: float = number(1.0e-4, **NON_NEGATIVE)
    momentum: float = number(0.0, **MOMENTUM)


@dataclass(frozen=True)
class TTASettings(Node):
    """The test-time augmentation keys of ``cam``, ``cyclic`` and ``eval`` (:class:`TTAConfig`'s)."""

    GAPS: ClassVar[str] = "windows"

    scales: tuple[float, ...] = numbers((1.0,), gt=0)
    flip: bool = flag(False)
    mode: str = choice("whole", "whole", "slide", "multi_crop")
    window: int = integer(512, gt=0)
    stride: int = integer(480, gt=0)
    short_side: int | None = integer(None, gt=0, nullable=True)
    max_long: int | None = integer(None, gt=0, nullable=True)

    @property
    def tta(self) -> TTAConfig:
        return TTAConfig(scales=tuple(float(s) for s in self.scales), flip=self.flip, mode=self.mode, window=self.window,
                         stride=self.stride, short_side=self.short_side, max_long=self.max_long)

    def check_together(self, key: str) -> None:
        _at_most(key, "stride", self.stride, "window", self.window, f"a stride <= the window ({self.GAPS} would leave gaps)")
        _at_most(key, "short_side", self.short_side, "max_long", self.max_long, "short_side <= max_long")


@dataclass(frozen=True)
class MultiCropSettings(Node):
    """``cam.multi_crop``: the second CAM round on crops (the one home of these defaults).

    ``lr`` / ``batch_size`` null: ``cam.lr`` / ``cam.batch_size``; the crops' side is the CAM training
    crop (``cam.crop_size``): :meth:`resolved` fills them in.
    ``min_object_share``: the authors' second labelling rule (null: off); ``heat``: crops centred
    on the first round's CAM heat (false: uniform, as the authors' code); ``sampler``: ``random``
    boxes or the authors' ``tiles``. ``rough_scales`` null: the first round's CAMs are inferred
    with the ``cam`` inference settings; ``rough_confidence`` null: rough masks are the CRF's
    arg-max, else a class only where its marginal exceeds it (255 elsewhere). ``net`` (a network
    node, not checked here) null: the round continues training the first round's network.
    """

    epochs: int = integer(20, ge=1)
    lr: float | None = number(None, gt=0, nullable=True)
    batch_size: int | None = integer(None, ge=1, nullable=True)
    global_batch_size: int | None = integer(None, ge=1, nullable=True)
    crop: int | None = field(default=None, metadata={"derived": True})  # not a key: cam.crop_size, resolved
    sampler: str = choice("random", "random", "tiles")
    area: tuple[float, float] = numbers((0.04, 1.0), length=2)
    aspect: tuple[float, float] = numbers((0.6, 1.667), length=2)
    min_share: float = number(0.1, gt=0, le=1)
    min_object_share: float | None = number(0.1, gt=0, le=1, nullable=True)
    rough_alpha: float = number(24.0, **POSITIVE)
    rough_scales: tuple[float, ...] | None = numbers(None, gt=0, nullable=True)
    rough_flip: bool = flag(True)
    rough_confidence: float | None = number(None, ge=0.5, lt=1, nullable=True)  # one label at most above it
    heat: bool = flag(True)
    jitter: tuple[float, float, float, float] | None = numbers((0.3, 0.3, 0.3, 0.1), length=4, ge=0, nullable=True)
    net: Any = field(default=None, metadata={"derived": True, "key": True})  # a network node: built by the stage

    @classmethod
    def from_node(cls, config: Any, key: str) -> "MultiCropSettings":
        known = [f.name for f in fields(cls) if not f.metadata.get("derived") or f.metadata.get("key")]
        unknown = sorted(set(config) - set(known)) if isinstance(config, Mapping) else []
        if unknown:
            raise PmmError(f"{key}.{unknown[0]}: unknown key; known: {', '.join(known)}")
        settings = super().from_node(config, key)
        net = _plain(_get(config, "net"))
        if net is _ABSENT or net is None:
            return settings
        if not isinstance(net, dict) or "_target_" not in net:
            raise _fail(f"{key}.net", net, "null or a network node with a _target_ (as cam_net)")
        return replace(settings, net=net)

    def check_together(self, key: str) -> None:
        for name in ("area", "aspect"):
            low, high = getattr(self, name)
            if not 0 < low <= high or (name == "area" and high > 1):
                raise PmmError(f"{key}.{name}={_show(getattr(self, name))}: expected 0 < low <= high"
                               + (" <= 1" if name == "area" else ""))

    def resolved(self, lr: float, crop: int, batch_size: int | None = None) -> "MultiCropSettings":
        """``lr`` / ``batch_size`` filled in where null (``cam.lr`` / ``cam.batch_size``) and ``crop`` set
        (the CAM training crop)."""
        batch = self.batch_size if self.batch_size is not None else batch_size
        done = replace(self, lr=float(lr if self.lr is None else self.lr), crop=int(crop),
                       batch_size=None if batch is None else int(batch))
        if done.crop < 8:
            raise PmmError(f"cam.multi_crop: epochs >= 1 and crop >= 8 expected, got {done.epochs} and {done.crop}")
        return done


@dataclass(frozen=True)
class CAMSettings(TTASettings):
    """``cam``: the CAM stage (training, inference with the TTA keys, the multi-crop round)."""

    GAPS: ClassVar[str] = "crops"

    max_epochs: int | None = integer(20, ge=1, nullable=True)
    lengthen_to_steps: int | None = integer(900, ge=0, nullable=True)
    check_val_every_n_epoch: int = integer(5, ge=1)
    batch_size: int = integer(16, ge=1)
    global_batch_size: int | None = integer(None, ge=1, nullable=True)
    crop_size: int | None = integer(None, gt=0, nullable=True, multiple_of=CROP_MULTIPLE)
    lr: float = number(0.006, **POSITIVE)
    poly_power: float = number(0.9, **NON_NEGATIVE)
    optimizer: OptimizerSettings = node(OptimizerSettings)
    scales: tuple[float, ...] = numbers((0.7, 0.85, 1.0, 1.15, 1.3), gt=0)
    flip: bool = flag(True)
    mode: str = choice("whole", "whole", "multi_crop")
    window: int = integer(448, gt=0)
    stride: int = integer(300, gt=0)
    infer_batch_size: int = integer(16, ge=1)
    thresholds: tuple[float, ...] | None = numbers(None, nullable=True, **FRACTION)
    figures: int = integer(8, ge=0)
    round: str = choice("standard", "standard", "multi_crop")
    multi_crop: MultiCropSettings = node(MultiCropSettings)


@dataclass(frozen=True)
class PseudoSettings(Node):
    """``pseudo``: the pseudo-mask stage."""

    method: str = choice("ppmg", "argmax", "crf", "ppmg")
    cov: bool = flag(True)
    cov_scale: float = number(0.3, **NON_NEGATIVE)
    cov_threshold: float = number(0.05, **MOMENTUM)
    alpha: float | str = number("search", gt=0, words=("auto", "search"))
    alpha_range: tuple[float, float] = numbers((1.0, 24.0), length=2, gt=0)
    alpha_candidates: tuple[float, ...] = numbers((0.5, 0.7, 1.0, 1.5, 2.0, 3.0, 5.0, 8.0, 12.0, 24.0), gt=0)
    alpha_search_images: int = integer(48, ge=1)
    bg_threshold: float | str = number("auto", words=("auto",), **FRACTION)
    workers: int = integer(2, ge=0)
    resume: bool = flag(False)
    figures: int = integer(8, ge=0)
    cams: str | None = text(None, nullable=True)  # a folder (pmm.stages.cam_import checks it)
    cam_key: str | None = text(None, nullable=True)
    normalize: str = choice("none", "none", "minmax")

    def check_together(self, key: str) -> None:
        _ordered(f"{key}.alpha_range", self.alpha_range)


@dataclass(frozen=True)
class LossSettings(Node):
    """``seg.loss``: PUF (:class:`pmm.losses.PUFLoss`'s mode, beta and k) and its warm-up."""

    mode: str = choice("none", "clamp", "pow", "ignore", "none")
    beta: float = number(0.5, **NON_NEGATIVE)
    k: float = number(0.5, **NON_NEGATIVE)
    warmup_epochs: int = integer(0, ge=0)


@dataclass(frozen=True)
class SegSettings(Node):
    """``seg``: the segmentation stage."""

    max_epochs: int | None = integer(None, ge=1, nullable=True)
    lengthen_to_steps: int | None = integer(360, ge=0, nullable=True)
    max_steps: int | None = integer(None, ge=1, nullable=True)
    batch_size: int = integer(16, ge=1)
    global_batch_size: int | None = integer(None, ge=1, nullable=True)
    crop_size: int | None = integer(None, gt=0, nullable=True, multiple_of=CROP_MULTIPLE)
    lr: float = number(0.002, **POSITIVE)
    head_lr_mult: float = number(1.0, **POSITIVE)
    poly_power: float = number(0.9, **NON_NEGATIVE)
    min_lr: float = number(0.0, **NON_NEGATIVE)
    optimizer: OptimizerSettings = node(OptimizerSettings)
    loss: LossSettings = node(LossSettings)
    aux_weight: float = number(0.4, **NON_NEGATIVE)
    # null: once a cyclic round (its last epoch), or every seg.val_check_interval steps when that is set
    check_val_every_n_epoch: int | None = integer(None, ge=1, nullable=True)
    val_check_interval: float | None = number(None, gt=0, nullable=True)
    val_pipeline: str = choice("single_scale", "single_scale", "eval")

    def check_together(self, key: str) -> None:
        _at_most(key, "min_lr", self.min_lr, "lr", self.lr, "min_lr <= lr (the poly schedule decays from lr to min_lr)")


@dataclass(frozen=True)
class CyclicSettings(TTASettings):
    """``cyclic``: Cyclic Pseudo-mask rounds during the segmentation stage."""

    rounds: int = integer(1, ge=0)
    every_n_epochs: int = integer(5, ge=1)
    every_n_steps: int | None = integer(None, ge=1, nullable=True)
    reinit: bool = flag(False)
    relabel_from: str = choice("last", "last", "best")
    puf_first_round_only: bool = flag(True)
    restrict_to_labels: bool = flag(True)
    flip: bool = flag(True)
    crf: bool = flag(True)
    batch_size: int = integer(16, ge=1)


@dataclass(frozen=True)
class EvalSettings(TTASettings):
    """``eval``: the evaluation stage (and pmm.predict's test-time settings)."""

    crf: bool = flag(False)
    protocols: tuple[str, ...] = field(default=("ss", "ms", "ms_crf"), metadata={
        "check": Check(kind="choice", words=("ss", "ms", "ms_crf"), length=0)})
    ms_scales: tuple[float, ...] = numbers((0.75, 1.0, 1.25), gt=0)
    export: str | None = choice(None, "voc_test", nullable=True)
    batch_size: int = integer(16, ge=1)
    figures: int = integer(8, ge=0)


@dataclass(frozen=True)
class TrainerSettings(Node):
    """``trainer``: the Lightning keys users set."""

    max_steps: int = integer(-1, ge=-1)
    log_every_n_steps: int = integer(10, ge=1)
    accumulate_grad_batches: int = integer(1, ge=1)
    gradient_clip_val: float | None = number(None, ge=0, nullable=True)


def crf_settings(config: Any, key: str = "crf") -> dict[str, CRFParams]:
    """The ``crf`` node: name -> :class:`CRFParams` (``crf.pseudo``, ``crf.seg``, ``crf.rough``), each checked."""
    result = {}
    for name in list(config) if isinstance(config, Mapping) else []:
        params = _plain(_get(config, name))
        if not isinstance(params, dict):
            continue
        where = f"{key}.{name}"
        result[name] = CRFParams.from_config(params, key=where)  # its range checks and unknown keys, one line each
        _check_backend(f"{where}.backend", params.get("backend"))
    return result


def _check_backend(key: str, backend: Any) -> None:
    if backend is None:
        return
    if not isinstance(backend, str) or not backend:
        raise _fail(key, backend, "a CRF backend name or a dotted class path")
    if "." in backend:
        return
    try:
        from pmm.crf import CRF_BACKENDS, _load_builtin_backends

        _load_builtin_backends()
    except ImportError:
        return
    if CRF_BACKENDS and backend not in CRF_BACKENDS:
        raise _fail(key, backend, f"one of {'|'.join(sorted(CRF_BACKENDS))} or a dotted class path")
    if backend == "pydensecrf":  # an optional extra: say so now, not when the first CRF runs
        from pmm.crf.pydensecrf_backend import check_available

        check_available(key)


def _default_crf() -> dict[str, CRFParams]:
    from pmm.crf.base import SEG_CRF

    return {"pseudo": CRFParams(), "seg": SEG_CRF, "rough": CRFParams(gauss_compat=3.0)}


@dataclass(frozen=True)
class Settings(Node):
    """The whole config, one typed node per config node."""

    seed: int = integer(0, ge=0, lt=2**32)
    data: DataSettings = node(DataSettings)
    input_encoding: InputEncodingSettings = node(InputEncodingSettings)  # before the networks: they follow it
    cam_net: CAMNetSettings = node(CAMNetSettings)
    segmenter: SegmenterSettings = node(SegmenterSettings)
    cam: CAMSettings = node(CAMSettings)
    pseudo: PseudoSettings = node(PseudoSettings)
    seg: SegSettings = node(SegSettings)
    cyclic: CyclicSettings = node(CyclicSettings)
    eval: EvalSettings = node(EvalSettings)
    trainer: TrainerSettings = node(TrainerSettings)
    crf: dict[str, CRFParams] = field(default_factory=_default_crf, metadata={"build": crf_settings})

    @classmethod
    def from_config(cls, cfg: Any) -> "Settings":
        """Build and check every node of the composed config; raises one PmmError line for the first bad setting."""
        return cls.from_node(cfg, "")


@dataclass(frozen=True)
class PredictSettings(Node):
    """``pmm.predict``'s own top-level keys (its ``eval`` and ``crf`` nodes are :class:`Settings`')."""

    num_workers: int = integer(2, ge=0)
    overlay_alpha: float = number(0.5, ge=0, le=1)
    max_long: int | None = integer(2048, ge=32, nullable=True)

    @classmethod
    def from_config(cls, cfg: Any) -> "PredictSettings":
        return cls.from_node(cfg, "")


def validate_config(cfg: Any) -> Settings:
    """Check the ranges and types of the composed config's settings (:meth:`Settings.from_config`).

    Raises:
        PmmError: one line, ``<key>=<value>: expected <what>``, for the first bad setting.
    """
    return Settings.from_config(cfg)
