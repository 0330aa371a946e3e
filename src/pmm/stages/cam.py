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
from pmm.checkpoints import resume_checkpoint
from pmm.data.datasets import ClassificationDataset
from pmm.runtime.loaders import loader
from pmm.data.transforms import cam_pipeline, eval_transform
from pmm.errors import PmmError
from pmm.nets.build import DEFAULT_TARGETS, build_from_spec, network_spec
from pmm.nets.scalenet import read_structure
from pmm.runtime.context import RunContext
from pmm.runtime.trainer import build_callbacks, build_trainer, epochs_for_min_steps, planned_world_size
from pmm.stages.cam_inference import cam_tta, finish_cam_round

log = logging.getLogger("pmm")


def build_cam_network(node, num_classes: int, config_key: str = "cam_net"):
    """(network, spec) of a CAM network node (``cam_net``, ``cam.multi_crop.net``); errors name ``config_key``."""
    spec = network_spec(node, default_target=DEFAULT_TARGETS["cam"], num_classes=num_classes)
    if spec.get("backbone") == "scalenet101" and isinstance(spec.get("structure"), str):
        # The entries themselves go into the checkpoint's spec: it rebuilds the network without the file.
        spec["structure"] = read_structure(spec["structure"], config_key=f"{config_key}.structure")
    spec.pop("config_key", None)
    return build_from_spec({**spec, "config_key": config_key}, config_key), spec


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
    trainer = build_trainer(ctx, "cam", epochs, callbacks=callbacks)
    log.info("CAM stage: %s (%s, input %s) on %d train / %d val images, crop %d, %d epochs",
             cfg.cam_net.get("_target_", "CAMNet").rsplit(".", 1)[-1], cfg.cam_net.backbone, cfg.cam_net.get("input", "rgb"),
             len(train_set), len(val_set), crop, epochs)
    trainer.fit(
        module,
        train_dataloaders=loader(train_set, batch, cfg.data.num_workers, shuffle=True, drop_last=len(train_set) > batch),
        val_dataloaders=loader(val_set, cfg.cam.infer_batch_size if same_size else 1, cfg.data.num_workers),
        ckpt_path=resume_checkpoint(ctx.cfg, "cam") if resume is True else resume,
    )
    return module


ROUNDS = ("standard", "multi_crop")


def run(ctx: RunContext) -> dict:
    cam_round = ctx.cfg.cam.get("round", "standard") or "standard"
    if cam_round not in ROUNDS:
        raise PmmError(f"cam.round={cam_round}: expected one of {', '.join(ROUNDS)}")
    if cam_round == "multi_crop":
        from pmm.stages.cam_multicrop import run_multi_crop

        return run_multi_crop(ctx)
    return finish_cam_round(ctx, train_cam(ctx), cam_round="standard")
