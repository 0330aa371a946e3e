"""Datasets as Hydra objects (``data/*.yaml`` ``_target_``): where a tree is, its classes, its splits.

Every dataset pmm reads is a tree in the VOC devkit layout, or a folder of images with a labels file
(:class:`FolderDataset`); a dataset class says where it is, how it is made ready (the embedded one
is generated, COCO reads its class list from the tree), which classes it has and which ids each
split holds. Adding a dataset is one class and one YAML file. Loader settings of the same node
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

    @property
    def mask_folder(self) -> Path:
        """Where the ground-truth masks are (for messages)."""
        return self.root / self.mask_dir

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


class FolderDataset:
    """Your own images with image-level labels (:mod:`pmm.data.folder`); masks are optional and only score.

    Args:
        images: the folder of the images ``<id>.<ext>``.
        labels_file: a CSV (``image_id,labels`` or ``image_id,<class1>,...`` of 0/1) or a JSON ``{id: [names]}``.
        masks: the folder of ground-truth masks ``<id>.png`` (None: no ground truth, nothing is scored).
        class_names: all class names, background first, in the masks' id order (None: from the labels file).
        train_split, val_split: split names, or text files of ids (one a line). When neither is a file,
            ``val_fraction`` of the ids (seeded by ``split_seed``) is the validation split; when one
            is, the other split is the remaining ids.
        val_fraction: the share of the ids held out for validation; 0: validate (and predict) on every image.
        split_seed: the seed of that choice (the same ids every run).
        cache_dir: where the image checks are cached.
        limit_images: keep the first this many ids of every split (``debug=smoke``); None: all.
        settings: the node's loader settings (ignored here).
    """

    def __init__(
        self,
        images: str | os.PathLike | None = None,
        labels_file: str | os.PathLike | None = None,
        masks: str | os.PathLike | None = None,
        class_names: list[str] | tuple[str, ...] | None = None,
        train_split: str = "train",
        val_split: str = "val",
        val_fraction: float = 0.1,
        split_seed: int = 0,
        cache_dir: str | os.PathLike | None = None,
        limit_images: int | None = None,
        **settings,
    ) -> None:
        for key, value in (("data.images", images), ("data.labels_file", labels_file)):
            if not value:
                raise PmmError(f"{key} is not set; data=folder reads data.images=<folder of images> and "
                               "data.labels_file=<labels CSV or JSON> (docs/data.md)")
        if not (0 <= float(val_fraction) < 1):
            raise PmmError(f"data.val_fraction={val_fraction}: expected a share in [0, 1) (0: validate on every image)")
        self.root = Path(images).expanduser().resolve()
        self.labels_file = Path(labels_file).expanduser().resolve()
        self.masks = Path(masks).expanduser().resolve() if masks else None
        self.mask_dir = str(self.masks) if self.masks is not None else None
        self._class_names = tuple(class_names) if class_names is not None else None
        self.train_split_name, self.val_split_name = str(train_split), str(val_split)
        self.val_fraction, self.split_seed = float(val_fraction), int(split_seed)
        self.cache_dir, self.limit_images, self.settings = cache_dir, limit_images, settings
        self._all: VOCSplit | None = None
        self._assigned: dict[str, tuple[str, ...]] | None = None
        self._splits: dict[str, VOCSplit] = {}

    def prepare(self) -> None:
        """Make the dataset ready to read (nothing to do for a folder on disk)."""

    @property
    def every_image(self) -> VOCSplit:
        """All labelled images (parsed and checked once)."""
        if self._all is None:
            from pmm.data.folder import load_folder

            self._all = load_folder(self.root, self.labels_file, self.masks, self._class_names, self.cache_dir)
        return self._all

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.every_image.class_names

    @property
    def mask_folder(self) -> Path | str:
        return self.masks if self.masks is not None else "data.masks (not set)"

    def _assign(self) -> dict[str, tuple[str, ...]]:
        """The ids of the train and the val split, keyed by their setting."""
        if self._assigned is not None:
            return self._assigned
        from pmm.data.folder import is_list_file, read_id_list, seeded_val_ids, split_label

        every = self.every_image
        train, val = self.train_split_name, self.val_split_name
        if train != val and split_label(train) == split_label(val):
            raise PmmError(f"data.train_split={train}, data.val_split={val}: both splits would be called "
                           f"'{split_label(train)}' in the run folder; rename one of the files")
        known = {i: 0 for i in every.ids}
        lists = {value: read_id_list(value, key, known, self.labels_file)
                 for key, value in (("data.train_split", train), ("data.val_split", val)) if is_list_file(value)}
        if train in lists and val in lists:
            assigned = {train: lists[train], val: lists[val]}
        elif train in lists or val in lists:
            given = train if train in lists else val
            taken = set(lists[given])
            rest = tuple(i for i in every.ids if i not in taken)
            if not rest:
                raise PmmError(f"{given}: lists every image, so the other split is empty; list fewer ids or give "
                               "both data.train_split and data.val_split as files")
            assigned = {given: lists[given], (val if given == train else train): rest}
        elif self.val_fraction == 0 or len(every.ids) < 2:
            assigned = {train: every.ids, val: every.ids}
        else:
            held_out = seeded_val_ids(every.ids, self.val_fraction, self.split_seed)
            assigned = {train: tuple(i for i in every.ids if i not in held_out),
                        val: tuple(i for i in every.ids if i in held_out)}
        self._assigned = assigned
        return assigned

    def split(self, name: str, require_masks: bool = True) -> VOCSplit:
        """The named split (``data.train_split``, ``data.val_split`` or any text file of ids).

        Masks are optional whatever ``require_masks`` says: a folder dataset learns from its labels,
        and what scores against masks skips the ids without one.
        """
        name = str(name)
        if name not in self._splits:
            from pmm.data.folder import is_list_file, read_id_list, split_label

            assigned = self._assign()
            if name in assigned:
                ids = assigned[name]
            elif is_list_file(name):
                ids = read_id_list(name, "split", {i: 0 for i in self.every_image.ids}, self.labels_file)
            else:
                raise PmmError(f"split '{name}': data=folder has the splits '{self.train_split_name}' and "
                               f"'{self.val_split_name}' (data.train_split / data.val_split), or a text file of ids")
            if self.limit_images:
                ids = ids[: int(self.limit_images)]
            every = self.every_image
            self._splits[name] = dataclasses.replace(
                every, split=split_label(name), ids=ids, missing_masks=frozenset(i for i in ids if not every.has_mask(i)))
        return self._splits[name]

    def missing_mask_ids(self, name: str) -> list[str]:
        """The ids of split ``name`` without a ground-truth mask."""
        split = self.split(name)
        return [i for i in split.ids if not split.has_mask(i)]

    def prediction_split(self, name: str) -> VOCSplit:
        """Split ``name`` for prediction: masks are optional anyway."""
        return self.split(name)
