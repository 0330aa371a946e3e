"""Predictions packed for an evaluation server (``eval.export``).

``voc_test``: the PASCAL VOC 2012 test server's segmentation format (competition 6: training data
of your choice). The predicted label maps become ``RUN/results/VOC2012/Segmentation/comp6_test_cls/
<id>.png`` (VOC-palette PNGs at each image's own size, class ids 0..20) and
``RUN/results/voc2012_test_comp6.tar.gz`` holds that ``results/`` tree, ready to upload. Both are
written atomically: a temporary folder / file beside the target, renamed onto it when complete.
"""

from __future__ import annotations

import logging
import os
import shutil
import tarfile
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from pmm.errors import PmmError
from pmm.io import VOC_PALETTE, atomic_path, load_mask, os_error_line

log = logging.getLogger("pmm")

EXPORTS = ("voc_test",)
VOC_TEST_RESULTS = "results/VOC2012/Segmentation/comp6_test_cls"
VOC_TEST_ARCHIVE = "results/voc2012_test_comp6.tar.gz"
VOC_NUM_CLASSES = 21
VOC2012_TEST_IMAGES = 1456  # ids of VOC2012's ImageSets/Segmentation/test.txt


def check_export(kind: str | None, num_classes: int) -> str | None:
    """``eval.export`` checked before any prediction: None, or a known format that fits the classes."""
    if kind in (None, "", "null", "none", False):
        return None
    if kind not in EXPORTS:
        raise PmmError(f"eval.export={kind}: unknown export; choose one of {'|'.join(EXPORTS)} or null")
    if kind == "voc_test" and num_classes != VOC_NUM_CLASSES:
        raise PmmError(f"eval.export=voc_test: the VOC test server expects the {VOC_NUM_CLASSES} VOC classes "
                       f"(background first), this model has {num_classes}; use a VOC-trained checkpoint")
    return kind


def _tar_filter(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mode = 0o755 if info.isdir() else 0o644
    return info


def _swap_folder(new: Path, target: Path) -> None:
    """Put the complete folder ``new`` at ``target``, replacing an older export."""
    old = None
    if target.exists():
        old = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.old."))
        os.replace(target, old / target.name)
    os.replace(new, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def export_voc_test(prediction_dir: str | os.PathLike, ids: Sequence[str], run_dir: str | os.PathLike,
                    image_sizes: dict[str, tuple[int, int]] | None = None) -> tuple[Path, Path]:
    """Pack the predictions of ``ids`` (``prediction_dir/<id>.png``) for the VOC test server.

    Args:
        prediction_dir: the folder of predicted label maps.
        ids: the split's image ids (every one must have a prediction).
        run_dir: the run directory; the results go to its ``results/``.
        image_sizes: (height, width) of each image, checked against its prediction when given.

    Returns:
        (the ``comp6_test_cls`` folder, the ``.tar.gz`` archive).

    Raises:
        PmmError: a prediction is missing, of a wrong size or holds a label beyond the 21 classes.
    """
    prediction_dir, run_dir = Path(prediction_dir), Path(run_dir)
    missing = [image_id for image_id in ids if not (prediction_dir / f"{image_id}.png").is_file()]
    if missing:
        raise PmmError(f"{prediction_dir}: no prediction for {len(missing)} of the {len(ids)} ids "
                       f"(e.g. {missing[0]}); rerun the evaluation")
    target = run_dir / VOC_TEST_RESULTS
    archive = run_dir / VOC_TEST_ARCHIVE
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.tmp."))
    try:
        for image_id in ids:
            mask = load_mask(prediction_dir / f"{image_id}.png")
            if image_sizes is not None and tuple(mask.shape) != tuple(image_sizes[image_id]):
                raise PmmError(f"{prediction_dir / f'{image_id}.png'}: prediction is {mask.shape[1]}x{mask.shape[0]} "
                               f"but its image is {image_sizes[image_id][1]}x{image_sizes[image_id][0]}; rerun the evaluation")
            if int(mask.max(initial=0)) >= VOC_NUM_CLASSES:
                raise PmmError(f"{prediction_dir / f'{image_id}.png'}: label {int(mask.max())} is beyond the "
                               f"{VOC_NUM_CLASSES} VOC classes; the VOC test server takes class ids 0..20")
            image = Image.fromarray(mask.astype(np.uint8), mode="P")
            image.putpalette(VOC_PALETTE)
            image.save(staging / f"{image_id}.png", format="PNG")
        os.chmod(staging, 0o755)
        with atomic_path(archive) as tmp:
            with tarfile.open(tmp, "w:gz") as tar:
                for name in ("results", "results/VOC2012", "results/VOC2012/Segmentation"):
                    info = tarfile.TarInfo(name)
                    info.type = tarfile.DIRTYPE
                    tar.addfile(_tar_filter(info))
                tar.add(staging, arcname=VOC_TEST_RESULTS, recursive=False, filter=_tar_filter)
                for image_id in ids:
                    tar.add(staging / f"{image_id}.png", arcname=f"{VOC_TEST_RESULTS}/{image_id}.png", filter=_tar_filter)
        _swap_folder(staging, target)
        staging = None
    except OSError as error:
        raise PmmError(os_error_line(archive, error, "the VOC test-server export")) from None
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
    if len(ids) != VOC2012_TEST_IMAGES:
        log.warning("VOC test export holds %d images; the VOC2012 test server expects all %d ids of test.txt",
                    len(ids), VOC2012_TEST_IMAGES)
    log.info("VOC test-server export: %d PNGs in %s, upload %s", len(ids), target, archive)
    return target, archive


def run_export(kind: str | None, prediction_dir: Path, ids: Sequence[str], run_dir: Path,
               image_sizes: dict[str, tuple[int, int]] | None = None) -> dict:
    """The export ``kind`` (``eval.export``) of a folder of predictions; the metrics.json entries it adds."""
    if kind is None:
        return {}
    if kind == "voc_test":
        folder, archive = export_voc_test(prediction_dir, ids, run_dir, image_sizes)
        return {"export": kind, "export_dir": str(folder), "export_archive": str(archive)}
    raise PmmError(f"eval.export={kind}: unknown export; choose one of {'|'.join(EXPORTS)} or null")
