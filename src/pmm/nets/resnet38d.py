"""ResNet-38 (Wu et al.'s wide ResNet "model A"), the backbone of SEAM and of PMM's first CAM round.

The layout and the state-dict names are those of SEAM's ``network/resnet38d.py`` (``conv1a``,
``b2`` .. ``b7``, ``bn7``), so the files users have load unchanged: SEAM's released model
``resnet38_SEAM.pth`` and the ImageNet weights converted to torch. Blocks are pre-activation
residual blocks: each starts with BatchNorm + ReLU of its input, so the normalised output of a
block group is computed by the first block of the next group.

The network has output stride 8 by construction: ``b2``, ``b3``, ``b4`` halve the resolution,
``b5`` is dilated 2, ``b6`` 4 and ``b7`` 2 (PMM's copy of the file, which produced the paper's
CAMs; SEAM's own has 4: ``b7_dilation``). ``b6`` and ``b7`` are bottleneck blocks with dropout
(0.3 and 0.5) inside.

As a feature extractor it returns, for ``out_indices``, these stages (names as SEAM's):

====  =======  ========  ======  =========================================
index name     channels  stride  what
====  =======  ========  ======  =========================================
0     conv2    128       2       BN + ReLU of ``b2_2``'s output (in ``b3``)
1     conv3    256       4       BN + ReLU of ``b3_2``'s output (in ``b4``)
2     conv4    512       8       BN + ReLU of ``b4_5``'s output (in ``b5``)
3     conv5    1024      8       BN + ReLU of ``b5_2``'s output (in ``b6``)
4     conv6    4096      8       ``relu(bn7(b7))``: the CAM features
====  =======  ========  ======  =========================================

so ``out_indices=(2, 3, 4)`` (``out_index=-1`` for SEAM) is SEAM's conv4 / conv5 / conv6 triple.
Layers after the deepest requested stage are not built (their keys in a weights file are skipped).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from pmm.nets.features import feature_info, stage_indices
from pmm.nets.normalize import IMAGENET_MEAN, IMAGENET_STD

STAGES = ("conv2", "conv3", "conv4", "conv5", "conv6")
CHANNELS = (128, 256, 512, 1024, 4096)
REDUCTIONS = (2, 4, 8, 8, 8)
# The block groups after the stem; stage k (k < 4) is the pre-activation of group k + 1's first block.
GROUPS = (("b2", "b2_1", "b2_2"), ("b3", "b3_1", "b3_2"), ("b4", "b4_1", "b4_2", "b4_3", "b4_4", "b4_5"),
          ("b5", "b5_1", "b5_2"), ("b6",), ("b7",))
# The key prefixes of a SEAM network's head (resnet38_SEAM.py), not part of the backbone.
HEAD_PREFIXES = ("fc8.", "f8_3.", "f8_4.", "f9.")
# What PMM's SEAM network does not train (resnet38_SEAM.py ``not_training``): the stem and b2.
DEFAULT_FROZEN = ("conv1a", "b2", "b2_1", "b2_2")


class PreActBlock(nn.Module):
    """SEAM's ``ResBlock``: BN-ReLU, 3x3 conv (stride, ``first_dilation``), BN-ReLU, 3x3 conv
    (``dilation``), plus the input (or a strided 1x1 conv of the activated input when the shape changes)."""

    def __init__(self, in_channels: int, mid_channels: int, out_channels: int, stride: int = 1,
                 first_dilation: int | None = None, dilation: int = 1) -> None:
        super().__init__()
        first_dilation = dilation if first_dilation is None else first_dilation
        self.same_shape = in_channels == out_channels and stride == 1
        self.bn_branch2a = nn.BatchNorm2d(in_channels)
        self.conv_branch2a = nn.Conv2d(in_channels, mid_channels, 3, stride, padding=first_dilation,
                                       dilation=first_dilation, bias=False)
        self.bn_branch2b1 = nn.BatchNorm2d(mid_channels)
        self.conv_branch2b1 = nn.Conv2d(mid_channels, out_channels, 3, padding=dilation, dilation=dilation, bias=False)
        if not self.same_shape:
            self.conv_branch1 = nn.Conv2d(in_channels, out_channels, 1, stride, bias=False)

    def preactivate(self, x: Tensor) -> Tensor:
        return F.relu(self.bn_branch2a(x))

    def from_preactivation(self, x: Tensor, activated: Tensor) -> Tensor:
        shortcut = x if self.same_shape else self.conv_branch1(activated)
        branch = self.conv_branch2b1(F.relu(self.bn_branch2b1(self.conv_branch2a(activated))))
        return shortcut + branch

    def forward(self, x: Tensor) -> Tensor:
        return self.from_preactivation(x, self.preactivate(x))

    def keep_preactivation_only(self) -> None:
        """Drop everything but the first BatchNorm (the block's input normalisation is a stage output)."""
        for name in [n for n, _ in self.named_children() if n != "bn_branch2a"]:
            delattr(self, name)


class PreActBottleneck(PreActBlock):
    """SEAM's ``ResBlock_bot``: BN-ReLU, 1x1 conv to out/4, BN-ReLU-dropout, 3x3 conv (dilated) to
    out/2, BN-ReLU-dropout, 1x1 conv to out, plus a 1x1 conv of the activated input."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, dilation: int = 1, dropout: float = 0.0) -> None:
        nn.Module.__init__(self)
        self.same_shape = False  # both bottlenecks widen the features: the shortcut is always a conv
        self.bn_branch2a = nn.BatchNorm2d(in_channels)
        self.conv_branch2a = nn.Conv2d(in_channels, out_channels // 4, 1, stride, bias=False)
        self.bn_branch2b1 = nn.BatchNorm2d(out_channels // 4)
        self.dropout_2b1 = nn.Dropout2d(dropout)
        self.conv_branch2b1 = nn.Conv2d(out_channels // 4, out_channels // 2, 3, padding=dilation, dilation=dilation, bias=False)
        self.bn_branch2b2 = nn.BatchNorm2d(out_channels // 2)
        self.dropout_2b2 = nn.Dropout2d(dropout)
        self.conv_branch2b2 = nn.Conv2d(out_channels // 2, out_channels, 1, bias=False)
        self.conv_branch1 = nn.Conv2d(in_channels, out_channels, 1, stride, bias=False)

    def from_preactivation(self, x: Tensor, activated: Tensor) -> Tensor:
        branch = self.conv_branch2a(activated)
        branch = self.conv_branch2b1(self.dropout_2b1(F.relu(self.bn_branch2b1(branch))))
        branch = self.conv_branch2b2(self.dropout_2b2(F.relu(self.bn_branch2b2(branch))))
        return self.conv_branch1(activated) + branch


class ResNet38d(nn.Module):
    """ResNet-38 as a feature extractor: ``forward(x)`` -> the stages of ``out_indices`` (module doc).

    Args:
        out_indices: which stages to return (0..4 or negative from the end); SEAM: (2, 3, 4).
        in_chans: input channels (``pmm.nets.encoding``).
        b7_dilation: dilation of ``b7``'s 3x3 conv: 2 in PMM's copy (the paper's CAMs), 4 in SEAM's.
            Weights fit either.
    """

    default_frozen = DEFAULT_FROZEN
    default_frozen_bn = True  # SEAM's / PMM's train(): every BatchNorm in eval mode, affine not trained
    head_prefixes = HEAD_PREFIXES
    first_conv = "conv1a.weight"  # adapted to other input channels when weights are loaded

    def __init__(self, out_indices: Sequence[int] = (2, 3, 4), in_chans: int = 3, b7_dilation: int = 2) -> None:
        super().__init__()
        self.out_indices = stage_indices(out_indices, len(STAGES))
        self.depth = max(self.out_indices)
        self.pretrained_cfg = {"mean": IMAGENET_MEAN, "std": IMAGENET_STD}  # SEAM's Normalize
        self.feature_info = feature_info(STAGES, CHANNELS, REDUCTIONS, self.out_indices)

        self.conv1a = nn.Conv2d(in_chans, 64, 3, padding=1, bias=False)
        self.b2 = PreActBlock(64, 128, 128, stride=2)
        self.b2_1 = PreActBlock(128, 128, 128)
        self.b2_2 = PreActBlock(128, 128, 128)
        self.b3 = PreActBlock(128, 256, 256, stride=2)
        self.b3_1 = PreActBlock(256, 256, 256)
        self.b3_2 = PreActBlock(256, 256, 256)
        self.b4 = PreActBlock(256, 512, 512, stride=2)
        for i in range(1, 6):
            setattr(self, f"b4_{i}", PreActBlock(512, 512, 512))
        self.b5 = PreActBlock(512, 512, 1024, stride=1, first_dilation=1, dilation=2)
        self.b5_1 = PreActBlock(1024, 512, 1024, dilation=2)
        self.b5_2 = PreActBlock(1024, 512, 1024, dilation=2)
        self.b6 = PreActBottleneck(1024, 2048, stride=1, dilation=4, dropout=0.3)
        self.b7 = PreActBottleneck(2048, 4096, dilation=b7_dilation, dropout=0.5)
        self.bn7 = nn.BatchNorm2d(4096)
        self.dropped_prefixes: tuple[str, ...] = ()  # the key prefixes of layers not built
        self._drop_after(self.depth)

    def _drop_after(self, depth: int) -> None:
        """Remove the layers the deepest requested stage does not need."""
        if depth == len(STAGES) - 1:
            return
        boundary = GROUPS[depth + 1]  # its first block's input normalisation is stage ``depth``
        block = getattr(self, boundary[0])
        dropped = [f"{boundary[0]}.{child}" for child, _ in block.named_children() if child != "bn_branch2a"]
        block.keep_preactivation_only()
        later = list(boundary[1:]) + [name for group in GROUPS[depth + 2:] for name in group] + ["bn7"]
        for name in later:
            delattr(self, name)
        self.dropped_prefixes = tuple(f"{name}." for name in dropped + later)

    def forward(self, x: Tensor) -> list[Tensor]:
        stages: dict[int, Tensor] = {}
        x = self.conv1a(x)
        for name in GROUPS[0]:
            x = getattr(self, name)(x)
        for index, group in enumerate(GROUPS[1:5]):
            first = getattr(self, group[0])
            activated = first.preactivate(x)
            stages[index] = activated
            if index == self.depth:
                return [stages[i] for i in self.out_indices]
            x = first.from_preactivation(x, activated)
            for name in group[1:]:
                x = getattr(self, name)(x)
        stages[4] = F.relu(self.bn7(self.b7(x)))
        return [stages[i] for i in self.out_indices]

