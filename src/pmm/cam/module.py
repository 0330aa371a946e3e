"""LightningModule of the CAM stage: trains any CAM network (:class:`pmm.cam.net.CAMNetwork`),
validates mAP/F1, predicts normalised CAMs through the TTA module."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torchmetrics import MetricCollection
from torchmetrics.classification import MultilabelAveragePrecision, MultilabelF1Score

from pmm.nets.optim import build_optimizer_and_poly
from pmm.nets.tta import TTAConfig, tta_over_images


def normalize_cams(cams: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Keep the labelled classes (1-based ``labels``) of one image, min-max normalised to [0, 1] each.

    Returns K x H x W for the K labels (K may be 0).
    """
    kept = cams[labels - 1]
    flat = kept.flatten(1)
    low = flat.min(dim=1).values.view(-1, 1, 1)
    high = flat.max(dim=1).values.view(-1, 1, 1)
    return (kept - low) / (high - low).clamp_min(1e-5)


class CAMModule(pl.LightningModule):
    """Trains a CAM network from image-level labels and predicts normalised CAMs.

    The network owns its loss (``net.training_loss``) and its optimizer groups (``net.param_groups``):
    the plain head and SEAM differ in both, the module does not.

    Args:
        net: a CAM network.
        optimizer: a partial ``torch.optim`` constructor (Hydra ``_partial_: true``) taking params.
        lr: base learning rate (the network scales it per group).
        poly_power: exponent of the per-step poly decay.
        tta: :class:`pmm.nets.tta.TTAConfig` fields of CAM inference (scales, flip, mode, window, stride).
        net_config: the network's spec (``_target_`` + arguments), saved so a checkpoint rebuilds it.
    """

    def __init__(
        self,
        net: torch.nn.Module,
        optimizer,
        lr: float = 0.02,
        poly_power: float = 0.9,
        tta: dict | None = None,
        net_config: dict | None = None,
        infer_batch_size: int = 16,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["net", "optimizer"])
        self.hparams["stage"] = "cam"
        self.optimizer_partial = optimizer  # not a hyper-parameter: checkpoints stay plain data (weights_only loads)
        self.net = net
        self.tta = TTAConfig.from_config(tta or {"scales": (1.0,), "flip": False})
        classes = net.num_classes
        self.val_metrics = MetricCollection(
            {
                "mAP": MultilabelAveragePrecision(num_labels=classes, average="macro"),
                "f1": MultilabelF1Score(num_labels=classes, average="macro"),
            },
            prefix="val/",
        )

    def forward(self, images: torch.Tensor) -> dict:
        return self.net(images)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        terms = self.net.training_loss(batch)
        size = len(batch["image"])
        self.log("train/loss", terms["total"], prog_bar=True, on_step=True, on_epoch=True, batch_size=size)
        for name, value in terms.items():
            if name != "total":
                self.log(f"train/{name}", value, on_step=False, on_epoch=True, batch_size=size)
        return terms["total"]

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        logits = self.net(batch["image"])["logits"]
        # The classification term only: comparable between networks whose training losses differ.
        loss = F.multilabel_soft_margin_loss(logits, batch["label"])
        self.val_metrics.update(torch.sigmoid(logits), batch["label"].long())
        self.log("val/loss", loss, prog_bar=True, on_epoch=True, batch_size=len(batch["image"]), sync_dist=True)

    def on_validation_epoch_end(self) -> None:
        self.log_dict(self.val_metrics.compute(), prog_bar=True, sync_dist=True)
        self.val_metrics.reset()

    def predict_step(self, batch: list[dict], batch_idx: int) -> list[dict]:
        """Normalised CAMs (K x H x W, labelled classes only) for each image of the batch."""
        maps = tta_over_images(self.net.cams, [item["image"] for item in batch], self.tta, activation="relu",
                               reduce="sum", batch_size=self.hparams.infer_batch_size, device=self.device)
        return [
            {"id": item["id"], "labels": item["labels"].cpu(), "cams": normalize_cams(cams, item["labels"]).float().cpu()}
            for item, cams in zip(batch, maps)
        ]

    def configure_optimizers(self):
        return build_optimizer_and_poly(self, self.net.param_groups(self.hparams.lr), self.optimizer_partial,
                                        self.hparams.poly_power)
