"""``stage=eval seg_ckpt=PATH`` (and the end of ``stage=seg``): predict val, write PNGs, score them."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from pmm.checkpoints import read_checkpoint
from pmm.context import RunContext, barrier, global_rank, world_size
from pmm.errors import PmmError
from pmm.evaluation import score_mask_folder
from pmm.io import load_mask, write_json
from pmm.seg.cyclic import predict_split_to_folder
from pmm.seg.model import Segmenter
from pmm.seg.module import SegModule

log = logging.getLogger("pmm")


def load_seg_module(ctx: RunContext, path: str | Path) -> SegModule:
    """A trained segmenter from a checkpoint; the network is rebuilt from the config saved in it."""
    path = ctx.require_file(path, "seg_ckpt", "train one with stage=seg or point seg_ckpt at a segmenter checkpoint")
    checkpoint, net_config = read_checkpoint(path, "seg_ckpt")
    classes = len(checkpoint["hyper_parameters"].get("class_names") or ctx.class_names)
    if classes != ctx.num_classes:
        raise PmmError(f"seg_ckpt={path}: trained for {classes} classes but data.class_names has {ctx.num_classes}")
    module = SegModule(Segmenter(num_classes=classes, **net_config), optimizer=None, net_config=net_config,
                       class_names=list(ctx.class_names))
    module.load_state_dict(checkpoint["state_dict"], strict=True)
    return module


def print_table(report: dict) -> None:
    table = Table(title=f"val mIoU {report['miou']:.4f} ({report['num_images']} images of '{report['split']}')")
    table.add_column("class")
    for column in ("IoU", "precision", "recall"):
        table.add_column(column, justify="right")
    for name in report["class_names"]:
        cells = [report[key][name] for key in ("per_class_iou", "per_class_precision", "per_class_recall")]
        table.add_row(name, *("n/a" if v is None else f"{v:.4f}" for v in cells))
    Console(stderr=True).print(table)


def save_eval_figures(ctx: RunContext, folder: Path, report: dict) -> None:
    from pmm import viz

    names = list(ctx.class_names)
    viz.save_iou_bars(ctx.figures_dir / "val_iou.png", names, [report["per_class_iou"][n] for n in names],
                      title=f"val IoU per class (mIoU {report['miou']:.3f})")
    split = ctx.val_split
    rows = []
    for image_id in split.ids[: ctx.cfg.eval.figures]:
        image = split.load_image(image_id)
        rows.append([("image", image), ("prediction", viz.colorize_mask(load_mask(folder / f"{image_id}.png"))),
                     ("ground truth", viz.colorize_mask(split.load_mask(image_id)))])
    viz.save_panel(ctx.figures_dir / "val_predictions.png", rows, title="segmenter on val")
    rounds = ctx.read_metrics().get("pseudo_miou_rounds", [])
    metrics = ctx.read_metrics()
    labels, values = [], []
    if "cam_miou" in metrics:
        labels.append("CAM"), values.append(metrics["cam_miou"])
    for index, value in enumerate(rounds):
        labels.append(f"round {index}"), values.append(value)
    labels.append("val"), values.append(report["miou"])
    viz.save_rounds(ctx.figures_dir / "miou_by_stage.png", labels, values, title="mIoU through the pipeline")


def evaluate_module(ctx: RunContext, module: SegModule) -> dict:
    """Predict every val image (this rank's shard), then score the PNGs on rank 0."""
    cfg = ctx.cfg.eval
    split = ctx.val_split
    folder = ctx.run_dir / "predictions" / split.split
    rank, world = global_rank(), world_size()
    device = module.device
    predict_split_to_folder(
        module.net.to(device), split, split.ids[rank::world], folder, batch_size=cfg.batch_size, use_labels=False,
        progress=rank == 0, scales=tuple(cfg.scales), flip=cfg.flip, crf=cfg.crf, mode=cfg.mode,
        window=cfg.window, stride=cfg.stride, device=device,
    )
    barrier()  # every shard of predictions is written before rank 0 scores the folder
    if rank != 0:
        barrier()
        return {}
    report = score_mask_folder(split, folder, desc="scoring predictions")
    write_json(ctx.run_dir / "eval_report.json", report)
    print_table(report)
    save_eval_figures(ctx, folder, report)
    from pmm.stages.pseudo import log_mask_panel

    log_mask_panel(ctx, f"predictions/{split.split}", split.split, folder)
    result = {"val_miou": report["miou"], "val_per_class_iou": report["per_class_iou"]}
    ctx.record(**result)
    log.info("val mIoU (%d images, predictions in %s): %.4f", report["num_images"], folder, report["miou"])
    barrier()
    return result


def run(ctx: RunContext) -> dict:
    if not ctx.cfg.seg_ckpt:
        raise PmmError("stage=eval needs seg_ckpt=PATH (a checkpoint written by stage=seg, e.g. RUN/checkpoints/seg/last.ckpt)")
    module = load_seg_module(ctx, ctx.cfg.seg_ckpt)
    if torch.cuda.is_available() and ctx.cfg.trainer.accelerator in ("auto", "gpu", "cuda"):
        module = module.cuda()
    return evaluate_module(ctx, module.eval())
