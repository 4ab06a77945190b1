"""Per-image outcomes and the confusion matrix, read from COCOeval's own matching.

Both look at the detections scoring at least a threshold (what a user would keep), at IoU
.5, all object sizes, at most 100 detections per class and image. COCOeval matches each
class's detections greedily, best score first, so the matches among the kept detections are
exactly COCOeval's matches restricted to them:

* a kept detection matched to an object of its class is a true positive; one matching
  nothing is a false positive (a duplicate of a found object included); one on a crowd
  region counts as neither;
* an object (not crowd) matched by no kept detection is a false negative.

Image score: F1 = 2 TP / (2 TP + FP + FN), 1 for an image with nothing to find and nothing
found. The worst images are those with the lowest F1 (ties: more errors first).

Confusion matrix, rows = ground truth (the classes, then "background": a false positive
that no object explains), columns = prediction (the classes, then "missed"): true positives
on the diagonal; each remaining false positive, best score first, is paired with the
unmatched object of another class it overlaps most (IoU >= .5) and counted in that object's
row; false positives left over go to the background row, objects left over to "missed".
"""
from __future__ import annotations

import dataclasses

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.cocoeval import COCOeval

IOU = 0.5


@dataclasses.dataclass
class ImageOutcome:
    image_id: int
    true_positives: int = 0
    false_positives: int = 0
    false_negatives: int = 0

    @property
    def errors(self) -> int:
        return self.false_positives + self.false_negatives

    @property
    def f1(self) -> float:
        found = 2 * self.true_positives
        return found / (found + self.errors) if found + self.errors else 1.0


@dataclasses.dataclass
class _Kept:
    """One image's kept detections and objects left unmatched, for the confusion matrix."""

    false_positives: list[tuple[float, int, int]] = dataclasses.field(default_factory=list)
    missed: list[tuple[int, int]] = dataclasses.field(default_factory=list)  # (gt id, class)


def _entries(evaluation: COCOeval):
    """The evalImgs entries of all sizes (one per image and class that has anything)."""
    everything = list(evaluation.params.areaRng[0])
    return [e for e in evaluation.evalImgs if e is not None and list(e["aRng"]) == everything]


def _match(evaluation: COCOeval, score_threshold: float, iou: float = IOU):
    """Yields per entry: (entry, TP mask, FP mask) over its detections and its objects'
    missed mask."""
    t = int(np.argmin(np.abs(np.asarray(evaluation.params.iouThrs) - iou)))
    for entry in _entries(evaluation):
        scores = np.asarray(entry["dtScores"], np.float64)
        kept = scores >= score_threshold
        matched = entry["dtMatches"][t] > 0
        ignored = entry["dtIgnore"][t].astype(bool)
        kept_ids = {d for d, k in zip(entry["dtIds"], kept) if k}
        found = np.array([int(m) in kept_ids for m in entry["gtMatches"][t]], bool)
        counted = np.asarray(entry["gtIgnore"]) == 0
        yield entry, kept & matched & ~ignored, kept & ~matched & ~ignored, counted & ~found


def image_outcomes(evaluation: COCOeval, score_threshold: float) -> dict[int, ImageOutcome]:
    """TP, FP and FN of every evaluated image (images with nothing at all included)."""
    outcomes = {int(i): ImageOutcome(int(i)) for i in evaluation.params.imgIds}
    for entry, true_positives, false_positives, missed in _match(evaluation,
                                                                  score_threshold):
        outcome = outcomes[int(entry["image_id"])]
        outcome.true_positives += int(true_positives.sum())
        outcome.false_positives += int(false_positives.sum())
        outcome.false_negatives += int(missed.sum())
    return outcomes


def marked(evaluation: COCOeval, score_threshold: float) -> tuple[set[int], set[int]]:
    """The ids of the kept detections that are false positives, and of the missed objects
    (annotation ids of evaluation.cocoDt and cocoGt), to mark them in pictures."""
    wrong, missed_ids = set(), set()
    for entry, _, false_positives, missed in _match(evaluation, score_threshold):
        wrong |= {int(entry["dtIds"][i]) for i in np.flatnonzero(false_positives)}
        missed_ids |= {int(entry["gtIds"][i]) for i in np.flatnonzero(missed)}
    return wrong, missed_ids


def worst_images(outcomes: dict[int, ImageOutcome], count: int) -> list[ImageOutcome]:
    """The `count` images with the lowest F1 (more errors first, then by id); images
    without errors are never among them."""
    failing = [o for o in outcomes.values() if o.errors]
    return sorted(failing, key=lambda o: (o.f1, -o.errors, o.image_id))[:count]


def confusion_matrix(evaluation: COCOeval, score_threshold: float) -> np.ndarray:
    """[K + 1, K + 1] counts (module docstring), classes in category-id order."""
    category_ids = list(evaluation.params.catIds)
    index = {c: i for i, c in enumerate(category_ids)}
    background = len(category_ids)
    matrix = np.zeros((background + 1, background + 1), np.int64)
    per_image: dict[int, _Kept] = {}
    for entry, true_positives, false_positives, missed in _match(evaluation,
                                                                  score_threshold):
        k = index[entry["category_id"]]
        matrix[k, k] += int(true_positives.sum())
        kept = per_image.setdefault(int(entry["image_id"]), _Kept())
        kept.false_positives += [(entry["dtScores"][i], entry["dtIds"][i], k)
                                 for i in np.flatnonzero(false_positives)]
        kept.missed += [(entry["gtIds"][i], k) for i in np.flatnonzero(missed)]
    for kept in per_image.values():
        for row, column in _pair_across_classes(evaluation, kept):
            matrix[row, column] += 1
    return matrix


def _pair_across_classes(evaluation: COCOeval, kept: _Kept) -> list[tuple[int, int]]:
    """(row, column) of each false positive and missed object of one image."""
    background = len(evaluation.params.catIds)
    detections = sorted(kept.false_positives, key=lambda d: -d[0])
    cells = []
    if detections and kept.missed:
        ious = mask_utils.iou([_region(evaluation, "dt", d[1]) for d in detections],
                              [_region(evaluation, "gt", g[0]) for g in kept.missed],
                              [0] * len(kept.missed))
        ious = np.asarray(ious, np.float64).reshape(len(detections), len(kept.missed))
        free = np.ones(len(kept.missed), bool)
        for d, (_, _, column) in enumerate(detections):
            candidates = np.where(free & (ious[d] >= IOU), ious[d], -1.0)
            g = int(np.argmax(candidates))
            if candidates[g] < 0:
                cells.append((background, column))
                continue
            free[g] = False
            cells.append((kept.missed[g][1], column))
        cells += [(kept.missed[g][1], background) for g in np.flatnonzero(free)]
    else:
        cells += [(background, column) for _, _, column in detections]
        cells += [(row, background) for _, row in kept.missed]
    return cells


def _region(evaluation: COCOeval, side: str, annotation_id: int):
    """An annotation's box [x, y, w, h] or its RLE, as this evaluation compares them."""
    coco = evaluation.cocoGt if side == "gt" else evaluation.cocoDt
    annotation = coco.anns[annotation_id]
    if evaluation.params.iouType == "segm":
        return coco.annToRLE(annotation)
    return annotation["bbox"]
