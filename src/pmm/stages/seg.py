"""``stage=seg``: train the segmenter on pseudo-masks (PUF, cyclic rounds), then evaluate on val."""

from __future__ import annotations

import logging
import math
from pathlib import Path

from hydra.utils import instantiate
from omegaconf import OmegaConf
from pytorch_lightning.callbacks import LearningRateMonitor, ModelCheckpoint

from pmm.checkpoints import read_checkpoint
from pmm.context import RunContext
from pmm.errors import PmmError
from pmm.evaluation import score_mask_folder
from pmm.seg.cyclic import CyclicPseudoMask
from pmm.seg.datamodule import PseudoMaskDataModule
from pmm.seg.model import Segmenter, encoder_weights_from_cam
from pmm.seg.module import SegModule
from pmm.stages.cam import cam_checkpoint_dir
from pmm.stages.common import build_trainer, epochs_for_min_steps

log = logging.getLogger("pmm")


def latest_round(folder: Path) -> Path | None:
    rounds = sorted((p for p in folder.glob("round_*") if p.is_dir()), key=lambda p: int(p.name.split("_")[1]))
    return rounds[-1] if rounds else None


def resolve_mask_source(ctx: RunContext) -> Path | None:
    """``pseudo.source``: ``ppmg`` (this run's latest round), ``gt`` (None: ground truth), or a folder.

    A folder may be a mask folder or a run directory (its latest ``pseudo_masks/round_<r>`` is used).
    """
    source = str(ctx.cfg.pseudo.source)
    if source == "gt":
        return None
    if source == "ppmg":
        found = latest_round(ctx.run_dir / "pseudo_masks")
        if found is None:
            raise PmmError(
                f"pseudo.source=ppmg: no pseudo-masks in {ctx.run_dir / 'pseudo_masks'}; run stage=pseudo in this run "
                "(stage=all does), or set pseudo.source to a mask folder / run directory, or pseudo.source=gt"
            )
        return found
    path = Path(source).expanduser().resolve()
    if (path / "pseudo_masks").is_dir():
        found = latest_round(path / "pseudo_masks")
        if found is not None:
            return found
    if not path.is_dir():
        raise PmmError(f"pseudo.source={source}: folder not found; give ppmg, gt, a mask folder or a pmm run directory")
    return path


def init_encoder_from_cam(ctx: RunContext, net: Segmenter) -> None:
    """``segmenter.init_from_cam``: start the encoder from the CAM backbone (``cam_ckpt`` or this run's)."""
    path = Path(ctx.cfg.cam_ckpt) if ctx.cfg.cam_ckpt else cam_checkpoint_dir(ctx) / "last.ckpt"
    if not path.is_file():
        log.warning("segmenter.init_from_cam: no CAM checkpoint at %s; the encoder starts from %s", path,
                    "ImageNet weights" if ctx.cfg.segmenter.pretrained or ctx.cfg.segmenter.weights else "scratch")
        return
    checkpoint, cam_net_config = read_checkpoint(path, "cam_ckpt")
    cam_input = cam_net_config.get("input", "rgb")
    if cam_input != net.encode_input.mode:
        raise PmmError(
            f"segmenter.init_from_cam: the CAM network at {path} sees input={cam_input} but segmenter.input="
            f"{net.encode_input.mode}; set segmenter.input={cam_input} or segmenter.init_from_cam=false"
        )
    copied = encoder_weights_from_cam(net.encoder, checkpoint["state_dict"])
    if not copied:
        raise PmmError(
            f"segmenter.init_from_cam: the CAM backbone {cam_net_config.get('backbone')} shares no weights with "
            f"encoder {ctx.cfg.segmenter.encoder}; use encoder=tu-{cam_net_config.get('backbone')} or "
            "segmenter.init_from_cam=false"
        )
    log.info("segmenter encoder starts from the CAM backbone (%s): %d of %d tensors", path, len(copied),
             len(net.encoder.state_dict()))


def build_seg_module(ctx: RunContext, round_epochs: int | None = None) -> SegModule:
    """The segmentation module of the config; ``round_epochs`` is the cyclic period (``seg_schedule``)."""
    cfg = ctx.cfg
    round_epochs = round_epochs or cfg.cyclic.every_n_epochs
    net_config = OmegaConf.to_container(cfg.segmenter, resolve=True)
    init_from_cam = net_config.pop("init_from_cam", False)
    net = Segmenter(num_classes=ctx.num_classes, **net_config)
    if init_from_cam and not cfg.ckpt_path:
        init_encoder_from_cam(ctx, net)
    return SegModule(
        net,
        optimizer=instantiate(cfg.seg.optimizer),
        lr=cfg.seg.lr,
        head_lr_mult=cfg.seg.head_lr_mult,
        poly_power=cfg.seg.poly_power,
        loss=OmegaConf.to_container(cfg.seg.loss, resolve=True),
        aux_weight=cfg.seg.aux_weight,
        poly_period_epochs=round_epochs if cfg.cyclic.rounds > 0 and cfg.cyclic.reinit else None,
        class_names=list(ctx.class_names),
        net_config=net_config,
    )


def seg_schedule(ctx: RunContext, num_images: int, world_size: int = 1) -> tuple[int, int]:
    """(epochs per cyclic round, total epochs) of the segmentation stage.

    ``seg.max_epochs`` when set; otherwise ``cyclic.every_n_epochs`` per round for ``cyclic.rounds + 1``
    rounds, each round lengthened so that the whole run makes at least ``seg.min_steps`` optimiser
    steps (a small dataset gets more epochs, as in the CAM stage).
    """
    cfg = ctx.cfg
    round_epochs = int(cfg.cyclic.every_n_epochs)
    if cfg.seg.max_epochs is not None:
        return round_epochs, int(cfg.seg.max_epochs)
    rounds = int(cfg.cyclic.rounds) + 1
    batch = min(cfg.seg.batch_size, num_images)
    total = epochs_for_min_steps(round_epochs * rounds, cfg.seg.get("min_steps"), num_images, batch, world_size)
    round_epochs = math.ceil(total / rounds)
    return round_epochs, round_epochs * rounds


def run(ctx: RunContext) -> dict:
    cfg = ctx.cfg
    mask_dir = resolve_mask_source(ctx)
    datamodule = PseudoMaskDataModule(
        ctx.train_split, ctx.val_split, mask_dir, ctx.crop_size(), tuple(cfg.data.scale_range),
        cfg.seg.batch_size, cfg.data.num_workers,
    )
    checkpoint = ModelCheckpoint(dirpath=ctx.run_dir / "checkpoints" / "seg", filename="epoch{epoch:02d}",
                                 monitor="val/miou", mode="max", save_last=True, auto_insert_metric_name=False)
    callbacks = [checkpoint]
    trainer = build_trainer(ctx, 1, callbacks=callbacks, reload_dataloaders_every_n_epochs=1,
                            check_val_every_n_epoch=cfg.seg.check_val_every_n_epoch)
    # The trainer knows the world size before any process group exists; the schedule depends on it.
    round_epochs, epochs = seg_schedule(ctx, len(ctx.train_split.ids), trainer.world_size)
    trainer.fit_loop.max_epochs = epochs
    module = build_seg_module(ctx, round_epochs)
    history = list(ctx.read_metrics().get("pseudo_miou_rounds", []))
    if mask_dir is not None and not history:
        # Round 0 came from elsewhere (a folder): score it so the rounds list starts at the source.
        history = [score_mask_folder(ctx.train_split, mask_dir, desc="scoring training masks")["miou"]]
        ctx.record(pseudo_miou=history[0], pseudo_miou_rounds=history)

    def on_round(index: int, folder: Path) -> None:
        report = score_mask_folder(ctx.train_split, folder, desc=f"scoring round {index}")
        rounds = list(ctx.read_metrics().get("pseudo_miou_rounds", []))
        rounds = rounds[:index] + [report["miou"]]
        ctx.record(pseudo_miou_rounds=rounds)
        from pmm.stages.pseudo import log_mask_panel

        log_mask_panel(ctx, f"pseudo_masks/round_{index}", ctx.train_split.split, folder)
        log.info("cyclic round %d pseudo-mask mIoU on '%s': %.4f", index, ctx.train_split.split, report["miou"])

    if mask_dir is not None and cfg.cyclic.rounds > 0:
        # Before the checkpoint callback, as Lightning orders them: a saved epoch holds the round it trained on.
        trainer.callbacks.insert(0, CyclicPseudoMask(
            ctx.train_split, datamodule, ctx.run_dir / "pseudo_masks", rounds=cfg.cyclic.rounds,
            every_n_epochs=round_epochs, reinit=cfg.cyclic.reinit,
            puf_first_round_only=cfg.cyclic.puf_first_round_only, restrict_to_labels=cfg.cyclic.restrict_to_labels,
            batch_size=cfg.cyclic.batch_size, on_round=on_round, scales=tuple(cfg.cyclic.scales),
            flip=cfg.cyclic.flip, crf=cfg.cyclic.crf,
        ))
    if trainer.loggers:
        trainer.callbacks.append(LearningRateMonitor(logging_interval="epoch"))
    log.info("segmentation stage: %s/%s on %s, %d epochs (%d a round), loss %s", cfg.segmenter.arch,
             cfg.segmenter.encoder, mask_dir or "ground truth", epochs, round_epochs, dict(cfg.seg.loss))
    trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.ckpt_path if cfg.stage in ("seg", "all") else None)
    ctx.record(seg_source=str(mask_dir) if mask_dir else "gt", seg_loss=cfg.seg.loss.mode)

    from pmm.stages import eval as evaluate

    return evaluate.evaluate_module(ctx, module)
