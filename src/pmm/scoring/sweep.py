"""The background-threshold sweep that scores CAMs (pure numpy): one confusion matrix per threshold."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from pmm.scoring.metrics import confusion_matrix


def default_thresholds() -> np.ndarray:
    """0.01, 0.02, ..., 0.40, then 0.45, ..., 0.95: the background thresholds swept when scoring CAMs.

    Fine where VOC's best threshold lies (t* ~ 0.16: alpha = ln t / ln(1 - t) moves by ~0.6 per 0.01
    there, so a 0.05 grid lands alpha on 11.7 or 7.2), coarse above, where from-scratch CAMs peak.
    """
    return np.round(np.concatenate([np.arange(0.01, 0.4001, 0.01), np.arange(0.45, 0.951, 0.05)]), 2)


class ThresholdSweep:
    """Accumulates one confusion matrix per background threshold over a split."""

    def __init__(self, num_classes: int, thresholds: Sequence[float] | None = None) -> None:
        self.thresholds = np.asarray(default_thresholds() if thresholds is None else thresholds, dtype=np.float64)
        self.num_classes = num_classes
        self.confusions = np.zeros((len(self.thresholds), num_classes, num_classes), dtype=np.int64)

    def update(self, cams: np.ndarray, labels: np.ndarray, target: np.ndarray) -> None:
        """Add one image: ``cams`` K x H x W in [0, 1] for 1-based ``labels``, ``target`` H x W."""
        if len(labels) == 0:
            peak = np.zeros(target.shape, dtype=np.float32)
            winner = np.zeros(target.shape, dtype=np.int64)
        else:
            peak = cams.max(axis=0)
            winner = np.asarray(labels, dtype=np.int64)[cams.argmax(axis=0)]
        for index, threshold in enumerate(self.thresholds):
            prediction = np.where(peak < threshold, 0, winner)
            self.confusions[index] += confusion_matrix(prediction, target, self.num_classes)
