"""``stage=cam cam.round=multi_crop``: PMM / SEAM's second CAM round, on crops.

0. The first round: ``cam_ckpt``, or (without one) the standard round trained on ``cam_net`` in
   this run, into ``checkpoints/cam_first_round/``.
1. The first round's network infers the CAMs of the training split into
   ``multi_crop/first_round_cams/``: multi-scale whole images at ``cam.multi_crop.rough_scales``
   (+ flips), or with the ``cam`` inference settings when those are null.
2. Rough masks into ``multi_crop/rough_masks/``: one multi-label CRF (``crf.rough``) over
   ``[(1 - max S) ** rough_alpha, S]``, kept where a marginal exceeds ``rough_confidence``
   (:func:`pmm.pseudo.confident_crf_mask`, 255 elsewhere) or its arg-max when that is null;
   scored against the ground truth (``cam_rough_miou``, sure pixels only) when the split has masks.
3. Training on crops of the training images (:class:`pmm.cam.crop_dataset.CropClassificationDataset`:
   the multi-crop inference tiles or random boxes, labelled from the rough masks), stretched to
   ``cam.crop_size``, for ``cam.multi_crop.epochs`` epochs at ``cam.multi_crop.lr`` and
   ``cam.multi_crop.batch_size`` (``cam.optimizer``, poly decay). The network is
   ``cam.multi_crop.net`` trained fresh (the paper: ScaleNet-101 from ImageNet weights) or, when
   that is null, the first round's network trained on.
4. The CAMs of ``cam.split`` are inferred and scored as in the standard round: the same outputs
   (``checkpoints/cam/``, ``cams/<split>/``, ``cam_miou``, figures) plus ``cam_round: multi_crop``.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from functools import partial
from pathlib import Path

from hydra.utils import instantiate

from pmm.cam.module import CAMModule
from pmm.cam.crops import UNSURE
from pmm.checkpoints import ensure_resume_fits, load_network, resume_checkpoint
from pmm.nets.build import build_cam_network
from pmm.runtime.context import RunContext
from pmm.crf import CRFParams
from pmm.data.datasets import ClassificationDataset
from pmm.data.transforms import eval_transform
from pmm.runtime.loaders import loader, seeded_loader
from pmm.runtime.distributed import barrier, is_main, run_sharded
from pmm.errors import PmmError
from pmm.io import load_cams, load_image, save_mask
from pmm.stages.cam_inference import cam_tta, finish_cam_round, infer_cams
from pmm.runtime.pool import run_pool
from pmm.runtime.trainer import build_trainer
from pmm.settings import MultiCropSettings

log = logging.getLogger("pmm")

def settings(ctx: RunContext) -> MultiCropSettings:
    """``cam.multi_crop`` (:class:`pmm.settings.MultiCropSettings`, checked at start-up) with ``lr``,
    ``batch_size`` and the CAM training crop (``cam.crop_size``, the crops' side)."""
    node = MultiCropSettings.from_node(ctx.cfg.cam.get("multi_crop"), "cam.multi_crop")
    return node.resolved(lr=float(ctx.cfg.cam.lr), crop=ctx.crop_size("cam"), batch_size=int(ctx.cfg.cam.batch_size))


def rough_crf(ctx: RunContext) -> CRFParams:
    """``crf.rough`` (the authors' rough-mask CRF), or ``crf.pseudo`` in a config without that node."""
    if ctx.cfg.crf.get("rough") is not None:
        return CRFParams.from_config(ctx.cfg.crf.rough, key="crf.rough")
    return CRFParams.from_config(ctx.cfg.crf.pseudo, key="crf.pseudo")


def rough_tta(ctx: RunContext, options: MultiCropSettings) -> dict:
    """How the first round's CAMs are inferred: whole images at ``rough_scales`` (+ flips), or the ``cam`` settings."""
    if options.rough_scales is None:
        return cam_tta(ctx)
    return {"scales": [float(v) for v in options.rough_scales], "flip": bool(options.rough_flip), "mode": "whole",
            "window": int(ctx.cfg.cam.window), "stride": int(ctx.cfg.cam.stride)}


def _rough_one(task: tuple[str, str, str, str], alpha: float, crf: CRFParams, confidence: float | None) -> str:
    """Pool task: one image's rough mask from its first-round CAMs, written atomically."""
    from pmm.pseudo import confident_crf_mask, make_pseudo_mask

    image_id, image_path, cams_path, output_path = task
    cams, labels = load_cams(cams_path)
    image = load_image(image_path)
    if confidence is None:
        mask = make_pseudo_mask("crf", image, cams, labels, alpha=alpha, cov=False, crf=crf)
    else:
        mask = confident_crf_mask(image, cams, labels, alpha=alpha, confidence=confidence, crf=crf, unsure=UNSURE)
    save_mask(output_path, mask)
    return image_id


def make_rough_masks(ctx: RunContext, split, cams_folder: Path, output: Path, alpha: float,
                     confidence: float | None = None) -> dict:
    """Rough masks (``alpha``, no CoV; ``confidence``: sure pixels only) of every image of ``split``
    (each rank its shard, a ``pseudo.workers`` process pool); scored on rank 0 when the split has
    ground truth (unsure pixels, 255, are not scored)."""
    crf = rough_crf(ctx)
    output.mkdir(parents=True, exist_ok=True)

    def write(ids: list[str]) -> None:
        tasks = [(i, str(split.image_path(i)), str(cams_folder / f"{i}.npz"), str(output / f"{i}.png")) for i in ids]
        run_pool(partial(_rough_one, alpha=alpha, crf=crf, confidence=confidence), tasks,
                 int(ctx.cfg.pseudo.get("workers", 1)), desc="rough masks", show_progress=is_main())

    def score() -> dict:
        if not split.has_all_masks:
            return {}
        from pmm.scoring.masks import score_mask_folder

        report = score_mask_folder(split, output, desc="scoring rough masks",
                                   unsure=None if confidence is None else UNSURE)
        scores = {"cam_rough_miou": float(report["miou"])} if "miou" in report else {}
        if "coverage" in report:
            scores["cam_rough_coverage"] = float(report["coverage"])
        return scores

    return run_sharded(list(split.ids), write, score) or {}


def round_network(ctx: RunContext, options: MultiCropSettings, first_net, first_spec: dict):
    """(network, spec) the round trains: ``cam.multi_crop.net`` built fresh, or the first round's."""
    if options.net is None:
        return first_net, first_spec
    return build_cam_network(ctx.cfg.cam.multi_crop.net, ctx.num_classes - 1, "cam.multi_crop.net")


def run_multi_crop(ctx: RunContext, checkpoint: Path) -> dict:
    """The round from the first round's ``checkpoint`` (``pmm.stages.cam.first_round``)."""
    cfg = ctx.cfg
    options = settings(ctx)
    first_net, first_spec, _ = load_network(checkpoint, "cam_ckpt", "cam")
    if first_net.num_classes != ctx.num_classes - 1:
        raise PmmError(f"cam_ckpt={checkpoint}: trained for {first_net.num_classes} foreground classes but "
                       f"data.class_names has {ctx.num_classes - 1}; use the checkpoint of the same dataset")
    train_split = ctx.train_split
    first_cams = ctx.multi_crop_dir / "first_round_cams"
    rough = ctx.multi_crop_dir / "rough_masks"
    extra: dict = {"cam_round": "multi_crop", "cam_first_round_ckpt": str(checkpoint.resolve())}

    resume = resume_checkpoint(cfg, "cam")
    if resume and Path(resume).parent == ctx.checkpoint_dir("cam_first_round").resolve():
        resume = None  # that checkpoint resumed the first round (above), not this one
    complete = rough.is_dir() and all((rough / f"{i}.png").is_file() for i in train_split.ids)
    if resume and complete:
        log.info("multi-crop round: resuming from %s with the rough masks of %s", resume, rough)
    else:
        tta = rough_tta(ctx, options)
        log.info("multi-crop round: first-round CAMs of '%s' with %s (scales %s, flip %s)", train_split.split,
                 checkpoint, tta["scales"], tta["flip"])
        first = CAMModule(first_net, optimizer=None, tta=tta, net_config=first_spec,
                          infer_batch_size=cfg.cam.infer_batch_size).eval()
        infer_cams(ctx, first, train_split.split, output=first_cams)
        log.info("multi-crop round: rough masks (alpha %s, %s) into %s", options.rough_alpha,
                 "arg-max" if options.rough_confidence is None else f"marginal > {options.rough_confidence}", rough)
        extra.update(make_rough_masks(ctx, train_split, first_cams, rough, float(options.rough_alpha),
                                      options.rough_confidence))
        barrier()

    net, spec = round_network(ctx, options, first_net, first_spec)
    module = CAMModule(net, optimizer=instantiate(cfg.cam.optimizer), lr=float(options.lr),
                       poly_power=cfg.cam.poly_power, tta=cam_tta(ctx), net_config=spec,
                       infer_batch_size=cfg.cam.infer_batch_size)
    module.train()

    from pmm.cam.crop_dataset import CropClassificationDataset, EpochSampler

    jitter = options.jitter
    train_set = CropClassificationDataset(
        train_split, rough, crop=int(options.crop), seed=int(cfg.seed), area=tuple(options.area),
        aspect=tuple(options.aspect), min_share=float(options.min_share),
        min_object_share=None if options.min_object_share is None else float(options.min_object_share),
        heat_dir=first_cams if options.heat and first_cams.is_dir() else None,
        jitter=tuple(jitter) if jitter else None, sampler=options.sampler,
        tile_scales=tuple(float(v) for v in cfg.cam.scales), tile_size=int(cfg.cam.window),
        tile_stride=int(cfg.cam.stride),
    )
    val_set = ClassificationDataset(ctx.val_split, eval_transform())
    batch = min(int(options.batch_size), len(train_set))
    same_size = len(set(ctx.val_split.image_sizes.values())) == 1
    epochs = int(options.epochs)
    trainer = build_trainer(ctx, "cam", epochs,
                            check_val_every_n_epoch=int(cfg.cam.get("check_val_every_n_epoch", 1) or 1))
    log.info("multi-crop round: %s (%s) on %d train / %d val images, %s crops stretched to %d x %d, batch %d, "
             "%d epochs, lr %g", spec.get("_target_", "?").rsplit(".", 1)[-1],
             "fresh" if options.net is not None else f"from {checkpoint.name}", len(train_set), len(ctx.val_split),
             options.sampler, options.crop, options.crop, batch, epochs, options.lr)
    # The sampler hands the epoch to the items (workers included): crops depend on (seed, epoch, index) only.
    train_loader = seeded_loader(train_set, batch, cfg.data.num_workers, drop_last=len(train_set) > batch,
                                 sampler=EpochSampler(len(train_set), int(cfg.seed)))
    ensure_resume_fits(resume, epochs, "cam.multi_crop.epochs")
    trainer.fit(module, train_dataloaders=train_loader,
                val_dataloaders=loader(val_set, cfg.cam.infer_batch_size if same_size else 1, cfg.data.num_workers),
                ckpt_path=resume)
    extra["cam_multi_crop"] = {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(options).items()
                               if k != "net"}
    extra["cam_multi_crop"]["net"] = spec.get("_target_") if options.net is not None else "first round's"
    return finish_cam_round(ctx, module, **extra)
