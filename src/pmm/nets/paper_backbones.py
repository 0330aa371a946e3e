"""The authors' CAM backbones, built by pmm rather than timm: ``resnet38d`` and ``scalenet101``.

Both are feature extractors with timm's ``features_only`` interface (``forward`` -> list of stage
maps, ``feature_info.channels()``), at output stride 8, and load their weights from a local file
in the reference state-dict layout (:func:`load_reference_weights`). Nothing is downloaded: the
files come from the authors' releases (:data:`WHERE_TO_GET`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from pmm.errors import PmmError

log = logging.getLogger("pmm")

PAPER_BACKBONES = ("resnet38d", "scalenet101")

WHERE_TO_GET = {
    "resnet38d": "SEAM's released weights (https://github.com/YudeWang/SEAM, README 'Download model weights'): "
                 "resnet38_SEAM.pth, or the ImageNet weights ilsvrc-cls_rna-a1_cls1000_ep-0001.params converted to a "
                 "torch state dict; PMM's pretrained models (https://github.com/Eli-YiLi/PMM) hold resnet38_SEAM.pth too",
    "scalenet101": "PMM's pretrained models (https://github.com/Eli-YiLi/PMM, README 'Download pretrained models'): "
                   "scalenet/weights/scalenet101.pth with scalenet/structures/scalenet101.json",
}


def is_paper_backbone(name: str) -> bool:
    return name in PAPER_BACKBONES


def create_paper_backbone(name: str, pretrained: bool, weights: str | None, output_stride: int | None,
                          out_indices: Sequence[int], in_chans: int = 3, structure=None,
                          config_key: str = "cam_net") -> nn.Module:
    """``resnet38d`` or ``scalenet101`` with random weights, or with ``weights`` (a local file).

    ``pretrained`` without ``weights`` is an error (nothing is downloaded); ``structure`` is
    ScaleNet's structure file (a path, or its list of entries).
    """
    from pmm.nets.resnet38d import ResNet38d
    from pmm.nets.scalenet import STRUCTURE_SOURCE, ScaleNet, read_structure

    if output_stride not in (None, 8):
        raise PmmError(f"{config_key}.output_stride={output_stride}: {name} has output stride 8 by construction "
                       f"(as the reference); set {config_key}.output_stride=8")
    if pretrained and not weights:
        raise PmmError(f"{config_key}.pretrained=true: pmm does not download {name}'s weights; set "
                       f"{config_key}.weights=FILE ({WHERE_TO_GET[name]}), or {config_key}.pretrained=false to train from scratch")
    from pmm.nets.features import stage_indices

    try:
        stage_indices(out_indices, 5)
    except ValueError:
        raise PmmError(f"{config_key}.out_index: stages {list(out_indices)} requested, {name} has 5 (0..4, or -5..-1; "
                       f"SEAM's out_index -1 reads stages 2, 3, 4)") from None
    if name == "resnet38d":
        if structure is not None:
            raise PmmError(f"{config_key}.structure={structure}: only scalenet101 is built from a structure file; "
                           f"set {config_key}.structure=null for resnet38d")
        model = ResNet38d(out_indices, in_chans=in_chans)
    else:
        if structure is None:
            raise PmmError(f"{config_key}.structure=null: scalenet101 is built from its structure file; set "
                           f"{config_key}.structure=PATH ({STRUCTURE_SOURCE})")
        model = ScaleNet(read_structure(structure, config_key=f"{config_key}.structure"), out_indices, in_chans=in_chans)
    if weights:
        load_reference_weights(model, weights, name, config_key)
    return model


def read_state_dict(path: str | Path, where: str, expected: str) -> dict[str, Tensor]:
    """The tensors of a torch or safetensors weights file; ``where`` (``key=path``) and ``expected``
    word the one-line error of anything else."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise PmmError(f"{where}: file not found; expected {expected}")
    if path.suffix == ".params":
        raise PmmError(f"{where}: an MXNet parameter file; convert it to a torch state dict first (SEAM's "
                       "network/resnet38d.py convert_mxnet_to_torch, then torch.save)")
    with path.open("rb") as handle:
        head = handle.read(16)
    try:
        if len(head) >= 10 and head[8:10] == b'{"':
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any unreadable file gets the same one line
        first = (str(error).strip().splitlines() or [""])[0][:120]
        raise PmmError(f"{where}: not readable as a torch state dict ({type(error).__name__}{': ' + first if first else ''}); "
                       f"expected {expected}") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not state or not all(isinstance(k, str) and isinstance(v, Tensor) for k, v in state.items()):
        what = type(state).__name__ if not isinstance(state, dict) else "a dict that is not name -> tensor"
        raise PmmError(f"{where}: holds {what}, not a state dict of tensors; expected {expected}")
    if all(key.startswith("module.") for key in state):  # saved from a DataParallel / DDP wrapper
        state = {key[len("module."):]: value for key, value in state.items()}
    return state


def load_reference_weights(model: nn.Module, path: str | Path, name: str, config_key: str = "cam_net") -> None:
    """Load a weights file in the reference key layout into ``model`` (ResNet38d / ScaleNet).

    Every backbone tensor of the model must be in the file with its shape (BatchNorm step counters
    aside) and every other key must be a known head key (``model.head_prefixes``: ignored, the CAM
    head is pmm's) or belong to a layer the model does not build (``model.dropped_prefixes``). The
    first convolution is adapted when the input has other than 3 channels (timm's rule).
    Anything else is one :class:`PmmError` line naming ``config_key.weights`` and the file.
    """
    from timm.models import adapt_input_conv

    where = f"{config_key}.weights={path}"
    expected = f"{name}'s weights in the reference layout ({WHERE_TO_GET[name]})"
    state = read_state_dict(path, where, expected)
    own = model.state_dict()
    heads = tuple(model.head_prefixes)
    dropped = tuple(getattr(model, "dropped_prefixes", ()))
    head_keys = sorted(key for key in state if key.startswith(heads))
    unexpected = sorted(key for key in state if key not in own and not key.startswith(heads + dropped))
    if unexpected:
        raise PmmError(f"{where}: {len(unexpected)} key{'s' * (len(unexpected) != 1)} that {name} does not have "
                       f"(e.g. {', '.join(unexpected[:3])}); expected {expected}")
    missing = sorted(key for key in own if key not in state and not key.endswith("num_batches_tracked"))
    if missing:
        raise PmmError(f"{where}: {len(missing)} of {name}'s tensors missing (e.g. {', '.join(missing[:3])}); "
                       f"expected {expected}")
    selected = {}
    for key in own:
        if key not in state:
            continue
        value = state[key]
        if key == model.first_conv and value.dim() == 4 and value.shape[1] != own[key].shape[1]:
            value = adapt_input_conv(own[key].shape[1], value)
        if value.shape != own[key].shape:
            raise PmmError(f"{where}: {key} has shape {list(value.shape)} in the file, {name} expects "
                           f"{list(own[key].shape)}; expected {expected}")
        selected[key] = value
    model.load_state_dict(selected, strict=False)
    skipped = len(state) - len(selected) - len(head_keys)
    notes = []
    if head_keys:
        modules = sorted({key.split(".", 1)[0] for key in head_keys})
        notes.append(f"ignored the head keys of {', '.join(modules)} ({len(head_keys)} tensors; pmm's CAM head starts afresh)")
    if skipped:
        notes.append(f"skipped {skipped} tensors of layers after the CAM stage")
    log.info("%s: loaded %d backbone tensors from %s%s", name, len(selected), path, ("; " + "; ".join(notes)) if notes else "")
