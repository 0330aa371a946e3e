"""CAM networks: the protocol every one implements, and the plain CAM head (``cam_net=cam_head``).

A CAM network is an ``nn.Module`` built by Hydra from ``cam_net/<name>.yaml`` (``_target_``) as
``instantiate(cfg.cam_net, num_classes=C)``, C = foreground classes. It takes float RGB images in
[0, 1] (N x 3 x H x W) and normalises them itself, and it implements :class:`CAMNetwork`:
the CAM LightningModule asks it for its training loss, the TTA module for its CAMs. Adding a CAM
network is one class with these methods and one YAML file with its ``_target_``.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
import torch.nn as nn
import torch.nn.functional as F

from pmm.errors import PmmError
from pmm.nets.cam_base import CAMBackboneNet


@runtime_checkable
class CAMNetwork(Protocol):
    """What the CAM stage needs from a network."""

    num_classes: int  # foreground classes

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """At least ``logits`` (N x C) and ``cams`` (N x C x h x w, raw)."""

    def training_loss(self, batch: dict) -> dict[str, torch.Tensor]:
        """Loss terms for a batch (``image`` N x 3 x H x W in [0, 1], ``label`` N x C multi-hot); ``total`` is optimised."""

    def cams(self, images: torch.Tensor) -> torch.Tensor:
        """N x C x h x w foreground CAMs for inference (before ReLU; the TTA module resizes and sums)."""

    def param_groups(self, lr: float) -> list[dict]:
        """Optimizer parameter groups with their learning rates."""


class CAMNet(CAMBackboneNet):
    """The plain CAM head: backbone, 1x1 conv classifier whose output is the CAM, global average pooling.

    Pooling the CAMs equals classifying pooled features (both are linear), so the logits are the
    spatial mean of the CAMs and the CAMs need no separate pass.

    Args:
        backbone: any timm model name, or ``resnet38d`` / ``scalenet101`` (the authors' CAM backbones,
            :mod:`pmm.nets.paper_backbones`).
        num_classes: foreground classes.
        pretrained: download ImageNet weights through timm (needs internet; ``resnet38d`` /
            ``scalenet101`` take ``weights`` only).
        weights: a local weights file for the backbone (implies pretrained).
        output_stride: 8, 16 or 32 (dilates the last stages; ``resnet38d`` / ``scalenet101``: 8).
        out_index: the feature stage the CAMs come from (later stages are dropped).
        dropout: dropout on the features before the classifier.
        input: what the backbone sees (``rgb``, ``edges``, ``rgb+edges``; :mod:`pmm.nets.encoding`).
        edge_sigma: Gaussian blur before the edge filter of ``edges`` inputs.
        new_layer_lr_mult: learning-rate factor of the classifier (trained from scratch in any case).
        structure, freeze, frozen_bn: ``scalenet101``'s structure file and the backbone's frozen parts
            (:class:`pmm.nets.cam_base.CAMBackboneNet`; None: the backbone's defaults).
        head_weights: SEAM's (:class:`pmm.cam.seam.SEAMNet`); must be false here.
        config_key: the config node error messages name (``cam_net``; the multi-crop round's own
            network: ``cam.multi_crop.net``). Not saved in checkpoints.
    """

    def __init__(
        self,
        backbone: str = "resnet18",
        num_classes: int = 20,
        pretrained: bool = False,
        weights: str | None = None,
        output_stride: int = 16,
        out_index: int = -1,
        dropout: float = 0.0,
        input: str = "rgb",  # noqa: A002 - the config key users write (cam_net.input)
        edge_sigma: float = 0.0,
        new_layer_lr_mult: float = 1.0,
        structure: str | list | None = None,
        freeze: list[str] | str | None = None,
        frozen_bn: bool | None = None,
        head_weights: bool = False,
        config_key: str = "cam_net",
    ) -> None:
        if head_weights:
            raise PmmError(f"{config_key}.head_weights=true: the plain CAM head has no SEAM head to load; "
                           f"set {config_key}.head_weights=false (or cam_net=seam)")
        super().__init__(backbone, num_classes, pretrained, weights, output_stride, (out_index,), input, edge_sigma,
                         config_key=config_key, structure=structure, freeze=freeze, frozen_bn=frozen_bn)
        channels = self.backbone.feature_info.channels()[-1]
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.classifier = nn.Conv2d(channels, num_classes, kernel_size=1, bias=False)
        self.new_layer_lr_mult = float(new_layer_lr_mult)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self.backbone_features(images)[1][-1]

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        cams = self.classifier(self.dropout(self.features(images)))
        return {"logits": cams.mean(dim=(2, 3)), "cams": cams}

    def training_loss(self, batch: dict) -> dict[str, torch.Tensor]:
        logits = self(batch["image"])["logits"]
        return {"total": F.multilabel_soft_margin_loss(logits, batch["label"])}

    def cams(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(images))

    def param_groups(self, lr: float) -> list[dict]:
        return [
            {"params": [p for p in self.backbone.parameters() if p.requires_grad], "lr": lr},
            {"params": list(self.classifier.parameters()), "lr": lr * self.new_layer_lr_mult},
        ]
