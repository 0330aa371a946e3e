"""``stage=cam``: train the CAM classifier from image-level labels, infer CAMs, score them.

``cam.round=standard`` trains the network of ``cam_net``; ``cam.round=multi_crop`` is the second
round on crops (:mod:`pmm.stages.cam_multicrop`). Both end in :func:`pmm.stages.cam_inference.finish_cam_round`.
"""

from __future__ import annotations

import logging
from pathlib import Path

from hydra.utils import instantiate
from pytorch_lightning.callbacks import ModelCheckpoint

from pmm.cam.module import CAMModule
from pmm.checkpoints import ensure_resume_fits, resume_checkpoint
from pmm.runtime.distributed import barrier
from pmm.data.datasets import ClassificationDataset
from pmm.runtime.loaders import loader
from pmm.data.transforms import cam_pipeline, eval_transform
from pmm.errors import PmmError
from pmm.nets.build import build_cam_network
from pmm.runtime.context import RunContext
from pmm.runtime.trainer import build_callbacks, build_trainer, epochs_for_min_steps, planned_world_size
from pmm.stages.cam_inference import cam_tta, finish_cam_round

log = logging.getLogger("pmm")


def build_cam_module(ctx: RunContext) -> CAMModule:
    """The CAM network of ``cam_net`` (a Hydra ``_target_`` node) inside the CAM LightningModule."""
    cfg = ctx.cfg
    net, spec = build_cam_network(cfg.cam_net, ctx.num_classes - 1)
    return CAMModule(net, optimizer=instantiate(cfg.cam.optimizer), lr=cfg.cam.lr,
                     poly_power=cfg.cam.poly_power, tta=cam_tta(ctx), net_config=spec,
                     infer_batch_size=cfg.cam.infer_batch_size)


def train_cam(ctx: RunContext, checkpoint_dir: Path | None = None, resume: str | None | bool = True) -> CAMModule:
    """Train the CAM network of ``cam_net`` (the standard round).

    Args:
        checkpoint_dir: where its checkpoints go (default ``callbacks.cam``'s, ``checkpoints/cam``);
            the multi-crop round trains its first round into ``checkpoints/cam_first_round``.
        resume: ``True``: ``ckpt_path`` when it is a CAM checkpoint; else the checkpoint to resume
            (None: none).
    """
    cfg = ctx.cfg
    crop = ctx.crop_size("cam")
    train_set = ClassificationDataset(ctx.train_split, cam_pipeline(cfg.data, crop))
    val_set = ClassificationDataset(ctx.val_split, eval_transform())
    batch = min(cfg.cam.batch_size, len(train_set))
    # Validation images may differ in size (real VOC): batch them one by one then.
    same_size = len(set(ctx.val_split.image_sizes.values())) == 1
    module = build_cam_module(ctx)
    epochs = epochs_for_min_steps(cfg.cam.max_epochs, cfg.cam.get("lengthen_to_steps"), len(train_set), batch,
                                  planned_world_size(ctx))
    callbacks = build_callbacks(cfg, "cam")
    if checkpoint_dir is not None:
        for callback in callbacks:
            if isinstance(callback, ModelCheckpoint):
                callback.dirpath = str(checkpoint_dir)
    trainer = build_trainer(ctx, "cam", epochs, callbacks=callbacks,
                            check_val_every_n_epoch=int(cfg.cam.get("check_val_every_n_epoch", 1) or 1))
    log.info("CAM stage: %s (%s, input %s) on %d train / %d val images, crop %d, %d epochs",
             cfg.cam_net.get("_target_", "CAMNet").rsplit(".", 1)[-1], cfg.cam_net.backbone, cfg.cam_net.get("input", "rgb"),
             len(train_set), len(val_set), crop, epochs)
    resume = resume_checkpoint(ctx.cfg, "cam") if resume is True else resume
    ensure_resume_fits(resume, epochs, "cam.max_epochs")
    trainer.fit(
        module,
        train_dataloaders=loader(train_set, batch, cfg.data.num_workers, shuffle=True, drop_last=len(train_set) > batch),
        val_dataloaders=loader(val_set, cfg.cam.infer_batch_size if same_size else 1, cfg.data.num_workers),
        ckpt_path=resume,
    )
    return module


ROUNDS = ("standard", "multi_crop")


def first_round(ctx: RunContext) -> Path:
    """The first round's checkpoint: ``cam_ckpt``, else the standard round trained here (once per run folder)."""
    cfg = ctx.cfg
    if cfg.get("cam_ckpt"):
        checkpoint = Path(cfg.cam_ckpt).expanduser()
        if checkpoint.resolve().parent == ctx.checkpoint_dir("cam").resolve():
            log.warning("cam_ckpt=%s lies in this run's checkpoints/cam/: the multi-crop round writes its own "
                        "checkpoints there; use another hydra.run.dir to keep the first round's", checkpoint)
        return checkpoint
    folder = ctx.checkpoint_dir("cam_first_round")
    last = folder / "last.ckpt"
    resume = resume_checkpoint(cfg, "cam")
    if resume and Path(resume).parent == folder.resolve():
        log.info("multi-crop round: resuming the first round from %s", resume)
        train_cam(ctx, checkpoint_dir=folder, resume=resume)
    elif last.is_file():
        log.info("multi-crop round: the first round of this run is trained (%s)", last)
    else:
        log.info("multi-crop round: no cam_ckpt, training the first round (cam_net) into %s", folder)
        train_cam(ctx, checkpoint_dir=folder, resume=None)
    barrier()
    return last


def run(ctx: RunContext) -> dict:
    cam_round = ctx.cfg.cam.get("round", "standard") or "standard"
    if cam_round not in ROUNDS:
        raise PmmError(f"cam.round={cam_round}: expected one of {', '.join(ROUNDS)}")
    if cam_round == "multi_crop":
        from pmm.stages.cam_multicrop import run_multi_crop

        return run_multi_crop(ctx, first_round(ctx))
    return finish_cam_round(ctx, train_cam(ctx), cam_round="standard")
