"""Training masks that can change between epochs (cyclic rounds); validation on ground truth."""

from __future__ import annotations

import logging
from pathlib import Path

import pytorch_lightning as pl

from pmm.data.datasets import EvalDataset, SegmentationDataset
from pmm.data.transforms import train_transform
from pmm.data.voc import VOCSplit
from pmm.runtime.loaders import loader
from pmm.runtime.loaders import derive_seed, global_seed

log = logging.getLogger("pmm")


class PseudoMaskDataModule(pl.LightningDataModule):
    """Train on ``mask_dir`` (pseudo-masks; ``None`` = ground truth), validate on ground truth.

    The Trainer re-asks for the train loader every epoch (``reload_dataloaders_every_n_epochs=1``);
    the dataset is rebuilt only when :meth:`set_mask_dir` switched to another folder.
    """

    def __init__(
        self,
        train_split: VOCSplit,
        val_split: VOCSplit,
        mask_dir: str | Path | None,
        crop_size: int,
        scale_range: tuple[float, float] = (0.7, 1.3),
        batch_size: int = 16,
        num_workers: int = 2,
        transform=None,
    ) -> None:
        super().__init__()
        self.train_split, self.val_split = train_split, val_split
        self.mask_dir = Path(mask_dir) if mask_dir is not None else None
        self.crop_size, self.scale_range = crop_size, tuple(scale_range)
        self.batch_size, self.num_workers = batch_size, num_workers
        # The training pipeline (pmm.data.transforms.seg_pipeline); None: the default random scale + crop.
        self.transform = transform
        self._train_set: SegmentationDataset | None = None
        self._train_loader = None
        self._loaders_built = 0  # each mask folder's loader gets its own seed, or every round repeats round 0's draws

    def set_mask_dir(self, mask_dir: str | Path | None) -> None:
        self.mask_dir = Path(mask_dir) if mask_dir is not None else None

    def train_dataloader(self):
        # Asked for every epoch (reload_dataloaders_every_n_epochs=1): the same loader, with its
        # persistent workers, until a cyclic round switches the mask folder.
        if self._train_set is None or self._train_set.mask_dir != self.mask_dir:
            self._train_set = SegmentationDataset(
                self.train_split, self.transform or train_transform(self.crop_size, self.scale_range), self.mask_dir
            )
            batch = min(self.batch_size, len(self._train_set))
            seed = global_seed()
            self._train_loader = loader(self._train_set, batch, self.num_workers, shuffle=True,
                                        drop_last=len(self._train_set) > batch,
                                        seed=None if seed is None else derive_seed(seed, self._loaders_built))
            self._loaders_built += 1
            log.info("segmenter trains on %s", self.mask_dir or "ground truth")
        return self._train_loader

    def val_dataloader(self):
        same_size = len(set(self.val_split.image_sizes.values())) == 1
        return loader(EvalDataset(self.val_split), self.batch_size if same_size else 1, self.num_workers)
