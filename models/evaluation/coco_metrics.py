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
"""
from __future__ import annotations

import contextlib
import copy
import io
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

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


def score_coco(ground_truth: COCO, results: Sequence[dict], image_ids: Sequence[int],
               include_masks: bool | None = None, per_category: bool = False
               ) -> dict[str, float]:
    """COCO metrics of `results` on the images `image_ids` of `ground_truth`.

    include_masks: also score masks (None: when the results carry segmentations).
    Without results every metric is 0.
    """
    if include_masks is None:
        include_masks = bool(results) and "segmentation" in results[0]
    metrics: dict[str, float] = {}
    for iou_type in ("bbox", "segm") if include_masks else ("bbox",):
        prefix = PREFIXES[iou_type]
        if not results:
            metrics.update({prefix + name: 0.0 for _, name in COCO_STATS})
            continue
        with contextlib.redirect_stdout(io.StringIO()):
            # COCO's own loadRes, also on Model Garden's COCOWrapper (which overrides it)
            detections = COCO.loadRes(ground_truth, _results_for(iou_type, results))
            evaluation = COCOeval(ground_truth, detections, iou_type)
            evaluation.params.imgIds = list(image_ids)
            evaluation.evaluate()
            evaluation.accumulate()
            evaluation.summarize()
        metrics.update({prefix + name: float(value)
                        for (_, name), value in zip(COCO_STATS, evaluation.stats)})
        if per_category:
            metrics.update(_per_category(evaluation, ground_truth, prefix))
    return metrics


class CocoMetric(coco_evaluator.COCOEvaluator):
    """Model Garden's COCOEvaluator (it gathers each batch's predictions in original pixels
    and pastes masks at image size) scoring with `score_coco` instead of its own COCOeval
    code, so evaluation reports the OD API's names and counts every evaluated image."""

    def __init__(self, annotation_file: str, include_mask: bool, per_category: bool = False):
        super().__init__(annotation_file=annotation_file, include_mask=include_mask,
                         per_category_metrics=per_category)

    def evaluate(self) -> dict[str, float]:
        image_ids = sorted({int(i) for batch in self._predictions.get("source_id", [])
                            for i in np.asarray(batch).reshape(-1)})
        results = (coco_utils.convert_predictions_to_coco_annotations(self._predictions)
                   if image_ids else [])
        return score_coco(self._coco_gt, results, image_ids, self._include_mask,
                          self._per_category_metrics)
