"""The COCO error breakdown, as the COCO API's CocoEval.analyze() defines it (Derek Hoiem's
analysis of false positives), computed from COCOeval runs of our one scorer.

Seven precision-recall curves per class and object size, each at least the one before:

  C75  precision at IoU .75 (the COCO curve)           C50  at IoU .50
  Loc  at IoU .10: localization errors forgiven (duplicate detections still count)
  Sim  also forgiven: detections on an object of another class of the same supercategory
  Oth  also forgiven: detections on an object of any other class
  BG   also forgiven: every remaining false positive (background, duplicates): precision 1
       wherever Oth reaches the recall at all
  FN   1 everywhere: what is left above BG is recall never reached, i.e. missed objects

The area under each curve is its "AP" (C75 is AP75, C50 is AP50); the band between two
curves is what that kind of error costs. Loc, Sim and Oth are COCOeval runs at IoU .1 with
maxDets 100; Sim and Oth match one class's detections against the objects of every class
(useCats 0), counting that class's objects only and ignoring (not counting, but matching)
the others of the same supercategory (Sim) or of any class (Oth). Classes without a
supercategory have no similar classes (their Sim equals Loc). Unlike the MATLAB code, the
averages over classes leave out classes without ground truth in that size range, as
COCOeval's mAP does.
"""
from __future__ import annotations

import dataclasses
import functools
from collections import defaultdict
from typing import Mapping

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from models.evaluation.coco_metrics import run_cocoeval

KINDS = ("C75", "C50", "Loc", "Sim", "Oth", "BG", "FN")
AREAS = ("all", "small", "medium", "large")  # COCOeval's default area ranges, in its order
LOOSE_IOU = 0.1


class _OneClassEval(COCOeval):
    """COCOeval of one class's detections against every class's objects (run with
    useCats=0): objects of `ignored` classes are matched but not counted (a detection on
    one is neither right nor wrong); objects of the other classes are dropped."""

    def __init__(self, ground_truth: COCO, detections: COCO, iou_type: str, *, target: int,
                 ignored: frozenset[int]):
        super().__init__(ground_truth, detections, iou_type)
        self._target, self._ignored = target, ignored

    def _prepare(self) -> None:
        super()._prepare()
        self._dts = defaultdict(list, {key: found for key, found in self._dts.items()
                                       if key[1] == self._target})
        objects = defaultdict(list)
        for (image_id, category_id), found in self._gts.items():
            if category_id == self._target:
                objects[image_id, category_id] = found
            elif category_id in self._ignored:  # copies: the ground truth stays as it was
                objects[image_id, category_id] = [dict(g, ignore=1) for g in found]
        self._gts = objects


@dataclasses.dataclass
class ErrorBreakdown:
    """The seven curves of every class and size, and their averages."""

    iou_type: str
    recall: np.ndarray  # [R]
    class_names: list[str]  # [K], in category-id order
    curves: np.ndarray  # [7, R, K, A] KINDS x recall points x classes x AREAS
    counted: np.ndarray  # [K, A] bool: the class has ground truth of that size

    def overall(self) -> np.ndarray:
        """[7, R, A]: the mean curve over the classes counted in each size range."""
        weights = self.counted.astype(np.float64)  # [K, A]
        total = np.maximum(weights.sum(axis=0), 1)
        return np.einsum("trka,ka->tra", self.curves, weights) / total

    def areas_under(self, curves: np.ndarray) -> np.ndarray:
        """The "AP" of each curve: its mean over the recall points (axis 1)."""
        return curves.mean(axis=1)

    def to_dict(self) -> dict:
        """Overall and per-class areas under the curves, for analysis.json."""
        overall = self.areas_under(self.overall())  # [7, A]
        per_class = self.areas_under(self.curves)  # [7, K, A]
        return {
            "overall": {area: {kind: round(float(overall[t, a]), 4)
                               for t, kind in enumerate(KINDS)}
                        for a, area in enumerate(AREAS) if self.counted[:, a].any()},
            "per_class": {name: {kind: round(float(per_class[t, k, 0]), 4)
                                 for t, kind in enumerate(KINDS)}
                          for k, name in enumerate(self.class_names) if self.counted[k, 0]},
        }


def _iou_index(evaluation: COCOeval, iou: float) -> int:
    thresholds = np.asarray(evaluation.params.iouThrs)
    (found,) = np.flatnonzero(np.abs(thresholds - iou) < 1e-6)
    return int(found)


def error_breakdown(evaluation: COCOeval, supercategories: Mapping[int, str | None]
                    ) -> ErrorBreakdown:
    """The breakdown from an accumulated standard COCOeval (score_coco's) and each
    category id's supercategory (None: none)."""
    ground_truth, detections = evaluation.cocoGt, evaluation.cocoDt
    params = evaluation.params
    iou_type, image_ids = params.iouType, list(params.imgIds)
    category_ids = list(params.catIds)
    standard = evaluation.eval["precision"][..., -1]  # [T, R, K, A] at 100 detections
    _, recall_points, classes, areas = standard.shape
    curves = np.zeros((len(KINDS), recall_points, classes, areas))
    curves[0] = standard[_iou_index(evaluation, 0.75)]
    curves[1] = standard[_iou_index(evaluation, 0.5)]
    counted = standard[0, 0] > -1  # [K, A]
    run = functools.partial(run_cocoeval, ground_truth, detections, iou_type, image_ids,
                            iouThrs=np.array([LOOSE_IOU]), maxDets=[100])
    curves[2] = run().eval["precision"][0, :, :, :, 0]
    for k, category_id in enumerate(category_ids):
        if not counted[k, 0]:
            continue
        others = frozenset(category_ids) - {category_id}
        family = supercategories.get(category_id)
        similar = frozenset(c for c in others
                            if family is not None and supercategories.get(c) == family)
        if similar:
            curves[3, :, k] = _one_class(run, category_id, similar)
        else:
            curves[3, :, k] = curves[2, :, k]
        curves[4, :, k] = _one_class(run, category_id, others)
    curves[curves < 0] = 0  # -1: no ground truth of that class and size
    curves[5] = curves[4] > 0
    curves[6] = 1
    names = [ground_truth.cats[c].get("name", str(c)) for c in category_ids]
    return ErrorBreakdown(iou_type, np.asarray(params.recThrs), names, curves, counted)


def _one_class(run, target: int, ignored: frozenset[int]) -> np.ndarray:
    """[R, A]: precision of class `target` at IoU .1 with the objects of `ignored` forgiven."""
    evaluator = functools.partial(_OneClassEval, target=target, ignored=ignored)
    evaluation = run(evaluator=evaluator, useCats=0)
    return evaluation.eval["precision"][0, :, 0, :, 0]
