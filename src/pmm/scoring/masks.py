"""Scoring a folder of palette-PNG masks (pseudo-masks or predictions) against a split's ground truth."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from tqdm import tqdm

from pmm.errors import PmmError
from pmm.io import load_mask
from pmm.scoring.metrics import confusion_matrix, segmentation_report

if TYPE_CHECKING:  # used in annotations only
    from pmm.data.voc import VOCSplit


def score_mask_folder(split: VOCSplit, folder: str | Path, desc: str = "scoring", unsure: int | None = None) -> dict:
    """One confusion matrix over every id of ``split``: ``folder/<id>.png`` against the ground truth.

    ``unsure``: a mask value that means "no label" (the multi-crop round's rough masks: 255);
    those pixels are left out of the score and ``coverage`` says which share of the scored
    pixels had a label.

    Returns :func:`pmm.scoring.metrics.segmentation_report` plus ``split`` and ``num_images``
    (and ``coverage`` with ``unsure``).
    """
    folder = Path(folder)
    total = np.zeros((split.num_classes, split.num_classes), dtype=np.int64)
    sure_pixels = all_pixels = 0
    for image_id in tqdm(split.ids, desc=desc, leave=False):
        path = folder / f"{image_id}.png"
        if not path.is_file():
            raise PmmError(f"{path}: mask missing for a listed image; the folder must hold one PNG per id of '{split.split}'")
        prediction, target = load_mask(path), split.load_mask(image_id)
        if prediction.shape != target.shape:
            raise PmmError(f"{path}: mask is {prediction.shape} but the ground truth is {target.shape}")
        if unsure is not None:
            keep = prediction != unsure
            all_pixels += int(np.count_nonzero(target != 255))
            prediction, target = prediction[keep], target[keep]
            sure_pixels += int(np.count_nonzero(target != 255))
        total += confusion_matrix(prediction, target, split.num_classes)
    report = segmentation_report(total, list(split.class_names))
    report.update(split=split.split, num_images=len(split))
    if unsure is not None:
        report["coverage"] = sure_pixels / all_pixels if all_pixels else 0.0
    return report
