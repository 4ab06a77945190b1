"""Writes synthetic scenes as a VIA 2.x JSON export: annotations/via_<split>.json.

Each object is a polygon region (its exact pixel-edge outline, the same points the COCO
writer uses) with the class name in the region attribute "shape", so converting either file
gives the same masks. Image files are expected in images/<split>/, written beforehand.
"""
from __future__ import annotations

from pathlib import Path

from core.atomic_io import write_json_atomic
from data_prep.synthetic.scenes import ShapeImage

CLASS_ATTRIBUTE = "shape"


def via_dict(images: list[ShapeImage], image_dir: Path) -> dict:
    """The export, keyed as VIA keys it: file name followed by file size in bytes (-1, as
    VIA writes for files it cannot size, when the image is not on disk)."""
    result: dict = {}
    for image in images:
        image_file = image_dir / image.file_name
        size = image_file.stat().st_size if image_file.exists() else -1
        regions = [{
            "shape_attributes": {"name": "polygon",
                                 "all_points_x": [int(x) for x, _ in obj.polygon],
                                 "all_points_y": [int(y) for _, y in obj.polygon]},
            "region_attributes": {CLASS_ATTRIBUTE: obj.class_name},
        } for obj in image.objects]
        result[f"{image.file_name}{size}"] = {"filename": image.file_name, "size": size,
                                              "regions": regions, "file_attributes": {}}
    return result


def write(images: list[ShapeImage], output_dir: Path, split: str) -> Path:
    output_dir = Path(output_dir)
    path = output_dir / "annotations" / f"via_{split}.json"
    write_json_atomic(path, via_dict(images, output_dir / "images" / split))
    return path
