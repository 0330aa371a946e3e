"""Reading the Lightning checkpoints pmm writes: weights plus the network config that built them."""

from __future__ import annotations

from pathlib import Path

import torch

from pmm.errors import PmmError


def read_checkpoint(path: Path, key: str) -> tuple[dict, dict]:
    """The checkpoint at ``path`` and its ``net_config``, checked to be a pmm checkpoint.

    ``key`` is the config key that named the file (``cam_ckpt``, ``seg_ckpt``), for the error message.
    The returned config has ``pretrained``/``weights`` cleared: the checkpoint carries the weights.
    """
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    net_config = dict(checkpoint.get("hyper_parameters", {}).get("net_config") or {})
    if not net_config:
        raise PmmError(f"{key}={path}: not a pmm checkpoint of this stage (no net_config in its hyper-parameters)")
    net_config.update(pretrained=False, weights=None)
    return checkpoint, net_config
