"""Predicting and scoring the val split with a segmenter: the end of ``stage=seg`` and all of ``stage=eval``.

A split without ground-truth masks (the VOC test set: ``data.val_split=test``) is predicted and
not scored (``val_scored: false`` in metrics.json). One where only some ids lack a mask is scored
on the others: metrics.json says how many were scored (``val_num_scored``) and which were not
(``val_unscored_ids``). ``eval.export=voc_test`` also packs the predictions for the VOC test
server (:mod:`pmm.scoring.export`).
"""


from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.callbacks import BasePredictionWriter
from rich.console import Console
from rich.table import Table

from pmm.runtime.context import RunContext, shown_ids
from pmm.crf import CRFParams
from pmm.data.datasets import InferenceDataset, list_collate
from pmm.runtime.loaders import loader
from pmm.data.voc import VOCSplit
from pmm.runtime.distributed import run_sharded
from pmm.scoring.masks import score_mask_folder
from pmm.io import load_mask, save_mask, write_json
from pmm.seg.inference import segment_images
from pmm.seg.module import SegModule
from pmm.runtime.tracking import log_mask_panel
from pmm.runtime.trainer import build_trainer
from pmm.nets.tta import TTAConfig

log = logging.getLogger("pmm")


class SegPredictor(pl.LightningModule):
    """Wraps a segmenter for ``trainer.predict``: TTA + optional CRF label maps of a batch of whole images.

    Args:
        net: the segmenter.
        tta: how each image is predicted.
        crf: ``crf.seg`` settings, or None.
        use_labels: restrict each prediction to background + the image's labels (training images).
    """

    def __init__(self, net, tta: TTAConfig, crf: CRFParams | None, use_labels: bool = False, batch_size: int = 16):
        super().__init__()
        self.net, self.tta, self.crf, self.use_labels, self.batch_size = net, tta, crf, use_labels, batch_size

    def predict_step(self, batch: list[dict], batch_idx: int) -> list[dict]:
        images = [item["image"].cpu().numpy() for item in batch]
        labels = [item["labels"].tolist() for item in batch] if self.use_labels else None
        masks = segment_images(self.net, images, labels, tta=self.tta, crf=self.crf, batch_size=self.batch_size,
                               device=self.device)
        return [{"id": item["id"], "mask": mask} for item, mask in zip(batch, masks)]


class MaskWriter(BasePredictionWriter):
    """Writes each predicted label map to ``<dir>/<id>.png`` as its batch is done (every rank)."""

    def __init__(self, output_dir: Path) -> None:
        super().__init__(write_interval="batch")
        self.output_dir = Path(output_dir)

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx=0):
        for item in prediction:
            save_mask(self.output_dir / f"{item['id']}.png", item["mask"])


def eval_tta(ctx: RunContext) -> TTAConfig:
    return TTAConfig.from_config(ctx.cfg.eval)


def predict_split(ctx: RunContext, net, split, folder: Path, tta: TTAConfig, crf: CRFParams | None,
                  use_labels: bool = False, batch_size: int = 16) -> Path:
    """Label maps of every image of ``split`` into ``folder`` through ``trainer.predict`` (sharded by rank)."""
    trainer = build_trainer(ctx, "predict", 1, callbacks=[MaskWriter(folder)], with_logger=False)
    dataset = InferenceDataset(split)
    was_training = net.training
    net.eval()
    try:
        trainer.predict(SegPredictor(net, tta, crf, use_labels, batch_size),
                        loader(dataset, batch_size, ctx.cfg.data.num_workers, collate_fn=list_collate),
                        return_predictions=False)
    finally:
        net.train(was_training)
    trainer.strategy.barrier()
    return folder


def print_table(report: dict) -> None:
    table = Table(title=f"val mIoU {report['miou']:.4f} ({report['num_images']} images of '{report['split']}')")
    table.add_column("class")
    for column in ("IoU", "precision", "recall"):
        table.add_column(column, justify="right")
    for name in report["class_names"]:
        cells = [report[key][name] for key in ("per_class_iou", "per_class_precision", "per_class_recall")]
        table.add_row(name, *("n/a" if v is None else f"{v:.4f}" for v in cells))
    Console(stderr=True).print(table)


def save_eval_figures(ctx: RunContext, folder: Path, report: dict, split: VOCSplit | None = None) -> None:
    from pmm import viz

    names = list(ctx.class_names)
    viz.save_iou_bars(ctx.figures_dir / "val_iou.png", names, [report["per_class_iou"][n] for n in names],
                      title=f"val IoU per class (mIoU {report['miou']:.3f})")
    split = split if split is not None else ctx.val_split
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
    """Predict every val image (``eval`` TTA, ``crf.seg``), then score the PNGs on rank 0.

    A split without ground-truth masks is not scored (``val_scored: false``); one with some is
    scored on the ids that have one. ``eval.export`` packs the predictions for an evaluation server.
    """
    from pmm.scoring.export import check_export, run_export

    cfg = ctx.cfg.eval
    export = check_export(cfg.get("export"), module.net.num_classes)
    split = ctx.eval_split
    folder = ctx.predictions_dir(split.split)
    crf = CRFParams.from_config(ctx.cfg.crf.seg, "crf.seg") if cfg.crf else None
    predict_split(ctx, module.net, split, folder, eval_tta(ctx), crf, use_labels=False, batch_size=cfg.batch_size)

    def finish() -> dict:
        exported = run_export(export, folder, split.ids, ctx.run_dir, split.image_sizes)
        if exported:
            ctx.record(**exported)
        if split.has_all_masks:
            return {**score(split), **exported}
        unscored = [i for i in split.ids if not split.has_mask(i)]
        if len(unscored) < len(split):
            scored = dataclasses.replace(split, ids=tuple(i for i in split.ids if split.has_mask(i)))
            log.warning("split '%s': %d of its %d images have no ground-truth mask (%s): scored on the other %d",
                        split.split, len(unscored), len(split), shown_ids(unscored), len(scored))
            return {**score(scored, unscored), **exported}
        ctx.record(val_scored=False)
        log.info("split '%s' has no ground-truth masks for its %d images: not scored (predictions in %s)",
                 split.split, len(split), folder)
        return {"val_scored": False, **exported}

    def score(scored: VOCSplit, unscored: list[str] = ()) -> dict:
        report = score_mask_folder(scored, folder, desc="scoring predictions")
        report["unscored_ids"] = list(unscored)
        write_json(ctx.report_path("eval"), report)
        print_table(report)
        save_eval_figures(ctx, folder, report, scored)
        log_mask_panel(ctx, f"predictions/{split.split}", split.split, folder, split=scored)
        result = {"val_miou": report["miou"], "val_per_class_iou": report["per_class_iou"], "val_scored": True,
                  "val_num_scored": len(scored), "val_unscored_ids": list(unscored)}
        ctx.record(**result)
        log.info("val mIoU (%d images, predictions in %s): %.4f", report["num_images"], folder, report["miou"])
        return result

    return run_sharded([], lambda ids: None, finish) or {}
