"""Segmentation metrics from one confusion matrix accumulated over a split (the usual conventions, docs/configuration.md).

Pure numpy. ``confusion[i, j]`` counts pixels whose ground truth is ``i`` and prediction ``j``;
pixels whose ground truth is ``ignore_index`` (255) are left out.
"""

from __future__ import annotations

import numpy as np


def confusion_matrix(pred: np.ndarray, target: np.ndarray, num_classes: int, ignore_index: int = 255) -> np.ndarray:
    """A ``num_classes x num_classes`` int64 matrix of (target, prediction) pixel counts."""
    pred = np.asarray(pred).reshape(-1).astype(np.int64)
    target = np.asarray(target).reshape(-1).astype(np.int64)
    if pred.shape != target.shape:
        raise ValueError(f"prediction has {pred.size} pixels but target has {target.size}")
    keep = target != ignore_index
    pred, target = pred[keep], target[keep]
    for name, values in (("target", target), ("prediction", pred)):
        if values.size and (values.min() < 0 or values.max() >= num_classes):
            raise ValueError(f"{name} holds class {values.max()} outside [0, {num_classes}); check num_classes")
    return np.bincount(target * num_classes + pred, minlength=num_classes * num_classes).reshape(
        num_classes, num_classes
    )


def per_class_iou(cm: np.ndarray) -> np.ndarray:
    """TP / (TP + FP + FN) per class; NaN for classes absent from both prediction and ground truth."""
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diag(cm)
    denom = cm.sum(axis=0) + cm.sum(axis=1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, tp / denom, np.nan)


def mean_iou(cm: np.ndarray) -> float:
    """Mean IoU over the classes present in prediction or ground truth (NaN if there are none)."""
    iou = per_class_iou(cm)
    return float(np.nanmean(iou)) if np.any(~np.isnan(iou)) else float("nan")


def per_class_precision_recall(cm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Precision TP/(TP+FP) and recall TP/(TP+FN) per class; NaN where undefined."""
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diag(cm)
    predicted, actual = cm.sum(axis=0), cm.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(predicted > 0, tp / predicted, np.nan), np.where(actual > 0, tp / actual, np.nan)


def segmentation_report(cm: np.ndarray, class_names: list[str]) -> dict:
    """A JSON-ready report: mIoU, per-class IoU / precision / recall, and the confusion matrix."""
    iou = per_class_iou(cm)
    precision, recall = per_class_precision_recall(cm)

    def by_class(values: np.ndarray) -> dict:
        return {name: (None if np.isnan(v) else round(float(v), 6)) for name, v in zip(class_names, values)}

    return {
        "miou": mean_iou(cm),
        "per_class_iou": by_class(iou),
        "per_class_precision": by_class(precision),
        "per_class_recall": by_class(recall),
        "class_names": list(class_names),
        "confusion_matrix": np.asarray(cm).astype(int).tolist(),
    }
