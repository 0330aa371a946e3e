"""PASCAL VOC 2012 + SBD -> one VOC-layout tree with ``SegmentationClassAug`` and ``train_aug``.

Inputs (folders, or the official archives, unpacked into ``OUT/.raw/<archive stem>/``):

- VOC 2012 (``VOCtrainval_11-May-2012.tar``): ``VOCdevkit/VOC2012`` with ``JPEGImages/``,
  ``SegmentationClass/``, ``Annotations/`` and ``ImageSets/Segmentation/{train,val}.txt``
  (``trainval.txt`` and, once the test archive is unpacked beside it, ``test.txt`` are passed on too).
- SBD (``benchmark.tgz``): ``benchmark_RELEASE/dataset`` with ``cls/<id>.mat`` (``GTcls.Segmentation``,
  the class label map), ``img/<id>.jpg``, ``train.txt`` and ``val.txt``.

Output at ``OUT``:

- ``SegmentationClassAug/<id>.png``: VOC's own mask where VOC has one (it has the 255 object
  borders), SBD's otherwise, as VOC-palette PNGs, for every id of VOC train/val and SBD train/val.
- ``SegmentationClass/<id>.png``: VOC's masks, linked (or copied).
- ``JPEGImages/<id>.jpg`` and ``Annotations/<id>.xml``: every listed id's image (VOC's, else SBD's)
  and VOC XML, linked (absolute symlinks) or copied with ``link_images=False``.
- ``ImageSets/Segmentation/{train,val,trainval,test}.txt`` (VOC's, those it has) and ``train_aug.txt``
  = (VOC train + SBD train + SBD val) - VOC val, sorted (10,582 ids on the real data).
- ``class_names.json`` / ``class_names.txt``: the 21 VOC class names, background first.

Every input id is checked to have its files before anything is written; file contents (a ``.mat``
without ``GTcls.Segmentation``, a mask whose size differs from its image, a label beyond 20) are
checked by the workers. Every file is written atomically and the split lists last, so a failed run
leaves complete files only and no lists; a rerun skips masks newer than their source and images
already placed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from pmm.data.voc import VOC_CLASS_NAMES
from pmm.errors import PmmError
from pmm.io import atomic_path, load_mask, save_mask
from pmm.prepare.archives import extract_archive, is_archive
from pmm.data.class_names import write_class_names
from pmm.prepare.common import default_workers, place_file, run_jobs

VOC_HINT = (
    "point --voc at VOCdevkit/VOC2012 (the folder holding JPEGImages/, SegmentationClass/ and "
    "ImageSets/Segmentation/) or at VOCtrainval_11-May-2012.tar"
)
SBD_HINT = (
    "point --sbd at benchmark_RELEASE/dataset (the folder holding cls/, train.txt and val.txt) "
    "or at benchmark.tgz"
)
LIST_DIR = Path("ImageSets") / "Segmentation"


@dataclass(frozen=True)
class PreparedVOC:
    """What :func:`prepare_voc` wrote (counts of the whole tree; ``*_written``: by this run)."""

    root: Path
    voc_root: Path
    sbd_root: Path
    images: int
    images_written: int
    masks: int
    masks_written: int
    voc_masks: int
    annotations: int
    splits: dict[str, int] = field(default_factory=dict)
    class_names: tuple[str, ...] = VOC_CLASS_NAMES
    linked: bool = True

    def summary(self) -> str:
        """One line: images, masks, ids per split, classes."""
        splits = ", ".join(f"{name} {count}" for name, count in self.splits.items())
        how = "linked" if self.linked else "copied"
        return (
            f"prepared {self.root}: {self.images} images ({how}, {self.images_written} new), "
            f"{self.masks} SegmentationClassAug masks ({self.masks_written} written, "
            f"{self.masks - self.masks_written} up to date), {self.voc_masks} SegmentationClass, "
            f"{self.annotations} Annotations; ids per split: {splits}; {len(self.class_names)} classes"
        )


def _resolve_input(path: str | os.PathLike, out_root: Path, hint: str, progress: bool) -> Path:
    """The folder ``path``, or the folder its archive was unpacked into."""
    path = Path(path).expanduser()
    if path.is_dir():
        return path.resolve()
    if not path.exists():
        raise PmmError(f"{path}: not found; {hint}")
    if is_archive(path):
        return extract_archive(path, out_root, hint, progress=progress)
    raise PmmError(f"{path}: neither a folder nor a tar archive; {hint}")


def _locate(base: Path, candidates: tuple[str, ...], required: tuple[str, ...], hint: str) -> Path:
    """The first of ``base/<candidate>`` holding every ``required`` entry; else one line naming what is missing where."""
    for candidate in candidates:
        folder = base / candidate
        if all((folder / name).exists() for name in required):
            return folder.resolve()
    # The candidate that has the most of the layout is the one meant: name what it lacks.
    partial = [base / c for c in candidates if any((base / c / name).exists() for name in required)]
    if partial:
        best = max(partial, key=lambda folder: sum((folder / name).exists() for name in required))
        missing = [name for name in required if not (best / name).exists()]
        present = [name for name in required if (best / name).exists()]
        raise PmmError(f"{best}: no {' and no '.join(missing)} in this folder (it has {' and '.join(present)}); {hint}")
    looked = ", ".join(str(base / c) if c else str(base) for c in candidates)
    raise PmmError(f"{base}: no {' + '.join(required)} found (looked in {looked}); {hint}")


def locate_voc(path: str | os.PathLike) -> Path:
    """The VOC2012 folder at, or inside, ``path`` (``.``, ``VOC2012``, ``VOCdevkit/VOC2012``)."""
    return _locate(Path(path), ("", "VOC2012", "VOCdevkit/VOC2012"), ("JPEGImages", "SegmentationClass", str(LIST_DIR)), VOC_HINT)


def locate_sbd(path: str | os.PathLike) -> Path:
    """The SBD ``dataset`` folder at, or inside, ``path`` (``.``, ``dataset``, ``benchmark_RELEASE/dataset``)."""
    return _locate(Path(path), ("", "dataset", "benchmark_RELEASE/dataset"), ("cls", "train.txt", "val.txt"), SBD_HINT)


def read_id_list(path: Path, hint: str) -> list[str]:
    """The ids of a split list (first word of each non-blank line), in file order, without repeats."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise PmmError(f"{path}: split list not found; {hint}") from None
    except (OSError, UnicodeDecodeError) as error:
        raise PmmError(f"{path}: cannot be read ({error}); {hint}") from None
    ids = list(dict.fromkeys(line.split()[0] for line in text.splitlines() if line.strip()))
    if not ids:
        raise PmmError(f"{path}: split list is empty; it should hold one image id per line")
    bad = [i for i in ids if "/" in i or "\\" in i or i.startswith(".")]
    if bad:
        raise PmmError(f"{path}: {bad[0]!r} is not an image id; the list should hold one id (file stem) per line")
    return ids


def read_sbd_mat(path: str | os.PathLike) -> np.ndarray:
    """SBD's class label map ``GTcls.Segmentation`` of ``cls/<id>.mat`` as HxW uint8.

    Raises:
        PmmError: file missing or unreadable, no ``GTcls`` struct or no ``Segmentation`` field, or a
            field that is not a 2-D map of integers 0..255.
    """
    from scipy.io import loadmat
    from scipy.io.matlab import MatReadError

    path = Path(path)
    fix = "expected an SBD cls/<id>.mat holding the struct GTcls with the field Segmentation; re-extract benchmark.tgz"
    if not path.is_file():
        raise PmmError(f"{path}: SBD mask file not found; {fix}")
    try:
        data = loadmat(path, variable_names=["GTcls"], squeeze_me=True)
    except (MatReadError, ValueError, TypeError, OSError, NotImplementedError, IndexError) as error:
        raise PmmError(f"{path}: not a readable MATLAB file ({str(error) or type(error).__name__}); {fix}") from None
    if "GTcls" not in data:
        raise PmmError(f"{path}: has no variable 'GTcls'; {fix}")
    gt = np.asarray(data["GTcls"])
    if not gt.dtype.names or "Segmentation" not in gt.dtype.names:
        fields = ", ".join(gt.dtype.names) if gt.dtype.names else "not a struct"
        raise PmmError(f"{path}: GTcls has no field 'Segmentation' ({fields}); {fix}")
    seg = gt["Segmentation"]
    while isinstance(seg, np.ndarray) and seg.dtype == object and seg.size == 1:
        seg = seg.reshape(-1)[0]
    seg = np.asarray(seg)
    if seg.ndim != 2 or seg.size == 0 or not (np.issubdtype(seg.dtype, np.integer) or np.issubdtype(seg.dtype, np.floating)):
        raise PmmError(f"{path}: GTcls.Segmentation is a {seg.dtype} array of shape {seg.shape}, not an HxW label map; {fix}")
    if seg.min() < 0 or seg.max() > 255 or (np.issubdtype(seg.dtype, np.floating) and not np.array_equal(seg, np.round(seg))):
        raise PmmError(f"{path}: GTcls.Segmentation holds values other than integers 0..255; {fix}")
    return seg.astype(np.uint8)


def _image_size(path: Path) -> tuple[int, int]:
    """(height, width) from the image header."""
    try:
        with Image.open(path) as image:
            width, height = image.size
    except FileNotFoundError:
        raise PmmError(f"{path}: image not found; re-extract the archive it came from") from None
    except OSError as error:
        raise PmmError(f"{path}: cannot be read as an image ({error}); replace the file") from None
    return height, width


def _convert_mask(job: tuple[str, str, str, str], num_classes: int) -> bool:
    """Write one SegmentationClassAug mask from a VOC PNG or an SBD .mat; False if it was up to date."""
    kind, source, image, target = job
    source_path, target_path = Path(source), Path(target)
    try:
        if target_path.stat().st_mtime_ns >= source_path.stat().st_mtime_ns:
            return False
    except FileNotFoundError:
        pass
    if kind == "sbd":
        mask = read_sbd_mat(source_path)
    else:
        try:
            mask = load_mask(source_path)
        except OSError as error:
            raise PmmError(f"{source_path}: cannot be read as a PNG mask ({error}); re-extract the VOC archive") from None
    height, width = _image_size(Path(image))
    if mask.shape != (height, width):
        raise PmmError(
            f"{source_path}: mask is {mask.shape[1]}x{mask.shape[0]} but its image {image} is {width}x{height}; "
            "the mask and the image must belong together, re-extract the archives"
        )
    values = np.unique(mask)
    bad = values[(values >= num_classes) & (values != 255)]
    if bad.size:
        raise PmmError(
            f"{source_path}: label {int(bad[0])} is beyond the {num_classes} VOC classes (0..{num_classes - 1}, "
            "255 = ignore); replace the file"
        )
    save_mask(target_path, mask)
    return True


def prepare_voc(
    voc: str | os.PathLike,
    sbd: str | os.PathLike,
    out_root: str | os.PathLike,
    link_images: bool = True,
    workers: int | None = None,
    progress: bool = True,
) -> PreparedVOC:
    """Build the VOC + SBD tree at ``out_root`` (see the module doc); rerunnable.

    Args:
        voc: the VOC2012 folder (or ``VOCdevkit``, or a folder holding it), or ``VOCtrainval_11-May-2012.tar``.
        sbd: SBD's ``benchmark_RELEASE/dataset`` folder (or a folder above it), or ``benchmark.tgz``.
        out_root: the tree to write (archives are unpacked into ``out_root/.raw/``).
        link_images: absolute symlinks for images, XML and VOC masks; False copies them.
        workers: worker processes for the masks and files (default: CPUs, at most 8; 1 = no pool).
        progress: tqdm bars on stderr.

    Raises:
        PmmError: one line naming the missing or bad folder, list, id or file and the fix.
    """
    out = Path(out_root).expanduser().resolve()
    workers = default_workers() if workers is None else int(workers)
    if workers < 1:
        raise PmmError(f"workers={workers}: expected a positive number of worker processes")
    voc_root = locate_voc(_resolve_input(voc, out, VOC_HINT, progress))
    sbd_root = locate_sbd(_resolve_input(sbd, out, SBD_HINT, progress))
    if out == voc_root or out == sbd_root:
        raise PmmError(f"--out {out}: is the input folder itself; write the prepared tree into another folder")

    voc_lists = {name: voc_root / LIST_DIR / f"{name}.txt" for name in ("train", "val", "trainval", "test")}
    voc_ids = {
        name: read_id_list(path, VOC_HINT)
        for name, path in voc_lists.items()
        if name in ("train", "val") or path.is_file()
    }
    sbd_ids = {name: read_id_list(sbd_root / f"{name}.txt", SBD_HINT) for name in ("train", "val")}
    voc_val = set(voc_ids["val"])
    train_aug = sorted((set(voc_ids["train"]) | set(sbd_ids["train"]) | set(sbd_ids["val"])) - voc_val)
    splits = {name: ids for name, ids in voc_ids.items()}
    splits["train_aug"] = train_aug

    # Where each id was first listed, to name it in errors.
    listed_in: dict[str, Path] = {}
    for name, ids in voc_ids.items():
        for image_id in ids:
            listed_in.setdefault(image_id, voc_lists[name])
    for name, ids in sbd_ids.items():
        for image_id in ids:
            listed_in.setdefault(image_id, sbd_root / f"{name}.txt")

    # Every file every id needs, checked before anything is written.
    voc_seg = list(dict.fromkeys(voc_ids["train"] + voc_ids["val"] + voc_ids.get("trainval", [])))
    voc_seg_set = set(voc_seg)
    mask_ids = sorted(voc_seg_set | set(sbd_ids["train"]) | set(sbd_ids["val"]))
    all_ids = sorted({image_id for ids in splits.values() for image_id in ids} | set(mask_ids))
    images: dict[str, Path] = {}
    for image_id in all_ids:
        for candidate in (voc_root / "JPEGImages" / f"{image_id}.jpg", sbd_root / "img" / f"{image_id}.jpg"):
            if candidate.is_file():
                images[image_id] = candidate
                break
        else:
            raise PmmError(
                f"{voc_root / 'JPEGImages' / f'{image_id}.jpg'}: image of id '{image_id}' (listed in {listed_in[image_id]}) "
                f"is missing, nor is it in {sbd_root / 'img'}; re-extract the archives or remove the id from the list"
            )
    mask_jobs: list[tuple[str, str, str, str]] = []
    for image_id in mask_ids:
        if image_id in voc_seg_set:
            kind, source = "voc", voc_root / "SegmentationClass" / f"{image_id}.png"
        else:
            kind, source = "sbd", sbd_root / "cls" / f"{image_id}.mat"
        if not source.is_file():
            raise PmmError(
                f"{source}: mask of id '{image_id}' (listed in {listed_in[image_id]}) is missing; "
                f"re-extract {'the VOC archive' if kind == 'voc' else 'benchmark.tgz'} or remove the id from the list"
            )
        mask_jobs.append((kind, str(source), str(images[image_id]), str(out / "SegmentationClassAug" / f"{image_id}.png")))
    annotation_dir = voc_root / "Annotations"
    file_jobs = [(str(images[i]), str(out / "JPEGImages" / f"{i}.jpg")) for i in all_ids]
    image_jobs = len(file_jobs)
    file_jobs += [(str(voc_root / "SegmentationClass" / f"{i}.png"), str(out / "SegmentationClass" / f"{i}.png")) for i in voc_seg]
    annotations = [i for i in all_ids if (annotation_dir / f"{i}.xml").is_file()]
    file_jobs += [(str(annotation_dir / f"{i}.xml"), str(out / "Annotations" / f"{i}.xml")) for i in annotations]

    for folder in ("JPEGImages", "SegmentationClass", "SegmentationClassAug", "Annotations"):
        (out / folder).mkdir(parents=True, exist_ok=True)
    written = run_jobs(
        _convert_mask, mask_jobs, shared=len(VOC_CLASS_NAMES), workers=workers,
        desc="SegmentationClassAug", unit="mask", progress=progress,
    )
    placed = run_jobs(
        _place_indexed, list(enumerate(file_jobs)), shared=link_images, workers=workers,
        desc="JPEGImages, SegmentationClass, Annotations", unit="file", progress=progress,
    )
    images_written = sum(1 for index, new in placed if new and index < image_jobs)

    for name, ids in splits.items():
        with atomic_path(out / LIST_DIR / f"{name}.txt") as tmp:
            tmp.write_text("".join(f"{image_id}\n" for image_id in ids))
    write_class_names(out, VOC_CLASS_NAMES)
    return PreparedVOC(
        root=out, voc_root=voc_root, sbd_root=sbd_root,
        images=len(all_ids), images_written=images_written,
        masks=len(mask_jobs), masks_written=sum(bool(w) for w in written),
        voc_masks=len(voc_seg), annotations=len(annotations),
        splits={name: len(ids) for name, ids in splits.items()},
        class_names=VOC_CLASS_NAMES, linked=link_images,
    )


def _place_indexed(job: tuple[int, tuple[str, str]], link: bool) -> tuple[int, bool]:
    index, (source, target) = job
    return index, place_file(source, target, link)
