"""CAM backbones: timm's, with the three ways of getting weights (none, download, local file), and
the authors' ``resnet38d`` / ``scalenet101`` (:mod:`pmm.nets.paper_backbones`, local files only);
then the frozen parts (:func:`apply_freezing`)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import timm
import torch.nn as nn

from pmm.errors import PmmError
from pmm.nets.paper_backbones import create_paper_backbone, is_paper_backbone

log = logging.getLogger("pmm")


def create_backbone(
    name: str,
    pretrained: bool = False,
    weights: str | None = None,
    output_stride: int = 16,
    out_index: int = -1,
    config_key: str = "cam_net",
    in_chans: int = 3,
    out_indices: tuple[int, ...] | None = None,
    structure=None,
    freeze: Sequence[str] | str | None = None,
    frozen_bn: bool | None = None,
) -> nn.Module:
    """A feature extractor returning one feature map (the stage ``out_index``), timm's ``features_only`` interface.

    Args:
        name: any timm model name (``resnet18``, ``resnet50``, ``resnest101e``...), or ``resnet38d`` /
            ``scalenet101`` (the authors' CAM backbones, built by pmm, output stride 8).
        pretrained: download ImageNet weights through timm (needs internet); ``resnet38d`` /
            ``scalenet101`` download nothing and need ``weights``.
        weights: path of a local weights file for the backbone (``.pth``/``.safetensors``; for
            ``resnet38d`` / ``scalenet101`` in the reference key layout); implies pretrained.
        output_stride: 8, 16 or 32; dilates the last stages as DeepLab/SEAM do (``resnet38d`` /
            ``scalenet101``: 8 only).
        out_index: which feature stage to return (timm ``out_indices``); stages after it are dropped.
        config_key: the config node named in error messages.
        in_chans: input channels (``pmm.nets.encoding``); timm adapts pretrained first-layer weights.
        out_indices: several feature stages at once (SEAM reads stages 2, 3 and the last); overrides
            ``out_index``.
        structure: ``scalenet101``'s structure file (``scalenet101.json``); must be None otherwise.
        freeze, frozen_bn: the frozen parts (:func:`apply_freezing`; None: the backbone's default).
    """
    indices = tuple(out_indices) if out_indices else (out_index,)
    if is_paper_backbone(name):
        model = create_paper_backbone(name, pretrained, weights, output_stride, indices, in_chans, structure, config_key)
    else:
        if structure is not None:
            raise PmmError(f"{config_key}.structure={structure}: only scalenet101 is built from a structure file; "
                           f"set {config_key}.structure=null for {name}")
        model = _create_timm_backbone(name, pretrained, weights, output_stride, indices, config_key, in_chans)
    return apply_freezing(model, freeze, frozen_bn, config_key)


def _create_timm_backbone(name: str, pretrained: bool, weights: str | None, output_stride: int,
                          out_indices: tuple[int, ...], config_key: str, in_chans: int) -> nn.Module:
    overlay = None
    if weights:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise PmmError(f"{config_key}.weights={weights}: file not found; give a timm-compatible state dict file")
        overlay = {"file": str(path.resolve())}
    # timm drops the stages after the last requested one, so a shallower out_index is also cheaper.
    kwargs = dict(features_only=True, output_stride=output_stride, out_indices=out_indices, in_chans=in_chans)
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


def apply_freezing(model: nn.Module, freeze: Sequence[str] | str | None = None, frozen_bn: bool | None = None,
                   config_key: str = "cam_net") -> nn.Module:
    """Freeze parts of a backbone for training, in place, as the reference CAM networks do.

    Args:
        model: a backbone from :func:`create_backbone`.
        freeze: names of its modules (``model.named_modules()``, e.g. ``conv1a``, ``layer1``) whose
            parameters are not trained and whose BatchNorm statistics do not move. None: the
            backbone's default (``model.default_frozen``: ``resnet38d`` conv1a and b2, ``scalenet101``
            conv1, bn1 and layer1; a timm backbone nothing).
        frozen_bn: every BatchNorm of the backbone fixed, in training mode too: running statistics
            and affine parameters (timm's ``FrozenBatchNorm2d``, same state-dict keys). None: the
            backbone's default (``model.default_frozen_bn``: true for ``resnet38d`` / ``scalenet101``,
            false for timm's).
    """
    from timm.layers import freeze_batch_norm_2d
    from timm.utils import freeze as freeze_modules

    names = tuple(getattr(model, "default_frozen", ())) if freeze is None else (
        (freeze,) if isinstance(freeze, str) else tuple(freeze))
    frozen_bn = bool(getattr(model, "default_frozen_bn", False)) if frozen_bn is None else bool(frozen_bn)
    available = {name for name, _ in model.named_modules() if name}
    unknown = [name for name in names if name not in available]
    if unknown:
        top = ", ".join(name for name, _ in model.named_children())
        raise PmmError(f"{config_key}.freeze={list(names)}: the backbone has no module {unknown[0]} "
                       f"(its top-level modules: {top}); give module names, [] for none or null for the backbone's default")
    if names:
        freeze_modules(model, list(names))
    if frozen_bn:
        freeze_batch_norm_2d(model)
    if names or frozen_bn:
        parts = [", ".join(names)] if names else []
        if frozen_bn:
            parts.append("every BatchNorm (statistics and affine)")
        log.info("%s backbone: frozen %s", config_key, " and ".join(parts))
    return model
