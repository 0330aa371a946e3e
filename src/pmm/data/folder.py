"""Your own dataset: a folder of images and a file of image-level labels (``data=folder``).

The labels file is one of

- a CSV ``image_id,labels`` whose labels are class names separated by spaces
  (``2007_000032,aeroplane person``; an empty cell is a background-only image);
- a CSV ``image_id,<class1>,<class2>,...`` with one 0/1 column per class (the header holds the names);
- a JSON object ``{"<id>": ["<name>", ...], ...}``.

Images are ``<images>/<id>.<ext>`` in any format Pillow reads (:func:`pmm.data.voc.image_index`);
ground-truth masks, when there are any, are ``<masks>/<id>.png`` (palette or index PNGs, the VOC
format). Masks only score: CAMs, pseudo-masks and the segmenter learn from the labels alone, and a
stage that needs ground truth says that it skipped its scores when there is none.

Class names are ``data.class_names`` (background first, in the order of the masks' ids), else the
CSV's 0/1 header or the sorted union of the names used, with ``background`` put first. The split
is two id lists (``data.train_split`` / ``data.val_split`` naming text files) or a seeded share
of the ids (``data.val_fraction``, ``data.split_seed``).

Every error is one line naming the file and the line (or the id, for JSON).
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path

from pmm.errors import PmmError

log = logging.getLogger("pmm")

BACKGROUND = "background"
LABELS_COLUMN = "labels"
ID_COLUMNS = ("image_id", "id", "image")
FORMS = "a CSV 'image_id,labels' (names separated by spaces), a CSV 'image_id,<class1>,<class2>,...' of 0/1, or a JSON {id: [names]}"
SHOWN = 5  # ids named in a message


@dataclass(frozen=True)
class LabelsFile:
    """What a labels file says: its ids in file order, each id's class names, and where each id is."""

    path: Path
    ids: tuple[str, ...]
    names: dict[str, tuple[str, ...]]   # id -> its class names (background-only: empty)
    lines: dict[str, int]               # id -> its line in the file (1-based)
    header_names: tuple[str, ...] | None = None  # the 0/1 CSV's class columns
    header_line: int = 1

    def where(self, image_id: str) -> str:
        return f"{self.path}:{self.lines[image_id]}"


def _duplicate(path: Path, image_id: str, first: int, again: int) -> PmmError:
    return PmmError(f"{path}:{again}: id {image_id!r} is listed again (first on line {first}); keep one entry per "
                    "image (a repeated image would be trained on twice)")


def _check_id(path: Path, number: int, image_id: str) -> None:
    if not image_id:
        raise PmmError(f"{path}:{number}: empty image id; every row starts with an image id (the file name without extension)")
    if "/" in image_id or "\\" in image_id:
        raise PmmError(f"{path}:{number}: id {image_id!r} is a path; an id is the image's file name without folder or extension")


def _read_csv(path: Path, text: str) -> LabelsFile:
    rows = list(csv.reader(text.splitlines()))
    numbered = [(number, row) for number, row in enumerate(rows, start=1) if any(cell.strip() for cell in row)]
    if not numbered:
        raise PmmError(f"{path}: empty labels file; expected {FORMS}")
    header_line, header = numbered[0]
    header = [cell.strip() for cell in header]
    if header[0].lower() not in ID_COLUMNS or len(header) < 2:
        raise PmmError(f"{path}:{header_line}: expected a header 'image_id,labels' or 'image_id,<class1>,<class2>,...', "
                       f"found {','.join(header)!r}")
    one_hot = not (len(header) == 2 and header[1].lower() == LABELS_COLUMN)
    classes = tuple(header[1:]) if one_hot else None
    if classes is not None:
        empty = [i for i, name in enumerate(classes, start=2) if not name]
        if empty:
            raise PmmError(f"{path}:{header_line}: column {empty[0]} of the header has no class name")
        repeated = sorted({name for name in classes if classes.count(name) > 1})
        if repeated:
            raise PmmError(f"{path}:{header_line}: class {repeated[0]!r} is a column twice in the header")
    ids: list[str] = []
    names: dict[str, tuple[str, ...]] = {}
    lines: dict[str, int] = {}
    for number, row in numbered[1:]:
        cells = [cell.strip() for cell in row]
        if one_hot:
            if len(cells) != len(header):
                raise PmmError(f"{path}:{number}: {len(cells)} fields where the header has {len(header)} "
                               f"(image_id and one 0/1 per class)")
            values = cells[1:]
            bad = [(c, v) for c, v in zip(classes, values) if v not in ("0", "1")]
            if bad:
                raise PmmError(f"{path}:{number}: column {bad[0][0]!r} holds {bad[0][1]!r}; expected 0 or 1")
            found = tuple(c for c, v in zip(classes, values) if v == "1")
        else:
            if len(cells) > 2:
                raise PmmError(f"{path}:{number}: {len(cells)} fields where the header has 2 (image_id,labels); "
                               "separate the names with spaces, not commas, or quote the cell")
            found = tuple(re.split(r"\s+", cells[1])) if len(cells) == 2 and cells[1] else ()
        image_id = cells[0]
        _check_id(path, number, image_id)
        if image_id in lines:
            raise _duplicate(path, image_id, lines[image_id], number)
        ids.append(image_id)
        names[image_id] = tuple(dict.fromkeys(found))
        lines[image_id] = number
    return LabelsFile(path, tuple(ids), names, lines, classes, header_line)


def _json_line(text: str, key: str, occurrence: int = 0) -> int:
    """The line of the ``occurrence``-th time ``key`` appears as an object key in a JSON text."""
    found = list(re.finditer(re.escape(json.dumps(key)) + r"\s*:", text))
    if len(found) <= occurrence:
        found = list(re.finditer(re.escape(json.dumps(key, ensure_ascii=False)) + r"\s*:", text))
    if len(found) <= occurrence:
        return 1
    return text.count("\n", 0, found[occurrence].start()) + 1


def _read_json(path: Path, text: str) -> LabelsFile:
    seen: dict[str, int] = {}

    def pairs(items: list) -> dict:
        result = {}
        for key, value in items:
            if key in result:
                raise _duplicate(path, key, _json_line(text, key), _json_line(text, key, 1))
            result[key] = value
        return result

    try:
        data = json.loads(text, object_pairs_hook=pairs)
    except json.JSONDecodeError as error:
        raise PmmError(f"{path}:{error.lineno}: not valid JSON ({error.msg}); expected {FORMS}") from None
    if not isinstance(data, dict):
        raise PmmError(f"{path}:1: the JSON is a {type(data).__name__}; expected an object {{id: [names]}}")
    ids: list[str] = []
    names: dict[str, tuple[str, ...]] = {}
    for image_id, value in data.items():
        number = _json_line(text, image_id)
        seen[image_id] = number
        _check_id(path, number, image_id)
        if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
            raise PmmError(f"{path}:{number}: the labels of {image_id!r} are {json.dumps(value)[:60]}; "
                           'expected a list of class names, e.g. ["dog", "person"] ([] for background only)')
        ids.append(image_id)
        names[image_id] = tuple(dict.fromkeys(v.strip() for v in value))
    return LabelsFile(path, tuple(ids), names, seen)


def read_labels_file(path: str | Path) -> LabelsFile:
    """Parse a labels file (a ``.json`` is JSON, anything else CSV); one-line errors name the file and line."""
    path = Path(path).expanduser().resolve()
    if not path.is_file():
        raise PmmError(f"data.labels_file={path}: file not found; expected {FORMS}")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise PmmError(f"{path}: not a UTF-8 text file; expected {FORMS}") from None
    except OSError as error:
        raise PmmError(f"{path}: cannot be read ({error.strerror})") from None
    if path.suffix.lower() == ".json" or text.lstrip().startswith("{"):
        return _read_json(path, text)
    return _read_csv(path, text)


def resolve_class_names(labels: LabelsFile, class_names: list[str] | tuple[str, ...] | None) -> tuple[str, ...]:
    """All class names, background first: ``class_names`` when given (every name used must be in it),
    else the 0/1 header's, else the sorted union of the names used, with ``background`` prepended.

    ``background`` (the first class) may appear in a label list; it adds nothing.
    """
    if class_names is not None:
        names = tuple(str(n) for n in class_names)
        if len(names) < 2:
            raise PmmError(f"data.class_names has {len(names)} entries; give background first, then at least one class")
        if len(set(names)) != len(names):
            repeated = sorted({n for n in names if names.count(n) > 1})
            raise PmmError(f"data.class_names lists {repeated[0]!r} twice; one entry per class, background first")
    elif labels.header_names is not None:
        names = (BACKGROUND, *(n for n in labels.header_names if n != BACKGROUND))
    else:
        used = {name for image_id in labels.ids for name in labels.names[image_id]}
        names = (BACKGROUND, *sorted(used - {BACKGROUND}))
    known = set(names)
    if labels.header_names is not None:
        unknown = [n for n in labels.header_names if n not in known]
        if unknown:
            raise PmmError(f"{labels.path}:{labels.header_line}: class {unknown[0]!r} of the header is not in data.class_names "
                           f"({', '.join(names[1:])}); fix the header or data.class_names")
    for image_id in labels.ids:
        unknown = [n for n in labels.names[image_id] if n not in known]
        if unknown:
            raise PmmError(f"{labels.where(image_id)}: class {unknown[0]!r} of {image_id!r} is not in data.class_names "
                           f"({', '.join(names[1:])}); fix the name or add it to data.class_names")
    if len(names) < 2:
        raise PmmError(f"{labels.path}: no image has a class; label at least one image with a foreground class")
    return names


def split_label(value: str) -> str:
    """The name a split goes by in the run folder (``cams/<name>``, ``predictions/<name>``): a list
    file's stem (``splits/val.txt`` -> ``val``), else the value itself."""
    value = str(value)
    if "/" in value or "\\" in value or value.lower().endswith(".txt"):
        return Path(value).stem
    return value


def is_list_file(value: str | None) -> bool:
    """Whether a split setting names a text file of ids rather than a split name."""
    return value is not None and split_label(value) != str(value)


def seeded_val_ids(ids: tuple[str, ...], fraction: float, seed: int) -> set[str]:
    """The ids of a seeded validation share: the ``round(fraction * n)`` (at least 1) ids ranked first
    by a hash of (seed, id). The rank of an id never changes, so adding images to the folder keeps
    the validation images that were chosen (but for the few the new count pushes out or in)."""
    count = min(len(ids) - 1, max(1, round(fraction * len(ids))))
    ranked = sorted(ids, key=lambda i: hashlib.sha1(f"{seed}:{i}".encode()).hexdigest())
    return set(ranked[:count])


def read_id_list(path: str | Path, key: str, known: dict[str, int], labels_path: Path) -> tuple[str, ...]:
    """The ids of a split list file (one id a line); each must be an id of the labels file."""
    from pmm.data.voc import _read_ids

    path = Path(path).expanduser().resolve()
    if not path.is_file():
        raise PmmError(f"{key}={path}: split list not found; give a text file with one image id per line, or a "
                       "split name (train / val) with data.val_fraction")
    ids = _read_ids(path, path.parent, path.stem, str(path.parent))
    for number, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), start=1):
        image_id = line.strip()
        if image_id and image_id not in known:
            raise PmmError(f"{path}:{number}: id {image_id!r} has no row in {labels_path}; add its labels there or "
                           "remove it from the list")
    return ids


def _shown(ids: list[str]) -> str:
    more = f" and {len(ids) - SHOWN} more" if len(ids) > SHOWN else ""
    return ", ".join(ids[:SHOWN]) + more


def load_folder(images: str | Path, labels_file: str | Path, masks: str | Path | None = None,
                class_names: list[str] | tuple[str, ...] | None = None, cache_dir: str | Path | None = None):
    """Every labelled image of a folder as one :class:`~pmm.data.voc.VOCSplit` named ``all``, checked.

    Each image (and each mask there is) is decoded once, completely, as the VOC reader does (the
    results are cached). Images without a row in the labels file are left out, named in a warning;
    an image whose label list is empty is background-only and kept.

    Raises:
        PmmError: one line naming the file (and line) at fault: an unknown class name, an id without
            an image, a malformed or repeated row, a broken image or mask, a mask whose size is not
            its image's.
    """
    from pmm.data.voc import CACHE_VERSION, VOCSplit, _Layout, check_files, image_index

    root = Path(images).expanduser().resolve()
    if not root.is_dir():
        raise PmmError(f"data.images={root}: folder not found; give the folder holding the images <id>.jpg (.png, ...)")
    mask_root = Path(masks).expanduser().resolve() if masks else None
    if mask_root is not None and not mask_root.is_dir():
        raise PmmError(f"data.masks={mask_root}: folder not found; give the folder of the masks <id>.png or "
                       "data.masks=null (no ground truth: scores are skipped)")
    labels = read_labels_file(labels_file)
    names = resolve_class_names(labels, class_names)
    if not labels.ids:
        raise PmmError(f"{labels.path}: no image listed; add one row per image")
    index = image_index(root)
    missing = [i for i in labels.ids if i not in index]
    if missing:
        first = missing[0]
        hint = ""
        if Path(first).stem in index and Path(first).suffix:
            hint = f" (ids are file names without extension: {Path(first).stem})"
        more = f" ({len(missing) - 1} more ids without an image: {_shown(missing[1:])})" if len(missing) > 1 else ""
        raise PmmError(f"{labels.where(first)}: id {first!r} has no image in {root}{hint}{more}; add {first}.jpg "
                       "(or .png, any format Pillow reads) or remove the row")
    unlabelled = sorted(set(index) - set(labels.ids))
    if unlabelled:
        log.warning("%d images in %s have no row in %s and are left out: %s; add a row for each (an empty label "
                    "list for a background-only image) to use them", len(unlabelled), root, labels.path,
                    _shown(unlabelled))
    mask_dir = str(mask_root) if mask_root is not None else None
    layout = _Layout(root, "", mask_dir, "Annotations", names, "masks", False, labels.path, index)
    settings = "|".join(map(str, ("folder", f"v{CACHE_VERSION}", root, mask_dir, ",".join(names))))
    entries = check_files(layout, labels.ids, "folder", settings, cache_dir)

    position = {name: k for k, name in enumerate(names)}
    image_labels = {i: tuple(sorted({position[n] for n in labels.names[i]} - {0})) for i in labels.ids}
    if not any(image_labels.values()):
        raise PmmError(f"{labels.path}: none of its {len(labels.ids)} images has a foreground class; the CAM stage "
                       "learns from the classes of the images: label the objects in them")
    split = VOCSplit(root, "all", labels.ids, names, "", mask_dir, image_labels=image_labels,
                     image_sizes={i: tuple(entries[i][2]) for i in labels.ids},
                     missing_masks=frozenset(i for i in labels.ids if not entries[i][3]), label_source="file",
                     image_files={i: entries[i][5] for i in labels.ids})
    _warn_masks_disagree(split, {i: tuple(entries[i][1]) for i in labels.ids}, labels)
    return split


def _warn_masks_disagree(split, mask_labels: dict[str, tuple[int, ...]], labels: LabelsFile) -> None:
    """A warning when most masks hold other classes than their image's labels: the class order of
    ``data.class_names`` (mask value k = class k) is then most likely not the masks'."""
    masked = [i for i in split.ids if split.has_mask(i)]
    disagree = [i for i in masked if set(mask_labels[i]) != set(split.image_labels[i])]
    if masked and len(disagree) * 2 > len(masked):
        first = disagree[0]
        shown = ", ".join(split.class_names[k] for k in mask_labels[first]) or "background only"
        said = ", ".join(split.class_names[k] for k in split.image_labels[first]) or "background only"
        log.warning("the masks in %s hold other classes than the labels of %d of their %d images (%s: the mask "
                    "holds %s, %s says %s): a mask value k is class k of data.class_names, so give data.class_names "
                    "in the order of the masks' ids", split.mask_dir, len(disagree), len(masked), first, shown,
                    labels.where(first), said)
