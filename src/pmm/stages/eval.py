"""``stage=eval seg_ckpt=PATH`` (and the end of ``stage=seg``): predict val, write PNGs, score them.

A split without ground-truth masks (the VOC test set: ``data.val_split=test``) is predicted and
not scored (``val_scored: false`` in metrics.json); ``eval.export=voc_test`` also packs the
predictions for the VOC test server (:mod:`pmm.export`).
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.callbacks import BasePredictionWriter
from rich.console import Console
from rich.table import Table

from pmm.checkpoints import load_network
from pmm.context import RunContext
from pmm.crf import CRFParams
from pmm.data.datasets import InferenceDataset, list_collate
from pmm.data.voc import VOCSplit
from pmm.distributed import run_sharded
from pmm.errors import PmmError
from pmm.evaluation import score_mask_folder
from pmm.io import load_mask, save_mask, write_json
from pmm.seg.cyclic import segment_images
from pmm.seg.module import SegModule
from pmm.stages.common import build_trainer, loader
from pmm.tta import TTAConfig

log = logging.getLogger("pmm")


def load_seg_module(ctx: RunContext, path: str | Path) -> SegModule:
    """A trained segmenter from a checkpoint; the network is rebuilt from the spec saved in it."""
    net, spec, checkpoint = load_network(path, "seg_ckpt", "seg")
    names = checkpoint["hyper_parameters"].get("class_names") or list(ctx.class_names)
    if len(names) != ctx.num_classes:
        raise PmmError(f"seg_ckpt={path}: trained for {len(names)} classes but data.class_names has {ctx.num_classes}; "
                       "use the checkpoint of the same dataset")
    return SegModule(net, optimizer=None, net_config=spec, class_names=list(names))


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


def _limited(dataset, ids: tuple[str, ...]) -> tuple[str, ...]:
    """The ids the dataset keeps (``limit_images``: the first N of every split)."""
    limit = getattr(dataset, "limit_images", None)
    return ids[: int(limit)] if limit else ids


def ids_without_masks(dataset, name: str) -> list[str]:
    """The ids of split ``name`` whose ground-truth mask file is absent (a cheap look before indexing)."""
    from pmm.data.voc import _read_ids

    list_dir = "ImageSets/Segmentation"
    ids = _limited(dataset, _read_ids(dataset.root / list_dir / f"{name}.txt", dataset.root, name, list_dir))
    mask_dir = dataset.root / dataset.mask_dir
    return [image_id for image_id in ids if not (mask_dir / f"{image_id}.png").is_file()]


def _split_without_masks(dataset, name: str) -> VOCSplit:
    """Split ``name`` with masks optional whatever ``data.labels`` says (inference needs no image labels).

    With XML labels this is ``dataset.split(name, require_masks=False)``. With mask labels an id
    without a mask has no labels; every listed image is still decoded and checked, and masks that
    exist are checked as usual.
    """
    if dataset.label_source == "xml":
        return dataset.split(name, require_masks=False)
    from pmm.data.voc import _check_item, _Layout, _problems_message, _read_ids

    list_dir = "ImageSets/Segmentation"
    list_path = dataset.root / list_dir / f"{name}.txt"
    ids = _limited(dataset, _read_ids(list_path, dataset.root, name, list_dir))
    layout = _Layout(dataset.root, dataset.image_dir, dataset.mask_dir, "Annotations", tuple(dataset.class_names),
                     "masks", False, list_path)
    entries, problems = {}, []
    for image_id in ids:
        entry, found = _check_item(layout, image_id)
        problems.extend(found)
        if entry is not None:
            entries[image_id] = entry
    if problems:
        raise PmmError(_problems_message(problems, layout, name, len(ids), None))
    return VOCSplit(dataset.root, name, ids, tuple(dataset.class_names), dataset.image_dir, dataset.mask_dir,
                    image_labels={i: tuple(entries[i][1]) for i in ids},
                    image_sizes={i: tuple(entries[i][2]) for i in ids},
                    missing_masks=frozenset(i for i in ids if not entries[i][3]), label_source="masks")


def eval_split(ctx: RunContext) -> VOCSplit:
    """``data.val_split`` for evaluation: with masks required when they are all there, optional otherwise.

    A split whose ids lack ground-truth masks (the VOC test set) is predicted but not scored.
    """
    name = ctx.cfg.data.val_split
    dataset = ctx.dataset
    splits = getattr(dataset, "_splits", None)  # the dataset's own cache of indexed splits: checked once per run
    key = f"{name}|False"
    if isinstance(splits, dict) and key in splits:
        return splits[key]
    missing = ids_without_masks(dataset, name)
    if not missing:
        return ctx.val_split
    log.info("split '%s': %d image(s) have no ground-truth mask in %s (e.g. %s): predictions are written, not scored",
             name, len(missing), dataset.root / dataset.mask_dir, missing[0])
    split = _split_without_masks(dataset, name)
    if isinstance(splits, dict):
        splits[key] = split
    return split


def evaluate_module(ctx: RunContext, module: SegModule) -> dict:
    """Predict every val image (``eval`` TTA, ``crf.seg``), then score the PNGs on rank 0.

    A split without all its ground-truth masks is not scored (``val_scored: false``);
    ``eval.export`` packs the predictions for an evaluation server.
    """
    from pmm.export import check_export, run_export

    cfg = ctx.cfg.eval
    export = check_export(cfg.get("export"), module.net.num_classes)
    split = eval_split(ctx)
    folder = ctx.run_dir / "predictions" / split.split
    crf = CRFParams.from_config(ctx.cfg.crf.seg, "crf.seg") if cfg.crf else None
    predict_split(ctx, module.net, split, folder, eval_tta(ctx), crf, use_labels=False, batch_size=cfg.batch_size)

    def finish() -> dict:
        exported = run_export(export, folder, split.ids, ctx.run_dir, split.image_sizes)
        if exported:
            ctx.record(**exported)
        if split.has_all_masks:
            return {**score(), **exported}
        ctx.record(val_scored=False)
        log.info("split '%s' has no ground-truth masks for %d of its %d images: not scored (predictions in %s)",
                 split.split, len(split.missing_masks), len(split), folder)
        return {"val_scored": False, **exported}

    def score() -> dict:
        report = score_mask_folder(split, folder, desc="scoring predictions")
        write_json(ctx.run_dir / "eval_report.json", report)
        print_table(report)
        save_eval_figures(ctx, folder, report, split)
        from pmm.stages.pseudo import log_mask_panel

        log_mask_panel(ctx, f"predictions/{split.split}", split.split, folder)
        result = {"val_miou": report["miou"], "val_per_class_iou": report["per_class_iou"], "val_scored": True}
        ctx.record(**result)
        log.info("val mIoU (%d images, predictions in %s): %.4f", report["num_images"], folder, report["miou"])
        return result

    return run_sharded([], lambda ids: None, finish) or {}


def run(ctx: RunContext) -> dict:
    if not ctx.cfg.seg_ckpt:
        raise PmmError("stage=eval needs seg_ckpt=PATH (a checkpoint written by stage=seg, e.g. RUN/checkpoints/seg/last.ckpt)")
    return evaluate_module(ctx, load_seg_module(ctx, ctx.cfg.seg_ckpt))
