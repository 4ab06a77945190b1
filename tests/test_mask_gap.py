"""benchmarks/mask_gap.py: matching detections to objects and the IoUs it compares."""
from __future__ import annotations

import numpy as np

from benchmarks.mask_ceiling import model_mask_targets
from benchmarks.mask_gap import match_image, summarize
from tests.coco_helpers import disc_mask


def test_matches_by_class_and_score_and_compares_with_perfect_masks():
    gt_masks = np.stack([disc_mask(64, 16, 16, 10), disc_mask(64, 44, 44, 12)])
    gt_boxes = np.array([[6, 6, 26, 26], [32, 32, 56, 56]], np.float32)
    gt_classes = np.array([1, 2])
    perfect = model_mask_targets(gt_masks[:1].astype(np.float32), gt_boxes[:1])[0]
    boxes = np.array([[6, 6, 26, 26], [32, 32, 56, 56], [31, 31, 57, 57]], np.float32)
    masks = np.stack([perfect, np.ones((28, 28)), np.ones((28, 28))]).astype(np.float32)
    classes = np.array([1, 1, 2])  # the second object's only detection of its class...
    scores = np.array([0.9, 0.9, 0.1])  # ... scores below the threshold
    found = match_image(gt_masks, gt_boxes, gt_classes, boxes, masks, classes, scores)
    assert found[1] is None
    assert found[0].box_iou == 1.0
    assert found[0].mask_iou == found[0].perfect_mask_iou > 0.9

    scores[2] = 0.8  # now it counts; its mask fills the box, a disc does not
    found = match_image(gt_masks, gt_boxes, gt_classes, boxes, masks, classes, scores)
    assert 0.7 < found[1].box_iou < 1.0
    assert found[1].mask_iou < found[1].perfect_mask_iou - 0.1
    assert summarize(found).startswith("2 of 2 objects matched")
    assert summarize([None]) == "no detection matched any of 1 objects"
