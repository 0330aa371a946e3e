"""What every CAM network is built on: input encoding, a backbone and its normalisation.

:class:`CAMBackboneNet` takes float RGB images in [0, 1] (N x 3 x H x W), normalises them with
the backbone's own statistics, encodes them (``rgb`` / ``edges`` / ``rgb+edges``, :mod:`pmm.nets.encoding`)
and returns the backbone's feature maps. The backbone is timm's or one of the authors' (``resnet38d``,
``scalenet101``: :mod:`pmm.nets.paper_backbones`), with its frozen parts. A CAM network (``pmm.cam.net.CAMNet``,
``pmm.cam.seam.SEAMNet``) subclasses it and adds its head, its loss and its parameter groups.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from pmm.nets.backbone import create_backbone
from pmm.nets.encoding import InputEncoding
from pmm.nets.normalize import ImageNormalize


class CAMBackboneNet(nn.Module):
    """Input encoding + feature extractor (timm's ``features_only`` interface) + ImageNet-style normalisation.

    Args:
        backbone: any timm model name, or ``resnet38d`` / ``scalenet101`` (:mod:`pmm.nets.paper_backbones`).
        num_classes: foreground classes (the head is the subclass's).
        pretrained: download ImageNet weights through timm (needs internet; not for ``resnet38d`` /
            ``scalenet101``, which take ``weights`` only).
        weights: a local weights file for the backbone (implies pretrained).
        output_stride: 8, 16 or 32 (dilates the last stages; ``resnet38d`` / ``scalenet101``: 8).
        out_indices: the backbone stages returned (timm ``out_indices``; later stages are dropped).
        input: what the backbone sees (``rgb``, ``edges``, ``rgb+edges``).
        edge_sigma: Gaussian blur before the edge filter of ``edges`` inputs.
        config_key: the config node named in error messages.
        structure: ``scalenet101``'s structure file (``scalenet101.json``); null for other backbones.
        freeze: backbone modules not trained (their BatchNorm statistics fixed too); None: the
            backbone's default (``resnet38d``: conv1a, b2..b2_2; ``scalenet101``: conv1, bn1, layer1;
            timm: none). See :func:`pmm.nets.backbone.apply_freezing`.
        frozen_bn: every backbone BatchNorm fixed (statistics and affine, in training mode too);
            None: the backbone's default (true for ``resnet38d`` / ``scalenet101``, false for timm).
    """

    def __init__(self, backbone: str, num_classes: int, pretrained: bool, weights: str | None, output_stride: int,
                 out_indices: Sequence[int], input: str = "rgb", edge_sigma: float = 0.0,  # noqa: A002 - the config key
                 config_key: str = "cam_net", structure=None, freeze: Sequence[str] | str | None = None,
                 frozen_bn: bool | None = None) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.encode_input = InputEncoding(input, edge_sigma, config_key=config_key)
        self.backbone = create_backbone(backbone, pretrained, weights, output_stride, config_key=config_key,
                                        in_chans=self.encode_input.out_channels, out_indices=tuple(out_indices),
                                        structure=structure, freeze=freeze, frozen_bn=frozen_bn)
        self.normalize = ImageNormalize.from_timm(self.backbone)

    def backbone_features(self, images: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(normalised images, the backbone's feature maps, one per ``out_indices`` entry)."""
        x = self.normalize(images)
        return x, self.backbone(self.encode_input(x))
