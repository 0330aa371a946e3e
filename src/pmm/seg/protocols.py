"""The evaluation protocols of WSSS papers, computed side by side from shared forward passes.

Papers report a segmenter's val mIoU under one of three protocols, and a figure is only comparable
with one made under the same protocol:

- ``ss``: single scale, the image (after the test rescale ``eval.short_side`` / ``max_long``) at
  scale 1, no flip, arg-max;
- ``ms``: multi-scale + flip, the softmaxes of ``eval.ms_scales`` x {image, mirror} averaged;
- ``ms_crf``: ``ms`` refined by the dense CRF (``crf.seg``, DeepLab's settings).

The single-scale prediction is one of the multi-scale passes (scale 1, not flipped) and the CRF
starts from the multi-scale softmax, so all three cost one multi-scale pass plus the CRF. The
headline ``val_miou`` is the protocol ``eval.scales`` / ``flip`` / ``crf`` describe (the preset's);
when they describe none of the three (``custom``) it gets its own pass. All of this is plain
config logic; :func:`pmm.seg.inference.segment_images_protocols` predicts, :mod:`pmm.stages.evaluation` and :class:`pmm.seg.module.SegModule` run it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from pmm.crf import CRFParams
from pmm.nets.tta import TTAConfig, has_single_variant

PROTOCOLS = ("ss", "ms", "ms_crf")
PAPER_MS_SCALES = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)  # the paper's (and mmseg's VOC aug_test ratios)
DEFAULT_MS_SCALES = (0.75, 1.0, 1.25)  # eval.ms_scales' default (from scratch: the training scale range)
CUSTOM = "custom"
DESCRIPTIONS = {"ss": "single scale", "ms": "multi-scale + flip", "ms_crf": "multi-scale + flip + CRF",
                CUSTOM: "eval.scales / flip / crf"}


@dataclass(frozen=True)
class ProtocolPlan:
    """What one evaluation computes.

    Attributes:
        headline: the protocol of ``val_miou``: one of :data:`PROTOCOLS` or ``custom``.
        protocols: the protocols reported beside it (the headline among them when it is one).
        ss_tta, ms_tta: the passes of the ``ss`` and ``ms`` protocols.
        headline_tta, headline_crf: the headline's own settings (the ``eval`` node).
        crf: ``crf.seg``, for ``ms_crf`` (and a custom headline with ``eval.crf``).
    """

    headline: str
    protocols: tuple[str, ...]
    ss_tta: TTAConfig
    ms_tta: TTAConfig
    headline_tta: TTAConfig
    headline_crf: bool
    crf: CRFParams | None

    @property
    def wanted(self) -> tuple[str, ...]:
        """Every protocol computed: the reported ones, plus a custom headline."""
        return self.protocols + ((CUSTOM,) if self.headline == CUSTOM else ())

    @property
    def needs_ms(self) -> bool:
        return any(p in self.wanted for p in ("ms", "ms_crf"))

    @property
    def shares_ss(self) -> bool:
        """The ``ss`` prediction is one of the ``ms`` passes (no pass of its own)."""
        return self.needs_ms and has_single_variant(self.ms_tta)

    def describe(self, name: str) -> dict:
        """metrics.json's description of a protocol: its scales, flip and CRF."""
        tta = {"ss": self.ss_tta, "ms": self.ms_tta, "ms_crf": self.ms_tta, CUSTOM: self.headline_tta}[name]
        crf = name == "ms_crf" or (name == CUSTOM and self.headline_crf)
        return {"what": DESCRIPTIONS[name], "scales": list(tta.scales), "flip": tta.flip, "mode": tta.mode,
                "crf": crf}


def headline_protocol(tta: TTAConfig, crf: bool, ms_scales: Sequence[float]) -> str:
    """The protocol the ``eval`` node describes: ``ss``, ``ms``, ``ms_crf`` or ``custom``."""
    scales = tuple(float(s) for s in tta.scales)
    if scales == (1.0,) and not tta.flip and not crf:
        return "ss"
    if tta.flip and scales == tuple(float(s) for s in ms_scales):
        return "ms_crf" if crf else "ms"
    return CUSTOM


def plan_protocols(tta: TTAConfig, crf_enabled: bool, crf: CRFParams | None, ms_scales: Sequence[float],
                   protocols: Sequence[str]) -> ProtocolPlan:
    """The plan of an evaluation with the ``eval`` node's ``tta`` / ``crf`` and the reported ``protocols``.

    The ``ss`` and ``ms`` passes keep the eval node's mode, window and test rescale: only the scales
    and the flip differ.
    """
    unknown = [p for p in protocols if p not in PROTOCOLS]
    if unknown:
        raise ValueError(f"eval.protocols: unknown protocol(s) {unknown}; choose from {', '.join(PROTOCOLS)}")
    reported = tuple(dict.fromkeys(protocols))
    headline = headline_protocol(tta, crf_enabled, ms_scales)
    if headline != CUSTOM and headline not in reported:
        reported = (headline,) + reported
    return ProtocolPlan(
        headline=headline,
        protocols=reported,
        ss_tta=replace(tta, scales=(1.0,), flip=False),
        ms_tta=replace(tta, scales=tuple(float(s) for s in ms_scales), flip=True),
        headline_tta=tta,
        headline_crf=bool(crf_enabled),
        crf=crf,
    )
