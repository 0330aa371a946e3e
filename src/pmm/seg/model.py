"""Segmenters: an SMP model (encoder + decoder + head) plus an optional auxiliary FCN head.

The encoder runs once per forward; its features feed both the SMP decoder and the auxiliary head.
Logits are always returned at the input size.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pmm.errors import PmmError
from pmm.nets.encoding import InputEncoding
from pmm.nets.normalize import IMAGENET_MEAN, IMAGENET_STD, ImageNormalize, data_config_of

log = logging.getLogger("pmm")


@dataclass(frozen=True)
class _Arch:
    """How one SMP architecture spells the generic Segmenter options."""

    model_class: type[nn.Module]
    output_stride_kwarg: str
    decoder_channels_kwarg: str
    aux_default: bool


ARCHS: dict[str, _Arch] = {
    "deeplabv3plus": _Arch(smp.DeepLabV3Plus, "encoder_output_stride", "decoder_channels", aux_default=False),
    # PSPNet passes unknown kwargs on to the encoder, so output_stride reaches get_encoder.
    "pspnet": _Arch(smp.PSPNet, "output_stride", "psp_out_channels", aux_default=True),
}


class AuxHead(nn.Sequential):
    """The PSPNet paper's auxiliary FCN head: conv3x3-BN-ReLU-Dropout(0.1)-conv1x1."""

    def __init__(self, in_channels: int, num_classes: int, mid_channels: int = 256, dropout: float = 0.1):
        super().__init__(
            nn.Conv2d(in_channels, mid_channels, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(mid_channels),
            nn.ReLU(inplace=True),
            nn.Dropout2d(dropout),
            nn.Conv2d(mid_channels, num_classes, kernel_size=1),
        )


class Segmenter(nn.Module):
    """An SMP segmentation model with a timm or SMP encoder, returning ``{"out": logits, "aux": logits}``.

    Takes float RGB images in [0, 1] and normalises them with the encoder's own statistics.

    Args:
        arch: one of ``ARCHS`` (``deeplabv3plus``, ``pspnet``).
        encoder: an SMP encoder name, timm ones as ``tu-<timm name>`` (e.g. ``tu-resnet18``).
        num_classes: output channels, background included.
        pretrained: start the encoder from ImageNet weights (downloaded; needs internet).
        weights: a local file holding a state dict of the *encoder* (``model.encoder.state_dict()``),
            loaded with strict key matching; overrides ``pretrained``.
        aux: add the auxiliary FCN head on the encoder's second-to-last feature map. ``None``: on for
            ``pspnet``, off for ``deeplabv3plus``. Its loss weight (0.4) belongs to the training module.
        encoder_depth: encoder stages (3..5). ``None``: the SMP default of the arch (5 for
            deeplabv3plus, 3 for pspnet).
        output_stride: encoder output stride (8 or 16 dilate the last stages). ``None``: the SMP
            default (16 for deeplabv3plus, 2**encoder_depth for pspnet).
        decoder_channels: ASPP channels (deeplabv3plus) or PSP module channels (pspnet). ``None``:
            the SMP default (256, resp. 512).
        input: what the encoder sees: ``rgb``, ``edges`` or ``rgb+edges`` (``pmm.nets.encoding``).
        edge_sigma: Gaussian blur (pixels) before the edge filter of ``edges`` inputs; 0: none.
    """

    def __init__(
        self,
        arch: str = "deeplabv3plus",
        encoder: str = "resnet18",
        num_classes: int = 21,
        pretrained: bool = False,
        weights: str | os.PathLike | None = None,
        aux: bool | None = None,
        encoder_depth: int | None = None,
        output_stride: int | None = None,
        decoder_channels: int | None = None,
        input: str = "rgb",  # noqa: A002 - the config key users write (segmenter.input)
        edge_sigma: float = 0.0,
    ):
        super().__init__()
        if arch not in ARCHS:
            raise ValueError(f"unknown segmenter arch {arch!r}: expected one of {', '.join(ARCHS)}")
        spec = ARCHS[arch]
        self.arch = arch
        self.encoder_name = encoder
        self.num_classes = num_classes
        self.encode_input = InputEncoding(input, edge_sigma, config_key="segmenter")

        kwargs = {
            "encoder_name": encoder,
            "in_channels": self.encode_input.out_channels,
            "classes": num_classes,
            # Upsampling is done once in forward, to the exact input size, for every arch.
            "upsampling": 1,
        }
        optional = {
            "encoder_depth": encoder_depth,
            spec.output_stride_kwarg: output_stride,
            spec.decoder_channels_kwarg: decoder_channels,
        }
        kwargs.update({key: value for key, value in optional.items() if value is not None})
        use_download = pretrained and weights is None
        self.model = self._build(spec.model_class, kwargs, encoder, use_download)
        if weights is not None:
            load_encoder_weights(self.model.encoder, weights)

        self.normalize = ImageNormalize(*encoder_statistics(self.model.encoder, encoder))
        self.aux_head: AuxHead | None = None
        use_aux = spec.aux_default if aux is None else aux
        if use_aux:
            self.aux_head = AuxHead(self.model.encoder.out_channels[-2], num_classes)

    @staticmethod
    def _build(model_class: type[nn.Module], kwargs: dict, encoder: str, pretrained: bool) -> nn.Module:
        if not pretrained:
            return model_class(encoder_weights=None, **kwargs)
        # SMP wants a tag for its own encoders and True for timm ones (the tag is in the timm name).
        encoder_weights = True if encoder.startswith("tu-") else "imagenet"
        try:
            return model_class(encoder_weights=encoder_weights, **kwargs)
        except Exception as download_error:
            # A bad encoder name or option fails without weights too: report that error unchanged.
            model_class(encoder_weights=None, **kwargs)
            raise PmmError(
                f"could not download pretrained weights for {encoder}: set model pretrained=false or "
                f"weights=FILE (a local encoder state dict) ({type(download_error).__name__}: {download_error})"
            ) from download_error

    @property
    def encoder(self) -> nn.Module:
        return self.model.encoder

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        if not (torch.jit.is_scripting() or torch.jit.is_tracing()):
            self.model.check_input_shape(x)
        size = x.shape[-2:]
        features = self.model.encoder(self.encode_input(self.normalize(x)))
        logits = self.model.segmentation_head(self.model.decoder(features))
        result = {"out": _resize(logits, size)}
        if self.aux_head is not None:
            result["aux"] = _resize(self.aux_head(features[-2]), size)
        return result


def encoder_statistics(encoder: nn.Module, name: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Input mean/std of an SMP encoder: timm's data config for ``tu-`` encoders, ImageNet's otherwise.

    SMP's own ``get_preprocessing_params`` downloads a config from the hub for its native encoders
    (all trained with the ImageNet statistics); a network must build offline, so pmm does not ask it.
    """
    if name.startswith("tu-") and hasattr(encoder, "model"):
        return data_config_of(encoder.model)
    return IMAGENET_MEAN, IMAGENET_STD


def _resize(logits: Tensor, size: torch.Size) -> Tensor:
    if logits.shape[-2:] == size:
        return logits
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)


def load_encoder_weights(encoder: nn.Module, path: str | os.PathLike, max_keys: int = 5) -> None:
    """Load a state dict saved from ``encoder.state_dict()`` into ``encoder``, all keys and shapes matching.

    Raises:
        PmmError: the file is missing, unreadable, or its keys or shapes do not match the encoder.
    """
    path = Path(path)
    if not path.is_file():
        raise PmmError(f"encoder weights file {path} not found: point weights= at a saved encoder state dict")
    try:
        state_dict = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise PmmError(f"could not read encoder weights file {path}: {type(error).__name__}: {error}") from error
    if not isinstance(state_dict, dict):
        raise PmmError(f"encoder weights file {path} holds a {type(state_dict).__name__}, expected a state dict")

    expected = encoder.state_dict()
    missing = [key for key in expected if key not in state_dict]
    unexpected = [key for key in state_dict if key not in expected]
    wrong_shape = [
        f"{key} {tuple(state_dict[key].shape)} != {tuple(expected[key].shape)}"
        for key in expected
        if key in state_dict and hasattr(state_dict[key], "shape") and state_dict[key].shape != expected[key].shape
    ]
    problems = []
    for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong_shape)):
        if keys:
            more = f" (+{len(keys) - max_keys} more)" if len(keys) > max_keys else ""
            problems.append(f"{label} {len(keys)}: {', '.join(keys[:max_keys])}{more}")
    if problems:
        raise PmmError(
            f"encoder weights file {path} does not match encoder {type(encoder).__name__}: "
            + "; ".join(problems)
            + " (expected a state dict saved from this encoder's .state_dict())"
        )
    encoder.load_state_dict(state_dict, strict=True)


def encoder_weights_from_cam(encoder: nn.Module, cam_state_dict: dict[str, Tensor]) -> list[str]:
    """Copy a trained CAM backbone into a segmentation encoder where names and shapes agree.

    The CAM classifier is the only network of a from-scratch run that has seen the images: starting
    the segmenter from it is what ImageNet weights are in the usual setting. A CAM checkpoint
    names its backbone ``net.backbone.<timm key>``; an SMP ``tu-`` encoder holds the same timm
    model under ``model.<timm key>``. The CAM network may stop at an earlier stage (``out_index``):
    the stages it lacks stay as initialised.

    Returns:
        The encoder keys that were copied (empty when the architectures share nothing).
    """
    prefix = "net.backbone."
    target = encoder.state_dict()
    copied = {}
    for key, value in cam_state_dict.items():
        if not key.startswith(prefix):
            continue
        name = key[len(prefix):]
        for candidate in (f"model.{name}", name):
            if candidate in target and target[candidate].shape == value.shape:
                copied[candidate] = value
                break
    encoder.load_state_dict(copied, strict=False)
    return sorted(copied)


def load_segmenter(path, class_names: Sequence[str] | None = None) -> tuple[nn.Module, list[str], dict]:
    """(network, class names, spec) of a ``stage=seg`` checkpoint (``seg_ckpt``), rebuilt from its spec.

    ``class_names``: the run's classes (``stage=eval``): the checkpoint must predict as many, and
    its own names fall back to them. Without them (``pmm.predict``) a checkpoint without names gets
    VOC's or numbered ones, with a warning.
    """
    from pmm.checkpoints import load_network
    from pmm.data.voc import VOC_CLASS_NAMES

    if path is None or str(path).strip() == "":
        raise PmmError("seg_ckpt is not set; give a checkpoint written by stage=seg: seg_ckpt=RUN/checkpoints/seg/last.ckpt")
    net, spec, checkpoint = load_network(path, "seg_ckpt", "seg")
    names = list(checkpoint["hyper_parameters"].get("class_names") or [])
    if class_names is not None:
        names = names or list(class_names)
        if len(names) != len(class_names):
            raise PmmError(f"seg_ckpt={path}: trained for {len(names)} classes but data.class_names has "
                           f"{len(class_names)}; use the checkpoint of the same dataset")
        return net, names, spec
    num_classes = int(getattr(net, "num_classes", spec.get("num_classes") or 0))
    if not names:
        if num_classes == len(VOC_CLASS_NAMES):
            names = list(VOC_CLASS_NAMES)
        else:
            names = ["background"] + [f"class_{index}" for index in range(1, num_classes)]
        log.warning("seg_ckpt=%s carries no class names: using %s", path, ", ".join(names[:4]) + ("..." if len(names) > 4 else ""))
    if num_classes and len(names) != num_classes:
        raise PmmError(f"seg_ckpt={path}: the network predicts {num_classes} classes but the checkpoint names "
                       f"{len(names)}; was it written by another pmm version?")
    return net, names, spec
