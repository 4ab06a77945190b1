"""Writes synthetic scenes as a COCO instances file: annotations/instances_<split>.json."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils

from core.atomic_io import write_json_atomic
from data_prep.synthetic.scenes import CLASSES, ShapeImage


def coco_dict(images: list[ShapeImage], segmentation: str = "polygon") -> dict:
    """COCO instances JSON for `images`; `segmentation` is "polygon" or "rle" (compressed)."""
    result: dict = {"info": {"description": "synthetic shapes (data_prep.synthetic)"},
                    "images": [], "annotations": [],
                    "categories": [{"id": i + 1, "name": n, "supercategory": "shape"}
                                   for i, n in enumerate(CLASSES)]}
    for image_id, image in enumerate(images, start=1):
        result["images"].append({"id": image_id, "file_name": image.file_name,
                                 "width": image.width, "height": image.height})
        for obj in image.objects:
            if segmentation == "rle":
                rle = mask_utils.encode(np.asfortranarray(obj.mask))
                segm = {"size": rle["size"], "counts": rle["counts"].decode()}
            else:
                segm = [[float(v) for point in obj.polygon for v in point]]
            result["annotations"].append({
                "id": len(result["annotations"]) + 1, "image_id": image_id,
                "category_id": CLASSES.index(obj.class_name) + 1, "segmentation": segm,
                "area": float(obj.mask.sum()), "bbox": [float(v) for v in obj.bbox],
                "iscrowd": 0})
    return result


def write(images: list[ShapeImage], output_dir: Path, split: str,
          segmentation: str = "polygon") -> Path:
    path = Path(output_dir) / "annotations" / f"instances_{split}.json"
    write_json_atomic(path, coco_dict(images, segmentation))
    return path
