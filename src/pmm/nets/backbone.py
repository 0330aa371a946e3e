"""timm backbones, with the three ways of getting weights: none, download, local file."""

from __future__ import annotations

from pathlib import Path

import timm
import torch.nn as nn

from pmm.errors import PmmError


def create_backbone(
    name: str,
    pretrained: bool = False,
    weights: str | None = None,
    output_stride: int = 16,
    out_index: int = -1,
    config_key: str = "cam_net",
    in_chans: int = 3,
    out_indices: tuple[int, ...] | None = None,
) -> nn.Module:
    """A timm feature extractor returning one feature map (the stage ``out_index``).

    Args:
        name: any timm model name (``resnet18``, ``resnet50``, ``resnest101e``...).
        pretrained: download ImageNet weights through timm (needs internet).
        weights: path of a local weights file for the backbone (``.pth``/``.safetensors``); implies pretrained.
        output_stride: 8, 16 or 32; dilates the last stages as DeepLab/SEAM do.
        out_index: which feature stage to return (timm ``out_indices``); stages after it are dropped.
        config_key: the config node named in error messages.
        in_chans: input channels (``pmm.nets.encoding``); timm adapts pretrained first-layer weights.
        out_indices: several feature stages at once (SEAM reads stages 2, 3 and the last); overrides
            ``out_index``.
    """
    overlay = None
    if weights:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise PmmError(f"{config_key}.weights={weights}: file not found; give a timm-compatible state dict file")
        overlay = {"file": str(path.resolve())}
    # timm drops the stages after the last requested one, so a shallower out_index is also cheaper.
    kwargs = dict(features_only=True, output_stride=output_stride, out_indices=tuple(out_indices) if out_indices else (out_index,), in_chans=in_chans)
    try:
        return timm.create_model(name, pretrained=bool(pretrained or weights), pretrained_cfg_overlay=overlay, **kwargs)
    except RuntimeError as error:  # state-dict mismatch of a local file
        raise PmmError(f"{config_key}.weights={weights}: does not fit {name} ({str(error).splitlines()[0]})") from None
    except Exception as error:  # noqa: BLE001 - any download failure gets the same advice
        if weights:
            raise PmmError(f"{config_key}.weights={weights}: could not be loaded into {name} ({error})") from None
        raise PmmError(
            f"could not download pretrained weights for {name} ({type(error).__name__}); "
            f"set {config_key}.pretrained=false to train from scratch or {config_key}.weights=FILE to load a local file"
        ) from None
