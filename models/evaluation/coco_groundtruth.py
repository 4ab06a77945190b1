"""COCO ground truth for evaluation, written from the evaluation records themselves.

Model Garden can build this file too, but with TensorFlow, from the first `num_examples`
records only; reading the records in Python takes a fraction of the time, honours
`sample_1_of_n_examples` exactly as the input pipeline does (every n-th record of each
file), and catches duplicate source ids, which would silently corrupt COCO metrics.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils

from core.atomic_io import write_json_atomic
from core.errors import UserError
from records.label_map import LabelMap
from records.reader import iter_examples


class GroundTruthError(UserError, ValueError):
    """The evaluation records cannot be scored with COCO metrics."""


def coco_groundtruth(patterns: list[str], label_map: LabelMap | None, num_classes: int,
                     sample_1_of_n: int = 1, include_masks: bool = True) -> dict:
    images, annotations = [], []
    seen: dict[int, str] = {}
    for path, index, example in iter_examples(patterns, label_map):
        if index % sample_1_of_n:
            continue
        where = f"{path}: record {index}"
        try:
            image_id = int(example.source_id)
        except ValueError:
            raise GroundTruthError(f"{where}: image/source_id {example.source_id!r} is not "
                                   "numeric; COCO evaluation needs numeric ids") from None
        if image_id in seen:
            raise GroundTruthError(f"{where}: image/source_id {image_id} is also used by "
                                   f"{seen[image_id]}; evaluation ids must be unique")
        seen[image_id] = where
        h, w = example.height, example.width
        images.append({"id": image_id, "height": h, "width": w, "file_name": example.filename})
        masks = example.decode_masks() if include_masks else None
        for i in range(example.num_instances):
            ymin, xmin, ymax, xmax = (example.boxes[i] * [h, w, h, w]).tolist()
            annotation = {
                "id": len(annotations) + 1, "image_id": image_id,
                "category_id": int(example.labels[i]),
                "bbox": [xmin, ymin, xmax - xmin, ymax - ymin],
                "area": float(example.areas[i]) if example.areas.size else
                float((xmax - xmin) * (ymax - ymin)),
                "iscrowd": int(example.is_crowd[i]) if example.is_crowd.size else 0,
            }
            if masks is not None and len(masks):
                rle = mask_utils.encode(np.asfortranarray(masks[i]))
                annotation["segmentation"] = {"size": rle["size"],
                                              "counts": rle["counts"].decode()}
            annotations.append(annotation)
    if not images:
        raise GroundTruthError(f"no evaluation records in {patterns}")
    categories = [{"id": i, "name": label_map.name_of(i) if label_map and label_map.get(i)
                   else str(i)} for i in range(1, num_classes + 1)]
    return {"images": images, "annotations": annotations, "categories": categories}


def write_coco_groundtruth(path: str | Path, patterns: list[str], label_map: LabelMap | None,
                           num_classes: int, sample_1_of_n: int = 1,
                           include_masks: bool = True) -> Path:
    return write_json_atomic(path, coco_groundtruth(patterns, label_map, num_classes,
                                                    sample_1_of_n, include_masks))
