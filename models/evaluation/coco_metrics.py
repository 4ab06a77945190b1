"""The one COCO scorer: box and mask mAP under the Object Detection API's metric names.

Continuous evaluation (through `CocoMetric`, the task's evaluator) and inference on image
files (`python -m models.tools.infer --annotations ...`) both score with `score_coco`, so a
checkpoint and its export get the same numbers from the same predictions. Every evaluated
image counts, with or without detections. Each IoU type is scored as the COCO API loads
such results: box results by their boxes (area = box area), mask results by their masks
(area = mask area, box = the mask's bounding box).

Names: `DetectionBoxes_Precision/mAP`, `DetectionMasks_Precision/mAP@.50IOU`,
`DetectionBoxes_Recall/AR@100 (small)`, ... and, with per_category,
`DetectionBoxes_PerformanceByCategory/mAP/<class name>`, as the OD API writes them.

The COCOeval runs themselves are available to other views of the same numbers:
`score_coco(..., evaluations={})` hands them back, `run_cocoeval` runs one with other
parameters (models/analysis' error breakdown), and `precision_recall` reads the
precision-recall curves out of one (the analysis pictures and TensorBoard's PR curves).
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import io
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np
from official.vision.evaluation import coco_evaluator, coco_utils
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from models.evaluation.coco_groundtruth import GroundTruthError

if TYPE_CHECKING:
    from models.serving.saved_model_client import Detections

# COCOeval.stats, in its order, and the OD API's name of each
COCO_STATS = (
    ("AP", "Precision/mAP"), ("AP50", "Precision/mAP@.50IOU"),
    ("AP75", "Precision/mAP@.75IOU"), ("APs", "Precision/mAP (small)"),
    ("APm", "Precision/mAP (medium)"), ("APl", "Precision/mAP (large)"),
    ("ARmax1", "Recall/AR@1"), ("ARmax10", "Recall/AR@10"), ("ARmax100", "Recall/AR@100"),
    ("ARs", "Recall/AR@100 (small)"), ("ARm", "Recall/AR@100 (medium)"),
    ("ARl", "Recall/AR@100 (large)"),
)
PREFIXES = {"bbox": "DetectionBoxes_", "segm": "DetectionMasks_"}
BOX_MAP = "DetectionBoxes_Precision/mAP"
MASK_MAP = "DetectionMasks_Precision/mAP"
PR_CURVE_IOUS = (0.5, 0.75)  # CocoMetric.curves
MAX_CLASSES_WITH_CURVES = 20  # more classes: per-class curves only with per_category


def metric_name(iou_type: str, stat: str) -> str:
    """e.g. ("segm", "AP50") -> "DetectionMasks_Precision/mAP@.50IOU"."""
    return PREFIXES[iou_type] + dict(COCO_STATS)[stat]


def load_ground_truth(path: str | Path) -> COCO:
    """A COCO annotation file, read quietly; errors name the file."""
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            return COCO(str(path))
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise GroundTruthError(f"{path}: not COCO annotations ({err})") from None


def ground_truth_from_dict(dataset: dict) -> COCO:
    """A COCO object over an in-memory data set (e.g. coco_groundtruth's)."""
    ground_truth = COCO()
    ground_truth.dataset = copy.deepcopy(dataset)
    with contextlib.redirect_stdout(io.StringIO()):
        ground_truth.createIndex()
    return ground_truth


def coco_results(image_id: int, detections: "Detections") -> list[dict]:
    """COCO results entries of one image (bbox [x, y, w, h] in pixels, RLE segmentation)."""
    entries = []
    for i in range(len(detections.scores)):
        ymin, xmin, ymax, xmax = (float(v) for v in detections.boxes[i])
        entry = {"image_id": image_id, "category_id": int(detections.classes[i]),
                 "bbox": [round(xmin, 2), round(ymin, 2), round(xmax - xmin, 2),
                          round(ymax - ymin, 2)],
                 "score": round(float(detections.scores[i]), 5)}
        if detections.masks is not None:
            rle = mask_utils.encode(np.asfortranarray(detections.masks[i].astype(np.uint8)))
            entry["segmentation"] = {"size": [int(s) for s in rle["size"]],
                                     "counts": rle["counts"].decode("ascii")}
        entries.append(entry)
    return entries


def _results_for(iou_type: str, results: Sequence[dict]) -> list[dict]:
    """Each result as the COCO API expects it for one IoU type, in plain Python numbers
    (Model Garden's converter gives NumPy values, which COCO.loadRes cannot compare)."""
    entries = []
    for result in results:
        entry = {"image_id": int(result["image_id"]), "category_id": int(result["category_id"]),
                 "score": float(result["score"])}
        if iou_type == "bbox":
            entry["bbox"] = [float(v) for v in result["bbox"]]
        else:
            entry["segmentation"] = result["segmentation"]
        entries.append(entry)
    return entries


def _per_category(evaluation: COCOeval, ground_truth: COCO, prefix: str) -> dict[str, float]:
    """AP over IoUs .50:.95 of each category (all areas, 100 detections), as the OD API's
    include_metrics_per_category reports it; categories without ground truth are -1."""
    precision = evaluation.eval["precision"]  # [iou, recall, category, area, max dets]
    metrics = {}
    for index, category_id in enumerate(evaluation.params.catIds):
        values = precision[:, :, index, 0, -1]
        values = values[values > -1]
        name = ground_truth.cats.get(category_id, {}).get("name", str(category_id))
        metrics[f"{prefix}PerformanceByCategory/mAP/{name}"] = (
            float(np.mean(values)) if values.size else -1.0)
    return metrics


def load_results(ground_truth: COCO, results: Sequence[dict], iou_type: str) -> COCO:
    """`results` as the COCO API loads them for one IoU type, quietly."""
    with contextlib.redirect_stdout(io.StringIO()):
        # COCO's own loadRes, also on Model Garden's COCOWrapper (which overrides it)
        return COCO.loadRes(ground_truth, _results_for(iou_type, results))


def run_cocoeval(ground_truth: COCO, detections: COCO, iou_type: str,
                 image_ids: Sequence[int],
                 evaluator: Callable[[COCO, COCO, str], COCOeval] = COCOeval,
                 **params) -> COCOeval:
    """One quiet COCOeval run (evaluate, accumulate) on `image_ids`; `params` replace
    COCOeval's defaults (iouThrs, useCats, maxDets, ...); `evaluator` makes the COCOeval
    (a subclass, for the error analysis's variants)."""
    with contextlib.redirect_stdout(io.StringIO()):
        evaluation = evaluator(ground_truth, detections, iou_type)
        evaluation.params.imgIds = list(image_ids)
        for name, value in params.items():
            setattr(evaluation.params, name, value)
        evaluation.evaluate()
        evaluation.accumulate()
    return evaluation


def score_coco(ground_truth: COCO, results: Sequence[dict], image_ids: Sequence[int],
               include_masks: bool | None = None, per_category: bool = False,
               evaluations: dict[str, COCOeval] | None = None) -> dict[str, float]:
    """COCO metrics of `results` on the images `image_ids` of `ground_truth`.

    include_masks: also score masks (None: when the results carry segmentations).
    Without results every metric is 0. evaluations: when given, receives each IoU type's
    COCOeval ("bbox", "segm"), for views of the same evaluation (PR curves, error analysis).
    """
    if include_masks is None:
        include_masks = bool(results) and "segmentation" in results[0]
    metrics: dict[str, float] = {}
    for iou_type in ("bbox", "segm") if include_masks else ("bbox",):
        prefix = PREFIXES[iou_type]
        if not results:
            metrics.update({prefix + name: 0.0 for _, name in COCO_STATS})
            continue
        evaluation = run_cocoeval(ground_truth, load_results(ground_truth, results, iou_type),
                                  iou_type, image_ids)
        with contextlib.redirect_stdout(io.StringIO()):
            evaluation.summarize()
        metrics.update({prefix + name: float(value)
                        for (_, name), value in zip(COCO_STATS, evaluation.stats)})
        if per_category:
            metrics.update(_per_category(evaluation, ground_truth, prefix))
        if evaluations is not None:
            evaluations[iou_type] = evaluation
    return metrics


@dataclasses.dataclass(frozen=True)
class PrecisionRecall:
    """One precision-recall curve as COCOeval integrates it for AP: the interpolated
    (monotone) precision at each of its recall points, all areas, 100 detections."""

    iou_type: str  # "bbox" or "segm"
    iou: float  # the IoU threshold, one of COCOeval's
    name: str  # the class name, or OVERALL (the mean over classes with ground truth)
    recall: np.ndarray  # [R] COCOeval's recall points, 0 .. 1
    precision: np.ndarray  # [R]; 0 beyond the highest recall reached
    positives: int  # ground-truth objects counted (not crowd)

    @property
    def average_precision(self) -> float:
        return float(np.mean(self.precision))


OVERALL = "overall"


def precision_recall(evaluation: COCOeval, ground_truth: COCO, iou: float,
                     per_class: bool = True) -> list[PrecisionRecall]:
    """The curves of an accumulated COCOeval at IoU threshold `iou`: the overall curve first,
    then (per_class) one per class that has ground truth."""
    params = evaluation.params
    t = int(np.argmin(np.abs(np.asarray(params.iouThrs) - iou)))
    if abs(params.iouThrs[t] - iou) > 1e-6:
        raise ValueError(f"IoU {iou} is not among the evaluation's {list(params.iouThrs)}")
    precision = evaluation.eval["precision"][t, :, :, 0, -1]  # [R, K]
    positives = _positives(evaluation)
    recall = np.asarray(params.recThrs, np.float64)
    curves = []
    counted = [k for k in range(precision.shape[1]) if precision[0, k] > -1]
    for k in counted if per_class else ():
        category_id = params.catIds[k]
        name = ground_truth.cats.get(category_id, {}).get("name", str(category_id))
        curves.append(PrecisionRecall(evaluation.params.iouType, float(params.iouThrs[t]), name,
                                      recall, precision[:, k].copy(),
                                      positives.get(category_id, 0)))
    mean = (np.mean(precision[:, counted], axis=1) if counted
            else np.zeros_like(recall))
    overall = PrecisionRecall(evaluation.params.iouType, float(params.iouThrs[t]), OVERALL,
                              recall, mean, sum(positives.values()))
    return [overall] + curves


def _positives(evaluation: COCOeval) -> dict[int, int]:
    """Ground-truth objects that count (not crowd), per category, over all areas."""
    everything = list(evaluation.params.areaRng[0])
    counts: dict[int, int] = {}
    for entry in evaluation.evalImgs:
        if entry is not None and list(entry["aRng"]) == everything:
            counts[entry["category_id"]] = (counts.get(entry["category_id"], 0)
                                            + int(np.sum(np.logical_not(entry["gtIgnore"]))))
    return counts


class CocoMetric(coco_evaluator.COCOEvaluator):
    """Model Garden's COCOEvaluator (it gathers each batch's predictions in original pixels
    and pastes masks at image size) scoring with `score_coco` instead of its own COCOeval
    code, so evaluation reports the OD API's names and counts every evaluated image.

    After each evaluation `curves` holds its precision-recall curves at IoU .5 and .75
    (overall, and per class when per_category or at most MAX_CLASSES_WITH_CURVES classes),
    which the evaluation task writes to TensorBoard."""

    def __init__(self, annotation_file: str, include_mask: bool, per_category: bool = False):
        super().__init__(annotation_file=annotation_file, include_mask=include_mask,
                         per_category_metrics=per_category)
        self.curves: list[PrecisionRecall] = []

    def evaluate(self) -> dict[str, float]:
        image_ids = sorted({int(i) for batch in self._predictions.get("source_id", [])
                            for i in np.asarray(batch).reshape(-1)})
        results = (coco_utils.convert_predictions_to_coco_annotations(self._predictions)
                   if image_ids else [])
        evaluations: dict[str, COCOeval] = {}
        metrics = score_coco(self._coco_gt, results, image_ids, self._include_mask,
                             self._per_category_metrics, evaluations)
        per_class = (self._per_category_metrics
                     or len(self._coco_gt.cats) <= MAX_CLASSES_WITH_CURVES)
        self.curves = [curve for evaluation in evaluations.values() for iou in PR_CURVE_IOUS
                       for curve in precision_recall(evaluation, self._coco_gt, iou, per_class)]
        return metrics
