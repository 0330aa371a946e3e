"""mIoU from one confusion matrix, checked against hand counts."""

from __future__ import annotations

import numpy as np
import pytest

from pmm.scoring.metrics import confusion_matrix, mean_iou, per_class_iou, per_class_precision_recall, segmentation_report


def test_confusion_matrix_hand_counts_with_ignore():
    target = np.array([[0, 0, 1, 1], [2, 2, 255, 255]])
    pred = np.array([[0, 1, 1, 1], [2, 0, 2, 1]])
    cm = confusion_matrix(pred, target, num_classes=3)
    # rows = ground truth, columns = prediction; the two 255 pixels are not counted.
    expected = np.array([[1, 1, 0], [0, 2, 0], [1, 0, 1]])
    np.testing.assert_array_equal(cm, expected)
    # IoU: class 0: 1 / (1 + 1 + 1) ; class 1: 2 / (2 + 1 + 0) ; class 2: 1 / (1 + 0 + 1)
    np.testing.assert_allclose(per_class_iou(cm), [1 / 3, 2 / 3, 1 / 2])
    assert mean_iou(cm) == pytest.approx((1 / 3 + 2 / 3 + 1 / 2) / 3)
    precision, recall = per_class_precision_recall(cm)
    np.testing.assert_allclose(precision, [1 / 2, 2 / 3, 1])
    np.testing.assert_allclose(recall, [1 / 2, 1, 1 / 2])


def test_absent_classes_are_left_out_of_the_mean():
    target = np.array([0, 0, 3, 3])
    pred = np.array([0, 0, 3, 0])
    cm = confusion_matrix(pred, target, num_classes=5)
    iou = per_class_iou(cm)
    assert np.isnan(iou[1]) and np.isnan(iou[2]) and np.isnan(iou[4])
    # class 0: TP 2, FP 1 -> 2/3 ; class 3: TP 1, FN 1 -> 1/2
    assert mean_iou(cm) == pytest.approx((2 / 3 + 1 / 2) / 2)


def test_class_only_predicted_counts_as_zero():
    cm = confusion_matrix(np.array([0, 2]), np.array([0, 0]), num_classes=3)
    iou = per_class_iou(cm)
    assert iou[2] == 0.0 and iou[0] == 0.5 and np.isnan(iou[1])
    assert mean_iou(cm) == pytest.approx(0.25)


def test_split_matrix_is_not_a_mean_of_images():
    # Image A: big object, well segmented; image B: tiny object, missed.
    target_a, pred_a = np.array([1] * 9 + [0]), np.array([1] * 9 + [0])
    target_b, pred_b = np.array([1] + [0] * 9), np.array([0] * 10)
    cm = confusion_matrix(pred_a, target_a, 2) + confusion_matrix(pred_b, target_b, 2)
    # Split-level: class 1 TP 9, FN 1 -> 0.9; class 0 TP 10, FP 1 -> 10/11.
    assert mean_iou(cm) == pytest.approx((0.9 + 10 / 11) / 2)
    per_image = (mean_iou(confusion_matrix(pred_a, target_a, 2)) + mean_iou(confusion_matrix(pred_b, target_b, 2))) / 2
    assert abs(per_image - mean_iou(cm)) > 0.05


def test_out_of_range_prediction_is_an_error():
    with pytest.raises(ValueError, match="outside"):
        confusion_matrix(np.array([7]), np.array([0]), num_classes=3)


def test_report_is_json_ready():
    cm = confusion_matrix(np.array([0, 1, 1]), np.array([0, 1, 0]), 3)
    report = segmentation_report(cm, ["background", "a", "b"])
    assert report["per_class_iou"] == {"background": 0.5, "a": 0.5, "b": None}
    assert report["confusion_matrix"] == [[1, 1, 0], [0, 1, 0], [0, 0, 0]]
