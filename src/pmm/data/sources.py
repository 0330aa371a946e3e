"""Datasets as Hydra objects (``data/*.yaml`` ``_target_``): where a tree is, its classes, its splits.

Every dataset pmm reads is a tree in the VOC devkit layout; a dataset class says where it is, how it
is made ready (the embedded one is generated, COCO reads its class list from the tree) and which
classes it has. Adding a dataset is one subclass and one YAML file. Loader settings of the same node
(``batch_size``, ``crop_size``...) are read by the stages, not by the dataset.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from pmm.data.class_names import read_class_names
from pmm.data.voc import (VOC_CLASS_NAMES, VOCSplit, check_foreground, load_split_masks_optional, load_voc_split,
                          missing_mask_ids)
from pmm.errors import PmmError


class VOCDataset:
    """Any VOC-layout tree: ``root/JPEGImages``, ``root/<mask_dir>``, ``root/ImageSets/Segmentation``.

    Args:
        root: the tree's root folder.
        class_names: all class names, background first (None: the 21 VOC classes).
        train_split, val_split: list names in ``ImageSets/Segmentation``.
        image_dir, mask_dir: folder names inside ``root``.
        labels: where image-level labels come from: ``masks`` or ``xml`` (``Annotations/<id>.xml``,
            as the reference code does for VOC); ``auto``: xml when ``root/Annotations`` exists.
        cache_dir: where label caches are kept.
        limit_images: keep the first this many ids of every split (``debug=smoke``); None: all.
        settings: the node's loader settings (ignored here).
    """

    default_class_names: tuple[str, ...] = VOC_CLASS_NAMES

    def __init__(
        self,
        root: str | os.PathLike,
        class_names: list[str] | tuple[str, ...] | None = None,
        train_split: str = "train",
        val_split: str = "val",
        image_dir: str = "JPEGImages",
        mask_dir: str = "SegmentationClass",
        labels: str = "masks",
        cache_dir: str | os.PathLike | None = None,
        limit_images: int | None = None,
        **settings,
    ) -> None:
        self.root = Path(root).expanduser().resolve()
        self._class_names = tuple(class_names) if class_names is not None else None
        self.train_split_name, self.val_split_name = train_split, val_split
        self.image_dir, self.mask_dir = image_dir, mask_dir
        if labels not in ("masks", "xml", "auto"):
            raise PmmError(f"data.labels={labels}: expected masks, xml or auto")
        self.labels = labels
        self.cache_dir = cache_dir
        self.limit_images = limit_images
        self.settings = settings
        self._splits: dict[str, VOCSplit] = {}

    def prepare(self) -> None:
        """Make the tree ready to read (nothing to do for a tree on disk)."""

    @property
    def class_names(self) -> tuple[str, ...]:
        return self._class_names if self._class_names is not None else self.default_class_names

    @property
    def label_source(self) -> str:
        if self.labels == "auto":
            return "xml" if (self.root / "Annotations").is_dir() else "masks"
        return self.labels

    def split(self, name: str, require_masks: bool = True) -> VOCSplit:
        """The named split (indexed and checked once)."""
        key = f"{name}|{require_masks}"
        if key not in self._splits:
            self._splits[key] = load_voc_split(self.root, name, self.class_names, image_dir=self.image_dir,
                                               mask_dir=self.mask_dir, cache_dir=self.cache_dir,
                                               labels=self.label_source, require_masks=require_masks)
            if self.limit_images:
                split = self._splits[key]
                ids = split.ids[: int(self.limit_images)]
                self._splits[key] = dataclasses.replace(split, ids=ids)
                check_foreground(self._splits[key])
        return self._splits[key]

    def missing_mask_ids(self, name: str) -> list[str]:
        """The ids of split ``name`` without a ground-truth mask file (before any indexing)."""
        return missing_mask_ids(self.root, name, self.mask_dir, limit=self.limit_images)

    def prediction_split(self, name: str) -> VOCSplit:
        """Split ``name`` for prediction: masks required when they are all there, optional otherwise.

        A split whose ids lack ground-truth masks (the VOC test set) is predicted and not scored;
        its images need no labels, so masks are optional whatever ``labels`` says.
        """
        key = f"{name}|prediction"
        if key not in self._splits:
            if not self.missing_mask_ids(name):
                self._splits[key] = self.split(name)
            elif self.label_source == "xml":
                self._splits[key] = self.split(name, require_masks=False)
            else:
                self._splits[key] = load_split_masks_optional(self.root, name, self.class_names, self.image_dir,
                                                              self.mask_dir, limit=self.limit_images)
        return self._splits[key]


class SyntheticDataset(VOCDataset):
    """The embedded default: generated from a seed on first use (:mod:`pmm.data.synthetic`)."""

    def __init__(self, root: str | os.PathLike, generate: dict | None = None, class_names=None, **kwargs) -> None:
        super().__init__(root, class_names=class_names, **kwargs)
        self.generate = dict(generate or {})

    @property
    def default_class_names(self) -> tuple[str, ...]:  # type: ignore[override]
        from pmm.data.synthetic import SYNTHETIC_CLASS_NAMES

        return tuple(SYNTHETIC_CLASS_NAMES)

    def prepare(self) -> None:
        from pmm.data.synthetic import ensure_synthetic

        ensure_synthetic(self.root, **self.generate)


class COCODataset(VOCDataset):
    """COCO converted to the VOC layout by ``python -m pmm.prepare coco``: class names from the tree."""

    def __init__(self, root: str | os.PathLike, class_names=None, **kwargs) -> None:
        super().__init__(root, class_names=class_names, **kwargs)

    @property
    def class_names(self) -> tuple[str, ...]:
        if self._class_names is None:
            self._class_names = tuple(read_class_names(self.root))
        return self._class_names
