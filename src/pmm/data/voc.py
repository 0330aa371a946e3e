"""Reader for any tree in the PASCAL VOC devkit layout.

``root/JPEGImages/<id>.<ext>`` (any format Pillow reads: ``.jpg``, ``.png``, ``.webp``...; one file
per id), ``root/<mask_dir>/<id>.png`` (palette or greyscale PNG whose values are class ids,
255 = ignore; 16-/32-bit greyscale masks are read with their full values), ``root/Annotations/<id>.xml`` (optional, VOC object annotations) and
``root/ImageSets/Segmentation/<split>.txt`` (one id a line).

Image-level labels (the only supervision WSSS uses) are either the classes other than 0 and 255
found in each mask (``labels="masks"``) or the object names of each XML annotation
(``labels="xml"``, as the reference code does for VOC). With XML labels a split may lack masks
(``require_masks=False``, e.g. the VOC test split).

The data check decodes every listed image and mask once, completely (a truncated JPEG whose header
is intact, a truncated PNG or an empty file is caught here, not mid-training), and reports every
broken file of the split in one message. A split in which no image has a foreground label (binary
0/255 masks: 255 is "ignore") is refused: the CAM stage would learn nothing and score background
alone. Results are cached per (tree, split, settings) and
recomputed only for files whose modification time or size changed, so a second run decodes
nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image

from pmm.errors import PmmError
from pmm.io import DECODE_ERRORS, MASK_FORMAT, describe_decode_error, label_map, load_image, load_mask, write_json

VOC_CLASS_NAMES: tuple[str, ...] = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip

LAYOUT_HINT = "expected the VOC devkit layout: JPEGImages/<id>.jpg, SegmentationClass/<id>.png, ImageSets/Segmentation/<split>.txt"
BINARY_MASK_HINT = ("binary 0/255 masks? pmm reads mask values as class ids and 255 as ignore: store the objects as "
                    "class 1 and set data.class_names=[background,<name>] (one name per class id), or read the labels "
                    "from XML annotations with data.labels=xml")

LABEL_SOURCES = ("masks", "xml")
CACHE_VERSION = 3     # bump when the checks change: older caches were made by weaker checks
ENTRY_LENGTH = 6     # cache entry: stamps, labels, size, has mask, mask has a foreground class, image file name
SHOWN_PROBLEMS = 5    # broken files named in the error message (all of them go to a report file)


@dataclass(frozen=True)
class VOCSplit:
    """The ids of one split of a VOC-layout tree, their files and their image-level labels."""

    root: Path
    split: str
    ids: tuple[str, ...]
    class_names: tuple[str, ...]
    image_dir: str
    mask_dir: str | None  # None: a tree without ground-truth masks (every id in missing_masks)
    image_labels: dict[str, tuple[int, ...]]
    image_sizes: dict[str, tuple[int, int]]
    missing_masks: frozenset[str] = field(default_factory=frozenset)  # ids without a mask (require_masks=False)
    label_source: str = "masks"
    annotation_dir: str = "Annotations"
    image_files: dict[str, str] = field(default_factory=dict)  # id -> file name in image_dir (default <id>.jpg)

    @property
    def num_classes(self) -> int:
        """Number of classes, background included."""
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.ids)

    def image_path(self, image_id: str) -> Path:
        return self.root / self.image_dir / self.image_files.get(image_id, f"{image_id}.jpg")

    def mask_path(self, image_id: str) -> Path | None:
        return self.root / self.mask_dir / f"{image_id}.png" if self.mask_dir is not None else None

    def annotation_path(self, image_id: str) -> Path:
        return self.root / self.annotation_dir / f"{image_id}.xml"

    def has_mask(self, image_id: str) -> bool:
        """False only for ids of a split loaded with ``require_masks=False`` whose mask is absent."""
        return image_id not in self.missing_masks

    @property
    def has_all_masks(self) -> bool:
        return not self.missing_masks

    def with_masks(self) -> "VOCSplit":
        """The same split restricted to the ids that have a ground-truth mask (what can be scored)."""
        if not self.missing_masks:
            return self
        return replace(self, ids=tuple(i for i in self.ids if i not in self.missing_masks))

    def labels(self, image_id: str) -> tuple[int, ...]:
        """The 1-based foreground class ids present in the image (from its mask or its XML)."""
        return self.image_labels[image_id]

    def label_vector(self, image_id: str) -> np.ndarray:
        """Multi-hot float32 vector over the foreground classes (length num_classes - 1)."""
        vector = np.zeros(self.num_classes - 1, dtype=np.float32)
        vector[[label - 1 for label in self.labels(image_id)]] = 1.0
        return vector

    def load_image(self, image_id: str) -> np.ndarray:
        return load_image(self.image_path(image_id))

    def load_mask(self, image_id: str) -> np.ndarray:
        if not self.has_mask(image_id):
            where = self.mask_path(image_id) or f"{image_id}: no mask folder"
            raise PmmError(
                f"{where}: no mask for {image_id} (split '{self.split}' has masks optional); "
                "use a split with ground-truth masks for scoring"
            )
        return load_mask(self.mask_path(image_id))


# ----------------------------------------------------------------------------------------- split lists

_MAIN_LIST_LINE = re.compile(r"^\S+\s+-?[01]$")  # ImageSets/Main/<class>_<split>.txt: "<id>  1" / "<id> -1"


def _parse_id_line(line: str) -> tuple[str | None, str | None]:
    """(id, None) or (None, why the stripped ``line`` is not an id)."""
    tokens = line.split()
    if len(tokens) == 2:
        image, mask = PurePosixPath(tokens[0]), PurePosixPath(tokens[1])
        if image.suffix.lower() in (".jpg", ".jpeg") and mask.suffix.lower() == ".png" and image.stem == mask.stem:
            return image.stem, None  # DeepLab's train_aug.txt: "/JPEGImages/<id>.jpg /SegmentationClassAug/<id>.png"
    if len(tokens) > 1:
        if _MAIN_LIST_LINE.match(line):
            return None, "is a line of an ImageSets/Main class list (id and a 1/0/-1 flag), not a segmentation list"
        return None, "is not an image id (an id has no spaces or tabs inside)"
    token = tokens[0]
    if "/" in token or "\\" in token:
        return None, "is a path, not an image id (an id is a file name without folder or extension)"
    if token.lower().endswith((".jpg", ".jpeg", ".png", ".xml")):
        return None, "has a file extension (an id is the file name without .jpg)"
    return token, None


def _read_ids(list_path: Path, root: Path, split: str, list_dir: str) -> tuple[str, ...]:
    """The ids of a split list, each checked; an unusable line or a repeated id is a one-line error."""
    if not list_path.is_file():
        available = sorted(p.stem for p in (root / list_dir).glob("*.txt")) if (root / list_dir).is_dir() else []
        raise PmmError(
            f"{list_path}: split list not found (available: {available or 'none'}); "
            f"set data.train_split/data.val_split to an existing list or create {list_dir}/{split}.txt"
        )
    try:
        text = list_path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise PmmError(f"{list_path}: not a UTF-8 text file; a split list holds one image id per line") from None
    ids: list[str] = []
    lines_of: dict[str, list[int]] = {}
    bad: list[tuple[int, str, str]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped:
            continue
        image_id, problem = _parse_id_line(stripped)
        if problem:
            bad.append((number, stripped, problem))
            continue
        ids.append(image_id)
        lines_of.setdefault(image_id, []).append(number)
    if bad:
        number, stripped, problem = bad[0]
        more = f" ({len(bad) - 1} more such line{'s' * (len(bad) > 2)})" if len(bad) > 1 else ""
        raise PmmError(
            f"{list_path}:{number}: {stripped!r} {problem}{more}; write one image id per line, "
            "the file name without .jpg (e.g. 2007_000032)"
        )
    if not ids:
        raise PmmError(f"{list_path}: split list is empty; it should hold one image id per line")
    repeated = {image_id: numbers for image_id, numbers in lines_of.items() if len(numbers) > 1}
    if repeated:
        shown = ", ".join(
            f"{image_id} (lines {', '.join(map(str, numbers))})" for image_id, numbers in list(repeated.items())[:SHOWN_PROBLEMS]
        )
        more = f" and {len(repeated) - SHOWN_PROBLEMS} more" if len(repeated) > SHOWN_PROBLEMS else ""
        raise PmmError(
            f"{list_path}: {len(repeated)} id{'s are' if len(repeated) > 1 else ' is'} listed more than once: {shown}{more}; "
            "delete the repeated lines (a repeated image is trained on and scored several times)"
        )
    return tuple(ids)


# ------------------------------------------------------------------------------------------ file checks

@dataclass(frozen=True)
class _Problem:
    path: Path
    reason: str   # a few words, no ';'
    fix: str      # shared by all problems of one kind


@dataclass(frozen=True)
class _Layout:
    root: Path
    image_dir: str
    mask_dir: str | None  # None: no masks at all
    annotation_dir: str
    class_names: tuple[str, ...]
    labels: str
    require_masks: bool
    list_path: Path
    images: dict[str, list[str]] = field(default_factory=dict)  # id -> its image files (image_index)

    def image_names(self, image_id: str) -> list[str]:
        return self.images.get(image_id) or [f"{image_id}.jpg"]

    def paths(self, image_id: str) -> tuple[Path, Path | None, Path | None]:
        xml = self.root / self.annotation_dir / f"{image_id}.xml" if self.labels == "xml" else None
        image = self.root / self.image_dir / self.image_names(image_id)[0]
        mask = self.root / self.mask_dir / f"{image_id}.png" if self.mask_dir is not None else None
        return image, mask, xml


def image_index(folder: Path) -> dict[str, list[str]]:
    """id -> the file names in ``folder`` whose stem is the id and whose extension Pillow reads (sorted).

    One listing of the folder, so that a split of any size finds ``<id>.jpg``, ``<id>.png``... at once.
    """
    extensions = {ext.lower() for ext in Image.registered_extensions()}
    index: dict[str, list[str]] = {}
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                stem, dot, ext = entry.name.rpartition(".")
                if dot and stem and f".{ext.lower()}" in extensions:
                    index.setdefault(stem, []).append(entry.name)
    except OSError:
        return {}
    for names in index.values():
        names.sort(key=lambda name: (not name.lower().endswith((".jpg", ".jpeg")), name))
    return index


def _stamp(path: Path | None) -> list[int] | None:
    """[mtime_ns, size] of a file, None when absent: a cache entry is valid while its stamps hold."""
    if path is None:
        return None
    try:
        info = path.stat()
    except OSError:
        return None
    return [info.st_mtime_ns, info.st_size]


def _decode_image(path: Path) -> tuple[tuple[int, int] | None, str | None]:
    """((height, width), None) after decoding every pixel, or (None, reason)."""
    try:
        with Image.open(path) as image:
            image.load()
            width, height = image.size
        return (height, width), None
    except DECODE_ERRORS as error:
        return None, describe_decode_error(path, error)


def _decode_mask(path: Path) -> tuple[np.ndarray | None, str | None, bool]:
    """(label map, None, False), or (None, reason, True) if the file is damaged, (None, reason, False) if of a wrong kind."""
    try:
        with Image.open(path) as image:
            image.load()
            mask, reason = label_map(image)
            return mask, reason, False
    except DECODE_ERRORS as error:
        return None, describe_decode_error(path, error), True


def _xml_labels(path: Path, class_names: tuple[str, ...]) -> tuple[tuple[int, ...] | None, _Problem | None]:
    """The 1-based class ids of the objects of a VOC XML annotation (difficult ones included, as the reference)."""
    try:
        tree = ET.parse(path)
    except FileNotFoundError:
        return None, _Problem(path, "annotation listed in the split is missing", "missing")
    except ET.ParseError as error:
        size = path.stat().st_size if path.exists() else 0
        reason = "empty file (0 bytes)" if size == 0 else f"not valid XML ({error})"
        return None, _Problem(path, reason, "replace")
    except OSError as error:
        return None, _Problem(path, f"cannot be read ({error.strerror})", "replace")
    index = {name: position for position, name in enumerate(class_names) if position > 0}
    found: set[int] = set()
    for number, obj in enumerate(tree.getroot().iter("object"), start=1):
        name = (obj.findtext("name") or "").strip()
        if not name:
            return None, _Problem(path, f"<object> {number} has no <name>", "replace")
        if name not in index:
            return None, _Problem(path, f"object name '{name}' is not in data.class_names", "xml-classes")
        found.add(index[name])
    return tuple(sorted(found)), None


def _check_item(layout: _Layout, image_id: str) -> tuple[list | None, list[_Problem]]:
    """Decode one listed image (+ mask, + annotation): its cache entry, or the problems found."""
    image_path, mask_path, xml_path = layout.paths(image_id)
    problems: list[_Problem] = []
    size = None
    names = layout.image_names(image_id)
    if len(names) > 1:
        problems.append(_Problem(image_path, f"id {image_id} has {len(names)} image files: {' and '.join(names)}",
                                 "ambiguous"))
    elif not image_path.is_file():
        problems.append(_Problem(image_path, "image listed in the split is missing", "missing"))
    else:
        size, reason = _decode_image(image_path)
        if reason:
            problems.append(_Problem(image_path, reason, "replace"))

    num_classes = len(layout.class_names)
    mask_labels: tuple[int, ...] = ()
    has_mask = mask_path is not None and mask_path.is_file()
    if not has_mask:
        if layout.require_masks:
            problems.append(_Problem(mask_path, "mask for a listed image is missing", "missing"))
    else:
        mask, reason, damaged = _decode_mask(mask_path)
        if reason:
            kind = "replace" if damaged else ("mask-mode" if reason.startswith("mask is an") else "mask-values")
            problems.append(_Problem(mask_path, reason, kind))
        else:
            if size is not None and mask.shape != size:
                problems.append(_Problem(
                    mask_path, f"mask is {mask.shape[1]}x{mask.shape[0]} but its image is {size[1]}x{size[0]}", "size"
                ))
            counts = np.bincount(mask.ravel(), minlength=256)
            present = np.flatnonzero(counts)
            beyond = present[(present >= num_classes) & (present != 255)]
            if beyond.size:
                problems.append(_Problem(
                    mask_path,
                    f"label {int(beyond[0])} is beyond the {num_classes} classes (0..{num_classes - 1}, 255 = ignore)",
                    "mask-classes",
                ))
            mask_labels = tuple(int(v) for v in present if 0 < v < num_classes)

    labels = mask_labels
    if xml_path is not None:
        xml_labels, problem = _xml_labels(xml_path, layout.class_names)
        if problem:
            problems.append(problem)
        labels = xml_labels or ()
    if problems:
        return None, problems
    stamps = [_stamp(image_path), _stamp(mask_path), _stamp(xml_path)]
    return [stamps, list(labels), list(size), has_mask, bool(mask_labels), image_path.name], []


_FIXES = {
    "missing": "add the missing files or remove their ids from {list}",
    "replace": "replace these files (re-extract or re-download them) or remove their ids from {list}",
    "size": "masks must have the size of their image",
    "mask-mode": MASK_FORMAT,
    "mask-values": "store the class ids as an 8-bit palette or greyscale PNG (VOC SegmentationClass format)",
    "ambiguous": "keep one image file per id (pmm finds an id's image whatever its extension)",
    "mask-classes": "fix the mask or set data.class_names to the full class list (background first)",
    "xml-classes": "fix the annotation or set data.class_names to the full class list (background first) that its names use",
}


def _problems_message(problems: list[_Problem], layout: _Layout, split: str, ids: int, report: Path | None) -> str:
    fixes = []
    for problem in problems:
        fix = _FIXES[problem.fix].format(list=layout.list_path)
        if fix not in fixes:
            fixes.append(fix)
    if len(problems) == 1:
        problem = problems[0]
        return f"{problem.path}: {problem.reason}; {fixes[0]}"
    shown = ", ".join(f"{p.path} ({p.reason})" for p in problems[:SHOWN_PROBLEMS])
    more = ""
    if len(problems) > SHOWN_PROBLEMS:
        more = f" and {len(problems) - SHOWN_PROBLEMS} more" + (f" (all listed in {report})" if report else "")
    return f"{len(problems)} broken or missing files among the {ids} images of split '{split}': {shown}{more}; {'; '.join(fixes)}"


def _write_report(path: Path, problems: list[_Problem]) -> Path | None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(f"{p.path}\t{p.reason}\n" for p in problems))
    except OSError:
        return None
    return path


def check_files(layout: _Layout, ids: tuple[str, ...], split: str, settings: str,
                cache_dir: str | os.PathLike | None = None) -> dict[str, list]:
    """Decode the files of ``ids`` (:func:`_check_item`) unless the cache of ``settings`` vouches for them.

    Returns each id's cache entry (stamps, mask labels, size, has mask, mask has a foreground class,
    image file name). Raises one :class:`PmmError` naming every broken file (the first few, and a
    report file with all of them).
    """
    cache_root = Path(cache_dir or Path.home() / ".cache" / "pmm").expanduser()
    key = hashlib.sha1(settings.encode()).hexdigest()[:16]
    cache_path = cache_root / f"labels-{split}-{key}.json"
    try:
        cache = json.loads(cache_path.read_text()) if cache_path.is_file() else {}
    except (OSError, ValueError):
        cache = {}  # a corrupt cache is only a lost speed-up
    if not isinstance(cache, dict):
        cache = {}

    entries: dict[str, list] = {}
    todo: list[str] = []
    for image_id in ids:
        entry = cache.get(image_id)
        paths = layout.paths(image_id)
        if (isinstance(entry, list) and len(entry) == ENTRY_LENGTH and len(layout.image_names(image_id)) == 1
                and entry[5] == paths[0].name and entry[0] == [_stamp(p) for p in paths]):
            entries[image_id] = entry
        else:
            todo.append(image_id)
    problems: list[_Problem] = []
    if todo:
        # PIL and numpy release the GIL while decoding: threads overlap the work of a big split.
        workers = min(8, os.cpu_count() or 1, max(1, len(todo) // 16))
        if workers > 1:
            with ThreadPoolExecutor(workers) as pool:
                results = list(pool.map(lambda image_id: _check_item(layout, image_id), todo))
        else:
            results = [_check_item(layout, image_id) for image_id in todo]
        for image_id, (entry, found) in zip(todo, results):
            if entry is not None:
                entries[image_id] = entry
            problems.extend(found)
    if entries != cache:
        try:
            write_json(cache_path, entries)  # the good files are not decoded again once the bad ones are fixed
        except OSError:
            pass  # a read-only home only costs the next run a rescan
    if problems:
        report = None
        if len(problems) > SHOWN_PROBLEMS:
            report = _write_report(cache_root / f"broken-{split}-{key}.txt", problems)
        raise PmmError(_problems_message(problems, layout, split, len(ids), report))
    return entries


def load_voc_split(
    root: str | os.PathLike,
    split: str,
    class_names: tuple[str, ...] | list[str] = VOC_CLASS_NAMES,
    image_dir: str = "JPEGImages",
    mask_dir: str = "SegmentationClass",
    list_dir: str = "ImageSets/Segmentation",
    cache_dir: str | os.PathLike | None = None,
    labels: str = "masks",
    annotation_dir: str = "Annotations",
    require_masks: bool = True,
) -> VOCSplit:
    """Index one split of a VOC-layout tree, decoding every listed file once (then cached).

    Args:
        root: the tree's root folder (the one holding ``JPEGImages``).
        split: name of the list in ``list_dir`` (``train``, ``val``, ``train_aug``...).
        class_names: all class names, background first; its length is the class count.
        image_dir, mask_dir, list_dir: folder names inside ``root``.
        cache_dir: where the check results are kept (default: ``~/.cache/pmm``).
        labels: where image-level labels come from: ``masks`` (the classes in each mask) or ``xml``
            (the object names of ``annotation_dir/<id>.xml``).
        annotation_dir: folder of the XML annotations inside ``root``.
        require_masks: every listed id must have a mask. ``False`` (XML labels only) allows ids
            without one (a split without ground truth, e.g. the VOC test set); masks that exist are
            still checked.

    Raises:
        PmmError: one line naming the missing or bad file(s) and the fix. All broken files of the
            split are reported together (the count, the first few, and a report file with all).
    """
    root = Path(root).expanduser().resolve()
    class_names = tuple(class_names)
    if labels not in LABEL_SOURCES:
        raise PmmError(f"data.labels={labels}: expected one of {'|'.join(LABEL_SOURCES)}")
    if not require_masks and labels != "xml":
        raise PmmError("masks are optional only with data.labels=xml: image labels come from the masks otherwise")
    if len(class_names) < 2:
        raise PmmError(f"data.class_names has {len(class_names)} entries; give background first, then at least one class")
    if not root.is_dir():
        raise PmmError(f"data.root={root}: folder not found; {LAYOUT_HINT}")
    folders = [image_dir] + ([mask_dir] if require_masks else [])
    for folder in folders:
        if not (root / folder).is_dir():
            raise PmmError(f"{root / folder}: folder not found; {_root_hint(root, folders)}")
    if labels == "xml" and not (root / annotation_dir).is_dir():
        raise PmmError(
            f"{root / annotation_dir}: folder not found; data.labels=xml reads image labels from "
            f"{annotation_dir}/<id>.xml; set data.labels=masks to read them from the masks"
        )
    list_path = root / list_dir / f"{split}.txt"
    ids = _read_ids(list_path, root, split, list_dir)
    layout = _Layout(root, image_dir, mask_dir, annotation_dir, class_names, labels, require_masks, list_path,
                     image_index(root / image_dir))

    settings = "|".join(map(str, (f"v{CACHE_VERSION}", root, split, image_dir, mask_dir, labels, annotation_dir,
                                  require_masks, ",".join(class_names))))
    entries = check_files(layout, ids, split, settings, cache_dir)
    result = _split_of(layout, split, ids, entries)
    check_foreground(result)
    if labels == "xml" and any(entries[i][3] for i in ids) and not any(entries[i][4] for i in ids):
        raise PmmError(
            f"split '{split}': its XML annotations name objects but none of its masks in {root / mask_dir} holds a "
            f"foreground class, so every score would be over background alone; {BINARY_MASK_HINT.split('; ')[0]}")
    return result


def _split_of(layout: _Layout, split: str, ids: tuple[str, ...], entries: dict[str, list]) -> VOCSplit:
    return VOCSplit(
        layout.root, split, ids, layout.class_names, layout.image_dir, layout.mask_dir,
        image_labels={image_id: tuple(entries[image_id][1]) for image_id in ids},
        image_sizes={image_id: tuple(entries[image_id][2]) for image_id in ids},
        missing_masks=frozenset(image_id for image_id in ids if not entries[image_id][3]),
        label_source=layout.labels,
        annotation_dir=layout.annotation_dir,
        image_files={image_id: entries[image_id][5] for image_id in ids},
    )


def check_foreground(split: VOCSplit) -> None:
    """Refuse a split in which no image has a foreground label (ids without a mask aside).

    Typical cause: binary 0/255 masks, whose 255 is "ignore", so no image has a class: the CAM
    stage would train on nothing and score background alone.
    """
    labelled = [i for i in split.ids if split.has_mask(i) or split.label_source == "xml"]
    if not labelled or any(split.image_labels[i] for i in labelled):
        return
    if split.label_source == "xml":
        found = f"none of their {split.annotation_dir}/<id>.xml names an object"
    else:
        found = "their masks hold no class but 0 (background) and 255 (ignore)"
    raise PmmError(f"split '{split.split}' of {split.root}: none of its {len(labelled)} images has a foreground label "
                   f"({found}); {BINARY_MASK_HINT}")


def _root_hint(root: Path, folders: list[str]) -> str:
    """The layout hint, or ``did you mean data.root=<subfolder>`` when a folder below ``root`` has the layout."""
    def subfolders(folder: Path) -> list[Path]:
        try:
            return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
        except OSError:
            return []

    candidates = [root / "VOC2012", root / "VOCdevkit" / "VOC2012", *subfolders(root)]
    for child in subfolders(root)[:50]:
        candidates += subfolders(child)
    for candidate in dict.fromkeys(candidates):
        if all((candidate / folder).is_dir() for folder in folders):
            return f"{LAYOUT_HINT}; {candidate} has that layout: did you mean data.root={candidate}?"
    return LAYOUT_HINT


def missing_mask_ids(root: str | os.PathLike, split: str, mask_dir: str = "SegmentationClass",
                     list_dir: str = "ImageSets/Segmentation", limit: int | None = None) -> list[str]:
    """The ids of ``split`` (its first ``limit``) whose ground-truth mask file is absent: a cheap look before indexing."""
    root = Path(root).expanduser().resolve()
    ids = _read_ids(root / list_dir / f"{split}.txt", root, split, list_dir)
    ids = ids[: int(limit)] if limit else ids
    return [image_id for image_id in ids if not (root / mask_dir / f"{image_id}.png").is_file()]


def load_split_masks_optional(root: str | os.PathLike, split: str, class_names: tuple[str, ...] | list[str],
                              image_dir: str = "JPEGImages", mask_dir: str = "SegmentationClass",
                              list_dir: str = "ImageSets/Segmentation", limit: int | None = None) -> VOCSplit:
    """Split ``split`` with masks optional and image labels from the masks that exist (inference needs none).

    Every listed image is still decoded and checked, and the masks that exist are checked as usual;
    an id without a mask has no image labels. Not cached: it serves one prediction pass.
    """
    root = Path(root).expanduser().resolve()
    class_names = tuple(class_names)
    list_path = root / list_dir / f"{split}.txt"
    ids = _read_ids(list_path, root, split, list_dir)
    ids = ids[: int(limit)] if limit else ids
    layout = _Layout(root, image_dir, mask_dir, "Annotations", class_names, "masks", False, list_path,
                     image_index(root / image_dir))
    entries, problems = {}, []
    for image_id in ids:
        entry, found = _check_item(layout, image_id)
        problems.extend(found)
        if entry is not None:
            entries[image_id] = entry
    if problems:
        raise PmmError(_problems_message(problems, layout, split, len(ids), None))
    result = _split_of(layout, split, ids, entries)
    check_foreground(result)
    return result
