"""benchmarks/mask_gap.py: matching detections to objects and the IoUs it compares."""
from __future__ import annotations

import numpy as np

from benchmarks.mask_ceiling import model_mask_targets
from benchmarks.mask_gap import Miss, match_image, summarize
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
    assert found[1] == Miss("wrong class", int(gt_masks[1].sum()))  # the confident class-1 box
    assert found[0].box_iou == 1.0
    assert found[0].mask_iou == found[0].perfect_mask_iou > 0.9

    scores[2] = 0.8  # now it counts; its mask fills the box, a disc does not
    found = match_image(gt_masks, gt_boxes, gt_classes, boxes, masks, classes, scores)
    assert 0.7 < found[1].box_iou < 1.0
    assert found[1].mask_iou < found[1].perfect_mask_iou - 0.1
    assert summarize(found).startswith("2 of 2 objects matched")
    assert summarize(found).endswith("of perfect ones")  # nothing missed


def test_objects_not_matched_are_sorted_by_why():
    gt_mask = disc_mask(64, 16, 16, 10)[None]
    gt_box = np.array([[6, 6, 26, 26]], np.float32)
    masks = np.ones((1, 28, 28), np.float32)

    def reason(box, detected_class, score):
        found = match_image(gt_mask, gt_box, np.array([1]),
                            np.array([box], np.float32), masks, np.array([detected_class]),
                            np.array([score]))
        return found[0].reason

    assert reason([6, 6, 26, 26], 2, 0.9) == "wrong class"
    assert reason([6, 6, 26, 26], 1, 0.1) == "low score"
    assert reason([6, 6, 26, 14], 1, 0.9) == "poor box"  # box IoU 0.4
    assert reason([40, 40, 60, 60], 1, 0.9) == "not detected"
    found = [Miss("low score", 10), Miss("low score", 30), Miss("not detected", 20)]
    assert summarize(found) == ("no detection matched any of 3 objects; not matched: "
                                "2 low score, 1 not detected (median 20 px)")
