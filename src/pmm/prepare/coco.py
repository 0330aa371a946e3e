"""COCO instance annotations converted to the VOC devkit layout that :mod:`pmm.data.voc` reads.

``convert_coco_to_voc`` turns a COCO ``instances_*.json`` and its image folder into

- ``out_root/SegmentationClass/<stem>.png``: semantic masks (VOC-palette PNG, class id per pixel),
- ``out_root/JPEGImages/<stem>.jpg``: the images (symlinks by default, or copies),
- ``out_root/ImageSets/Segmentation/<split>.txt``: the converted ids, sorted,
- ``out_root/class_names.json``: ``["background", <category names in category-id order>]``, the
  value to give as ``data.class_names``, and ``out_root/class_names.txt``, the same names one a line
  (what ``data=coco`` reads through :func:`pmm.data.class_names.read_class_names`).

Class ids: COCO category ids are sparse (COCO 2014/2017: 80 categories with ids up to 90); they are
mapped to the contiguous ids 1..K in increasing category-id order, 0 being background.

Overlaps: instances are painted from the largest (in mask pixels) to the smallest, so where two
instances overlap the smaller one is on top (it is usually the one in front, and painting the large
one last would erase it). Equal areas are painted in annotation-id order, the later id on top.

Crowd regions (``iscrowd: 1``) become 255 (ignore), as is usual for COCO semantic segmentation, but
only on pixels that no individual (non-crowd) instance covers: an individually outlined object is a
certain label, the crowd is not. A consequence for weak supervision: an image whose only instances of
a class are crowds gets no image-level label for that class (its mask holds 255 there, not the id).

Images without annotations are still converted and listed (all background), as in COCO practice.
All files are written atomically (temporary name, then rename), the masks by a pool of worker
processes; every listed image is checked to exist before anything is written, and the split list and
class names are written last. A rerun skips the masks newer than the annotation file and the images
already placed, so an interrupted conversion is finished by running it again.

CLI::

    python -m pmm.prepare coco --annotations instances_train2014.json --images train2014/ \\
        --out data/coco2014 --split train [--copy] [--limit N] [--workers N]
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
from pathlib import Path

import numpy as np
from PIL import Image

from pmm.errors import PmmError
from pmm.io import atomic_path, save_mask
from pmm.data.class_names import CLASS_NAMES_JSON, CLASS_NAMES_TXT, read_class_names, write_class_names
from pmm.prepare.common import default_workers, place_file, run_jobs

__all__ = ["coco_class_names", "convert_coco_to_voc", "add_arguments", "run_cli"]

IGNORE = 255
# Mask values are uint8 and 255 means ignore: background + at most 254 classes.
MAX_CLASSES = 254
CLASS_NAMES_FILE = CLASS_NAMES_JSON


def _load_coco_json(annotation_file: str | os.PathLike) -> dict:
    """The parsed annotation file, checked to be a COCO instances file."""
    path = Path(annotation_file).expanduser()
    hint = "expected a COCO instances JSON such as annotations/instances_train2014.json"
    try:
        with open(path, "rb") as handle:
            dataset = json.load(handle)
    except FileNotFoundError:
        raise PmmError(f"{path}: annotation file not found; {hint}") from None
    except IsADirectoryError:
        raise PmmError(f"{path}: is a folder, not an annotation file; {hint}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise PmmError(f"{path}: not valid JSON ({error}); {hint}") from None
    except OSError as error:
        raise PmmError(f"{path}: cannot be read ({error}); {hint}") from None
    if not isinstance(dataset, dict):
        raise PmmError(f"{path}: top level is a {type(dataset).__name__}, not an object; {hint}")
    for key in ("images", "annotations", "categories"):
        if not isinstance(dataset.get(key), list):
            found = "missing" if key not in dataset else f"a {type(dataset[key]).__name__}"
            extra = " (image_info_*.json files have no masks)" if key == "annotations" else ""
            raise PmmError(f"{path}: key '{key}' is {found}, expected a list{extra}; {hint}")
    if not dataset["categories"]:
        raise PmmError(f"{path}: 'categories' is empty; {hint}")
    return dataset


def _categories(dataset: dict, path: Path) -> list[dict]:
    """The categories sorted by id, checked for ids, names, duplicates and count."""
    for index, category in enumerate(dataset["categories"]):
        if not isinstance(category, dict) or not isinstance(category.get("id"), int) or not isinstance(category.get("name"), str):
            raise PmmError(f"{path}: categories[{index}] = {category!r}; expected an object with an integer 'id' and a string 'name'")
    categories = sorted(dataset["categories"], key=lambda c: c["id"])
    ids = [c["id"] for c in categories]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise PmmError(f"{path}: category id {duplicates[0]} appears more than once in 'categories'; ids must be unique")
    if len(categories) > MAX_CLASSES:
        raise PmmError(
            f"{path}: {len(categories)} categories but masks hold at most {MAX_CLASSES} classes "
            "(uint8, 0 = background, 255 = ignore); keep fewer categories in the annotation file"
        )
    return categories


def coco_class_names(annotation_file: str | os.PathLike) -> tuple[str, ...]:
    """``("background", <category names in category-id order>)``: class id i is entry i.

    Raises:
        PmmError: if the file is missing or not a COCO instances JSON.
    """
    path = Path(annotation_file).expanduser()
    return ("background",) + tuple(c["name"] for c in _categories(_load_coco_json(path), path))


def _annotations_by_image(dataset: dict, path: Path) -> dict:
    """The annotations of each image id (pycocotools' ``imgToAnns``, without its index of everything)."""
    by_image: dict = {}
    for index, ann in enumerate(dataset["annotations"]):
        if not isinstance(ann, dict) or "image_id" not in ann:
            raise PmmError(f"{path}: annotations[{index}] has no 'image_id'; COCO annotations need image_id, category_id and segmentation")
        by_image.setdefault(ann["image_id"], []).append(ann)
    return by_image


def _check_images(dataset: dict, path: Path) -> list[dict]:
    """The image entries sorted by id, with the keys the conversion needs."""
    for index, image in enumerate(dataset["images"]):
        missing = [k for k in ("id", "file_name", "height", "width") if not isinstance(image, dict) or k not in image]
        if missing:
            raise PmmError(f"{path}: images[{index}] has no '{missing[0]}'; COCO image entries need id, file_name, height and width")
    return sorted(dataset["images"], key=lambda image: image["id"])


def _find_image(image_dir: Path, file_name: str) -> Path:
    """``image_dir/file_name``, or ``image_dir/<basename>`` for file names that carry a folder."""
    candidate = image_dir / file_name
    if candidate.is_file():
        return candidate
    flat = image_dir / Path(file_name).name
    if flat.is_file():
        return flat
    raise PmmError(
        f"{candidate}: image '{file_name}' of the annotation file is missing; "
        "point --images/image_dir at the folder holding the annotation file's images"
    )


def _check_jpeg(source: Path, image: dict) -> None:
    try:
        with Image.open(source) as opened:
            fmt, (width, height) = opened.format, opened.size
    except OSError as error:
        raise PmmError(f"{source}: cannot be read as an image ({error}); replace the file") from None
    if fmt != "JPEG":
        raise PmmError(f"{source}: is a {fmt} image; the VOC layout needs JPEG images, convert it to JPEG first")
    if (height, width) != (image["height"], image["width"]):
        raise PmmError(
            f"{source}: image is {width}x{height} but the annotation file says {image['width']}x{image['height']} "
            f"(image id {image['id']}); use the images that belong to this annotation file"
        )


def _annotation_mask(ann: dict, height: int, width: int) -> np.ndarray:
    """HxW uint8 mask of one annotation (polygons, uncompressed or compressed RLE), as pycocotools' annToMask."""
    from pycocotools import mask as mask_utils

    segmentation = ann["segmentation"]
    if isinstance(segmentation, list):
        rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    elif isinstance(segmentation.get("counts"), list):
        rle = mask_utils.frPyObjects(segmentation, height, width)
    else:
        rle = segmentation
    return mask_utils.decode(rle)


def _semantic_mask(annotations: list[dict], image: dict, class_of: dict[int, int], path: Path) -> np.ndarray:
    """HxW uint8 class ids of one image: smaller instances on top, crowds 255 where uncovered."""
    height, width = image["height"], image["width"]
    instances: list[tuple[int, int, int, np.ndarray]] = []  # (-area, ann id, class id, mask)
    crowds: list[np.ndarray] = []
    for ann in annotations:
        category = ann.get("category_id")
        if category not in class_of:
            raise PmmError(
                f"{path}: annotation {ann.get('id')} has category_id {category!r}, which is not in 'categories'; "
                "fix the annotation file"
            )
        segmentation = ann.get("segmentation")
        if not segmentation or (isinstance(segmentation, list) and not any(segmentation)):
            continue  # no region (a few COCO annotations are empty)
        try:
            mask = _annotation_mask(ann, height, width).astype(bool)
        except Exception as error:  # pycocotools raises plain Exceptions, TypeErrors...
            raise PmmError(f"{path}: annotation {ann.get('id')} has an unreadable segmentation ({error}); fix or remove it") from None
        if mask.shape != (height, width):
            raise PmmError(
                f"{path}: annotation {ann.get('id')} has a {mask.shape[1]}x{mask.shape[0]} mask but image {image['id']} "
                f"is {width}x{height}; fix the annotation's RLE size"
            )
        if ann.get("iscrowd", 0):
            crowds.append(mask)
        else:
            instances.append((-int(mask.sum()), int(ann.get("id", 0)), class_of[category], mask))
    semantic = np.zeros((height, width), dtype=np.uint8)
    # Largest first, so that smaller instances are painted later and end on top.
    for _, _, class_id, mask in sorted(instances, key=lambda item: (item[0], item[1])):
        semantic[mask] = class_id
    if crowds:
        uncovered = semantic == 0
        for mask in crowds:
            semantic[mask & uncovered] = IGNORE
    return semantic


def _convert_image(item: tuple[dict, list[dict], str, str], shared: tuple) -> bool:
    """Worker: check one image, write its mask (unless newer than the annotation file), place it."""
    image, annotations, source, stem = item
    class_of, path, mask_dir, jpeg_dir, link, annotations_mtime_ns = shared
    source_path, mask_path = Path(source), Path(mask_dir) / f"{stem}.png"
    _check_jpeg(source_path, image)
    try:
        written = mask_path.stat().st_mtime_ns < annotations_mtime_ns
    except FileNotFoundError:
        written = True
    if written:
        save_mask(mask_path, _semantic_mask(annotations, image, class_of, Path(path)))
    place_file(source_path, Path(jpeg_dir) / f"{stem}.jpg", link)
    return written


def _check_existing_names(out_root: Path, class_names: list[str], path: Path) -> None:
    """Refuse a tree whose class names files list other classes (its masks use other ids)."""
    for names_path in (out_root / CLASS_NAMES_JSON, out_root / CLASS_NAMES_TXT):
        if not names_path.is_file():
            continue
        try:
            if names_path.suffix == ".json":
                existing = json.loads(names_path.read_text())
            else:
                existing = [line.strip() for line in names_path.read_text().splitlines() if line.strip()]
        except (OSError, json.JSONDecodeError, UnicodeDecodeError):
            existing = None
        if existing != class_names:
            raise PmmError(
                f"{names_path}: lists other classes than {path.name} ({len(class_names)} classes), so the masks already in "
                f"{out_root} use other class ids; convert into another --out folder or delete that tree first"
            )


def convert_coco_to_voc(
    annotation_file: str | os.PathLike,
    image_dir: str | os.PathLike,
    out_root: str | os.PathLike,
    split: str,
    link_images: bool = True,
    limit: int | None = None,
    progress: bool = True,
    workers: int | None = 1,
) -> Path:
    """Convert a COCO instances file and its images into a VOC-layout tree (see the module doc).

    Args:
        annotation_file: a COCO instances JSON (``instances_train2014.json``...).
        image_dir: the folder holding its images (``train2014/``).
        out_root: the tree to write (created if needed; other splits already there are kept).
        split: the split list to write, ``ImageSets/Segmentation/<split>.txt`` (overwritten if present).
        link_images: symlink the images (absolute links) instead of copying them.
        limit: convert only the first ``limit`` images, sorted by COCO image id (quick trials).
        progress: show a tqdm bar over the images.
        workers: worker processes for the masks (None: the CPUs, at most 8; 1: no pool).

    Returns:
        ``out_root``, to use as ``data.root`` (class names in ``class_names.txt`` / ``class_names.json``).

    Raises:
        PmmError: annotation file missing or not COCO JSON, image file missing or not JPEG, bad
            ``split``/``limit``/``workers``, or class names files in ``out_root`` from a different category set.
    """
    path = Path(annotation_file).expanduser()
    image_dir = Path(image_dir).expanduser()
    out_root = Path(out_root).expanduser().resolve()
    if not split or any(c in split for c in "/\\") or split.strip() != split:
        raise PmmError(f"split={split!r}: expected a plain list name such as 'train' or 'val'")
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
        raise PmmError(f"limit={limit!r}: expected a positive integer or None")
    workers = default_workers() if workers is None else workers
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        raise PmmError(f"workers={workers!r}: expected a positive number of worker processes")
    if not image_dir.is_dir():
        raise PmmError(f"{image_dir}: image folder not found; point it at the folder holding the annotation file's images")

    dataset = _load_coco_json(path)
    categories = _categories(dataset, path)
    class_names = ["background"] + [c["name"] for c in categories]
    class_of = {c["id"]: index for index, c in enumerate(categories, start=1)}
    _check_existing_names(out_root, class_names, path)

    images = _check_images(dataset, path)
    if limit is not None:
        images = images[:limit]
    stems: dict[str, int] = {}
    for image in images:
        stem = Path(str(image["file_name"])).stem
        if not stem or any(c.isspace() for c in stem):
            raise PmmError(f"{path}: image {image['id']} has file_name {image['file_name']!r}; ids with spaces cannot go in a split list")
        if stem in stems:
            raise PmmError(
                f"{path}: images {stems[stem]} and {image['id']} both have the file stem '{stem}'; "
                "VOC ids must be unique, rename one of them"
            )
        stems[stem] = image["id"]

    by_image = _annotations_by_image(dataset, path)
    # Every image must be there before anything is written.
    items = [
        (image, by_image.get(image["id"], []), str(_find_image(image_dir, str(image["file_name"]))), Path(str(image["file_name"])).stem)
        for image in images
    ]
    jpeg_dir, mask_dir = out_root / "JPEGImages", out_root / "SegmentationClass"
    jpeg_dir.mkdir(parents=True, exist_ok=True)
    mask_dir.mkdir(parents=True, exist_ok=True)
    shared = (class_of, str(path), str(mask_dir), str(jpeg_dir), link_images, path.stat().st_mtime_ns)
    run_jobs(_convert_image, items, shared=shared, workers=workers, desc=f"COCO -> VOC ({split})", unit="img", progress=progress)

    list_path = out_root / "ImageSets" / "Segmentation" / f"{split}.txt"
    with atomic_path(list_path) as tmp:
        tmp.write_text("".join(f"{stem}\n" for stem in sorted(stems)))
    write_class_names(out_root, class_names)
    return out_root


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The converter's options (``python -m pmm.prepare coco``)."""
    parser.add_argument("--annotations", required=True, help="COCO instances JSON, e.g. annotations/instances_train2014.json")
    parser.add_argument("--images", required=True, help="folder of the annotation file's images, e.g. train2014/")
    parser.add_argument("--out", required=True, help="output VOC-layout root, e.g. data/coco2014")
    parser.add_argument("--split", required=True, help="name of the split list to write, e.g. train or val")
    parser.add_argument("--copy", action="store_true", help="copy the images instead of symlinking them")
    parser.add_argument("--limit", type=int, default=None, help="convert only the first N images (by COCO id)")
    parser.add_argument("--workers", type=int, default=None, help="worker processes for the masks (default: CPUs, at most 8)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.set_defaults(run=run_cli)


def run_cli(args: argparse.Namespace) -> int:
    """Run the conversion for parsed ``args`` and print the summary; raises PmmError on bad input."""
    root = convert_coco_to_voc(
        args.annotations, args.images, args.out, args.split,
        link_images=not args.copy, limit=args.limit, progress=not args.no_progress, workers=args.workers,
    )
    names = read_class_names(root)
    splits = {
        list_path.stem: len(list_path.read_text().split())
        for list_path in sorted((root / "ImageSets" / "Segmentation").glob("*.txt"))
    }
    count = splits[args.split]
    images = len({p.stem for p in (root / "JPEGImages").glob("*.jpg")})
    override = json.dumps(names, separators=(",", ":"))
    print(
        f"converted {count} images into {root} (split '{args.split}'); tree: {images} images, ids per split: "
        + ", ".join(f"{name} {n}" for name, n in splits.items())
        + f"; {len(names)} classes ({len(names) - 1} categories + background), listed in {root / CLASS_NAMES_TXT}"
    )
    print("use it with (data.train_split/data.val_split name the lists in ImageSets/Segmentation; this run wrote "
          f"'{args.split}'):")
    print(f"  pmm data=coco {shlex.quote(f'data.root={root}')}   (class names read from {CLASS_NAMES_TXT})")
    print(f"  pmm data=voc {shlex.quote(f'data.root={root}')} {shlex.quote(f'data.class_names={override}')}")
    return 0
