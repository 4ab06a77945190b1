"""The Open Images challenge instance segmentation metric (`oid_challenge_segmentation_metrics`).

What the OD API's OpenImagesInstanceSegmentationChallengeEvaluator computes, on RLE masks:

* Hierarchy: every ground-truth instance also counts for each ancestor of its class (a Man is
  a Person); predictions are expanded the same way (the challenge asks participants to
  submit the expanded set; doing it here scores a model that predicts leaves only fairly).
  Verified positive image-level labels expand to ancestors, negative ones to descendants.
* Per class: detections, best score first, match the unmatched ground-truth mask of highest
  mask IoU >= 0.5 (true positive); a detection whose best match is taken is a false
  positive. Detections left over whose intersection with a group-of (is_crowd) mask covers
  >= 0.5 of the detection are ignored, and group-of instances are not counted as positives
  (the challenge's group_of_weight 0 for masks). Instances without a mask (box-only
  annotations, empty masks) are ignored, and so are detections matching them.
* Images with verified image-level labels evaluate only those classes and the classes of
  their instances (detections of other classes are ignored); images without them are taken
  as exhaustively annotated: every class is evaluated (what COCO assumes).
* AP per class is the area under the precision/recall curve with precision made monotone
  (VOC all points); mAP averages the classes with at least one counted instance.

Class keys are anything hashable (label-map ids or MIDs); `ClassTree` supplies ancestors and
descendants from a hierarchy JSON or from a label map's ancestor_ids / descendant_ids.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Hashable, Iterable, Mapping, Sequence

import numpy as np
from pycocotools import mask as mask_utils

PREFIX = "OpenImagesInstanceSegmentationChallenge"
METRICS_SET = "oid_challenge_segmentation_metrics"


@dataclasses.dataclass(frozen=True)
class ClassTree:
    """Ancestors and descendants of each class (missing classes have none)."""

    ancestors: Mapping[Hashable, tuple]
    descendants: Mapping[Hashable, tuple] = dataclasses.field(default_factory=dict)

    @classmethod
    def from_hierarchy(cls, hierarchy) -> "ClassTree":
        """From records.class_hierarchy.Hierarchy: keys are MIDs."""
        return cls({c: hierarchy.ancestors(c) for c in hierarchy.classes},
                   {c: hierarchy.descendants(c) for c in hierarchy.classes})

    @classmethod
    def from_label_map(cls, label_map) -> "ClassTree":
        """From records.label_map.LabelMap items' ancestor_ids / descendant_ids: keys are ids."""
        return cls({i.id: tuple(i.ancestor_ids) for i in label_map},
                   {i.id: tuple(i.descendant_ids) for i in label_map})

    def up(self, key: Hashable) -> tuple:
        return (key,) + tuple(a for a in self.ancestors.get(key, ()) if a != key)

    def down(self, key: Hashable) -> tuple:
        return (key,) + tuple(d for d in self.descendants.get(key, ()) if d != key)


@dataclasses.dataclass
class ImageGroundTruth:
    classes: Sequence[Hashable]
    masks: Sequence  # RLE dicts, or an array [M, H, W] of 0/1
    group_of: Sequence[bool] | None = None
    positive_labels: Sequence[Hashable] | None = None  # verified image-level labels
    negative_labels: Sequence[Hashable] | None = None


@dataclasses.dataclass
class ImagePredictions:
    classes: Sequence[Hashable]
    scores: Sequence[float]
    masks: Sequence  # RLE dicts, or an array [N, H, W] of 0/1 (or probabilities > 0.5)


def to_rles(masks: Sequence) -> list[dict]:
    """RLE dicts (counts as bytes) from RLE dicts or binary mask arrays."""
    if isinstance(masks, np.ndarray):
        binary = np.asfortranarray((masks > 0.5).astype(np.uint8).transpose(1, 2, 0))
        return list(mask_utils.encode(binary)) if len(masks) else []
    rles = []
    for mask in masks:
        if isinstance(mask, dict):
            counts = mask["counts"]
            rles.append({"size": list(mask["size"]),
                         "counts": counts.encode("ascii") if isinstance(counts, str) else counts})
        else:
            rles.append(to_rles(np.asarray(mask)[np.newaxis])[0])
    return rles


def _expand(classes: Sequence[Hashable], tree: ClassTree | None) -> list[tuple[int, Hashable]]:
    """(instance index, class) for each instance's class and, with a tree, its ancestors."""
    return [(i, key) for i, c in enumerate(classes)
            for key in (tree.up(c) if tree is not None else (c,))]


def _evaluatable(truth: ImageGroundTruth, gt_classes: set, tree: ClassTree | None) -> set | None:
    if truth.positive_labels is None and truth.negative_labels is None:
        return None  # exhaustively annotated: every class counts
    labels = set(gt_classes)
    for label in truth.positive_labels or ():
        labels.update(tree.up(label) if tree is not None else (label,))
    for label in truth.negative_labels or ():
        labels.update(tree.down(label) if tree is not None else (label,))
    return labels


def _match_class(scores: np.ndarray, det_rles: list, gt_rles: list, group_of: np.ndarray,
                 ignored: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray, int]:
    """One class on one image -> (scores, true-positive flags) of the counted detections,
    and the number of counted instances."""
    counted = int(np.sum(~group_of & ~ignored))
    order = np.argsort(-scores, kind="stable")
    scores, det_rles = scores[order], [det_rles[i] for i in order]
    if not det_rles or not gt_rles:
        return scores, np.zeros(len(scores), bool), counted
    single = np.flatnonzero(~group_of)
    groups = np.flatnonzero(group_of)
    true_positive = np.zeros(len(scores), bool)
    dropped = np.zeros(len(scores), bool)
    if len(single):
        iou = np.asarray(mask_utils.iou(det_rles, [gt_rles[i] for i in single],
                                        [0] * len(single))).reshape(len(scores), len(single))
        taken = np.zeros(len(single), bool)
        for d, best in enumerate(np.argmax(iou, axis=1)):
            if iou[d, best] < threshold:
                continue
            if ignored[single[best]]:
                dropped[d] = True
            elif not taken[best]:
                true_positive[d] = taken[best] = True
    if len(groups):
        # pycocotools' crowd IoU is the intersection over the detection's area.
        ioa = np.asarray(mask_utils.iou(det_rles, [gt_rles[i] for i in groups],
                                        [1] * len(groups))).reshape(len(scores), len(groups))
        dropped |= ~true_positive & (ioa.max(axis=1) >= threshold)
    keep = ~dropped
    return scores[keep], true_positive[keep], counted


def average_precision(scores: np.ndarray, true_positive: np.ndarray, num_positives: int
                      ) -> float:
    """Area under the monotone precision/recall curve (the OD API's VOC-style AP)."""
    if num_positives <= 0:
        return float("nan")
    if not len(scores):
        return 0.0
    order = np.argsort(-scores, kind="stable")
    hits = true_positive[order].astype(np.float64)
    tp, fp = np.cumsum(hits), np.cumsum(1.0 - hits)
    precision = np.concatenate([[0.0], tp / (tp + fp), [0.0]])
    recall = np.concatenate([[0.0], tp / num_positives, [1.0]])
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    steps = np.flatnonzero(recall[1:] != recall[:-1]) + 1
    return float(np.sum((recall[steps] - recall[steps - 1]) * precision[steps]))


def evaluate_oid_challenge(groundtruth: Mapping[Hashable, ImageGroundTruth],
                           predictions: Mapping[Hashable, ImagePredictions],
                           tree: ClassTree | None = None, iou_threshold: float = 0.5,
                           class_names: Mapping[Hashable, str] | None = None,
                           expand_predictions: bool = True) -> dict[str, float]:
    """mAP over classes at mask IoU `iou_threshold`, and AP per class, under the OD API's
    names. Predictions for images without ground truth are ignored."""
    per_class_scores: dict = {}
    per_class_hits: dict = {}
    positives: dict = {}
    for image_id, truth in groundtruth.items():
        gt_rles = to_rles(truth.masks)
        gt_expanded = _expand(truth.classes, tree)
        group_of = np.asarray(truth.group_of if truth.group_of is not None
                              else [False] * len(truth.classes), bool)
        empty = np.array([mask_utils.area(r) == 0 for r in gt_rles], bool)
        evaluatable = _evaluatable(truth, {c for _, c in gt_expanded}, tree)
        found = predictions.get(image_id)
        det_expanded = _expand(found.classes, tree if expand_predictions else None) if found \
            else []
        det_rles = to_rles(found.masks) if found else []
        det_scores = np.asarray(found.scores, np.float64) if found else np.zeros(0)
        keys = {c for _, c in gt_expanded} | {c for _, c in det_expanded}
        for key in keys:
            if evaluatable is not None and key not in evaluatable:
                continue
            gt_index = [i for i, c in gt_expanded if c == key]
            det_index = [i for i, c in det_expanded if c == key]
            scores, hits, counted = _match_class(
                det_scores[det_index], [det_rles[i] for i in det_index],
                [gt_rles[i] for i in gt_index], group_of[gt_index], empty[gt_index],
                iou_threshold)
            positives[key] = positives.get(key, 0) + counted
            per_class_scores.setdefault(key, []).append(scores)
            per_class_hits.setdefault(key, []).append(hits)
    metrics: dict[str, float] = {}
    average_precisions = []
    for key in sorted(positives, key=str):
        if positives[key] == 0:
            continue
        ap = average_precision(np.concatenate(per_class_scores[key]),
                               np.concatenate(per_class_hits[key]), positives[key])
        average_precisions.append(ap)
        name = class_names.get(key, str(key)) if class_names else str(key)
        metrics[f"{PREFIX}_PerformanceByCategory/AP@{iou_threshold}IOU/{name}"] = ap
    mean_ap = float(np.mean(average_precisions)) if average_precisions else float("nan")
    return {f"{PREFIX}_Precision/mAP@{iou_threshold}IOU": mean_ap, **metrics}


def _coco_rle(segmentation, height: int, width: int) -> dict:
    if isinstance(segmentation, list):  # polygons
        return mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    if isinstance(segmentation.get("counts"), list):  # uncompressed RLE
        return mask_utils.frPyObjects(segmentation, height, width)
    return to_rles([segmentation])[0]


def from_coco(coco_groundtruth: Mapping, coco_results: Iterable[Mapping]
              ) -> tuple[dict, dict, dict]:
    """COCO ground truth (a dataset dict, e.g. models.evaluation.coco_groundtruth.coco_groundtruth) and
    COCO results -> (groundtruth, predictions, class names) for evaluate_oid_challenge.
    Class keys are the category ids; iscrowd marks group-of instances."""
    sizes = {image["id"]: (image["height"], image["width"])
             for image in coco_groundtruth["images"]}
    groundtruth = {i: ImageGroundTruth([], [], []) for i in sizes}
    for annotation in coco_groundtruth["annotations"]:
        truth = groundtruth[annotation["image_id"]]
        truth.classes.append(annotation["category_id"])
        truth.masks.append(_coco_rle(annotation.get("segmentation", []),
                                     *sizes[annotation["image_id"]]))
        truth.group_of.append(bool(annotation.get("iscrowd", 0)))
    predictions: dict = {}
    for result in coco_results:
        if result["image_id"] not in sizes or float(result["score"]) <= 0.0:
            continue
        found = predictions.setdefault(result["image_id"], ImagePredictions([], [], []))
        found.classes.append(int(result["category_id"]))
        found.scores.append(float(result["score"]))
        found.masks.append(_coco_rle(result["segmentation"], *sizes[result["image_id"]]))
    names = {c["id"]: c["name"] for c in coco_groundtruth.get("categories", [])}
    return groundtruth, predictions, names


def evaluate_oid_challenge_coco(coco_groundtruth: Mapping, coco_results: Iterable[Mapping],
                                tree: ClassTree | None = None, iou_threshold: float = 0.5
                                ) -> dict[str, float]:
    """The metric from COCO-format ground truth and results (tree keyed by category id)."""
    groundtruth, predictions, names = from_coco(coco_groundtruth, coco_results)
    return evaluate_oid_challenge(groundtruth, predictions, tree, iou_threshold, names)


class OidChallengeMetric:
    """Stands in for Model Garden's COCOEvaluator as `task.coco_metric`: passes every batch
    on, and at result() adds this metric computed on the same predictions (pasted to image
    size by Model Garden's own converter). COCO metrics stay in the result; the evaluation
    driver keeps the metric sets the config asks for."""

    def __init__(self, coco_metric, coco_groundtruth: Mapping, tree: ClassTree | None = None,
                 iou_threshold: float = 0.5):
        self._coco = coco_metric
        self.name = coco_metric.name
        self._groundtruth = coco_groundtruth
        self._tree = tree
        self._iou_threshold = iou_threshold

    def reset_states(self) -> None:
        self._coco.reset_states()

    def update_state(self, groundtruths, predictions) -> None:
        self._coco.update_state(groundtruths, predictions)

    def result(self) -> dict:
        from official.vision.evaluation import coco_utils

        # COCOEvaluator keeps its batches in _predictions until result() resets it.
        batches = getattr(self._coco, "_predictions", {})
        results = coco_utils.convert_predictions_to_coco_annotations(batches) if batches else []
        metrics = dict(self._coco.result())
        metrics.update(evaluate_oid_challenge_coco(self._groundtruth, results, self._tree,
                                                   self._iou_threshold))
        return metrics


def wrap_coco_metric(coco_metric, annotation_file: str | Path, label_map_path: str = "",
                     iou_threshold: float = 0.5) -> OidChallengeMetric:
    """The task's COCO evaluator wrapped for `metrics_set: "oid_challenge_segmentation_metrics"`:
    ground truth from the COCO file the evaluation driver wrote, the class tree from the eval
    label map's ancestor_ids / descendant_ids (none given: classes are scored flat)."""
    from records.label_map import read_label_map

    groundtruth = json.loads(Path(annotation_file).read_text(encoding="utf-8"))
    tree = ClassTree.from_label_map(read_label_map(label_map_path)) if label_map_path else None
    return OidChallengeMetric(coco_metric, groundtruth, tree, iou_threshold)
