"""The CAM classifier: timm backbone, 1x1 conv classifier producing CAMs, global average pooling."""

from __future__ import annotations

import torch
import torch.nn as nn

from pmm.backbone import create_backbone
from pmm.input_encoding import InputEncoding


class CAMNet(nn.Module):
    """Classifier whose 1x1 conv output, before pooling, is the class activation map.

    Pooling the CAMs equals classifying pooled features (both are linear), so the logits are the
    spatial mean of the CAMs and the CAMs need no separate pass.
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
        input: str = "rgb",  # noqa: A002 - the config key users write (model.input)
        edge_sigma: float = 0.0,
    ) -> None:
        super().__init__()
        self.encode_input = InputEncoding(input, edge_sigma, config_key="model")
        self.backbone = create_backbone(
            backbone, pretrained, weights, output_stride, out_index, in_chans=self.encode_input.out_channels
        )
        channels = self.backbone.feature_info.channels()[-1]
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.classifier = nn.Conv2d(channels, num_classes, kernel_size=1, bias=False)
        self.num_classes = num_classes

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (logits N x classes, CAMs N x classes x h x w) for foreground classes."""
        features = self.backbone(self.encode_input(images))[-1]
        cams = self.classifier(self.dropout(features))
        return cams.mean(dim=(2, 3)), cams

    def new_layers(self) -> list[nn.Parameter]:
        """Parameters trained from scratch in any case: they get the higher learning rate."""
        return list(self.classifier.parameters())

    def backbone_layers(self) -> list[nn.Parameter]:
        return list(self.backbone.parameters())
