"""ScaleNet-101 (Li et al., CVPR 2019, "Data-Driven Neuron Allocation for Scale Aggregation
Networks"), the backbone of PMM's second CAM round, in the CAM form of PMM's ``network/scalenet.py``.

A ResNet-101 whose 3x3 convolution is a *scale aggregation block*: four branches max-pool the
block's features by 1, 2, 4 and 7, convolve, upsample back and are concatenated. How many output
channels each branch has was learnt per block on ImageNet and is published as a structure file
(``scalenet101.json``: one ``[c1, c2, c4, c7, side]`` entry per block, ``side`` being the block's
feature size at 224-pixel ImageNet inputs; a branch whose pooled map would be 1 pixel there has a
1x1 kernel). So the structure file and the ImageNet weights file (state-dict names ``conv1``,
``bn1``, ``layer1.0.conv2.0.weight`` ...) go together.

The CAM form: ``layer3`` and ``layer4`` keep stride 1 and are *not* dilated, so the output stride
is 8 (the stem 4, ``layer2`` 2). Downsampling in a block is a max-pool of its input, so the keys are
those of the ImageNet network (whose ``fc`` classifier is not used).

Stages, as a timm ResNet's: 0 ``act1`` (64 ch, stride 2), 1 ``layer1`` (256, 4), 2 ``layer2``
(512, 8), 3 ``layer3`` (1024, 8), 4 ``layer4`` (2048, 8). ``out_indices=(2, 3, 4)`` is what PMM's
SEAM network reads (x2 and x3 for the PCM, x4 for the CAMs).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pmm.errors import PmmError
from pmm.nets.features import feature_info, stage_indices
from pmm.nets.normalize import IMAGENET_MEAN, IMAGENET_STD

BLOCKS_101 = (3, 4, 23, 3)
PLANES = (64, 128, 256, 512)
STRIDES = (1, 2, 1, 1)  # the CAM form: ImageNet's (1, 2, 2, 2) with layers 3-4 at stride 1, no dilation
SCALES = (1, 2, 4, 7)   # the four branches' pooling factors
EXPANSION = 4
STAGES = ("act1", "layer1", "layer2", "layer3", "layer4")
CHANNELS = (64, 256, 512, 1024, 2048)
REDUCTIONS = (2, 4, 8, 8, 8)
# The ImageNet classifier and a PMM SEAM network's head: in weights files, not part of the backbone.
HEAD_PREFIXES = ("fc.", "fc8.", "f8_3.", "f8_4.", "f9.")
# What PMM's ScaleNet SEAM network does not train (scalenet_SEAM.py ``not_training``).
DEFAULT_FROZEN = ("conv1", "bn1", "layer1")
STRUCTURE_SOURCE = "scalenet101.json of https://github.com/Eli-YiLi/ScaleNet (structures/) or of PMM's pretrained models"


def read_structure(source: str | Path | Sequence, blocks: int = sum(BLOCKS_101),
                   config_key: str = "cam_net.structure") -> list[list[int]]:
    """The per-block ``[c1, c2, c4, c7, side]`` entries of a structure file (or of the list itself).

    Raises one :class:`PmmError` line naming ``config_key`` and the file for a missing file, bad
    JSON or entries of the wrong form.
    """
    where = f"{config_key}={source}"
    if isinstance(source, (str, Path)):
        path = Path(source).expanduser()
        if not path.is_file():
            raise PmmError(f"{where}: file not found; give the ScaleNet structure file ({STRUCTURE_SOURCE})")
        try:
            entries = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise PmmError(f"{where}: not a JSON file ({error}); give the ScaleNet structure file ({STRUCTURE_SOURCE})") from None
    else:
        where = config_key
        entries = source
    expected = f"a list of {blocks} [c1, c2, c4, c7, side] entries (channels of the four branches >= 0, some > 0; side > 0)"

    def valid(entry) -> bool:
        return (isinstance(entry, (list, tuple)) and len(entry) == 5
                and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in entry)
                and sum(entry[:4]) > 0 and entry[4] > 0)

    if not isinstance(entries, (list, tuple)) or len(entries) != blocks:
        count = f"{len(entries)} entries" if isinstance(entries, (list, tuple)) else type(entries).__name__
        raise PmmError(f"{where}: expected {expected} for ScaleNet-101, got {count}")
    for index, entry in enumerate(entries):
        if not valid(entry):
            raise PmmError(f"{where}: entry {index} is {entry!r}; expected {expected}")
    return [list(entry) for entry in entries]


class ScaleBlock(nn.Module):
    """A scale aggregation bottleneck (PMM's ``SABlock``): max-pool by ``stride``, 1x1 conv + BN-ReLU
    to ``planes``, the four scale branches (pool, 3x3 or 1x1 conv, upsample, BN; a branch with 0
    channels is absent), ReLU of their concatenation, 1x1 conv + BN to 4 ``planes``, plus the input
    (1x1 conv + BN when the shape changes), ReLU."""

    def __init__(self, inplanes: int, planes: int, branches: Sequence[int], side: int, stride: int = 1,
                 downsample: bool = False) -> None:
        super().__init__()
        self.stride = stride
        self.downsample = (nn.Sequential(nn.Conv2d(inplanes, planes * EXPANSION, 1, bias=False),
                                         nn.BatchNorm2d(planes * EXPANSION)) if downsample else None)
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        convs, norms = [], []
        for i, channels in enumerate(branches):
            # The kernel is 1x1 where the pooled map is a single pixel at ImageNet size (the structure's side).
            wide = side / 2 ** i > 1
            convs.append(nn.Conv2d(planes, channels, 3 if wide else 1, padding=1 if wide else 0, bias=False)
                         if channels > 0 else None)
            norms.append(nn.BatchNorm2d(channels) if channels > 0 else None)
        self.conv2 = nn.ModuleList(convs)  # None entries keep each branch's index in the state-dict names
        self.bn2 = nn.ModuleList(norms)
        self.conv3 = nn.Conv2d(sum(branches), planes * EXPANSION, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * EXPANSION)

    def forward(self, x: Tensor) -> Tensor:
        if self.stride > 1:
            x = F.max_pool2d(x, self.stride, self.stride)
        shortcut = x if self.downsample is None else self.downsample(x)
        out = F.relu(self.bn1(self.conv1(x)))
        size = out.shape[-2:]
        branches = []
        for scale, conv, norm in zip(SCALES, self.conv2, self.bn2):
            if conv is None:
                continue
            y = out
            if scale > 1:
                # A map smaller than the pooling window is pooled to one pixel.
                y = F.adaptive_max_pool2d(y, 1) if min(size) < scale else F.max_pool2d(y, scale, scale)
            y = conv(y)
            if scale > 1:
                exact = size[0] % y.shape[-2] == 0 and size[1] % y.shape[-1] == 0
                y = F.interpolate(y, size=size, mode="nearest") if exact else \
                    F.interpolate(y, size=size, mode="bilinear", align_corners=False)
            branches.append(norm(y))
        out = self.bn3(self.conv3(F.relu(torch.cat(branches, dim=1))))
        return F.relu(out + shortcut)


class ScaleNet(nn.Module):
    """ScaleNet in its CAM form as a feature extractor: ``forward(x)`` -> the stages of ``out_indices``.

    Args:
        structure: the per-block entries (:func:`read_structure`), one per block of ``blocks``.
        out_indices: which stages to return (0..4 or negative from the end); SEAM: (2, 3, 4).
        in_chans: input channels (``pmm.nets.encoding``).
        blocks: blocks per layer (ScaleNet-101: 3, 4, 23, 3).
    """

    default_frozen = DEFAULT_FROZEN
    default_frozen_bn = True  # PMM's train(): every BatchNorm in eval mode, affine not trained
    head_prefixes = HEAD_PREFIXES
    first_conv = "conv1.weight"  # adapted to other input channels when weights are loaded

    def __init__(self, structure: Sequence[Sequence[int]], out_indices: Sequence[int] = (2, 3, 4), in_chans: int = 3,
                 blocks: Sequence[int] = BLOCKS_101) -> None:
        super().__init__()
        if len(structure) != sum(blocks):
            raise ValueError(f"the structure has {len(structure)} entries for {sum(blocks)} blocks")
        self.out_indices = stage_indices(out_indices, len(STAGES))
        depth = max(self.out_indices)
        self.pretrained_cfg = {"mean": IMAGENET_MEAN, "std": IMAGENET_STD}  # PMM's Normalize
        self.feature_info = feature_info(STAGES, CHANNELS, REDUCTIONS, self.out_indices)
        self.conv1 = nn.Conv2d(in_chans, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        entries = iter(structure)
        inplanes = 64
        self.layer_names: list[str] = []
        self.dropped_prefixes: tuple[str, ...] = ()  # the key prefixes of layers not built
        for index, (planes, count, stride) in enumerate(zip(PLANES, blocks, STRIDES)):
            layer = []
            for block in range(count):
                entry = next(entries)
                first = block == 0
                layer.append(ScaleBlock(inplanes, planes, entry[:4], entry[4], stride=stride if first else 1,
                                        downsample=first and (stride != 1 or inplanes != planes * EXPANSION)))
                inplanes = planes * EXPANSION
            if index + 1 <= depth:  # layers after the deepest requested stage are not kept
                setattr(self, f"layer{index + 1}", nn.Sequential(*layer))
                self.layer_names.append(f"layer{index + 1}")
            else:
                self.dropped_prefixes += (f"layer{index + 1}.",)
        for module in self.modules():  # the reference's initialisation (He normal, fan out)
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x: Tensor) -> list[Tensor]:
        x = F.relu(self.bn1(self.conv1(x)))
        stages = [x]
        x = F.max_pool2d(x, 3, 2, 1)
        for name in self.layer_names:
            x = getattr(self, name)(x)
            stages.append(x)
        return [stages[i] for i in self.out_indices]
