"""Where a model fails, as pictures: the analysis `python -m models.tools.analyze` writes.

One scoring (score_coco, the scorer evaluation and inference use) gives the COCO metrics
and the COCOeval runs every picture is read from:

  ap_per_class.png            AP@[.50:.95] and AP@.50 per class, boxes and masks
  pr_<type>.png               precision-recall curves at IoU .50 and .75, overall and per class
  errors_<type>.png           the COCO error breakdown (C75 ... FN), overall, per object size
  errors_<type>_per_class.png the same per class
  ap_by_size.png              AP of small, medium and large objects
  confusion_<type>.png        classes + background at IoU .50, detections >= score_threshold
  worst/NN_<image>.png        the images of lowest F1: predictions (left), ground truth (right)
  index.html                  all of it on one page, with the numbers; analysis.json: the numbers
  detections.json, groundtruth.json   (SavedModel + records only) what was analysed, as COCO
                              results and ground truth: `--detections ... --annotations ...`
                              analyses them again without running the model

(<type>: bbox, and segm when the results carry masks.) The output directory is written
aside and renamed into place at the end.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import re
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils

from core.atomic_io import staged_directory
from models.analysis import matching, plots
from models.analysis.error_breakdown import error_breakdown
from models.analysis.inputs import AnalysisError, AnalysisInputs
from models.analysis.page import write_page
from models.evaluation.coco_metrics import (
    OVERALL,
    PREFIXES,
    metric_name,
    precision_recall,
    score_coco,
)
from models.inference.image_io import write_png
from records.render import draw_enlarged

MARKER = "index.html"  # what makes an existing output directory ours to replace
DISPLAY_MIN_SIDE = 384  # worst-image halves are drawn at least this large
GAP = 8


@dataclasses.dataclass
class AnalysisReport:
    output_dir: Path
    metrics: dict[str, float]
    pictures: list[str]  # relative paths of the PNGs written
    worst: list[matching.ImageOutcome]


def analyze_results(inputs: AnalysisInputs, output_dir: str | Path,
                    score_threshold: float = 0.5, worst: int = 12) -> AnalysisReport:
    """Scores `inputs` once and writes every picture, index.html and analysis.json."""
    if not inputs.results:
        raise AnalysisError(f"{inputs.source}: no detections to analyse")
    log = logging.getLogger(__name__)
    truth = inputs.ground_truth
    kept = ({"detections.json": json.dumps(inputs.results),
             "groundtruth.json": json.dumps(truth.dataset)} if inputs.computed else {})
    evaluations: dict = {}
    metrics = score_coco(truth, inputs.results, inputs.image_ids, per_category=True,
                         evaluations=evaluations)
    category_ids = sorted(truth.getCatIds())
    names = [truth.cats[c].get("name", str(c)) for c in category_ids]
    summary: dict = {"source": inputs.source, "score_threshold": score_threshold,
                     "images": len(inputs.image_ids), "detections": len(inputs.results),
                     "metrics": metrics, "classes": names}
    with staged_directory(output_dir, MARKER) as staging:
        for name, text in kept.items():
            (staging / name).write_text(text + "\n")
        pictures = {}
        log.info("per-class AP, PR curves, error breakdown ...")
        pictures["ap_per_class"] = _ap_per_class(evaluations, metrics, names, staging)
        summary["errors"], summary["confusion"] = {}, {}
        for iou_type, evaluation in evaluations.items():
            curves = [c for iou in (0.5, 0.75) for c in precision_recall(evaluation, truth, iou)]
            pictures[f"pr_{iou_type}"] = plots.pr_curves(curves, staging / f"pr_{iou_type}.png")
            breakdown = error_breakdown(evaluation, inputs.supercategories)
            summary["errors"][iou_type] = breakdown.to_dict()
            pictures[f"errors_{iou_type}"] = plots.error_breakdown_overall(
                breakdown, staging / f"errors_{iou_type}.png")
            pictures[f"errors_{iou_type}_per_class"] = plots.error_breakdown_per_class(
                breakdown, staging / f"errors_{iou_type}_per_class.png")
            matrix = matching.confusion_matrix(evaluation, score_threshold)
            summary["confusion"][iou_type] = {"rows": names + ["background"],
                                              "columns": names + ["missed"],
                                              "counts": matrix.tolist()}
            pictures[f"confusion_{iou_type}"] = plots.confusion(
                matrix, names, f"{plots.TYPE_NAMES[iou_type]}: IoU >= .50, detections "
                f"scoring >= {score_threshold:g}", staging / f"confusion_{iou_type}.png")
        pictures["ap_by_size"] = _ap_by_size(evaluations, metrics, staging)
        log.info("worst images ...")
        outcomes = matching.image_outcomes(evaluations["bbox"], score_threshold)
        chosen = matching.worst_images(outcomes, worst)
        drawn = _draw_worst(inputs, evaluations, chosen, score_threshold, staging)
        summary["worst_images"] = [
            {"image_id": o.image_id, "file_name": truth.imgs[o.image_id].get("file_name", ""),
             "f1": round(o.f1, 4), "true_positives": o.true_positives,
             "false_positives": o.false_positives, "false_negatives": o.false_negatives,
             "picture": drawn.get(o.image_id)} for o in chosen]
        (staging / "analysis.json").write_text(json.dumps(summary, indent=1) + "\n")
        relative = {key: path.relative_to(staging).as_posix() for key, path in pictures.items()}
        write_page(staging / MARKER, summary, relative)
        written = sorted(p.relative_to(staging).as_posix() for p in staging.rglob("*.png"))
    return AnalysisReport(Path(output_dir), metrics, written, chosen)


def _ap_per_class(evaluations: dict, metrics: dict, names: list[str], staging: Path) -> Path:
    values: dict[str, dict[str, list[float]]] = {"AP@[.50:.95]": {}, "AP@.50": {}}
    for iou_type, evaluation in evaluations.items():
        label = plots.TYPE_NAMES[iou_type]
        values["AP@[.50:.95]"][label] = [
            metrics[f"{PREFIXES[iou_type]}PerformanceByCategory/mAP/{name}"] for name in names]
        at_50 = {c.name: c.average_precision for c in
                 precision_recall(evaluation, evaluation.cocoGt, 0.5) if c.name != OVERALL}
        values["AP@.50"][label] = [at_50.get(name, -1.0) for name in names]
    return plots.ap_per_class(names, values, staging / "ap_per_class.png")


def _ap_by_size(evaluations: dict, metrics: dict, staging: Path) -> Path:
    values = {plots.TYPE_NAMES[t]: [metrics[metric_name(t, s)] for s in ("APs", "APm", "APl")]
              for t in evaluations}
    bbox = evaluations["bbox"]
    objects = []
    for area in bbox.params.areaRng[1:]:  # small, medium, large: objects counted in each
        objects.append(sum(int(np.sum(np.asarray(e["gtIgnore"]) == 0))
                           for e in bbox.evalImgs
                           if e is not None and list(e["aRng"]) == list(area)))
    return plots.ap_by_size(values, objects, staging / "ap_by_size.png")


def _draw_worst(inputs: AnalysisInputs, evaluations: dict,
                chosen: list[matching.ImageOutcome], score_threshold: float, staging: Path
                ) -> dict[int, str]:
    """worst/NN_<name>.png per chosen image that could be loaded; image id -> its path.

    False positives are captioned "(wrong)" and missed objects "(missed)" (at IoU .5 on
    boxes, as the image's F1 counts them); masks are drawn when the results have them.
    """
    images = inputs.load_images([o.image_id for o in chosen]) if chosen else {}
    boxes = evaluations["bbox"]
    wrong, missed = matching.marked(boxes, score_threshold)
    truth, detections = boxes.cocoGt, boxes.cocoDt
    with_masks = evaluations.get("segm")  # its cocoDt: the same detections (ids), as masks
    name_of = {c: truth.cats[c].get("name", str(c)) for c in truth.getCatIds()}
    drawn = {}
    for rank, outcome in enumerate(chosen, 1):
        image = images.get(outcome.image_id)
        if image is None:
            continue
        found = sorted((d for d in detections.imgToAnns.get(outcome.image_id, [])
                        if d["score"] >= score_threshold), key=lambda d: -d["score"])
        left = _draw(image, found, [name_of.get(d["category_id"], str(d["category_id"]))
                                    + (" (wrong)" if d["id"] in wrong else "") for d in found],
                     [d["score"] for d in found],
                     with_masks.cocoDt if with_masks is not None else None)
        objects = truth.imgToAnns.get(outcome.image_id, [])
        right = _draw(image, objects, [name_of.get(g["category_id"], "?") + (
            " (crowd)" if g.get("iscrowd") else " (missed)" if g["id"] in missed else "")
            for g in objects], None, truth if with_masks is not None else None)
        gap = np.full((left.shape[0], GAP, 3), 255, np.uint8)
        stem = re.sub(r"[^\w.-]+", "_", Path(str(truth.imgs[outcome.image_id].get(
            "file_name") or outcome.image_id)).stem)
        path = staging / "worst" / f"{rank:02d}_{stem}.png"
        path.parent.mkdir(exist_ok=True)
        write_png(path, np.concatenate([left, gap, right], axis=1))
        drawn[outcome.image_id] = path.relative_to(staging).as_posix()
    return drawn


def _draw(image: np.ndarray, annotations: list[dict], captions: list[str], scores,
          masks_from) -> np.ndarray:
    """records/render.py's drawing of COCO annotations: their boxes, and the masks of the
    same annotation ids in `masks_from` (a COCO object) when given."""
    height, width = image.shape[:2]
    boxes = np.array([[y, x, y + h, x + w] for x, y, w, h in
                      (a["bbox"] for a in annotations)], np.float64).reshape(-1, 4)
    masks = None
    if masks_from is not None and annotations and all(
            masks_from.anns.get(a["id"], {}).get("segmentation") for a in annotations):
        masks = np.stack([mask_utils.decode(masks_from.annToRLE(masks_from.anns[a["id"]]))
                          for a in annotations])
        if masks.shape[1:] != (height, width):
            masks = None
    return draw_enlarged(image, boxes, masks, captions, scores, DISPLAY_MIN_SIDE)
