"""LightningModule of the CAM stage: multi-label training, validation mAP/F1, CAM prediction."""

from __future__ import annotations

from collections.abc import Sequence

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torchmetrics import MetricCollection
from torchmetrics.classification import MultilabelAveragePrecision, MultilabelF1Score

from pmm.cam.inference import multiscale_cams, normalize_cams
from pmm.cam.net import CAMNet
from pmm.optim import build_optimizer_and_poly


class CAMModule(pl.LightningModule):
    """Trains :class:`CAMNet` from image-level labels and predicts normalised CAMs.

    Args:
        net: the CAM network.
        optimizer: a partial ``torch.optim`` constructor (Hydra ``_partial_: true``) taking params.
        lr: base learning rate; the classifier (new layers) gets ``lr * new_layer_lr_mult``.
        poly_power: exponent of the per-step poly decay.
        scales, flip: multi-scale + flip CAM inference settings.
        net_config: the CAMNet keyword arguments, saved so a checkpoint rebuilds its network.
    """

    def __init__(
        self,
        net: CAMNet,
        optimizer,
        lr: float = 0.02,
        new_layer_lr_mult: float = 10.0,
        poly_power: float = 0.9,
        scales: Sequence[float] = (0.5, 1.0, 1.5, 2.0),
        flip: bool = True,
        net_config: dict | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["net", "optimizer"])
        self.optimizer_partial = optimizer  # not a hyper-parameter: checkpoints stay plain data (weights_only loads)
        self.net = net
        classes = net.num_classes
        self.val_metrics = MetricCollection(
            {
                "mAP": MultilabelAveragePrecision(num_labels=classes, average="macro"),
                "f1": MultilabelF1Score(num_labels=classes, average="macro"),
            },
            prefix="val/",
        )

    def forward(self, images: torch.Tensor):
        return self.net(images)

    def model_step(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        logits, _ = self.net(batch["image"])
        return F.multilabel_soft_margin_loss(logits, batch["label"]), logits

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss, _ = self.model_step(batch)
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=len(batch["image"]))
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        loss, logits = self.model_step(batch)
        self.val_metrics.update(torch.sigmoid(logits), batch["label"].long())
        self.log("val/loss", loss, prog_bar=True, on_epoch=True, batch_size=len(batch["image"]), sync_dist=True)

    def on_validation_epoch_end(self) -> None:
        self.log_dict(self.val_metrics.compute(), prog_bar=True, sync_dist=True)
        self.val_metrics.reset()

    def predict_step(self, batch: list[dict], batch_idx: int) -> list[dict]:
        """Normalised CAMs (K x H x W, labelled classes only) for each image of the batch.

        Images of equal size run as one tensor, so batching pays off on fixed-size datasets.
        """
        outputs: list[dict | None] = [None] * len(batch)
        by_size: dict[tuple[int, int], list[int]] = {}
        for position, item in enumerate(batch):
            by_size.setdefault(tuple(item["image"].shape[:2]), []).append(position)
        for positions in by_size.values():
            images = torch.stack([batch[p]["image"] for p in positions])
            cams = multiscale_cams(self.net, images, self.hparams.scales, self.hparams.flip)
            for row, position in enumerate(positions):
                item = batch[position]
                outputs[position] = {
                    "id": item["id"],
                    "labels": item["labels"].cpu(),
                    "cams": normalize_cams(cams[row], item["labels"]).float().cpu(),
                }
        return outputs

    def configure_optimizers(self):
        groups = [
            {"params": self.net.backbone_layers(), "lr": self.hparams.lr},
            {"params": self.net.new_layers(), "lr": self.hparams.lr * self.hparams.new_layer_lr_mult},
        ]
        return build_optimizer_and_poly(self, groups, self.optimizer_partial, self.hparams.poly_power)
