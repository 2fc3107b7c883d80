"""Confusion-matrix scores against hand-computed values: IoU, mIoU, pixel accuracy, ignore, size buckets."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from nas.metrics import ConfusionMatrix


def _t(values) -> torch.Tensor:
    return torch.tensor([values])  # [1, N]: a batch of one "image" one pixel high


def test_scores_match_hand_computed_matrix():
    cm = ConfusionMatrix(3)
    cm.update(_t([0, 1, 1, 1, 0, 2]), _t([0, 0, 1, 1, 2, 255]))
    # rows = label, columns = prediction; the ignore pixel is not counted
    np.testing.assert_array_equal(cm.mat, [[1, 1, 0], [0, 2, 0], [1, 0, 0]])
    s = cm.scores()
    # IoU_c = tp / (row + column - tp): 1/(2+2-1), 2/(2+3-2), 0/(1+0-0)
    assert s.iou == pytest.approx((1 / 3, 2 / 3, 0.0))
    assert s.miou == pytest.approx(1 / 3)
    assert s.pixel_acc == pytest.approx(3 / 5)


def test_logits_are_argmaxed_and_absent_class_is_nan_and_left_out():
    label = _t([0, 1, 1, 0])
    logits = torch.nn.functional.one_hot(_t([0, 1, 0, 0]), 4).permute(0, 2, 1).float()  # [1, 4, N]
    cm = ConfusionMatrix(4)
    cm.update(logits, label)
    s = cm.scores()
    assert math.isnan(s.iou[2]) and math.isnan(s.iou[3])
    assert s.iou[:2] == pytest.approx((2 / 3, 1 / 2))
    assert s.miou == pytest.approx((2 / 3 + 1 / 2) / 2)


def test_ignore_index_is_honoured_whatever_the_prediction():
    cm = ConfusionMatrix(2, ignore_index=255)
    cm.update(_t([1, 1, 0]), _t([255, 255, 0]))
    assert cm.mat.sum() == 1 and cm.scores().pixel_acc == 1.0
    other = ConfusionMatrix(2, ignore_index=1)
    other.update(_t([0, 0]), _t([1, 0]))
    assert other.mat.sum() == 1


def test_size_buckets_count_their_objects_plus_background():
    cm = ConfusionMatrix(3, size_buckets=("small", "large"))
    label, pred = _t([0, 0, 1, 2, 255]), _t([0, 0, 1, 0, 1])
    sizes = _t([0, 0, 1, 2, 0])
    cm.update(pred, label, sizes)
    s = cm.scores()
    # small: background pixels + the class-1 pixel, all right → IoU 1 for classes 0 and 1
    assert s.size_miou["small"] == pytest.approx(1.0)
    # large: background + the class-2 pixel predicted as 0: IoU_0 = 2/(2+3-2), IoU_2 = 0
    assert s.size_miou["large"] == pytest.approx((2 / 3 + 0) / 2)
    row = s.as_row(("bg", "a", "b"), prefix="val_")
    assert row["val_miou_small"] == pytest.approx(1.0) and "val_iou_b" in row


def test_merge_equals_one_pass_and_shape_mismatch_raises():
    a, b, both = ConfusionMatrix(3), ConfusionMatrix(3), ConfusionMatrix(3)
    p1, l1, p2, l2 = _t([0, 1, 2]), _t([0, 2, 2]), _t([1, 1]), _t([1, 0])
    a.update(p1, l1)
    b.update(p2, l2)
    both.update(p1, l1)
    both.update(p2, l2)
    a.merge(b)
    np.testing.assert_array_equal(a.mat, both.mat)
    with pytest.raises(ValueError, match="shape"):
        a.update(_t([0, 1]), _t([0, 1, 2]))
    with pytest.raises(ValueError):
        ConfusionMatrix(0)


def test_size_bucket_without_objects_is_nan_not_background_iou():
    """A bucket no object falls in (e.g. no small digits at a small input) must not report the background IoU."""
    cm = ConfusionMatrix(3, size_buckets=("small", "large"))
    cm.update(_t([0, 0, 1]), _t([0, 0, 2]), _t([0, 0, 2]))
    s = cm.scores()
    assert math.isnan(s.size_miou["small"])
    assert s.size_miou["large"] == pytest.approx((1 + 0) / 2)  # classes 0 and 2 occur; IoU_0 = 1, IoU_2 = 0
