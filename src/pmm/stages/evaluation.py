"""Predicting and scoring the val split with a segmenter: the end of ``stage=seg`` and all of ``stage=eval``.

The val split is predicted once under every evaluation protocol of ``eval.protocols``
(:mod:`pmm.seg.protocols`: single scale, multi-scale + flip, multi-scale + flip + CRF) from shared
forward passes; the headline ``val_miou`` is the protocol the ``eval`` node describes
(``val_protocol``), its label maps in ``predictions/<split>/``, the others' in
``predictions/<split>_<protocol>/``, and every protocol's mIoU in metrics.json (``val_miou_ss``,
``val_miou_ms``, ``val_miou_ms_crf``).

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

import numpy as np
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
from pmm.errors import PmmError
from pmm.seg.inference import segment_images, segment_images_protocols
from pmm.seg.protocols import DEFAULT_MS_SCALES, PROTOCOLS, ProtocolPlan, plan_protocols
from pmm.seg.module import SegModule
from pmm.runtime.tracking import log_mask_panel
from pmm.runtime.trainer import build_trainer, inference_callbacks
from pmm.nets.tta import TTAConfig

log = logging.getLogger("pmm")


class SegPredictor(pl.LightningModule):
    """Wraps a segmenter for ``trainer.predict``: label maps of a batch of whole images.

    Args:
        net: the segmenter.
        tta: how each image is predicted.
        crf: ``crf.seg`` settings, or None.
        use_labels: restrict each prediction to background + the image's labels (training images).
        plan: predict under every protocol of this :class:`pmm.seg.protocols.ProtocolPlan` instead
            (``tta`` / ``crf`` are then unused); each item's ``masks`` maps a protocol to its label map.
    """

    def __init__(self, net, tta: TTAConfig, crf: CRFParams | None, use_labels: bool = False, batch_size: int = 16,
                 plan: ProtocolPlan | None = None):
        super().__init__()
        self.net, self.tta, self.crf, self.use_labels, self.batch_size = net, tta, crf, use_labels, batch_size
        self.plan = plan

    def predict_step(self, batch: list[dict], batch_idx: int) -> list[dict]:
        images = [item["image"].cpu().numpy() for item in batch]
        if self.plan is not None:
            by_image = segment_images_protocols(self.net, images, self.plan, batch_size=self.batch_size,
                                                device=self.device)
            return [{"id": item["id"], "masks": masks} for item, masks in zip(batch, by_image)]
        labels = [item["labels"].tolist() for item in batch] if self.use_labels else None
        masks = segment_images(self.net, images, labels, tta=self.tta, crf=self.crf, batch_size=self.batch_size,
                               device=self.device)
        return [{"id": item["id"], "mask": mask} for item, mask in zip(batch, masks)]


class MaskWriter(BasePredictionWriter):
    """Writes each predicted label map to ``<dir>/<id>.png`` as its batch is done (every rank).

    With ``folders`` (protocol -> folder), an item's ``masks`` go to their protocol's folder.
    """

    def __init__(self, output_dir: Path, folders: dict[str, Path] | None = None) -> None:
        super().__init__(write_interval="batch")
        self.output_dir = Path(output_dir)
        self.folders = folders or {}

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx=0):
        for item in prediction:
            if "masks" in item:
                for name, mask in item["masks"].items():
                    save_mask(self.folders[name] / f"{item['id']}.png", mask)
            else:
                save_mask(self.output_dir / f"{item['id']}.png", item["mask"])


def eval_tta(ctx: RunContext) -> TTAConfig:
    return TTAConfig.from_config(ctx.cfg.eval)


def eval_plan(ctx: RunContext) -> ProtocolPlan:
    """The protocols ``stage=eval`` computes (``eval.protocols``, ``eval.ms_scales``) and its headline."""
    cfg = ctx.cfg.eval
    crf = CRFParams.from_config(ctx.cfg.crf.seg, "crf.seg")
    try:
        return plan_protocols(eval_tta(ctx), bool(cfg.crf), crf, cfg.get("ms_scales", DEFAULT_MS_SCALES),
                              list(cfg.get("protocols", PROTOCOLS)))
    except ValueError as error:
        raise PmmError(str(error)) from None


def protocol_folders(plan: ProtocolPlan, folder: Path) -> dict[str, Path]:
    """protocol -> its predictions folder: the headline's is ``folder``, another's ``<folder>_<protocol>``."""
    return {name: folder if name == plan.headline else folder.with_name(f"{folder.name}_{name}")
            for name in plan.wanted}


def predict_split(ctx: RunContext, net, split, folder: Path, tta: TTAConfig, crf: CRFParams | None,
                  use_labels: bool = False, batch_size: int = 16, plan: ProtocolPlan | None = None) -> Path:
    """Label maps of every image of ``split`` into ``folder`` through ``trainer.predict`` (sharded by rank).

    With ``plan``, every protocol's maps go to :func:`protocol_folders` of ``folder``.
    """
    folders = protocol_folders(plan, folder) if plan is not None else None
    trainer = build_trainer(ctx, "predict", 1, callbacks=[MaskWriter(folder, folders), *inference_callbacks(ctx.cfg, "seg")],
                            with_logger=False)
    dataset = InferenceDataset(split)
    was_training = net.training
    net.eval()
    try:
        trainer.predict(SegPredictor(net, tta, crf, use_labels, batch_size, plan=plan),
                        loader(dataset, batch_size, ctx.cfg.data.num_workers, collate_fn=list_collate),
                        return_predictions=False)
    finally:
        net.train(was_training)
    trainer.strategy.barrier()
    return folder


def print_table(report: dict) -> None:
    """Per-class IoU of every protocol side by side (the headline's precision and recall too), then the mIoUs."""
    protocols = report.get("protocols") or {}
    headline = report.get("protocol")
    names = list(protocols) or [headline]
    title = f"val mIoU {report['miou']:.4f} ({report['num_images']} images of '{report['split']}'"
    title += f", headline protocol: {headline})" if headline else ")"
    table = Table(title=title)
    table.add_column("class")
    for name in names:
        table.add_column(f"IoU {name}{' *' if name == headline else ''}", justify="right")
    for column in ("precision", "recall"):
        table.add_column(column, justify="right")

    def cell(value) -> str:
        return "n/a" if value is None else f"{value:.4f}"

    for cls in report["class_names"]:
        ious = [(protocols[name]["per_class_iou"] if name in protocols else report["per_class_iou"])[cls]
                for name in names]
        table.add_row(cls, *(cell(v) for v in ious),
                      *(cell(report[key][cls]) for key in ("per_class_precision", "per_class_recall")))
    table.add_section()
    table.add_row("mIoU", *(cell(protocols[name]["miou"] if name in protocols else report["miou"]) for name in names),
                  "", "")
    Console(stderr=True).print(table)


def save_prediction_panel(ctx: RunContext, split: VOCSplit, folders: dict[str, Path]) -> None:
    """``figures/val_predictions.png``: image, one column per protocol, and the ground truth where there is one."""
    from pmm import viz

    rows = []
    for image_id in split.ids[: ctx.cfg.eval.figures]:
        row = [("image", split.load_image(image_id))]
        row += [(f"prediction ({name})" if len(folders) > 1 else "prediction",
                 viz.colorize_mask(load_mask(path / f"{image_id}.png"))) for name, path in folders.items()]
        if split.has_mask(image_id):
            row.append(("ground truth", viz.colorize_mask(split.load_mask(image_id))))
        rows.append(row)
    if rows:
        width = max(len(row) for row in rows)  # a panel's rows are equally long: blank where a mask is missing
        rows = [row + [("", np.full_like(row[0][1], 255))] * (width - len(row)) for row in rows]
        viz.save_panel(ctx.figures_dir / "val_predictions.png", rows, title="segmenter on val")


def save_eval_figures(ctx: RunContext, folder: Path, report: dict, split: VOCSplit | None = None,
                      folders: dict[str, Path] | None = None) -> None:
    """The per-class IoU bars, the prediction panel (one column per protocol) and mIoU through the pipeline."""
    from pmm import viz

    names = list(ctx.class_names)
    viz.save_iou_bars(ctx.figures_dir / "val_iou.png", names, [report["per_class_iou"][n] for n in names],
                      title=f"val IoU per class (mIoU {report['miou']:.3f}, {report.get('protocol') or 'eval'})")
    save_prediction_panel(ctx, split if split is not None else ctx.val_split, folders or {"prediction": folder})
    metrics = ctx.read_metrics()
    rounds = metrics.get("pseudo_miou_rounds", [])
    labels, values = [], []
    if "cam_miou" in metrics:
        labels.append("CAM"), values.append(metrics["cam_miou"])
    for index, value in enumerate(rounds):
        labels.append(f"round {index}"), values.append(value)
    labels.append("val"), values.append(report["miou"])
    viz.save_rounds(ctx.figures_dir / "miou_by_stage.png", labels, values, title="mIoU through the pipeline")


def evaluate_module(ctx: RunContext, module: SegModule) -> dict:
    """Predict every val image under each protocol of ``eval.protocols`` (shared passes), score on rank 0.

    A split without ground-truth masks is not scored (``val_scored: false``); one with some is
    scored on the ids that have one. ``eval.export`` packs the headline's predictions for an
    evaluation server.
    """
    from pmm.scoring.export import check_export, run_export

    cfg = ctx.cfg.eval
    export = check_export(cfg.get("export"), module.net.num_classes)
    split = ctx.eval_split
    folder = ctx.predictions_dir(split.split)
    plan = eval_plan(ctx)
    folders = protocol_folders(plan, folder)
    log.info("evaluation protocols: %s (headline: %s)", ", ".join(
        f"{name} {plan.describe(name)['scales']}{' flip' if plan.describe(name)['flip'] else ''}"
        f"{' crf' if plan.describe(name)['crf'] else ''}" for name in plan.wanted), plan.headline)
    predict_split(ctx, module.net, split, folder, plan.headline_tta, None, use_labels=False,
                  batch_size=cfg.batch_size, plan=plan)

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
        save_prediction_panel(ctx, split, folders)
        ctx.record(val_scored=False, val_protocol=plan.headline)
        log.info("split '%s' has no ground-truth masks for its %d images: not scored (predictions in %s)",
                 split.split, len(split), folder)
        return {"val_scored": False, "val_protocol": plan.headline, **exported}

    def score(scored: VOCSplit, unscored: list[str] = ()) -> dict:
        reports = {name: score_mask_folder(scored, path, desc=f"scoring predictions ({name})")
                   for name, path in folders.items()}
        report = dict(reports[plan.headline])
        report["unscored_ids"] = list(unscored)
        report["protocol"] = plan.headline
        report["protocols"] = {name: {**plan.describe(name), "miou": r["miou"], "per_class_iou": r["per_class_iou"],
                                      "folder": str(folders[name])} for name, r in reports.items()}
        write_json(ctx.report_path("eval"), report)
        print_table(report)
        save_eval_figures(ctx, folder, report, scored, folders)
        log_mask_panel(ctx, f"predictions/{split.split}", split.split, folder, split=scored)
        result = {"val_miou": report["miou"], "val_per_class_iou": report["per_class_iou"], "val_scored": True,
                  "val_num_scored": len(scored), "val_unscored_ids": list(unscored), "val_protocol": plan.headline,
                  **{f"val_miou_{name}": r["miou"] for name, r in reports.items() if name != "custom"},
                  "val_protocols": {name: {**plan.describe(name), "miou": r["miou"]} for name, r in reports.items()}}
        ctx.record(**result)
        log.info("val mIoU (%d images, predictions in %s): %.4f [%s]; %s", report["num_images"], folder,
                 report["miou"], plan.headline,
                 ", ".join(f"{name} {r['miou']:.4f}" for name, r in reports.items()))
        return result

    return run_sharded([], lambda ids: None, finish) or {}
