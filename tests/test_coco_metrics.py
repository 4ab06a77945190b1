"""The one COCO scorer (models/evaluation/coco_metrics.py): continuous evaluation's metric
gives Model Garden's numbers on the same predictions, counts images without detections,
and names metrics as the OD API does."""
from __future__ import annotations

import json

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from models.evaluation.coco_metrics import (
    BOX_MAP,
    MASK_MAP,
    CocoMetric,
    coco_results,
    ground_truth_from_dict,
    metric_name,
    score_coco,
)
from models.serving.saved_model_client import Detections

SIZE = 64


def _square(y0: int, x0: int, side: int) -> np.ndarray:
    mask = np.zeros((SIZE, SIZE), np.uint8)
    mask[y0:y0 + side, x0:x0 + side] = 1
    return mask


def _ground_truth(masks_per_image: dict[int, list[tuple[int, np.ndarray]]]) -> dict:
    images, annotations = [], []
    for image_id, objects in masks_per_image.items():
        images.append({"id": image_id, "height": SIZE, "width": SIZE})
        for category, mask in objects:
            rle = mask_utils.encode(np.asfortranarray(mask))
            x, y, w, h = mask_utils.toBbox(rle).tolist()
            annotations.append({"id": len(annotations) + 1, "image_id": image_id,
                                "category_id": category, "bbox": [x, y, w, h],
                                "area": float(mask.sum()), "iscrowd": 0,
                                "segmentation": {"size": [SIZE, SIZE],
                                                 "counts": rle["counts"].decode()}})
    return {"images": images, "annotations": annotations,
            "categories": [{"id": 1, "name": "square"}, {"id": 2, "name": "other"}]}


def _batch(source_ids, boxes, classes, scores):
    """Model Garden's prediction batch: boxes in input pixels (scale 1), box-relative masks
    that fill their box."""
    n = max(len(b) for b in boxes) or 1
    count = len(source_ids)
    padded = np.zeros((count, n, 4), np.float32)
    padded_classes = np.zeros((count, n), np.int32)
    padded_scores = np.zeros((count, n), np.float32)
    for i, (b, c, s) in enumerate(zip(boxes, classes, scores)):
        padded[i, :len(b)] = np.reshape(np.array(b, np.float32), (-1, 4))
        padded_classes[i, :len(c)] = c
        padded_scores[i, :len(s)] = s
    image_info = np.tile(np.array([[SIZE, SIZE], [SIZE, SIZE], [1, 1], [0, 0]], np.float32),
                         (count, 1, 1))
    import tensorflow as tf

    return {key: tf.constant(value) for key, value in {
            "source_id": np.array(source_ids, np.int64),
            "image_info": image_info,
            "num_detections": np.array([len(b) for b in boxes], np.int32),
            "detection_boxes": padded, "detection_classes": padded_classes,
            "detection_scores": padded_scores,
            "detection_masks": np.ones((count, n, 28, 28), np.float32)}.items()}


@pytest.fixture()
def annotation_file(tmp_path):
    truth = _ground_truth({1: [(1, _square(8, 8, 20))], 2: [(1, _square(30, 30, 24))],
                           3: [(2, _square(4, 40, 16))]})
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(truth))
    return path


def test_continuous_evaluation_scores_as_model_garden_does(annotation_file):
    from official.vision.evaluation import coco_evaluator

    # ymin, xmin, ymax, xmax in pixels: image 1 nearly right, image 2 off by a few pixels
    predictions = _batch([1, 2, 3], [[[8, 8, 28, 28]], [[33, 31, 54, 54]], [[4, 40, 20, 56]]],
                         [[1], [1], [1]], [[0.9], [0.8], [0.7]])
    ours = CocoMetric(str(annotation_file), include_mask=True)
    theirs = coco_evaluator.COCOEvaluator(str(annotation_file), include_mask=True)
    for metric in (ours, theirs):
        metric.update_state(None, dict(predictions))
    ours, theirs = ours.result(), theirs.result()
    for iou_type, prefix in (("bbox", ""), ("segm", "mask_")):
        for stat in ("AP", "AP50", "AP75", "ARmax100"):
            assert ours[metric_name(iou_type, stat)] == pytest.approx(
                float(theirs[prefix + stat]), abs=1e-6), (iou_type, stat)
    assert 0.0 < ours[BOX_MAP] < 1.0 and 0.0 < ours[MASK_MAP] < 1.0


def test_an_image_without_detections_counts_its_objects_as_missed(annotation_file):
    found = _batch([1, 2, 3], [[[8, 8, 28, 28]], [[30, 30, 54, 54]], []], [[1], [1], []],
                   [[0.9], [0.9], []])
    metric = CocoMetric(str(annotation_file), include_mask=False)
    metric.update_state(None, found)
    with_missed_image = metric.result()
    # Category 2 exists only on image 3, which has no detection: its AP is 0, so the
    # mean over both categories is half of category 1's perfect AP.
    assert with_missed_image[BOX_MAP] == pytest.approx(0.5)


def test_inference_and_evaluation_share_the_scorer(annotation_file):
    truth = ground_truth_from_dict(json.loads(annotation_file.read_text()))
    perfect = []
    for annotation in truth.dataset["annotations"]:
        mask = mask_utils.decode({"size": [SIZE, SIZE],
                                  "counts": annotation["segmentation"]["counts"].encode()})
        x, y, w, h = annotation["bbox"]
        perfect += coco_results(annotation["image_id"], Detections(
            np.array([[y, x, y + h, x + w]], np.float32), np.array([0.99]),
            np.array([annotation["category_id"]]), mask[np.newaxis]))
    metrics = score_coco(truth, perfect, [1, 2, 3], per_category=True)
    assert metrics[BOX_MAP] == pytest.approx(1.0) and metrics[MASK_MAP] == pytest.approx(1.0)
    assert metrics["DetectionMasks_PerformanceByCategory/mAP/other"] == pytest.approx(1.0)
    assert score_coco(truth, [], [1, 2, 3])[BOX_MAP] == 0.0
