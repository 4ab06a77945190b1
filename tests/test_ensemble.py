"""The hierarchical ensemble's matching rules and the Open Images challenge segmentation
metric, on hand-made masks and a small hierarchy with known answers (no models)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from models.evaluation.oid_challenge import (
    ClassTree,
    ImageGroundTruth,
    ImagePredictions,
    average_precision,
    evaluate_oid_challenge,
    evaluate_oid_challenge_coco,
    to_rles,
)
from models.inference.hierarchical_ensemble import Pairing, match_hierarchical
from records.class_hierarchy import Hierarchy

MAP = "OpenImagesInstanceSegmentationChallenge_Precision/mAP@0.5IOU"


def ap_of(name: str) -> str:
    return f"OpenImagesInstanceSegmentationChallenge_PerformanceByCategory/AP@0.5IOU/{name}"


def node(name: str, *children: dict) -> dict:
    return {"LabelName": name, "Subcategory": list(children)} if children else {"LabelName": name}


# root > person > {man, woman}; root > animal > dog; root > car
HIERARCHY = Hierarchy.from_json(node("/m/root", node("person", node("man"), node("woman")),
                                     node("animal", node("dog")), node("car")))
TREE = ClassTree.from_hierarchy(HIERARCHY)


def box_mask(top: int, left: int, bottom: int, right: int, size: int = 40) -> np.ndarray:
    mask = np.zeros((size, size), np.uint8)
    mask[top:bottom, left:right] = 1
    return mask


def masks(*boxes: tuple[int, int, int, int]) -> np.ndarray:
    return np.stack([box_mask(*b) for b in boxes]) if boxes else np.zeros((0, 40, 40), np.uint8)


# --- ensemble matching ------------------------------------------------------------------

def match(l0_classes, l0_scores, l0_boxes, l1_classes, l1_scores, l1_boxes, **kwargs):
    return match_hierarchical(l0_classes, l0_scores, masks(*l0_boxes), l1_classes, l1_scores,
                              masks(*l1_boxes), HIERARCHY.is_ancestor, **kwargs)


def test_a_layer1_detection_pairs_with_the_overlapping_ancestor_detection():
    result = match(["person", "car"], [0.9, 0.8], [(0, 0, 20, 10), (20, 20, 40, 40)],
                   ["man"], [0.7], [(0, 0, 20, 9)])
    assert result[0].layer0 == 0 and result[0].layer1 == 0
    assert result[0].mask_iou == pytest.approx(180 / 200)
    assert result[1:] == [Pairing(1, None)]  # the car keeps its class alone


def test_no_pair_across_unrelated_classes_or_below_the_iou_threshold():
    # a man over a car is not a car's subclass; a man barely touching a person is no match
    result = match(["car", "person"], [0.9, 0.8], [(0, 0, 20, 20), (20, 20, 40, 40)],
                   ["man"], [0.7], [(0, 0, 20, 20)])
    assert all(p.layer1 is None for p in result) and len(result) == 2
    result = match(["person"], [0.9], [(0, 0, 20, 20)], ["man"], [0.7], [(10, 10, 30, 30)],
                   iou_threshold=0.5)
    assert result == [Pairing(0, None)]


def test_unmatched_layer1_is_kept_or_dropped_by_the_flag():
    args = (["person"], [0.9], [(0, 0, 20, 20)], ["dog"], [0.6], [(20, 20, 40, 40)])
    assert match(*args) == [Pairing(0, None)]
    assert match(*args, keep_unmatched_layer1=True) == [Pairing(0, None), Pairing(None, 0)]


def test_each_layer0_detection_pairs_once_best_layer1_score_first():
    # two fine detections on one person: the better-scoring one gets the pair
    result = match(["person"], [0.9], [(0, 0, 20, 20)], ["woman", "man"], [0.4, 0.8],
                   [(0, 0, 20, 19), (0, 0, 20, 20)], keep_unmatched_layer1=True)
    assert result == [Pairing(0, 1, 1.0), Pairing(None, 0)]


def test_the_highest_iou_ancestor_wins_when_two_overlap():
    result = match(["person", "person"], [0.95, 0.6], [(0, 0, 20, 30), (0, 0, 20, 21)],
                   ["man"], [0.7], [(0, 0, 20, 20)])
    assert result[0] == Pairing(1, 0, pytest.approx(20 / 21))
    assert result[1] == Pairing(0, None)


def test_matching_works_on_empty_inputs():
    assert match([], [], [], [], [], []) == []
    assert match([], [], [], ["man"], [0.5], [(0, 0, 5, 5)], keep_unmatched_layer1=True) == \
        [Pairing(None, 0)]


# --- the OID challenge metric -------------------------------------------------------------

def truth(classes, boxes, group_of=None, **kwargs) -> ImageGroundTruth:
    return ImageGroundTruth(classes, masks(*boxes), group_of, **kwargs)


def found(classes, scores, boxes) -> ImagePredictions:
    return ImagePredictions(classes, scores, masks(*boxes))


def test_perfect_predictions_score_one_for_every_class_and_its_ancestors():
    gt = {1: truth(["man", "car"], [(0, 0, 10, 10), (20, 20, 30, 35)]),
          2: truth(["dog"], [(5, 5, 25, 25)])}
    dt = {1: found(["man", "car"], [0.9, 0.8], [(0, 0, 10, 10), (20, 20, 30, 35)]),
          2: found(["dog"], [0.7], [(5, 5, 25, 25)])}
    metrics = evaluate_oid_challenge(gt, dt, TREE)
    assert metrics[MAP] == 1.0
    # man also counts as person, dog as animal: five classes are scored
    assert {k.rsplit("/", 1)[1] for k in metrics if k != MAP} == {"man", "person", "car",
                                                                "dog", "animal"}


def test_a_child_prediction_counts_for_its_ancestor_once_expanded():
    gt = {1: truth(["person"], [(0, 0, 20, 20)])}
    dt = {1: found(["man"], [0.9], [(0, 0, 20, 20)])}
    expanded = evaluate_oid_challenge(gt, dt, TREE)
    assert expanded[ap_of("person")] == 1.0 and expanded[MAP] == 1.0
    # without the expansion the man prediction leaves the person unfound
    flat = evaluate_oid_challenge(gt, dt, TREE, expand_predictions=False)
    assert flat[ap_of("person")] == 0.0


def test_a_duplicate_is_a_false_positive_and_a_miss_lowers_recall():
    gt = {1: truth(["car", "car"], [(0, 0, 10, 10), (20, 20, 30, 30)])}
    # best: a hit; second: a duplicate of the same car (FP); the other car is missed
    dt = {1: found(["car", "car"], [0.9, 0.8], [(0, 0, 10, 10), (0, 0, 10, 10)])}
    metrics = evaluate_oid_challenge(gt, dt)
    assert metrics[ap_of("car")] == pytest.approx(0.5)  # precision 1 up to recall 0.5


def test_low_mask_iou_is_not_a_match():
    gt = {1: truth(["car"], [(0, 0, 10, 10)])}
    dt = {1: found(["car"], [0.9], [(0, 5, 10, 15)])}  # IoU 50/150
    assert evaluate_oid_challenge(gt, dt)[ap_of("car")] == 0.0


def test_group_of_instances_are_not_counted_and_detections_inside_them_are_ignored():
    gt = {1: truth(["car", "car"], [(0, 0, 10, 10), (20, 0, 40, 40)], group_of=[False, True])}
    # two detections inside the crowd (ignored, not FPs) and one true positive
    dt = {1: found(["car", "car", "car"], [0.95, 0.9, 0.5],
                   [(20, 0, 30, 10), (30, 30, 40, 40), (0, 0, 10, 10)])}
    assert evaluate_oid_challenge(gt, dt)[ap_of("car")] == 1.0
    only_crowd = {1: truth(["car"], [(20, 0, 40, 40)], group_of=[True])}
    assert ap_of("car") not in evaluate_oid_challenge(only_crowd, dt)  # no counted instance


def test_instances_without_a_mask_are_not_counted():
    gt = {1: truth(["car", "car"], [(0, 0, 10, 10), (0, 0, 0, 0)])}
    dt = {1: found(["car"], [0.9], [(0, 0, 10, 10)])}
    assert evaluate_oid_challenge(gt, dt)[ap_of("car")] == 1.0


def test_verified_labels_limit_the_classes_evaluated_on_an_image():
    gt = {1: truth(["car"], [(0, 0, 10, 10)], positive_labels=["car"]),
          2: truth([], [])}  # no image-level labels: exhaustively annotated
    dt = {1: found(["car", "dog"], [0.9, 0.8], [(0, 0, 10, 10), (20, 20, 30, 30)]),
          2: found(["car"], [0.95], [(0, 0, 10, 10)])}
    metrics = evaluate_oid_challenge(gt, dt, TREE)
    # the dog on image 1 is not verified there: ignored; the car on image 2 is a FP
    assert metrics[ap_of("car")] == pytest.approx(0.5)
    assert ap_of("dog") not in metrics
    negative = {1: truth(["car"], [(0, 0, 10, 10)], positive_labels=["car"],
                         negative_labels=["animal"]),
                3: truth(["dog"], [(0, 0, 5, 5)])}
    # a negative label expands to descendants: the dog detection on image 1 now counts as FP
    dt[3] = found(["dog"], [0.5], [(0, 0, 5, 5)])
    metrics = evaluate_oid_challenge(negative, dt, TREE)
    assert metrics[ap_of("dog")] == pytest.approx(0.5)


def test_average_precision_matches_a_hand_computed_curve():
    # hits at ranks 1 and 3 of 3 detections, 2 positives: 1 * 0.5 + (2/3) * 0.5
    ap = average_precision(np.array([0.9, 0.8, 0.7]), np.array([True, False, True]), 2)
    assert ap == pytest.approx(0.5 + 2 / 3 * 0.5)
    assert math.isnan(average_precision(np.array([0.5]), np.array([False]), 0))
    assert average_precision(np.zeros(0), np.zeros(0, bool), 3) == 0.0


def test_coco_format_input_gives_the_same_answer():
    mask = box_mask(0, 0, 10, 10)
    rle = to_rles(mask[np.newaxis])[0]
    segmentation = {"size": rle["size"], "counts": rle["counts"].decode()}
    coco_gt = {"images": [{"id": 7, "height": 40, "width": 40}],
               "annotations": [{"id": 1, "image_id": 7, "category_id": 2, "iscrowd": 0,
                                "segmentation": segmentation}],
               "categories": [{"id": 1, "name": "person"}, {"id": 2, "name": "man"}]}
    results = [{"image_id": 7, "category_id": 2, "score": 0.9, "segmentation": segmentation},
               {"image_id": 7, "category_id": 2, "score": 0.0, "segmentation": segmentation}]
    tree = ClassTree({2: (1,)}, {1: (2,)})
    metrics = evaluate_oid_challenge_coco(coco_gt, results, tree)
    assert metrics[MAP] == 1.0 and metrics[ap_of("person")] == 1.0  # id 1 via the tree


def test_the_metric_stands_in_for_model_gardens_coco_evaluator(tmp_path):
    """How the evaluation driver uses it: task.coco_metric = OidChallengeMetric(...)."""
    import json

    import tensorflow as tf
    from official.vision.evaluation.coco_evaluator import COCOEvaluator

    from models.evaluation.oid_challenge import wrap_coco_metric
    from records.label_map import LabelMap, LabelMapItem, write_label_map

    rle = to_rles(box_mask(0, 0, 10, 10)[np.newaxis])[0]
    coco_gt = {"images": [{"id": 3, "height": 40, "width": 40, "file_name": "a.png"}],
               "annotations": [{"id": 1, "image_id": 3, "category_id": 2, "iscrowd": 0,
                                "area": 100.0, "bbox": [0, 0, 10, 10],
                                "segmentation": {"size": rle["size"],
                                                 "counts": rle["counts"].decode()}}],
               "categories": [{"id": 1, "name": "person"}, {"id": 2, "name": "man"}]}
    (tmp_path / "gt.json").write_text(json.dumps(coco_gt))
    write_label_map(LabelMap([LabelMapItem(1, "person", descendant_ids=(2,)),
                              LabelMapItem(2, "man", ancestor_ids=(1,))]),
                    tmp_path / "label_map.pbtxt")
    metric = wrap_coco_metric(COCOEvaluator(str(tmp_path / "gt.json"), include_mask=True),
                              tmp_path / "gt.json", str(tmp_path / "label_map.pbtxt"))
    metric.reset_states()
    # the model saw the image at twice its size: boxes in resized pixels, image_info scale 2
    predictions = {
        "source_id": tf.constant([3]), "num_detections": tf.constant([2]),
        "image_info": tf.constant([[[40.0, 40.0], [80.0, 80.0], [2.0, 2.0], [0.0, 0.0]]]),
        "detection_boxes": tf.constant([[[0.0, 0.0, 20.0, 20.0], [40.0, 40.0, 60.0, 60.0]]]),
        "detection_classes": tf.constant([[2, 1]]),
        "detection_scores": tf.constant([[0.9, 0.8]]),
        "detection_masks": tf.ones([1, 2, 28, 28])}
    metric.update_state(None, predictions)
    metrics = metric.result()
    assert metrics["AP"] > 0.5  # Model Garden's COCO metrics are still there
    assert metrics[ap_of("man")] == 1.0
    # the person detection elsewhere is a false positive after the man's (0.9) hit
    assert metrics[ap_of("person")] == 1.0 and metrics[MAP] == 1.0


@pytest.mark.slow
def test_ensemble_command_reports_pairs(tmp_path_factory, tmp_path):
    """The same model as both layers, its classes renamed as children in layer1: every
    detection pairs with itself (mask IoU 1)."""
    import json

    from pycocotools import mask as mask_utils

    from records.label_map import LabelMap, LabelMapItem, read_label_map, write_label_map
    from tests.conftest import run_command
    from tests.test_export import tiny_export

    export = tiny_export(tmp_path_factory)
    shapes = read_label_map(export.exported / "label_map.pbtxt")
    write_label_map(LabelMap(LabelMapItem(i.id, f"{i.name}_kind", f"{i.name} kind")
                             for i in shapes), tmp_path / "layer1.pbtxt")
    tree = node("/m/root", *[node(i.name, node(f"{i.name}_kind")) for i in shapes])
    (tmp_path / "hierarchy.json").write_text(json.dumps(tree))
    out = tmp_path / "ensemble"
    run_command("-m", "models.tools.ensemble", "--layer0_saved_model", str(export.saved_model),
                "--layer1_saved_model", str(export.saved_model),
                "--layer1_label_map", str(tmp_path / "layer1.pbtxt"),
                "--hierarchy", str(tmp_path / "hierarchy.json"),
                "--images", str(export.root / "shapes/images/val"), "--output_dir", str(out),
                "--score_threshold", "0.05", "--no_progress", check=True)
    report = json.loads((out / "ensemble.json").read_text())
    assert len(report) == len(list(out.glob("*.png"))) == 4
    objects = [d for image in report for d in image["detections"]]
    pairs = [d for d in objects if len(d["classes"]) == 2]
    assert pairs and all(d["mask_iou"] == 1.0 for d in pairs)
    assert all(d["classes"][1] == f"{d['classes'][0]}_kind" for d in pairs)
    assert all(d["display_names"][1].endswith(" kind") for d in pairs)
    for alone in (d for d in objects if len(d["classes"]) == 1):  # an empty mask cannot pair
        assert mask_utils.area(to_rles([alone["segmentation"]])[0]) == 0


@pytest.mark.slow
def test_oid_challenge_metrics_set_in_model_main_evaluation(tmp_path_factory, tmp_path):
    """eval_config.metrics_set: "oid_challenge_segmentation_metrics" reaches metrics.json."""
    import json

    from tests.test_export import tiny_export
    from tests.training_helpers import model_main

    export = tiny_export(tmp_path_factory)
    model_main(f"--pipeline_config_path={export.config}", f"--model_dir={tmp_path}",
               f"--checkpoint_dir={export.model_dir}", "--eval_timeout=1",
               '--config_override=eval_config { metrics_set: '
               '"oid_challenge_segmentation_metrics" }')
    metrics = json.loads((tmp_path / "eval/metrics.json").read_text())
    (logs,) = metrics.values()
    overall = "OpenImagesInstanceSegmentationChallenge_Precision/mAP@0.5IOU"
    assert 0.0 <= logs[overall] <= 1.0
    assert any(name.startswith("OpenImagesInstanceSegmentationChallenge_PerformanceByCategory")
               for name in logs)
    assert not any(name.startswith("DetectionMasks") for name in logs)  # not asked for
