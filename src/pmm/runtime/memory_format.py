"""The networks' memory format: a Lightning callback that puts a stage's module in NCHW or channels-last.

oneDNN (CPU) and cuDNN (GPU, especially with mixed precision) run convolutions natively on NHWC
tensors; given NCHW ones they convert on every call. A convolution whose weight is channels-last
returns a channels-last output whatever its input's layout, so converting the module is enough:
every image batch is converted by the first convolution. Only the layout changes, not the
arithmetic's meaning, but the kernels sum in another order, so a run is not bit-identical to one
in the other format (each is reproducible on its own).
"""

from __future__ import annotations

import pytorch_lightning as pl
import torch

from pmm.errors import PmmError

__all__ = ["FORMATS", "MemoryFormat"]

FORMATS = {"channels_last": torch.channels_last, "contiguous": torch.contiguous_format}


class MemoryFormat(pl.Callback):
    """Converts the LightningModule to ``memory_format`` when fitting, validating or predicting starts.

    Args:
        memory_format: ``channels_last`` | ``contiguous`` (PyTorch's default NCHW).
        config_key: the config key named in the error of an unknown format.
    """

    def __init__(self, memory_format: str = "contiguous", config_key: str = "callbacks.<stage>.memory_format") -> None:
        if memory_format not in FORMATS:
            raise PmmError(f"{config_key}.memory_format={memory_format}: expected one of {' | '.join(FORMATS)}")
        self.memory_format = memory_format

    def convert(self, pl_module: pl.LightningModule) -> None:
        pl_module.to(memory_format=FORMATS[self.memory_format])

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        # Before the optimiser exists: AdamW's state is then created in the parameters' own layout.
        self.convert(pl_module)
