"""``pseudo.cams=DIR``: another code base's CAMs, checked against the splits and written as this run's own.

Every file of ``DIR`` is read with :func:`pmm.cam.formats.read_external_cams` (format detected
from the file), checked against its image (size, labels) and written as ``cams/<split>/<id>.npz``,
so the threshold sweep, CoV + PPMG / CRF / argmax and the figures run unchanged. Everything is
checked before any pseudo-mask is made; a split's folder appears only once all its files passed.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from tqdm import tqdm

from pmm.cam.formats import CAM_SUFFIXES, match_labels, read_external_cams
from pmm.errors import PmmError
from pmm.io import save_cams, write_json
from pmm.runtime.context import RunContext, shown_ids
from pmm.runtime.distributed import barrier, is_main

log = logging.getLogger("pmm")

SOURCE_KEYS = ("pseudo_cams", "pseudo_cams_format")


def cam_files(folder: Path) -> tuple[dict[str, Path], list[Path]]:
    """``{id: <id>.npy or <id>.npz}`` of a folder, and its other files; an id with both is an error."""
    found: dict[str, Path] = {}
    others = []
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or path.is_dir():
            continue
        if path.suffix not in CAM_SUFFIXES:
            others.append(path)
            continue
        if path.stem in found:
            raise PmmError(f"{path}: {found[path.stem].name} is there too; keep one CAM file per image")
        found[path.stem] = path
    return found, others


def source_folder(root: Path, split_name: str) -> Path:
    """Where a split's files are: ``DIR`` itself, else ``DIR/<split>``, else ``DIR/cams/<split>`` (a pmm run)."""
    if any(p.suffix in CAM_SUFFIXES for p in root.iterdir()):
        return root
    for folder in (root / split_name, root / "cams" / split_name):
        if folder.is_dir():
            return folder
    raise PmmError(f"pseudo.cams={root}: no .npy or .npz CAM files there (nor in {split_name}/ or cams/{split_name}/); "
                   "give the folder the other code base wrote its <id>.npy files to")


def import_cams(ctx: RunContext, split_names: list[str]) -> dict:
    """Convert ``pseudo.cams`` into ``cams/<split>/`` for each split and score them; ``{}`` when unset.

    Returns (and records in metrics.json) ``pseudo_cams`` (the folder) and ``pseudo_cams_format``.
    The threshold sweep of the first split is recorded too (``cam_miou``, ``cam_bg_threshold``, the
    curve, ``cam_report.json``, the CAM figures), as the CAM stage does for pmm's own CAMs.
    """
    cfg = ctx.cfg.pseudo
    value = cfg.get("cams")
    if not value:
        ctx.record(remove=SOURCE_KEYS)  # a run folder used before with pseudo.cams
        return {}
    if ctx.cfg.cam_ckpt:
        raise PmmError(f"pseudo.cams={value} and cam_ckpt={ctx.cfg.cam_ckpt}: both give the CAMs; set one of them "
                       "(cam_ckpt=null to read the folder)")
    root = Path(str(value)).expanduser().resolve()
    if not root.is_dir():
        raise PmmError(f"pseudo.cams={value}: {'is a file, not' if root.exists() else 'no such'} folder; give the "
                       "folder of <id>.npy / <id>.npz CAM files")
    source = {"pseudo_cams": str(root)}
    if is_main():
        formats: dict[str, Path] = {}
        done: dict[str, Path] = {}  # id -> its converted file (an id of two splits is read once)
        folders = {name: source_folder(root, name) for name in split_names}
        for folder in dict.fromkeys(folders.values()):
            wanted = {i for name in split_names if folders[name] == folder for i in ctx.split(name).ids}
            warn_strays(folder, wanted, [n for n in split_names if folders[n] == folder])
        arrays_read: set[str | None] = set()
        for name in split_names:
            import_split(ctx, name, folders[name], formats, done, arrays_read)
        source["pseudo_cams_format"] = next(iter(formats))
        ctx.record(**source)
        arrays = sorted({str(key) for key in arrays_read})
        log.info("pseudo.cams: CAMs of %s read from %s (format %s%s)", ", ".join(f"'{n}'" for n in split_names), root,
                 source["pseudo_cams_format"], f", array {', '.join(arrays)}" if arrays else "")
        score_imported(ctx, split_names[0], source)
    barrier()
    return source


def warn_strays(folder: Path, wanted: set[str], split_names: list[str]) -> None:
    """Files of the folder that no split asks for are not read: say which."""
    files, others = cam_files(folder)
    strays = sorted(i for i in files if i not in wanted)
    if strays:
        log.warning("pseudo.cams: %d CAM file(s) in %s are of no image of split(s) %s and are not read: %s", len(strays),
                    folder, ", ".join(split_names), shown_ids([files[i].name for i in strays]))
    if others:
        log.warning("pseudo.cams: %d file(s) in %s are not .npy / .npz CAM files and are not read: %s", len(others),
                    folder, shown_ids([p.name for p in others]))


def import_split(ctx: RunContext, split_name: str, folder: Path, formats: dict[str, Path], done: dict[str, Path],
                 arrays_read: set) -> None:
    """Check and convert one split's files into ``cams/<split>/`` (written under a temporary name, renamed at the end).

    ``formats``: format -> its first file, ``done``: id -> converted file, ``arrays_read``: the keys read
    (all three shared between the splits of one run)."""
    split = ctx.split(split_name)
    target = ctx.cams_dir(split_name)
    if folder.resolve() == target.resolve():
        raise PmmError(f"pseudo.cams={folder}: is this run's own CAM folder, which the stage writes; set pseudo.cams=null "
                       "to use it as it is")
    files, _ = cam_files(folder)
    missing = [i for i in split.ids if i not in files]
    if missing:
        raise PmmError(f"pseudo.cams={folder}: {len(missing)} of the {len(split)} images of split '{split_name}' have no "
                       f"CAM file ({folder / missing[0]}.npy or .npz missing; ids {shown_ids(missing)}); write CAMs "
                       "for every image of the split")
    cfg = ctx.cfg.pseudo
    cam_key = cfg.get("cam_key") or None
    normalize = str(cfg.get("normalize") or "none")
    staging = target.parent / f".{split_name}.importing"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    dropped = []
    try:
        for image_id in tqdm(split.ids, desc=f"reading CAMs ({split_name})", leave=False):
            output = staging / f"{image_id}.npz"
            if image_id in done:
                link_or_copy(done[image_id], output)
                continue
            path = files[image_id]
            read = read_external_cams(path, ctx.num_classes, cam_key=cam_key, normalize=normalize,
                                      image_size=split.image_sizes[image_id])
            formats.setdefault(read.format, path)
            if len(formats) > 1:
                other = next(f for f in formats if f != read.format)
                raise PmmError(f"{path}: a {read.format} CAM file among {other} ones (e.g. {formats[other]}); one folder "
                               "holds the CAMs of one code base")
            if read.key is not None:
                arrays_read.add(read.key)
            cams, labels, extra = match_labels(read.cams, read.labels, split.labels(image_id), path)
            if extra:
                dropped.append(f"{image_id} ({', '.join(ctx.class_names[c] for c in extra)})")
            save_cams(output, cams, labels)
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    for image_id in split.ids:
        done.setdefault(image_id, target / f"{image_id}.npz")
    if dropped:
        log.warning("pseudo.cams: %d file(s) of split '%s' hold maps of classes their image is not labelled with; "
                    "those maps are dropped: %s", len(dropped), split_name, shown_ids(dropped))


def link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def score_imported(ctx: RunContext, split_name: str, source: dict) -> None:
    """The threshold sweep of the imported CAMs, recorded and drawn as the CAM stage does for its own."""
    from pmm.stages.cam_inference import CAM_SCORE_KEYS, can_score, save_cam_figures, score_cams

    if not can_score(ctx, split_name, "CAM threshold sweep of the pseudo.cams CAMs (t*, cam_miou)"):
        save_cam_figures(ctx, split_name, None)
        ctx.record(cam_scored=False, remove=CAM_SCORE_KEYS)
        write_json(ctx.report_path("cam"), {"cam_scored": False, **source})
        return
    scores = score_cams(ctx, split_name)
    ctx.record(**{k: v for k, v in scores.items() if k != "cam_per_class_iou"})
    write_json(ctx.report_path("cam"), {**scores, **source})
    save_cam_figures(ctx, split_name, scores)
    log.info("CAM mIoU of the pseudo.cams CAMs on %s: %.4f at background threshold %.2f", split_name,
             scores["cam_miou"], scores["cam_bg_threshold"])
