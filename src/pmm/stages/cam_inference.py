"""CAM inference, scoring and figures: what every CAM round and the pseudo-mask stage share.

A trained CAM module infers the normalised CAMs of a split into ``cams/<split>/`` through
``trainer.predict`` (Lightning shards the images by rank); the background-threshold sweep scores
them (``cam_miou``, ``cam_bg_threshold``, the curve) and the figures are drawn.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from pytorch_lightning.callbacks import BasePredictionWriter
from tqdm import tqdm

from pmm.cam.module import CAMModule
from pmm.checkpoints import load_network
from pmm.data.datasets import InferenceDataset, list_collate
from pmm.runtime.loaders import loader
from pmm.errors import PmmError
from pmm.io import load_cams, save_cams, write_json
from pmm.runtime.context import RunContext
from pmm.runtime.distributed import run_sharded
from pmm.runtime.trainer import build_trainer, inference_callbacks
from pmm.scoring.metrics import per_class_iou
from pmm.scoring.sweep import ThresholdSweep

log = logging.getLogger("pmm")


class CAMWriter(BasePredictionWriter):
    """Writes each image's normalised CAMs to ``<dir>/<id>.npz`` as its batch is predicted (every rank)."""

    def __init__(self, output_dir: Path) -> None:
        super().__init__(write_interval="batch")
        self.output_dir = output_dir

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx=0):
        for item in prediction:
            save_cams(self.output_dir / f"{item['id']}.npz", item["cams"].numpy(), item["labels"].numpy())


CAM_TTA_MODES = ("whole", "multi_crop")


def cam_tta(ctx: RunContext) -> dict:
    """The TTA settings of CAM inference (``cam.mode``, ``cam.scales``, ``cam.flip``, ``cam.window``, ``cam.stride``).

    ``cam.mode=whole``: multi-scale on whole images; ``multi_crop``: SEAM's crops.
    """
    cfg = ctx.cfg.cam
    mode = cfg.get("mode", "whole")
    if mode not in CAM_TTA_MODES:
        raise PmmError(f"cam.mode={mode}: expected one of {'|'.join(CAM_TTA_MODES)}")
    return {"scales": [float(s) for s in cfg.scales], "flip": bool(cfg.flip), "mode": mode,
            "window": int(cfg.get("window", 448)), "stride": int(cfg.get("stride", 300))}


def load_cam_module(ctx: RunContext, path: str | Path) -> CAMModule:
    """A trained CAM module from a checkpoint; the network is rebuilt from the spec saved in it."""
    net, spec, _ = load_network(path, "cam_ckpt", "cam")
    if net.num_classes != ctx.num_classes - 1:
        raise PmmError(
            f"cam_ckpt={path}: trained for {net.num_classes} foreground classes but data.class_names has "
            f"{ctx.num_classes - 1}; use the checkpoint of the same dataset"
        )
    module = CAMModule(net, optimizer=None, tta=cam_tta(ctx), net_config=spec,
                       infer_batch_size=ctx.cfg.cam.infer_batch_size)
    return module.eval()


def infer_cams(ctx: RunContext, module: CAMModule, split_name: str, output: Path | None = None) -> Path:
    """Write normalised CAMs (:func:`cam_tta`) of every image of the split; each rank takes its shard.

    Runs through ``trainer.predict`` with a prediction writer: Lightning shards the ids by rank.
    ``output``: the folder (default ``cams/<split>``; the multi-crop round puts its first-round CAMs elsewhere).
    """
    split = ctx.split(split_name)
    output = Path(output) if output is not None else ctx.cams_dir(split_name)
    trainer = build_trainer(ctx, "predict", 1, callbacks=[CAMWriter(output), *inference_callbacks(ctx.cfg, "cam")],
                            with_logger=False)
    dataset = InferenceDataset(split)
    trainer.predict(module, loader(dataset, ctx.cfg.cam.infer_batch_size, ctx.cfg.data.num_workers,
                                   collate_fn=list_collate), return_predictions=False)
    trainer.strategy.barrier()
    return output


def score_cams(ctx: RunContext, split_name: str) -> dict:
    """Sweep the background threshold over the split's CAM files; the best mIoU and the curve.

    Scored on the ids that have a ground-truth mask (call :func:`can_score` first: none is an error).
    """
    split = ctx.split(split_name).with_masks()
    sweep = ThresholdSweep(ctx.num_classes, ctx.cfg.cam.thresholds)
    folder = ctx.cams_dir(split_name)
    for image_id in tqdm(split.ids, desc=f"scoring CAMs ({split_name})", leave=False):
        cams, labels = load_cams(folder / f"{image_id}.npz")
        sweep.update(cams, labels, split.load_mask(image_id))
    ious = [per_class_iou(cm) for cm in sweep.confusions]
    mious = [float(np.nanmean(iou)) for iou in ious]
    best = int(np.argmax(mious))
    curve = {f"{t:.2f}": round(m, 6) for t, m in zip(sweep.thresholds, mious)}
    return {
        "cam_miou": mious[best],
        "cam_split": split_name,  # a figure is only comparable with one scored on the same split (train vs train_aug)
        "cam_bg_threshold": float(sweep.thresholds[best]),
        "cam_miou_curve": curve,
        "cam_per_class_iou": {n: (None if np.isnan(v) else round(float(v), 6)) for n, v in zip(ctx.class_names, ious[best])},
        "cam_scored": True,
        "cam_num_scored": len(split),
    }


# What score_cams records: dropped from metrics.json when a run cannot score (an older score would mislead).
CAM_SCORE_KEYS = ("cam_miou", "cam_bg_threshold", "cam_miou_curve", "cam_num_scored", "cam_split")


def can_score(ctx: RunContext, split_name: str, what: str) -> bool:
    """Whether split ``split_name`` has ground-truth masks to score ``what`` against; one log line when it has none."""
    split = ctx.split(split_name)
    if split.with_masks().ids:
        if not split.has_all_masks:
            log.warning("%s: %d of the %d images of '%s' have no ground-truth mask: scored on the other %d", what,
                        len(split.missing_masks), len(split), split.split, len(split.with_masks()))
        return True
    log.info("%s skipped: split '%s' has no ground-truth masks", what, split.split)
    return False


def save_cam_figures(ctx: RunContext, split_name: str, scores: dict) -> None:
    from pmm import viz

    split = ctx.split(split_name)
    if scores is not None:  # None: no ground truth, no curve
        thresholds = [float(t) for t in scores["cam_miou_curve"]]
        viz.save_curve(ctx.figures_dir / "cam_miou_curve.png", thresholds, list(scores["cam_miou_curve"].values()),
                       "background threshold", "CAM mIoU", title=f"CAM mIoU on {split_name}")
    rows = []
    for image_id in split.ids[: ctx.cfg.cam.figures]:
        image = split.load_image(image_id)
        cams, labels = load_cams(ctx.cams_dir(split_name) / f"{image_id}.npz")
        row = [("image", image)]
        for k, label in enumerate(labels[:2]):
            row.append((f"CAM {ctx.class_names[label]}" if len(rows) else "CAM", viz.overlay_cam(image, cams[k])))
        while len(row) < 3:
            row.append(("", np.full_like(image, 255)))
        if split.has_mask(image_id):
            row.append(("ground truth", viz.colorize_mask(split.load_mask(image_id))))
        rows.append(row)
    viz.save_panel(ctx.figures_dir / "cam_panel.png", rows, title="CAMs (labelled classes)")
    from pmm.runtime.tracking import log_heatmaps

    log_heatmaps(ctx.cfg, "cams", [row[1][1] for row in rows], captions=list(split.ids[: len(rows)]))


def save_raw_refined_figure(ctx: RunContext, module: CAMModule, split_name: str) -> Path | None:
    """``figures/cam_raw_vs_refined.png`` for networks with a refined CAM (SEAM's PCM): image |
    raw CAM | refined CAM | ground truth of the split's first ``cam.figures`` images (one forward
    pass at the image's own size, the max over its labelled classes, each map max-normalised).
    None (nothing written) when the network's output has no ``refined`` map."""
    import torch
    import torch.nn.functional as F

    from pmm import viz

    split = ctx.split(split_name)
    ids = split.ids[: ctx.cfg.cam.figures]
    if not ids:
        return None
    net = module.net
    device = next(net.parameters()).device
    was_training = net.training
    net.eval()
    images, raws, refineds, masks = [], [], [], []
    try:
        with torch.no_grad():
            for image_id in ids:
                image = split.load_image(image_id)
                x = torch.from_numpy(image).to(device).permute(2, 0, 1)[None].float() / 255.0
                out = net(x)
                if "refined" not in out or "raw" not in out:
                    return None
                labels = list(split.labels(image_id))  # 1-based: the channels of raw / refined
                maps = []
                for key in ("raw", "refined"):
                    if not labels:
                        maps.append(np.zeros(image.shape[:2], np.float32))
                        continue
                    cam = F.relu(out[key][0, labels].float())
                    cam = F.interpolate(cam[None], size=image.shape[:2], mode="bilinear", align_corners=False)[0]
                    cam = cam / (cam.flatten(1).amax(dim=1)[:, None, None] + 1e-5)
                    maps.append(cam.amax(dim=0).cpu().numpy())
                images.append(image)
                raws.append(maps[0])
                refineds.append(maps[1])
                masks.append(split.load_mask(image_id) if split.has_mask(image_id) else None)
    finally:
        net.train(was_training)
    path = ctx.figures_dir / "cam_raw_vs_refined.png"
    pictures = viz.save_raw_refined_panel(path, images, raws, refineds, masks if all(m is not None for m in masks) else None,
                                          title=f"raw vs refined CAMs ({split_name}, max over labelled classes)")
    from pmm.runtime.tracking import log_heatmaps

    log_heatmaps(ctx.cfg, "cams_raw_vs_refined", pictures, captions=list(ids[: len(pictures)]))
    return path


def finish_cam_round(ctx: RunContext, module: CAMModule, **extra) -> dict:
    """Infer the CAMs of ``cam.split`` with a trained module, score them, draw the figures and
    record the metrics (plus ``extra``): the common tail of every CAM round."""
    split_name = ctx.cfg.cam.split
    infer_cams(ctx, module, split_name)

    def score() -> dict:
        scored = can_score(ctx, split_name, "CAM threshold sweep (t*, cam_miou)")
        scores = score_cams(ctx, split_name) if scored else None
        save_cam_figures(ctx, split_name, scores)
        try:
            save_raw_refined_figure(ctx, module, split_name)
        except Exception as error:  # a figure never fails a finished round
            log.warning("figures/cam_raw_vs_refined.png not drawn: %s", error)
        if not scored:
            ctx.record(cam_scored=False, remove=CAM_SCORE_KEYS, **extra)
            write_json(ctx.report_path("cam"), {"cam_scored": False, **extra})
            return {"cam_scored": False}
        ctx.record(**{k: v for k, v in scores.items() if k != "cam_per_class_iou"}, **extra)
        write_json(ctx.report_path("cam"), {**scores, **extra})
        log.info("CAM mIoU on %s: %.4f at background threshold %.2f", split_name, scores["cam_miou"],
                 scores["cam_bg_threshold"])
        return scores

    # The CAM files are written by trainer.predict's own sharding: nothing left to write here.
    return run_sharded([], lambda ids: None, score) or {}
