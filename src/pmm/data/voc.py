"""Reader for any tree in the PASCAL VOC devkit layout.

``root/JPEGImages/<id>.jpg``, ``root/<mask_dir>/<id>.png`` (palette or greyscale PNG whose values
are class ids, 255 = ignore) and ``root/ImageSets/Segmentation/<split>.txt`` (one id a line).
Image-level labels (the only supervision WSSS uses) are the classes other than 0 and 255 found in
each mask; they are cached per (tree, split) and recomputed only for masks whose file changed.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from pmm.errors import PmmError
from pmm.io import load_image, load_mask, write_json

VOC_CLASS_NAMES: tuple[str, ...] = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip

LAYOUT_HINT = "expected the VOC devkit layout: JPEGImages/<id>.jpg, SegmentationClass/<id>.png, ImageSets/Segmentation/<split>.txt"


@dataclass(frozen=True)
class VOCSplit:
    """The ids of one split of a VOC-layout tree, their files and their image-level labels."""

    root: Path
    split: str
    ids: tuple[str, ...]
    class_names: tuple[str, ...]
    image_dir: str
    mask_dir: str
    image_labels: dict[str, tuple[int, ...]]
    image_sizes: dict[str, tuple[int, int]]

    @property
    def num_classes(self) -> int:
        """Number of classes, background included."""
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.ids)

    def image_path(self, image_id: str) -> Path:
        return self.root / self.image_dir / f"{image_id}.jpg"

    def mask_path(self, image_id: str) -> Path:
        return self.root / self.mask_dir / f"{image_id}.png"

    def labels(self, image_id: str) -> tuple[int, ...]:
        """The 1-based foreground class ids present in the image's mask."""
        return self.image_labels[image_id]

    def label_vector(self, image_id: str) -> np.ndarray:
        """Multi-hot float32 vector over the foreground classes (length num_classes - 1)."""
        vector = np.zeros(self.num_classes - 1, dtype=np.float32)
        vector[[label - 1 for label in self.labels(image_id)]] = 1.0
        return vector

    def load_image(self, image_id: str) -> np.ndarray:
        return load_image(self.image_path(image_id))

    def load_mask(self, image_id: str) -> np.ndarray:
        return load_mask(self.mask_path(image_id))


def _read_ids(list_path: Path, root: Path, split: str, list_dir: str) -> tuple[str, ...]:
    if not list_path.is_file():
        available = sorted(p.stem for p in (root / list_dir).glob("*.txt")) if (root / list_dir).is_dir() else []
        raise PmmError(
            f"{list_path}: split list not found (available: {available or 'none'}); "
            f"set data.train_split/data.val_split to an existing list or create {list_dir}/{split}.txt"
        )
    ids = tuple(line.split()[0] for line in list_path.read_text().splitlines() if line.strip())
    if not ids:
        raise PmmError(f"{list_path}: split list is empty; it should hold one image id per line")
    return ids


def _scan_mask(mask_path: Path, image_path: Path, num_classes: int) -> tuple[tuple[int, ...], tuple[int, int]]:
    """Labels and (height, width) of one image/mask pair, with the checks that make a clear error."""
    try:
        with Image.open(image_path) as image:
            width, height = image.size
    except FileNotFoundError:
        raise PmmError(f"{image_path}: image listed in the split is missing; add it or remove its id from the list") from None
    except OSError as error:
        raise PmmError(f"{image_path}: cannot be read as an image ({error}); replace the file") from None
    if not mask_path.is_file():
        raise PmmError(f"{mask_path}: mask for a listed image is missing; add it or remove its id from the list")
    mask = load_mask(mask_path)
    if mask.shape != (height, width):
        raise PmmError(
            f"{mask_path}: mask is {mask.shape[1]}x{mask.shape[0]} but its image is {width}x{height}; "
            "masks must have the size of their image"
        )
    values = np.unique(mask)
    bad = values[(values >= num_classes) & (values != 255)]
    if bad.size:
        raise PmmError(
            f"{mask_path}: label {int(bad[0])} is beyond the {num_classes} classes (0..{num_classes - 1}, 255 = ignore); "
            "fix the mask or set data.class_names to the full class list (background first)"
        )
    labels = tuple(int(v) for v in values if 0 < v < num_classes)
    return labels, (height, width)


def load_voc_split(
    root: str | os.PathLike,
    split: str,
    class_names: tuple[str, ...] | list[str] = VOC_CLASS_NAMES,
    image_dir: str = "JPEGImages",
    mask_dir: str = "SegmentationClass",
    list_dir: str = "ImageSets/Segmentation",
    cache_dir: str | os.PathLike | None = None,
) -> VOCSplit:
    """Index one split of a VOC-layout tree, checking every listed file.

    Args:
        root: the tree's root folder (the one holding ``JPEGImages``).
        split: name of the list in ``list_dir`` (``train``, ``val``, ``train_aug``...).
        class_names: all class names, background first; its length is the class count.
        image_dir, mask_dir, list_dir: folder names inside ``root``.
        cache_dir: where the label cache is kept (default: ``~/.cache/pmm``).

    Raises:
        PmmError: naming the missing or bad file and the fix.
    """
    root = Path(root).expanduser().resolve()
    class_names = tuple(class_names)
    if len(class_names) < 2:
        raise PmmError(f"data.class_names has {len(class_names)} entries; give background first, then at least one class")
    if not root.is_dir():
        raise PmmError(f"data.root={root}: folder not found; {LAYOUT_HINT}")
    for folder in (image_dir, mask_dir):
        if not (root / folder).is_dir():
            raise PmmError(f"{root / folder}: folder not found; {LAYOUT_HINT}")
    ids = _read_ids(root / list_dir / f"{split}.txt", root, split, list_dir)

    cache_root = Path(cache_dir or Path.home() / ".cache" / "pmm").expanduser()
    key = hashlib.sha1(f"{root}|{split}|{image_dir}|{mask_dir}|{len(class_names)}".encode()).hexdigest()[:16]
    cache_path = cache_root / f"labels-{split}-{key}.json"
    try:
        cache = json.loads(cache_path.read_text()) if cache_path.is_file() else {}
    except (OSError, json.JSONDecodeError):
        cache = {}  # a corrupt cache is only a lost speed-up

    labels: dict[str, tuple[int, ...]] = {}
    sizes: dict[str, tuple[int, int]] = {}
    fresh: dict[str, list] = {}
    for image_id in ids:
        image_path = root / image_dir / f"{image_id}.jpg"
        mask_path = root / mask_dir / f"{image_id}.png"
        try:
            stamp = [mask_path.stat().st_mtime_ns, image_path.stat().st_mtime_ns]
        except FileNotFoundError:
            stamp = None  # _scan_mask names the missing file
        entry = cache.get(image_id)
        if stamp is None or entry is None or entry[0] != stamp:
            found, size = _scan_mask(mask_path, image_path, len(class_names))
            entry = [stamp, list(found), list(size)]
        fresh[image_id] = entry
        labels[image_id] = tuple(entry[1])
        sizes[image_id] = tuple(entry[2])
    if fresh != cache:
        try:
            write_json(cache_path, fresh)
        except OSError:
            pass  # a read-only home only costs the next run a rescan
    return VOCSplit(root, split, ids, class_names, image_dir, mask_dir, labels, sizes)
