"""``stage=seg``: train the segmenter on pseudo-masks (PUF, cyclic rounds), then evaluate on val."""

from __future__ import annotations

import logging
import math
from pathlib import Path

from hydra.utils import instantiate
from omegaconf import OmegaConf

from pmm.checkpoints import ensure_resume_fits, read_checkpoint, resume_checkpoint
from pmm.runtime.context import RunContext
from pmm.crf import CRFParams
from pmm.data.transforms import seg_pipeline
from pmm.errors import PmmError
from pmm.scoring.masks import score_mask_folder
from pmm.nets.build import DEFAULT_TARGETS, build_from_spec, network_spec
from pmm.seg.datamodule import PseudoMaskDataModule
from pmm.seg.model import Segmenter, encoder_weights_from_cam
from pmm.seg.module import SegModule
from pmm.runtime.tracking import log_mask_panel
from pmm.stages.evaluation import evaluate_module
from pmm.runtime.trainer import build_callbacks, build_trainer, epochs_for_min_steps, planned_world_size
from pmm.nets.tta import TTAConfig

log = logging.getLogger("pmm")


def latest_round(folder: Path) -> Path | None:
    rounds = sorted((p for p in folder.glob("round_*") if p.is_dir()), key=lambda p: int(p.name.split("_")[1]))
    return rounds[-1] if rounds else None


def resolve_mask_source(ctx: RunContext) -> Path | None:
    """``pseudo.source``: ``latest_round`` (this run's newest pseudo-mask round), ``ground_truth``
    (None: the split's own masks, the fully-supervised twin), or a folder.

    A folder may be a mask folder or a run directory (its latest ``pseudo_masks/round_<r>`` is used).
    """
    source = str(ctx.cfg.pseudo.source)
    if source == "ground_truth":
        if not ctx.train_split.has_all_masks:
            raise PmmError(f"pseudo.source=ground_truth: {len(ctx.train_split.missing_masks)} of the "
                           f"{len(ctx.train_split)} training images have no ground-truth mask; train on pseudo-masks "
                           "(pseudo.source=latest_round) or give every image a mask")
        return None
    if source == "latest_round":
        found = latest_round(ctx.pseudo_masks_dir)
        if found is None:
            raise PmmError(
                f"pseudo.source=latest_round: no pseudo-masks in {ctx.pseudo_masks_dir}; run stage=pseudo in "
                "this run (stage=all does), or set pseudo.source to a mask folder / run directory, or "
                "pseudo.source=ground_truth"
            )
        return found
    path = Path(source).expanduser().resolve()
    if (path / "pseudo_masks").is_dir():
        found = latest_round(path / "pseudo_masks")
        if found is not None:
            return found
    if not path.is_dir():
        raise PmmError(f"pseudo.source={source}: folder not found; give latest_round, ground_truth, a mask folder "
                       "or a pmm run directory")
    return path


def init_encoder_from_cam(ctx: RunContext, net: Segmenter) -> None:
    """``segmenter.init_from_cam``: start the encoder from the CAM backbone (``cam_ckpt`` or this run's)."""
    path = Path(ctx.cfg.cam_ckpt) if ctx.cfg.cam_ckpt else ctx.checkpoint_dir("cam") / "last.ckpt"
    if not path.is_file():
        log.warning("segmenter.init_from_cam: no CAM checkpoint at %s; the encoder starts from %s", path,
                    "ImageNet weights" if ctx.cfg.segmenter.pretrained or ctx.cfg.segmenter.weights else "scratch")
        return
    checkpoint, cam_net_config = read_checkpoint(path, "cam_ckpt", "cam")
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


VAL_PIPELINES = ("single_scale", "eval")


def validation_pipeline(ctx: RunContext) -> dict:
    """``SegModule`` keyword arguments of the periodic validation (``seg.val_pipeline``).

    ``single_scale``: one pass at the image's size (fast). ``eval``: the eval node's TTA (scales,
    flips, sliding window, test rescale) and, with ``eval.crf``, the ``crf.seg`` refinement, as
    the reference validates; its best checkpoint is then the one the final protocol would pick.
    It also logs every protocol of ``eval.protocols`` (``val/miou_ss``...) from the same passes.
    """
    from dataclasses import asdict

    pipeline = ctx.cfg.seg.get("val_pipeline", "single_scale") or "single_scale"
    if pipeline not in VAL_PIPELINES:
        raise PmmError(f"seg.val_pipeline={pipeline}: expected one of {'|'.join(VAL_PIPELINES)}")
    if pipeline == "single_scale":
        return {}
    from pmm.seg.protocols import DEFAULT_MS_SCALES, PROTOCOLS

    tta = TTAConfig.from_config(ctx.cfg.eval)
    crf = seg_crf(ctx, bool(ctx.cfg.eval.crf))
    protocols = {"protocols": list(ctx.cfg.eval.get("protocols", PROTOCOLS)),
                 "ms_scales": [float(v) for v in ctx.cfg.eval.get("ms_scales", DEFAULT_MS_SCALES)],
                 "crf": asdict(seg_crf(ctx, True))}
    return {"val_tta": {**asdict(tta), "scales": list(tta.scales)}, "val_crf": asdict(crf) if crf else None,
            "val_protocols": protocols}


def build_seg_module(ctx: RunContext, round_epochs: int | None = None, steps_per_epoch: int | None = None) -> SegModule:
    """The segmentation module of the config; ``round_epochs`` is the cyclic period (``seg_schedule``)."""
    cfg = ctx.cfg
    round_epochs = round_epochs or cfg.cyclic.every_n_epochs
    spec = network_spec(cfg.segmenter, exclude=("init_from_cam",), default_target=DEFAULT_TARGETS["seg"],
                        num_classes=ctx.num_classes)
    net = build_from_spec(spec, "segmenter")
    if cfg.segmenter.get("init_from_cam", False) and not resume_checkpoint(cfg, "seg"):
        init_encoder_from_cam(ctx, net)
    return SegModule(
        net,
        optimizer=instantiate(cfg.seg.optimizer),
        lr=cfg.seg.lr,
        head_lr_mult=cfg.seg.head_lr_mult,
        poly_power=cfg.seg.poly_power,
        min_lr=float(cfg.seg.get("min_lr", 0.0) or 0.0),
        loss=OmegaConf.to_container(cfg.seg.loss, resolve=True),
        aux_weight=cfg.seg.aux_weight,
        poly_period_epochs=round_epochs if cfg.cyclic.rounds > 0 and cfg.cyclic.reinit else None,
        steps_per_epoch=steps_per_epoch,
        class_names=list(ctx.class_names),
        net_config=spec,
        **validation_pipeline(ctx),
    )


def seg_crf(ctx: RunContext, enabled: bool) -> CRFParams | None:
    """``crf.seg`` (DeepLab's settings) when the caller's ``crf`` switch is on."""
    return CRFParams.from_config(ctx.cfg.crf.seg, "crf.seg") if enabled else None


def seg_schedule(ctx: RunContext, num_images: int, world_size: int = 1) -> tuple[int, int]:
    """(epochs per cyclic round, total epochs) of the segmentation stage.

    ``seg.max_epochs`` when set; otherwise ``cyclic.every_n_epochs`` per round for ``cyclic.rounds + 1``
    rounds, each round lengthened so that the whole run makes at least ``seg.lengthen_to_steps`` optimiser
    steps (``seg.lengthen_to_steps``: a small dataset gets more epochs, as in the CAM stage).
    """
    cfg = ctx.cfg
    round_epochs = int(cfg.cyclic.every_n_epochs)
    rounds = int(cfg.cyclic.rounds) + 1
    batch = min(cfg.seg.batch_size, num_images)
    if cfg.seg.get("max_steps"):
        # Iteration-based (the paper presets): the trainer stops at seg.max_steps (total -1: no epoch
        # limit); a cyclic round lasts cyclic.every_n_steps, rounded up to whole epochs so that a new
        # round's masks start with an epoch (its loader is rebuilt there).
        steps_per_epoch = max(1, num_images // (batch * world_size))
        per_round = cfg.cyclic.get("every_n_steps") or math.ceil(int(cfg.seg.max_steps) / rounds)
        return max(1, math.ceil(int(per_round) / steps_per_epoch)), -1
    if cfg.seg.max_epochs is not None:
        return round_epochs, int(cfg.seg.max_epochs)
    total = epochs_for_min_steps(round_epochs * rounds, cfg.seg.get("lengthen_to_steps"), num_images, batch, world_size)
    round_epochs = math.ceil(total / rounds)
    return round_epochs, round_epochs * rounds


def validation_period(cfg, round_epochs: int) -> int | None:
    """Lightning's ``check_val_every_n_epoch`` from ``seg.check_val_every_n_epoch``.

    A number is used as it is. ``null`` with ``seg.val_check_interval`` is Lightning's "every that many
    steps" (None); without it, once a cyclic round: after the epoch whose weights relabel the training
    images (``cyclic.relabel_from=last``) and, the last time, after the epoch the eval protocols score.
    """
    every = cfg.seg.get("check_val_every_n_epoch")
    if every is not None:
        return int(every)
    if cfg.seg.get("val_check_interval"):
        return None
    return int(round_epochs)


def periodic_validation(ctx: RunContext) -> dict:
    """The split the segmenter validates on during training (the val ids with a ground-truth mask), and
    the trainer and callback settings that go without one: no validation, the last checkpoint kept, and
    ``cyclic.relabel_from=best`` falling back to ``last`` (there is no best)."""
    validation = ctx.val_split.with_masks()
    if validation.ids:
        if not ctx.val_split.has_all_masks:
            log.warning("periodic validation on the %d of %d '%s' images that have a ground-truth mask",
                        len(validation), len(ctx.val_split), validation.split)
        return {"split": validation}
    log.info("periodic validation of the segmenter skipped: split '%s' has no ground-truth masks (the last "
             "checkpoint is kept and evaluated)", validation.split)
    if ctx.cfg.cyclic.rounds > 0 and ctx.cfg.cyclic.relabel_from == "best":
        log.warning("cyclic.relabel_from=best needs the periodic validation: the cyclic rounds relabel with the "
                    "last weights")
    return {"split": ctx.val_split, "trainer": {"limit_val_batches": 0}, "relabel_from": "last"}


def run(ctx: RunContext) -> dict:
    cfg = ctx.cfg
    mask_dir = resolve_mask_source(ctx)
    validation = periodic_validation(ctx)
    train_truth = ctx.train_split.with_masks()  # what the training masks are scored against
    datamodule = PseudoMaskDataModule(
        ctx.train_split, validation["split"], mask_dir, ctx.crop_size("seg"), tuple(cfg.data.scale_range),
        cfg.seg.batch_size, cfg.data.num_workers, transform=seg_pipeline(cfg.data, ctx.crop_size("seg")),
    )
    # The world size is known before any process group exists; the schedule depends on it.
    world = planned_world_size(ctx)
    round_epochs, epochs = seg_schedule(ctx, len(ctx.train_split.ids), world)
    steps_per_epoch = max(1, len(ctx.train_split.ids) // (min(cfg.seg.batch_size, len(ctx.train_split.ids)) * world))
    module = build_seg_module(ctx, round_epochs, steps_per_epoch)
    history = list(ctx.read_metrics().get("pseudo_miou_rounds", []))
    if mask_dir is not None and not history and train_truth.ids:
        # Round 0 came from elsewhere (a folder): score it so the rounds list starts at the source.
        history = [score_mask_folder(train_truth, mask_dir, desc="scoring training masks")["miou"]]
        ctx.record(pseudo_miou=history[0], pseudo_miou_rounds=history)

    def on_round(index: int, folder: Path) -> None:
        if not train_truth.ids:
            log.info("cyclic round %d: its pseudo-masks are not scored ('%s' has no ground-truth masks)", index,
                     ctx.train_split.split)
            return
        report = score_mask_folder(train_truth, folder, desc=f"scoring round {index}")
        rounds = list(ctx.read_metrics().get("pseudo_miou_rounds", []))
        rounds = rounds[:index] + [report["miou"]]
        # Round 0 is scored on pseudo_split, the cyclic rounds on the segmenter's training split.
        ctx.record(pseudo_miou_rounds=rounds, cyclic_split=ctx.train_split.split)
        log_mask_panel(ctx, f"pseudo_masks/round_{index}", ctx.train_split.split, folder)
        log.info("cyclic round %d pseudo-mask mIoU on '%s': %.4f", index, ctx.train_split.split, report["miou"])

    partials = {}
    if mask_dir is not None and cfg.cyclic.rounds > 0:
        partials["cyclic"] = dict(
            split=ctx.train_split, datamodule=datamodule, output_root=ctx.pseudo_masks_dir,
            every_n_epochs=round_epochs, on_round=on_round, tta=TTAConfig.from_config(cfg.cyclic),
            crf=seg_crf(ctx, cfg.cyclic.crf),
            **({"relabel_from": validation["relabel_from"]} if "relabel_from" in validation else {}),
        )
    callbacks = build_callbacks(cfg, "seg", **partials)
    if "trainer" in validation:  # no validation: nothing to monitor, the checkpoints are the latest weights
        for callback in callbacks:
            if getattr(callback, "monitor", None) == "val/miou":
                callback.monitor = None
    schedule = {"max_steps": int(cfg.seg.max_steps)} if cfg.seg.get("max_steps") else {}
    if schedule and module.hparams.poly_period_epochs:
        # Each cyclic round is its own schedule (the reference runs each as a separate 20k-iteration
        # job): rounds switch at epoch ends, so every round gets the whole number of epochs that
        # covers cyclic.every_n_steps, and the stage as many steps as its rounds together.
        round_steps = round_epochs * steps_per_epoch
        schedule["max_steps"] = round_steps * (int(cfg.cyclic.rounds) + 1)
        ctx.record(seg_steps_per_round=round_steps)
        if schedule["max_steps"] != int(cfg.seg.max_steps):
            log.info("seg.max_steps=%d: %d cyclic rounds of %d steps (%d epochs of %d steps) = %d steps",
                     int(cfg.seg.max_steps), int(cfg.cyclic.rounds) + 1, round_steps, round_epochs, steps_per_epoch,
                     schedule["max_steps"])
    if cfg.seg.get("val_check_interval"):
        schedule["val_check_interval"] = int(cfg.seg.val_check_interval)
    schedule.update(validation.get("trainer", {}))
    trainer = build_trainer(ctx, "seg", epochs, callbacks=callbacks, reload_dataloaders_every_n_epochs=1,
                            check_val_every_n_epoch=validation_period(cfg, round_epochs), **schedule)
    log.info("segmentation stage: %s/%s on %s, %s (%d epochs a round), loss %s", cfg.segmenter.arch,
             cfg.segmenter.encoder, mask_dir or "ground truth",
             f"{cfg.seg.max_steps} steps" if schedule.get("max_steps") else f"{epochs} epochs", round_epochs,
             dict(cfg.seg.loss))
    resume = resume_checkpoint(cfg, "seg")
    ensure_resume_fits(resume, epochs, "seg.max_epochs")
    trainer.fit(module, datamodule=datamodule, ckpt_path=resume)
    ctx.record(seg_source=str(mask_dir) if mask_dir else "ground_truth", seg_loss=cfg.seg.loss.mode,
               seg_steps=int(trainer.global_step), seg_validated="trainer" not in validation,
               **best_validation(trainer, cfg))

    return evaluate_module(ctx, module)


def best_validation(trainer, cfg) -> dict:
    """``val_miou_best``: the best periodic validation (``seg.val_pipeline``) and its checkpoint.

    ``val_miou`` (the final evaluation) scores the *last* weights with the eval pipeline; this is
    the best of the evaluations made during training, the number a run that keeps the best
    checkpoint reports. Empty when no validation ran.
    """
    for callback in trainer.checkpoint_callbacks:
        if getattr(callback, "monitor", None) == "val/miou" and callback.best_model_score is not None:
            return {"val_miou_best": float(callback.best_model_score), "val_miou_best_ckpt": callback.best_model_path,
                    "val_pipeline": cfg.seg.get("val_pipeline", "single_scale") or "single_scale"}
    return {}
