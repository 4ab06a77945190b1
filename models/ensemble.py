r"""Hierarchical ensemble of the two Open Images models (layer0: depth-0 classes such as Person;
layer1: deeper classes such as Man), reported as pairs such as (Person, Man).

    python -m models.ensemble --layer0_saved_model L0/saved_model \
        --layer1_saved_model L1/saved_model --hierarchy bbox_labels_600_hierarchy.json \
        --images 'images/*.jpg' --output_dir ensemble/ [--iou_threshold 0.5] \
        [--keep_unmatched_layer1] [--score_threshold 0.5]

Rules (`match_hierarchical`, a pure function on arrays):
* Layer1 detections, best score first, each take the still unpaired layer0 detection whose
  class is an ancestor of theirs in the hierarchy and whose mask overlaps theirs most, if
  that mask IoU is at least --iou_threshold. A layer0 detection pairs at most once.
* A layer0 detection left unpaired keeps its class alone.
* A layer1 detection left unpaired is kept alone with --keep_unmatched_layer1, else dropped.
A pair's mask and box are the layer0 detection's (its model sees every instance of the
coarse class); both scores are reported.

OUTPUT_DIR gets one PNG per image (captions "Person > Man 0.91/0.84") and ensemble.json:
per image, the detections with their class names (MIDs), display names, scores, box
(pixels, ymin xmin ymax xmax) and RLE mask. Labels are matched to the hierarchy by the label
maps' item names (MIDs, as data_prep/openimages.py writes them).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from pycocotools import mask as mask_utils

RESULTS_FILE = "ensemble.json"


@dataclasses.dataclass(frozen=True)
class Pairing:
    """One reported object: indices into the layer0 and layer1 detections (None: absent)."""

    layer0: int | None
    layer1: int | None
    mask_iou: float = 0.0


def mask_iou_matrix(masks_a: Sequence, masks_b: Sequence) -> np.ndarray:
    """[len(a), len(b)] IoU of binary masks (arrays [N, H, W] or RLE dicts)."""
    from models.oid_metrics import to_rles

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
    from models.infer import coco_results

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
    detections: object  # models.infer.Detections
    names: list[str]


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from data_prep.oid_hierarchy import load_hierarchy
    from models.export import staged_directory
    from models.infer import (Detector, InferError, find_images, find_label_map,
                              picture_name, read_image, render, write_png)

    paths = find_images(args.images)
    hierarchy = load_hierarchy(args.hierarchy)
    models, label_maps = [], []
    for flag in ("layer0_saved_model", "layer1_saved_model"):
        saved_model = Path(getattr(args, flag))
        label_map = find_label_map(saved_model, getattr(args, flag.replace("saved_model",
                                                                            "label_map")))
        if label_map is None:
            raise InferError(f"--{flag}: no label_map.pbtxt beside {saved_model}; give "
                             f"--{flag.replace('saved_model', 'label_map')}")
        models.append(Detector(saved_model))
        label_maps.append(label_map)
    display = {item.name: item.label for lm in label_maps for item in lm}

    def is_ancestor(coarse: str, fine: str) -> bool:
        return fine in hierarchy and hierarchy.is_ancestor(coarse, fine)

    report, taken = [], set()
    with staged_directory(args.output_dir, RESULTS_FILE) as staging:
        for path in tqdm(paths, unit="img", desc="ensemble", disable=args.no_progress):
            image = read_image(path)
            found = []
            for detector, label_map in zip(models, label_maps):
                detections = detector(image)
                detections = detections.select(detections.scores >= args.score_threshold)
                names = [label_map.name_of(int(c)) for c in detections.classes]
                found.append(NamedDetections(detections, names))
            first, second = found
            pairings = match_hierarchical(
                first.names, first.detections.scores, _masks(first.detections),
                second.names, second.detections.scores, _masks(second.detections),
                is_ancestor, args.iou_threshold, args.keep_unmatched_layer1)
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
    print(f"{len(paths)} image(s), {sum(len(r['detections']) for r in report)} object(s), "
          f"{pairs} pair(s) -> {args.output_dir}")
    return 0


def _masks(detections) -> np.ndarray:
    from models.infer import InferError

    if detections.masks is None:
        raise InferError("a SavedModel returns no masks; export Mask R-CNN models "
                         "(number_of_stages: 3)")
    return detections.masks


def _bytes_rle(rle: dict) -> dict:
    return {"size": rle["size"], "counts": rle["counts"].encode("ascii")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m models.ensemble", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layer0_saved_model", required=True)
    parser.add_argument("--layer1_saved_model", required=True)
    parser.add_argument("--layer0_label_map", help="default: beside the layer0 saved_model/")
    parser.add_argument("--layer1_label_map", help="default: beside the layer1 saved_model/")
    parser.add_argument("--hierarchy", required=True, help="bbox_labels_600_hierarchy.json")
    parser.add_argument("--images", required=True, help="glob (quoted) or directory")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--iou_threshold", type=float, default=0.5, help="mask IoU to pair")
    parser.add_argument("--score_threshold", type=float, default=0.5,
                        help="detections of either model below this are not used")
    parser.add_argument("--keep_unmatched_layer1", action="store_true",
                        help="keep layer1 detections without a matching ancestor detection")
    parser.add_argument("--no_progress", action="store_true")
    args = parser.parse_args(argv)
    from data_prep.annotations import AnnotationFileError
    from models.export import ExportError
    from models.infer import InferError
    from records.label_map import LabelMapError

    try:
        return run(args)
    except (InferError, ExportError, AnnotationFileError, LabelMapError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
