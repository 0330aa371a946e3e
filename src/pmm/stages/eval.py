"""``stage=eval seg_ckpt=PATH``: a trained segmenter predicts and scores the val split
(:func:`pmm.stages.evaluation.evaluate_module`, also the end of ``stage=seg``)."""

from __future__ import annotations

from pathlib import Path

from pmm.errors import PmmError
from pmm.runtime.context import RunContext
from pmm.seg.model import load_segmenter
from pmm.seg.module import SegModule
from pmm.stages.evaluation import evaluate_module


def load_seg_module(ctx: RunContext, path: str | Path) -> SegModule:
    """A trained segmenter from a checkpoint; the network is rebuilt from the spec saved in it."""
    net, names, spec = load_segmenter(path, ctx.class_names)
    return SegModule(net, optimizer=None, net_config=spec, class_names=names)


def run(ctx: RunContext) -> dict:
    if not ctx.cfg.seg_ckpt:
        raise PmmError("stage=eval needs seg_ckpt=PATH (a checkpoint written by stage=seg, e.g. RUN/checkpoints/seg/last.ckpt)")
    return evaluate_module(ctx, load_seg_module(ctx, ctx.cfg.seg_ckpt))
