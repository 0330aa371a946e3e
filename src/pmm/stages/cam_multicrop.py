"""``stage=cam cam.round=multi_crop cam_ckpt=PATH``: PMM / SEAM's second CAM round, on crops.

1. The first round's network (``cam_ckpt``) infers the CAMs of the training split into
   ``multi_crop/first_round_cams/`` (the ``cam`` TTA settings: ``cam.mode``, ``cam.scales``...).
2. Rough masks: CRF-only pseudo-masks with ``alpha = cam.multi_crop.rough_alpha`` (24, no CoV;
   ``pmm.pseudo.make_pseudo_mask('crf', ...)`` with ``crf.pseudo``) into ``multi_crop/rough_masks/``,
   scored against the ground truth (``cam_rough_miou``) when the split has masks.
3. Training continues from ``cam_ckpt``'s weights on random crops of the training images
   (:class:`pmm.cam.crop_dataset.CropClassificationDataset`), each labelled with the rough-mask
   classes covering ``min_share`` of it, resized to ``cam.crop_size``, for
   ``cam.multi_crop.epochs`` epochs at ``cam.multi_crop.lr`` (``cam.optimizer``, poly decay).
4. The CAMs of ``cam.split`` are inferred and scored as in the standard round: the same outputs
   (``checkpoints/cam/``, ``cams/<split>/``, ``cam_miou``, figures) plus ``cam_round: multi_crop``.

The network is the checkpoint's (its saved spec), not ``cam_net``: the round continues training it.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from functools import partial
from pathlib import Path

from hydra.utils import instantiate

from pmm.cam.module import CAMModule
from pmm.checkpoints import load_network, resume_checkpoint
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
    """``cam.multi_crop`` (:class:`pmm.settings.MultiCropSettings`, checked at start-up) with ``lr`` and
    the CAM training crop (``cam.crop_size``, the crops' side)."""
    node = MultiCropSettings.from_node(ctx.cfg.cam.get("multi_crop"), "cam.multi_crop")
    return node.resolved(lr=float(ctx.cfg.cam.lr), crop=ctx.crop_size("cam"))


def _rough_one(task: tuple[str, str, str, str], alpha: float, crf: CRFParams) -> str:
    """Pool task: one image's CRF-only rough mask from its first-round CAMs, written atomically."""
    from pmm.pseudo import make_pseudo_mask

    image_id, image_path, cams_path, output_path = task
    cams, labels = load_cams(cams_path)
    save_mask(output_path, make_pseudo_mask("crf", load_image(image_path), cams, labels, alpha=alpha, cov=False, crf=crf))
    return image_id


def make_rough_masks(ctx: RunContext, split, cams_folder: Path, output: Path, alpha: float) -> dict:
    """CRF-only masks (``alpha``, no CoV) of every image of ``split`` (each rank its shard, a
    ``pseudo.workers`` process pool); scored on rank 0 when the split has ground truth."""
    crf = CRFParams.from_config(ctx.cfg.crf.pseudo, key="crf.pseudo")
    output.mkdir(parents=True, exist_ok=True)

    def write(ids: list[str]) -> None:
        tasks = [(i, str(split.image_path(i)), str(cams_folder / f"{i}.npz"), str(output / f"{i}.png")) for i in ids]
        run_pool(partial(_rough_one, alpha=alpha, crf=crf), tasks, int(ctx.cfg.pseudo.get("workers", 1)),
                 desc="rough masks", show_progress=is_main())

    def score() -> dict:
        if not split.has_all_masks:
            return {}
        from pmm.scoring.masks import score_mask_folder

        report = score_mask_folder(split, output, desc="scoring rough masks")
        return {"cam_rough_miou": float(report["miou"])} if "miou" in report else {}

    return run_sharded(list(split.ids), write, score) or {}


def run_multi_crop(ctx: RunContext) -> dict:
    cfg = ctx.cfg
    if not cfg.get("cam_ckpt"):
        raise PmmError("cam.round=multi_crop: set cam_ckpt=<the first round's checkpoints/cam/last.ckpt>; the round "
                       "continues training that network on crops labelled from its rough masks")
    options = settings(ctx)
    checkpoint = Path(cfg.cam_ckpt).expanduser()
    if checkpoint.resolve().parent == ctx.checkpoint_dir("cam").resolve():
        log.warning("cam_ckpt=%s lies in this run's checkpoints/cam/: the multi-crop round writes its own checkpoints "
                    "there; use another hydra.run.dir to keep the first round's", checkpoint)
    net, spec, _ = load_network(checkpoint, "cam_ckpt", "cam")
    if net.num_classes != ctx.num_classes - 1:
        raise PmmError(f"cam_ckpt={checkpoint}: trained for {net.num_classes} foreground classes but data.class_names "
                       f"has {ctx.num_classes - 1}; use the checkpoint of the same dataset")
    module = CAMModule(net, optimizer=instantiate(cfg.cam.optimizer), lr=float(options.lr),
                       poly_power=cfg.cam.poly_power, tta=cam_tta(ctx), net_config=spec,
                       infer_batch_size=cfg.cam.infer_batch_size)
    train_split = ctx.train_split
    first_cams = ctx.multi_crop_dir / "first_round_cams"
    rough = ctx.multi_crop_dir / "rough_masks"
    extra: dict = {"cam_round": "multi_crop", "cam_first_round_ckpt": str(checkpoint.resolve())}

    resume = resume_checkpoint(cfg, "cam")
    complete = rough.is_dir() and all((rough / f"{i}.png").is_file() for i in train_split.ids)
    if resume and complete:
        log.info("multi-crop round: resuming from %s with the rough masks of %s", resume, rough)
    else:
        log.info("multi-crop round: first-round CAMs of '%s' with %s", train_split.split, checkpoint)
        module.eval()
        infer_cams(ctx, module, train_split.split, output=first_cams)
        log.info("multi-crop round: CRF-only rough masks (alpha %s) into %s", options.rough_alpha, rough)
        extra.update(make_rough_masks(ctx, train_split, first_cams, rough, float(options.rough_alpha)))
        barrier()
        module.train()

    from pmm.cam.crop_dataset import CropClassificationDataset, EpochSampler

    jitter = options.jitter
    train_set = CropClassificationDataset(
        train_split, rough, crop=int(options.crop), seed=int(cfg.seed), area=tuple(options.area),
        aspect=tuple(options.aspect), min_share=float(options.min_share),
        min_object_share=None if options.min_object_share is None else float(options.min_object_share),
        heat_dir=first_cams if options.heat and first_cams.is_dir() else None,
        jitter=tuple(jitter) if jitter else None,
    )
    val_set = ClassificationDataset(ctx.val_split, eval_transform())
    batch = min(cfg.cam.batch_size, len(train_set))
    same_size = len(set(ctx.val_split.image_sizes.values())) == 1
    epochs = int(options.epochs)
    trainer = build_trainer(ctx, "cam", epochs)
    log.info("multi-crop round: %s from %s on %d train / %d val images, %d x %d crops, %d epochs, lr %g",
             spec.get("_target_", "?").rsplit(".", 1)[-1], checkpoint.name, len(train_set), len(ctx.val_split),
             options.crop, options.crop, epochs, options.lr)
    # The sampler hands the epoch to the items (workers included): crops depend on (seed, epoch, index) only.
    train_loader = seeded_loader(train_set, batch, cfg.data.num_workers, drop_last=len(train_set) > batch,
                                 sampler=EpochSampler(len(train_set), int(cfg.seed)))
    trainer.fit(module, train_dataloaders=train_loader,
                val_dataloaders=loader(val_set, cfg.cam.infer_batch_size if same_size else 1, cfg.data.num_workers),
                ckpt_path=resume)
    extra["cam_multi_crop"] = {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(options).items()}
    return finish_cam_round(ctx, module, **extra)
