"""Hierarchical ensemble of the two Open Images models (layer0: depth-0 classes such as Person;
layer1: deeper classes such as Man), reported as pairs such as (Person, Man); the command is
`python -m models.tools.ensemble`.

Rules (`match_hierarchical`, a pure function on arrays):
* Layer1 detections, best score first, each take the still unpaired layer0 detection whose
  class is an ancestor of theirs in the hierarchy and whose mask overlaps theirs most, if
  that mask IoU is at least iou_threshold. A layer0 detection pairs at most once.
* A layer0 detection left unpaired keeps its class alone.
* A layer1 detection left unpaired is kept alone with keep_unmatched_layer1, else dropped.
A pair's mask and box are the layer0 detection's (its model sees every instance of the
coarse class); both scores are reported.

OUTPUT_DIR gets one PNG per image (captions "Person > Man 0.91/0.84") and ensemble.json:
per image, the detections with their class names (MIDs), display names, scores, box
(pixels, ymin xmin ymax xmax) and RLE mask. Labels are matched to the hierarchy by the label
maps' item names (MIDs, as data_prep/formats/openimages.py writes them).
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from pycocotools import mask as mask_utils

from core.atomic_io import staged_directory
from models.evaluation.coco_metrics import coco_results
from models.evaluation.oid_challenge import to_rles
from models.inference.image_io import (
    InferError,
    find_images,
    find_label_map,
    picture_name,
    read_image,
    render,
    write_png,
)
from models.serving.saved_model_client import Detections, Detector
from records.class_hierarchy import load_hierarchy

RESULTS_FILE = "ensemble.json"


@dataclasses.dataclass(frozen=True)
class Pairing:
    """One reported object: indices into the layer0 and layer1 detections (None: absent)."""

    layer0: int | None
    layer1: int | None
    mask_iou: float = 0.0


def mask_iou_matrix(masks_a: Sequence, masks_b: Sequence) -> np.ndarray:
    """[len(a), len(b)] IoU of binary masks (arrays [N, H, W] or RLE dicts)."""
    rles_a, rles_b = to_rles(masks_a), to_rles(masks_b)
    if not rles_a or not rles_b:
        return np.zeros((len(rles_a), len(rles_b)))
    return np.asarray(mask_utils.iou(rles_a, rles_b, [0] * len(rles_b))).reshape(
        len(rles_a), len(rles_b))


def match_hierarchical(layer0_classes: Sequence[str], layer0_scores: Sequence[float],
                       layer0_masks: Sequence, layer1_classes: Sequence[str],
                       layer1_scores: Sequence[float], layer1_masks: Sequence,
                       is_ancestor: Callable[[str, str], bool], iou_threshold: float = 0.5,
                       keep_unmatched_layer1: bool = False) -> list[Pairing]:
    """Pairs layer1 detections with layer0 detections of an ancestor class (module doc).

    Returns the pairs (best layer1 score first), then unpaired layer0 detections, then (if
    kept) unpaired layer1 detections, each group best score first.
    """
    iou = mask_iou_matrix(layer0_masks, layer1_masks)
    scores0 = np.asarray(layer0_scores, np.float64)
    scores1 = np.asarray(layer1_scores, np.float64)
    paired0 = np.zeros(len(scores0), bool)
    pairs, unmatched1 = [], []
    for j in np.argsort(-scores1, kind="stable"):
        best, best_key = None, None
        for i in range(len(scores0)):
            if paired0[i] or iou[i, j] < iou_threshold:
                continue
            if not is_ancestor(layer0_classes[i], layer1_classes[j]):
                continue
            key = (iou[i, j], scores0[i])
            if best_key is None or key > best_key:
                best, best_key = i, key
        if best is None:
            unmatched1.append(int(j))
        else:
            paired0[best] = True
            pairs.append(Pairing(int(best), int(j), float(iou[best, j])))
    alone0 = [Pairing(int(i), None) for i in np.argsort(-scores0, kind="stable")
              if not paired0[i]]
    alone1 = [Pairing(None, j) for j in unmatched1] if keep_unmatched_layer1 else []
    return pairs + alone0 + alone1


def _describe(pairing: Pairing, first, second, label_of: Callable[[str], str]) -> dict:
    """One ensemble detection as JSON-ready data (first/second: layer0/layer1 Detections
    with .names)."""
    source, index = (first, pairing.layer0) if pairing.layer0 is not None \
        else (second, pairing.layer1)
    classes = [first.names[pairing.layer0]] if pairing.layer0 is not None else []
    scores = [float(first.detections.scores[pairing.layer0])] if classes else []
    if pairing.layer1 is not None:
        classes.append(second.names[pairing.layer1])
        scores.append(float(second.detections.scores[pairing.layer1]))
    entry = coco_results(0, source.detections.select(np.array([index])))[0]
    ymin, xmin, ymax, xmax = (round(float(v), 2) for v in source.detections.boxes[index])
    return {"classes": classes, "display_names": [label_of(c) for c in classes],
            "scores": [round(s, 5) for s in scores], "mask_iou": round(pairing.mask_iou, 4),
            "box": [ymin, xmin, ymax, xmax], "segmentation": entry.get("segmentation")}


@dataclasses.dataclass
class NamedDetections:
    detections: Detections
    names: list[str]


@dataclasses.dataclass
class EnsembleReport:
    images: int
    objects: int
    pairs: int


def run_ensemble(layer0_saved_model: str | Path, layer1_saved_model: str | Path,
                 hierarchy_path: str | Path, images: str, output_dir: str | Path,
                 layer0_label_map: str | None = None, layer1_label_map: str | None = None,
                 iou_threshold: float = 0.5, score_threshold: float = 0.5,
                 keep_unmatched_layer1: bool = False, progress: bool = True) -> EnsembleReport:
    """Runs both models on every image and writes the pictures and ensemble.json."""
    from tqdm import tqdm

    paths = find_images(images)
    hierarchy = load_hierarchy(hierarchy_path)
    models, label_maps = [], []
    for flag, saved_model, given in (("layer0", layer0_saved_model, layer0_label_map),
                                     ("layer1", layer1_saved_model, layer1_label_map)):
        saved_model = Path(saved_model)
        label_map = find_label_map(saved_model, given)
        if label_map is None:
            raise InferError(f"--{flag}_saved_model: no label_map.pbtxt beside {saved_model}; "
                             f"give --{flag}_label_map")
        models.append(Detector(saved_model))
        label_maps.append(label_map)
    display = {item.name: item.label for lm in label_maps for item in lm}

    def is_ancestor(coarse: str, fine: str) -> bool:
        return fine in hierarchy and hierarchy.is_ancestor(coarse, fine)

    report, taken = [], set()
    with staged_directory(output_dir, RESULTS_FILE) as staging:
        for path in tqdm(paths, unit="img", desc="ensemble", disable=not progress):
            image = read_image(path)
            found = []
            for detector, label_map in zip(models, label_maps):
                detections = detector(image)
                detections = detections.select(detections.scores >= score_threshold)
                names = [label_map.name_of(int(c)) for c in detections.classes]
                found.append(NamedDetections(detections, names))
            first, second = found
            pairings = match_hierarchical(
                first.names, first.detections.scores, _masks(first.detections),
                second.names, second.detections.scores, _masks(second.detections),
                is_ancestor, iou_threshold, keep_unmatched_layer1)
            described = [_describe(p, first, second, lambda c: display.get(c, c))
                         for p in pairings]
            report.append({"image": str(path), "detections": described})
            boxes = np.array([d["box"] for d in described], np.float64).reshape(-1, 4)
            masks = np.stack([mask_utils.decode(_bytes_rle(d["segmentation"]))
                              for d in described]) if described else None
            captions = [" > ".join(d["display_names"]) for d in described]
            shown_scores = [d["scores"][-1] for d in described]
            write_png(staging / picture_name(path, taken),
                      render(image, boxes, masks, captions, np.array(shown_scores)))
        (staging / RESULTS_FILE).write_text(json.dumps(report, indent=1) + "\n")
    pairs = sum(len(d["classes"]) == 2 for r in report for d in r["detections"])
    return EnsembleReport(len(paths), sum(len(r["detections"]) for r in report), pairs)


def _masks(detections) -> np.ndarray:
    if detections.masks is None:
        raise InferError("a SavedModel returns no masks; export Mask R-CNN models "
                         "(number_of_stages: 3)")
    return detections.masks


def _bytes_rle(rle: dict) -> dict:
    return {"size": rle["size"], "counts": rle["counts"].encode("ascii")}
