"""LightningModule of the segmentation stage: PUF-trained SMP segmenter, validation mIoU."""

from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np
import pytorch_lightning as pl
import torch
from torchmetrics import MaxMetric
from torchmetrics.classification import MulticlassConfusionMatrix

from pmm.losses import PUFLoss
from pmm.scoring.metrics import per_class_iou
from pmm.nets.optim import build_optimizer_and_poly
from pmm.seg.inference import predict_probs
from pmm.nets.tta import TTAConfig, to_float_images
from pmm.seg.model import Segmenter


class SegModule(pl.LightningModule):
    """Trains a :class:`Segmenter` on (pseudo-)masks with PUF; validates mIoU on ground truth.

    Args:
        net: the segmenter.
        optimizer: partial ``torch.optim`` constructor (Hydra ``_partial_: true``).
        lr: encoder learning rate; decoder and heads get ``lr * head_lr_mult``.
        loss: PUFLoss keyword arguments (``mode``, ``beta``, ``k``), plus ``warmup_epochs``: plain
            cross-entropy for that many first epochs, PUF after.
        aux_weight: weight of the auxiliary head's loss (0.4 as PSPNet).
        poly_period_epochs: the poly decay restarts every this many epochs (one cyclic round), or
            spans the whole fit when ``None``.
        class_names: for per-class logging.
        net_config: the Segmenter keyword arguments, saved so a checkpoint rebuilds its network.
        val_scales, val_flip: inference used by validation (single-scale by default).
        val_tta: the full :class:`TTAConfig` fields of validation (``seg.val_pipeline=eval``: the
            eval node's); replaces ``val_scales`` / ``val_flip``.
        val_crf: :class:`pmm.crf.CRFParams` fields of a dense-CRF refinement of each validation
            prediction (``crf.seg`` when the eval node has ``crf: true``), or None.
        val_protocols: ``{"protocols": [...], "ms_scales": [...], "crf": crf.seg fields}``: with
            ``val_tta``, validate under every evaluation protocol (:mod:`pmm.seg.protocols`) from shared
            passes and log ``val/miou_<protocol>`` beside ``val/miou`` (the headline's); None: off.
    """

    def __init__(
        self,
        net: Segmenter,
        optimizer,
        lr: float = 0.01,
        head_lr_mult: float = 10.0,
        poly_power: float = 0.9,
        loss: dict | None = None,
        aux_weight: float = 0.4,
        poly_period_epochs: int | None = None,
        class_names: Sequence[str] = (),
        net_config: dict | None = None,
        val_scales: Sequence[float] = (1.0,),
        val_flip: bool = False,
        min_lr: float = 0.0,
        steps_per_epoch: int | None = None,
        val_tta: dict | None = None,
        val_crf: dict | None = None,
        val_protocols: dict | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["net", "optimizer"])
        self.hparams["stage"] = "seg"
        self.optimizer_partial = optimizer  # not a hyper-parameter: checkpoints stay plain data (weights_only loads)
        self.net = net
        loss = dict(loss or {"mode": "none"})
        # From scratch, background pixels pull the mean loss below beta within an epoch, while
        # whole classes are still unlearnt: PUF would then cut their (high-loss) pixels out for good.
        self.puf_warmup_epochs = int(loss.pop("warmup_epochs", 0) or 0)
        self.criterion = PUFLoss(**loss)
        self.warmup_criterion = PUFLoss(mode="none", ignore_index=self.criterion.ignore_index)
        self.num_classes = net.num_classes
        self.val_confusion = MulticlassConfusionMatrix(self.num_classes, ignore_index=255)
        self.val_miou_best = MaxMetric()
        self._val_plan = None
        if val_protocols and val_tta:
            from pmm.crf import CRFParams
            from pmm.seg.protocols import plan_protocols

            crf = CRFParams.from_config(val_protocols["crf"], "crf.seg")
            self._val_plan = plan_protocols(TTAConfig.from_config(val_tta), bool(val_crf), crf,
                                            val_protocols["ms_scales"], val_protocols["protocols"])
        plan = self._val_plan
        others = [name for name in plan.wanted if name != plan.headline] if plan else []
        self.val_protocol_confusions = torch.nn.ModuleDict(
            {name: MulticlassConfusionMatrix(self.num_classes, ignore_index=255) for name in others})
        # The weights every cyclic round restarts from (``cyclic.reinit``): captured when the module is
        # built (after any encoder initialisation), carried in checkpoints, so a resumed fit restarts
        # rounds from the same weights and not from the ones it was resumed with.
        self._initial_state: dict | None = copy.deepcopy(self.net.state_dict())

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.net(images)

    def set_loss_mode(self, mode: str) -> None:
        """Switch PUF's mode (the paper uses PUF in the first round only)."""
        self.criterion = PUFLoss(mode=mode, beta=self.criterion.beta, k=self.criterion.k,
                                 ignore_index=self.criterion.ignore_index)

    def reinitialize(self) -> None:
        """Back to the weights the fit started from, with fresh optimizer state (a new cyclic round)."""
        if self._initial_state is None:
            return
        self.net.load_state_dict(self._initial_state)
        for optimizer in (self._trainer.optimizers if self._trainer is not None else []):
            optimizer.state.clear()

    def capture_initial_state(self) -> None:
        """Take the network's current weights as the ones each new cyclic round restarts from."""
        self._initial_state = copy.deepcopy(self.net.state_dict())

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        if self.hparams.poly_period_epochs and self._initial_state is not None:
            checkpoint["initial_state_dict"] = self._initial_state

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if "initial_state_dict" in checkpoint:
            self._initial_state = checkpoint["initial_state_dict"]

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        outputs = self.net(batch["image"])
        criterion = self.warmup_criterion if self.current_epoch < self.puf_warmup_epochs else self.criterion
        loss = criterion(outputs["out"], batch["mask"])
        under_fitting = criterion.last_under_fitting
        if "aux" in outputs and self.hparams.aux_weight > 0:
            loss = loss + self.hparams.aux_weight * criterion(outputs["aux"], batch["mask"])
        size = len(batch["image"])
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=size)
        self.log("train/under_fitting", under_fitting.float(), on_step=False, on_epoch=True, batch_size=size)
        return loss

    def validation_tta(self) -> TTAConfig:
        if self.hparams.get("val_tta"):
            return TTAConfig.from_config(self.hparams.val_tta)
        return TTAConfig(scales=tuple(self.hparams.val_scales), flip=self.hparams.val_flip)

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        tta = self.validation_tta()
        if self._val_plan is not None:
            from pmm.seg.inference import segment_images_protocols

            images = [image.cpu().numpy() for image in batch["image_uint8"]]
            by_image = segment_images_protocols(self.net, images, self._val_plan, batch_size=len(images),
                                                device=self.device)
            for name in self._val_plan.wanted:
                predicted = torch.from_numpy(np.stack([masks[name] for masks in by_image]).astype(np.int64))
                metric = self.val_confusion if name == self._val_plan.headline else self.val_protocol_confusions[name]
                metric.update(predicted.to(batch["mask"].device), batch["mask"])
            return
        if not self.hparams.get("val_crf"):
            images = to_float_images(batch["image_uint8"]).to(self.device)
            self.val_confusion.update(predict_probs(self.net, images, tta).argmax(1), batch["mask"])
            return
        from pmm.crf import CRFParams
        from pmm.seg.inference import segment_images

        crf = CRFParams.from_config(self.hparams.val_crf, "crf.seg")
        images = [image.cpu().numpy() for image in batch["image_uint8"]]
        masks = segment_images(self.net, images, None, tta=tta, crf=crf, batch_size=len(images), device=self.device)
        predicted = torch.from_numpy(np.stack(masks).astype(np.int64)).to(batch["mask"].device)
        self.val_confusion.update(predicted, batch["mask"])

    @staticmethod
    def _miou(metric) -> tuple[np.ndarray, float]:
        confusion = metric.compute().cpu().numpy()
        metric.reset()
        iou = per_class_iou(confusion)
        return iou, float(np.nanmean(iou)) if np.any(~np.isnan(iou)) else 0.0

    def on_validation_epoch_end(self) -> None:
        iou, miou = self._miou(self.val_confusion)
        if self._val_plan is not None:
            self.log(f"val/miou_{self._val_plan.headline}", miou)
            for name, metric in self.val_protocol_confusions.items():
                self.log(f"val/miou_{name}", self._miou(metric)[1])
        self.val_miou_best.update(torch.tensor(miou))
        self.log("val/miou", miou, prog_bar=True)
        self.log("val/miou_best", self.val_miou_best.compute(), prog_bar=False)
        for name, value in zip(self.hparams.class_names, iou):
            if not np.isnan(value):
                self.log(f"val/iou/{name}", float(value))

    def configure_optimizers(self):
        encoder = list(self.net.encoder.parameters())
        encoder_ids = {id(p) for p in encoder}
        heads = [p for p in self.net.parameters() if id(p) not in encoder_ids]
        groups = [{"params": encoder, "lr": self.hparams.lr},
                  {"params": heads, "lr": self.hparams.lr * self.hparams.head_lr_mult}]
        period = None
        if self.hparams.poly_period_epochs:
            per_epoch = self.hparams.steps_per_epoch or (
                self.trainer.estimated_stepping_batches / max(1, self.trainer.max_epochs))
            period = max(1, int(round(per_epoch * self.hparams.poly_period_epochs)))
        return build_optimizer_and_poly(self, groups, self.optimizer_partial, self.hparams.poly_power, period,
                                        min_lr=self.hparams.min_lr)
