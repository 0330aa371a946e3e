"""SEAM, the paper's CAM network: a CAM head, a pixel correlation module (PCM) and the
equivariance losses (Wang et al., CVPR 2020, "Self-supervised Equivariant Attention Mechanism").

PMM's pseudo-masks start from SEAM CAMs. This module holds

- :func:`refine`: the PCM, a pure function of the raw CAM and the PCM feature;
- :func:`seam_losses`: SEAM's training losses from the two passes (the image and the image
  resized by ``scale``), a pure function of the CAMs and refined CAMs at image size;
- :class:`SEAMNet`: any timm backbone (``features_only``), or the authors' ``resnet38d`` /
  ``scalenet101`` (:mod:`pmm.nets.paper_backbones`), with SEAM's head, implementing the CAM
  network protocol of ``pmm.cam.net`` (``forward`` -> dict, ``training_loss``, ``cams``,
  ``param_groups``).

The formulas follow the authors' code (``network/resnet38_SEAM.py`` and ``train_SEAM.py`` of
YudeWang/SEAM, repeated in PMM's ``pipeline/train_cam.py``); where this code differs the
docstrings say so. Channel 0 of the head output is the background: no loss reads it directly
(the classification loss uses channels 1..C), the PCM replaces it by ``1 - max`` foreground.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from pmm.errors import PmmError
from pmm.nets.cam_base import CAMBackboneNet

EPS = 1e-5
# The affinity is hw x hw per image; refine() computes it in column blocks of at most this many
# entries (column normalisation is per column, so blocks are independent). A 1000 x 750 image at
# output stride 8 has hw = 11,750: a 552 MB affinity in one piece, 64 MB blocks here.
_AFFINITY_BLOCK = 1 << 24


def normalize_for_pcm(cam: Tensor) -> Tensor:
    """The PCM's input: ReLU'd raw CAM, max-normalised per channel, background completed, and
    every foreground value below the pixel's foreground maximum zeroed (detached; N x (C+1) x h x w)."""
    cam = F.relu(cam.detach())
    peak = cam.flatten(2).amax(dim=2)[..., None, None] + EPS
    cam = F.relu(cam - EPS) / peak
    foreground = cam[:, 1:]
    top = foreground.amax(dim=1, keepdim=True)
    foreground = torch.where(foreground < top, torch.zeros_like(foreground), foreground)
    return torch.cat([1 - top, foreground], dim=1)


def refine(cam: Tensor, feature: Tensor) -> Tensor:
    """The pixel correlation module: propagate the normalised CAM along feature affinities.

    Args:
        cam: raw head output N x (C+1) x h x w (channel 0 = background). Detached here: the PCM
            trains only the feature, the CAM receives no gradient through it.
        feature: the PCM feature N x D x h x w (SEAM: 192 channels).

    Returns:
        N x (C+1) x h x w: ``cam_hat @ A`` with ``cam_hat`` = :func:`normalize_for_pcm` (cam) and
        ``A = ReLU(f^T f)`` over L2-normalised pixel features (norm + 1e-5), each column divided by
        (its sum + 1e-5): pixel j's refined value is the affinity-weighted mean of the CAM over i.
    """
    n, d, h, w = feature.shape
    if cam.shape[0] != n or cam.shape[-2:] != (h, w):
        raise ValueError(f"refine: cam {tuple(cam.shape)} and feature {tuple(feature.shape)} differ in batch or size")
    # In float32 even under autocast: column sums over thousands of pixels in half precision
    # would lose the 1e-5 guards and most of the affinities' digits.
    with torch.autocast(device_type=feature.device.type, enabled=False):
        source = normalize_for_pcm(cam.float()).flatten(2)  # N x (C+1) x hw
        f = feature.float().flatten(2)
        f = f / (f.norm(dim=1, keepdim=True) + EPS)  # N x D x hw
        pixels = h * w
        block = max(1, _AFFINITY_BLOCK // max(1, pixels))
        pieces = []
        for start in range(0, pixels, block):
            columns = f[:, :, start : start + block]
            affinity = F.relu(torch.bmm(f.transpose(1, 2), columns))  # N x hw x block
            affinity = affinity / (affinity.sum(dim=1, keepdim=True) + EPS)
            pieces.append(torch.bmm(source, affinity))
        refined = pieces[0] if len(pieces) == 1 else torch.cat(pieces, dim=2)
    return refined.view(n, -1, h, w)


def max_norm(cam: Tensor) -> Tensor:
    """SEAM's per-channel min-max normalisation: ReLU, ``ReLU(x - min - 1e-5) / (max - min + 1e-5)``."""
    cam = F.relu(cam)
    flat = cam.flatten(2)
    low = flat.amin(dim=2)[..., None, None]
    high = flat.amax(dim=2)[..., None, None]
    return F.relu(cam - low - EPS) / (high - low + EPS)


def max_onehot(cam: Tensor) -> Tensor:
    """Keep, in channels 1..C, only the value equal to the pixel's foreground maximum (ties all
    kept); channel 0 unchanged. Not in place (SEAM's modifies its argument)."""
    foreground = cam[:, 1:]
    top = foreground.amax(dim=1, keepdim=True)
    foreground = torch.where(foreground != top, torch.zeros_like(foreground), foreground)
    return torch.cat([cam[:, :1], foreground], dim=1)


def min_pooling_loss(x: Tensor) -> Tensor:
    """SEAM's adaptive min-pooling term: max over channels, the lowest quarter of the pixels,
    ReLU, summed / (count x N)."""
    n = x.shape[0]
    pixels = x.shape[-2] * x.shape[-1]
    count = max(1, pixels // 4)
    lowest = torch.topk(x.amax(dim=1).reshape(n, -1), k=count, dim=-1, largest=False).values
    return F.relu(lowest).sum() / (count * n)


def _with_background(cam: Tensor) -> Tensor:
    """Channel 0 set to 1 - max of channels 1..C."""
    return torch.cat([1 - cam[:, 1:].amax(dim=1, keepdim=True), cam[:, 1:]], dim=1)


def _top_mean(x: Tensor, fraction: float) -> Tensor:
    """Per sample, the mean of the largest ``fraction`` of the entries; then the mean over samples."""
    flat = x.reshape(x.shape[0], -1)
    count = min(flat.shape[1], max(1, int(flat.shape[1] * fraction)))
    return torch.topk(flat, k=count, dim=-1).values.mean()


def seam_losses(cam1: Tensor, rv1: Tensor, cam2: Tensor, rv2: Tensor, labels: Tensor, scale: float = 0.3, top: float = 0.2) -> dict:
    """SEAM's training losses from two passes.

    Args:
        cam1, rv1: raw CAM and refined CAM of the image, N x (C+1) x H x W (image size).
        cam2, rv2: the same for the image resized by ``scale``, N x (C+1) x H2 x W2.
        labels: N x C multi-hot foreground labels.
        scale: the second pass's scale. Only documents the call: pass 1 is resized to pass 2's
            size (``H2 x W2``), which is ``floor(H * scale)`` when the image was resized by it.
        top: fraction of the (C+1) x H2 x W2 entries the ECR loss averages (the largest).

    Returns:
        ``cls``: mean of the multi-label soft-margin losses of the spatial means of channels 1..C
        of cam1 and cam2. ``rvmin``: mean over the passes of the min-pooling term of the refined
        CAMs times ``[1, labels]`` (foreground channels). ``er``: mean |c1 - c2| over channels
        1..C, c = min-max normalised CAM times ``[1, labels]``, c1 resized (bilinear,
        align_corners) to pass 2's size. ``ecr``: for each pass, the mean of the largest ``top``
        fraction of |max_onehot(other pass's c, background completed, detached) - own r| (r: the
        refined CAM normalised and resized like c), summed over the passes.
        ``total`` = cls + rvmin + er + ecr.
    """
    del scale  # pass 2's size is read from cam2
    size = cam2.shape[-2:]
    gate = torch.cat([torch.ones_like(labels[:, :1]), labels], dim=1).to(cam1.dtype)[..., None, None]
    target = labels.to(cam1.dtype)

    cls1 = F.multilabel_soft_margin_loss(cam1[:, 1:].mean(dim=(2, 3)), target)
    cls2 = F.multilabel_soft_margin_loss(cam2[:, 1:].mean(dim=(2, 3)), target)
    rvmin1 = min_pooling_loss((rv1 * gate)[:, 1:])
    rvmin2 = min_pooling_loss((rv2 * gate)[:, 1:])

    def resized(x: Tensor) -> Tensor:
        return x if x.shape[-2:] == size else F.interpolate(x, size=size, mode="bilinear", align_corners=True)

    c1 = resized(max_norm(cam1)) * gate
    r1 = resized(max_norm(rv1)) * gate
    c2 = max_norm(cam2) * gate
    r2 = max_norm(rv2) * gate

    er = (c1[:, 1:] - c2[:, 1:]).abs().mean()
    c1 = _with_background(c1)
    c2 = _with_background(c2)
    ecr = _top_mean((max_onehot(c2.detach()) - r1).abs(), top) + _top_mean((max_onehot(c1.detach()) - r2).abs(), top)
    cls = (cls1 + cls2) / 2
    rvmin = (rvmin1 + rvmin2) / 2
    return {"cls": cls, "rvmin": rvmin, "er": er, "ecr": ecr, "total": cls + rvmin + er + ecr}


INFERENCE_CAMS = ("refined", "raw")


class SEAMNet(CAMBackboneNet):
    """SEAM on a backbone: CAM head (1x1 conv to C+1 channels, channel 0 background) and PCM.

    The backbone returns three stages: the CAM stage ``out_index`` and the two before it (SEAM's
    ResNet-38, ``backbone=resnet38d``: conv4, conv5 and conv6; ``scalenet101`` and a timm ResNet:
    layer2, layer3, layer4). The two earlier
    stages, detached from the backbone, are projected by 1x1 convs (+ ReLU) to 64 and 128 channels,
    concatenated with the normalised RGB image resized to the CAM size, and a 1x1 conv maps the
    195 channels to the 192-channel PCM feature. Stages at another resolution than the CAM stage
    are resized to it (bilinear); at output stride 8 the usual three are all at stride 8.

    Args:
        backbone, num_classes, pretrained, weights, output_stride, input, edge_sigma: as the plain
            head (``pmm.cam.net.CAMNet``); ``num_classes`` counts foreground classes.
        out_index: the backbone stage the CAMs come from (timm ``out_indices``; stages after it are
            dropped); the PCM reads stages ``out_index - 2`` and ``out_index - 1``.
        dropout: Dropout2d before the CAM head (SEAM's ResNet-38: 0.5).
        scale: the second training pass's image scale (SEAM: 0.3).
        top: the fraction of entries the ECR loss averages (SEAM: 0.2).
        inference_cam: what :meth:`cams` returns: ``refined`` (the PCM output, SEAM's and PMM's
            inference) or ``raw`` (the head's CAM).
        bias_lr_mult, new_weight_lr_mult, new_bias_lr_mult: learning-rate multipliers of
            :meth:`param_groups` (SEAM: 2, 10, 20; backbone weights get the base lr).
        bias_weight_decay: weight decay of the bias groups (SEAM: 0); null keeps the optimizer's.
        structure, freeze, frozen_bn: ``scalenet101``'s structure file and the backbone's frozen parts
            (:class:`pmm.nets.cam_base.CAMBackboneNet`; None: the backbone's defaults, for
            ``resnet38d`` / ``scalenet101`` the reference's).
        head_weights: also load SEAM's head (``fc8``, ``f8_3``, ``f8_4``, ``f9``) from ``weights``:
            the authors' first round fine-tunes SEAM's whole released network (their
            ``load_state_dict(strict=False)`` matches the head names), so the head does not start afresh.
        config_key: the config node error messages name (``cam_net``; the multi-crop round's own
            network: ``cam.multi_crop.net``). Not saved in checkpoints.
    """

    def __init__(
        self,
        backbone: str = "resnet18",
        num_classes: int = 20,
        pretrained: bool = False,
        weights: str | None = None,
        output_stride: int = 8,
        out_index: int = -1,
        dropout: float = 0.0,
        input: str = "rgb",  # noqa: A002 - the config key users write (cam_net.input)
        edge_sigma: float = 0.0,
        scale: float = 0.3,
        top: float = 0.2,
        inference_cam: str = "refined",
        bias_lr_mult: float = 2.0,
        new_weight_lr_mult: float = 10.0,
        new_bias_lr_mult: float = 20.0,
        bias_weight_decay: float | None = 0.0,
        structure: str | list | None = None,
        freeze: list[str] | str | None = None,
        frozen_bn: bool | None = None,
        head_weights: bool = False,
        config_key: str = "cam_net",
    ) -> None:
        if inference_cam not in INFERENCE_CAMS:
            raise PmmError(f"cam_net.inference_cam={inference_cam}: use one of {', '.join(INFERENCE_CAMS)}")
        if not 0 < scale < 1:
            raise PmmError(f"cam_net.scale={scale}: the second pass's image scale must be in (0, 1) (SEAM: 0.3)")
        if not 0 < top <= 1:
            raise PmmError(f"cam_net.top={top}: the ECR loss's fraction must be in (0, 1] (SEAM: 0.2)")
        if 0 <= out_index < 2:
            raise PmmError(f"cam_net.out_index={out_index}: SEAM needs two backbone stages before the CAM stage")
        super().__init__(backbone, num_classes, pretrained, weights, output_stride,
                         (out_index - 2, out_index - 1, out_index), input, edge_sigma,
                         config_key=config_key, structure=structure, freeze=freeze, frozen_bn=frozen_bn)
        self.scale = scale
        self.top = top
        self.inference_cam = inference_cam
        self.bias_lr_mult = bias_lr_mult
        self.new_weight_lr_mult = new_weight_lr_mult
        self.new_bias_lr_mult = new_bias_lr_mult
        self.bias_weight_decay = bias_weight_decay
        low, mid, last = self.backbone.feature_info.channels()
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.classifier = nn.Conv2d(last, num_classes + 1, kernel_size=1, bias=False)
        self.project_low = nn.Conv2d(low, 64, kernel_size=1, bias=False)
        self.project_mid = nn.Conv2d(mid, 128, kernel_size=1, bias=False)
        self.pcm_feature = nn.Conv2d(64 + 128 + 3, 192, kernel_size=1, bias=False)
        # SEAM's initialisation of its new layers.
        nn.init.xavier_uniform_(self.classifier.weight)
        nn.init.kaiming_normal_(self.project_low.weight)
        nn.init.kaiming_normal_(self.project_mid.weight)
        nn.init.xavier_uniform_(self.pcm_feature.weight, gain=4)
        self.head_weights = bool(head_weights)
        if head_weights:
            self.load_seam_head(weights, config_key)

    # SEAM's names of the head layers (resnet38_SEAM.py) -> this class's.
    SEAM_HEAD = {"fc8": "classifier", "f8_3": "project_low", "f8_4": "project_mid", "f9": "pcm_feature"}

    def load_seam_head(self, weights: str | None, config_key: str = "cam_net") -> None:
        """Copy SEAM's head tensors from a released SEAM file (``cam_net.head_weights``)."""
        from pmm.nets.paper_backbones import read_state_dict

        where = f"{config_key}.weights={weights}"
        if not weights:
            raise PmmError(f"{config_key}.head_weights=true needs {config_key}.weights: SEAM's released model "
                           "(resnet38_SEAM.pth) holds the head it loads")
        state = read_state_dict(weights, where, "SEAM's released model with its head (fc8, f8_3, f8_4, f9)")
        for theirs, ours in self.SEAM_HEAD.items():
            key = f"{theirs}.weight"
            target = getattr(self, ours).weight
            if key not in state:
                raise PmmError(f"{where}: no {key} (SEAM's head); set {config_key}.head_weights=false to start the "
                               "head afresh, or give SEAM's released model")
            if tuple(state[key].shape) != tuple(target.shape):
                raise PmmError(f"{where}: {key} is {list(state[key].shape)} but this network's is {list(target.shape)}; "
                               f"SEAM's head fits ResNet-38 with VOC's 20 classes only: set {config_key}.head_weights=false")
            with torch.no_grad():
                target.copy_(state[key])

    def new_modules(self) -> list[nn.Module]:
        """The layers trained from scratch in any case (SEAM's ``from_scratch_layers``)."""
        return [self.classifier, self.project_low, self.project_mid, self.pcm_feature]

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        """images N x 3 x H x W in [0, 1] -> dict of

        - ``logits`` N x C: spatial mean of the foreground CAMs;
        - ``cams`` N x C x h x w: the raw foreground CAMs;
        - ``raw`` N x (C+1) x h x w: the head output, channel 0 = background;
        - ``refined`` N x (C+1) x h x w: the PCM-refined CAM (:func:`refine`).
        """
        return self._run(images, with_pcm=True)

    def _run(self, images: Tensor, with_pcm: bool) -> dict[str, Tensor]:
        x, (low, mid, last) = self.backbone_features(images)
        raw = self.classifier(self.dropout(last))
        cams = raw[:, 1:]
        out = {"logits": cams.mean(dim=(2, 3)), "cams": cams, "raw": raw}
        if not with_pcm:
            return out
        size = raw.shape[-2:]

        def at_cam_size(t: Tensor) -> Tensor:
            return t if t.shape[-2:] == size else F.interpolate(t, size=size, mode="bilinear", align_corners=True)

        feature = torch.cat(
            [
                at_cam_size(x),
                at_cam_size(F.relu(self.project_low(low.detach()))),
                at_cam_size(F.relu(self.project_mid(mid.detach()))),
            ],
            dim=1,
        )
        out["refined"] = refine(raw, self.pcm_feature(feature))
        return out

    def cams(self, images: Tensor) -> Tensor:
        """Foreground CAMs for inference, N x C x h x w: the refined CAM's channels 1..C
        (``inference_cam=refined``) or the raw head's (``raw``)."""
        if self.inference_cam == "raw":
            return self._run(images, with_pcm=False)["cams"]
        return self.forward(images)["refined"][:, 1:]

    def training_loss(self, batch: dict) -> dict[str, Tensor]:
        """SEAM's losses (:func:`seam_losses`): the batch's images and the same images resized by
        ``scale`` (bilinear, align_corners, as SEAM), each pass's CAMs upsampled to its input size."""
        image1 = batch["image"]
        image2 = F.interpolate(image1, scale_factor=self.scale, mode="bilinear", align_corners=True)
        passes = []
        for images in (image1, image2):
            out = self.forward(images)
            size = images.shape[-2:]
            passes += [
                F.interpolate(out["raw"], size=size, mode="bilinear", align_corners=True),
                F.interpolate(out["refined"], size=size, mode="bilinear", align_corners=True),
            ]
        return seam_losses(*passes, batch["label"], scale=self.scale, top=self.top)

    def param_groups(self, lr: float) -> list[dict]:
        """SEAM's four groups: backbone weights ``lr``, backbone biases ``bias_lr_mult * lr``, new
        layers' weights ``new_weight_lr_mult * lr``, new layers' biases ``new_bias_lr_mult * lr``
        (biases with ``bias_weight_decay``). A "bias" is a parameter named ``bias``; normalisation
        weights count as weights (SEAM's ResNet-38 does not train them at all). Empty groups are left out."""
        new_ids = {id(p) for module in self.new_modules() for p in module.parameters()}
        groups = {key: [] for key in ("weight", "bias", "new_weight", "new_bias")}
        for name, parameter in self.named_parameters():
            if not parameter.requires_grad:
                continue
            kind = "bias" if name.rsplit(".", 1)[-1] == "bias" else "weight"
            groups[("new_" if id(parameter) in new_ids else "") + kind].append(parameter)
        mults = {"weight": 1.0, "bias": self.bias_lr_mult, "new_weight": self.new_weight_lr_mult, "new_bias": self.new_bias_lr_mult}
        result = []
        for key, params in groups.items():
            if not params:
                continue
            group = {"params": params, "lr": lr * mults[key], "name": key}
            if key.endswith("bias") and self.bias_weight_decay is not None:
                group["weight_decay"] = self.bias_weight_decay
            result.append(group)
        return result
