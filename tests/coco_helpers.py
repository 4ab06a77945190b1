"""Builders of COCO test inputs shared by the conversion and benchmark tests."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils

from tests.conftest import run_command


def disc_mask(size: int, cy: float, cx: float, radius: float) -> np.ndarray:
    """A filled circle in a size x size 0/1 mask (pixel centres at +0.5)."""
    yy, xx = np.mgrid[:size, :size] + 0.5
    return ((yy - cy) ** 2 + (xx - cx) ** 2 <= radius ** 2).astype(np.uint8)


def uncompressed_rle(mask: np.ndarray) -> dict:
    """COCO's uncompressed RLE: run lengths over the column-major pixels, zeros first."""
    flat = mask.ravel(order="F")
    changes = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], changes, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat[0]:
        counts = [0] + counts
    return {"counts": counts, "size": list(mask.shape)}


def rich_coco(shapes_dir: Path) -> dict:
    """The synthetic train split rewritten to use every COCO segmentation form:
    multi-part polygons, uncompressed and compressed RLE, crowd in both forms, and
    non-contiguous category ids."""
    data = json.loads((shapes_dir / "annotations/instances_train.json").read_text())
    remap = {1: 3, 2: 7, 3: 90, 4: 12}
    for cat in data["categories"]:
        cat["id"] = remap[cat["id"]]
    sizes = {img["id"]: (img["height"], img["width"]) for img in data["images"]}
    anns = data["annotations"]
    for i, ann in enumerate(anns):
        ann["category_id"] = remap[ann["category_id"]]
        h, w = sizes[ann["image_id"]]
        mask = mask_utils.decode(mask_utils.merge(
            mask_utils.frPyObjects(ann["segmentation"], h, w)))
        kind = i % 5
        if kind == 1:
            ann["segmentation"] = uncompressed_rle(mask)
        elif kind == 2:
            rle = mask_utils.encode(np.asfortranarray(mask))
            ann["segmentation"] = {"size": rle["size"], "counts": rle["counts"].decode()}
        elif kind == 3:
            ann["iscrowd"] = 1  # crowd stored as a polygon: Model Garden's tool crashes here
        elif kind == 4:
            ann["iscrowd"] = 1
            ann["segmentation"] = uncompressed_rle(mask)
    # Two-part polygons: merge each image's first two polygon annotations into one.
    by_image: dict[int, list[dict]] = {}
    for ann in anns:
        if isinstance(ann["segmentation"], list) and not ann["iscrowd"]:
            by_image.setdefault(ann["image_id"], []).append(ann)
    for group in by_image.values():
        if len(group) >= 2:
            first, second = group[:2]
            first["segmentation"] = first["segmentation"] + second["segmentation"]
            x0 = min(first["bbox"][0], second["bbox"][0])
            y0 = min(first["bbox"][1], second["bbox"][1])
            x1 = max(first["bbox"][0] + first["bbox"][2], second["bbox"][0] + second["bbox"][2])
            y1 = max(first["bbox"][1] + first["bbox"][3], second["bbox"][1] + second["bbox"][3])
            first["bbox"] = [x0, y0, x1 - x0, y1 - y0]
            anns.remove(second)
    return data


def convert(annotations: Path, images_dir: Path, output_dir: Path, *extra: str,
            split: str = "train", check: bool = True):
    return run_command("data_prep/create_tfrecords.py", "--format", "coco",
                       "--annotations", str(annotations), "--images_dir", str(images_dir),
                       "--output_dir", str(output_dir), "--split", split, "--no_progress",
                       *extra, check=check)
