"""Writes synthetic scenes in the Open Images instance segmentation layout.

annotations/openimages_<split>/ holds <split>-annotations-object-segmentation.csv,
class-descriptions.csv (with the V6 header row), hierarchy.json and masks/*.png. Masks are
1-bit PNGs at twice the image resolution (nearest neighbour), like the real masks that come
at another resolution than their images; nearest-neighbour downscaling by 2 gives the
visible pixels back exactly. Images stay in images/<split>/ as <ImageID>.jpg.

The small hierarchy exercises every rule of records.class_hierarchy:

    Shape (depth 0)                      Symbol (depth 0)     Blob (depth 0, no children)
      Circle (1)                           Star (1)
      Polygon (1)
        Square (2), Triangle (2), Star (2)

Star has two parents (so it sits at depths 1 and 2); scenes only use the four leaves, so
tests relabel rows to Shape or Blob to exercise layer1's gray boxes and drops.
"""
from __future__ import annotations

import csv
import io
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from core.atomic_io import write_json_atomic, write_text_atomic
from data_prep.synthetic.scenes import CLASSES, ShapeImage

ROOT = "/m/0bl9f"
MIDS = {name: f"/m/shape_{name}" for name in CLASSES}
SHAPE, POLYGON, SYMBOL, BLOB = "/m/shape", "/m/shape_polygon", "/m/shape_symbol", "/m/blob"
DISPLAY_NAMES = {**{MIDS[name]: name.capitalize() for name in CLASSES},
                 SHAPE: "Shape", POLYGON: "Polygon", SYMBOL: "Symbol", BLOB: "Blob"}
HIERARCHY = {"LabelName": ROOT, "Subcategory": [
    {"LabelName": SHAPE, "Subcategory": [
        {"LabelName": MIDS["circle"]},
        {"LabelName": POLYGON, "Subcategory": [
            {"LabelName": MIDS["square"]}, {"LabelName": MIDS["triangle"]},
            {"LabelName": MIDS["star"]}]}]},
    {"LabelName": SYMBOL, "Subcategory": [{"LabelName": MIDS["star"]}]},
    {"LabelName": BLOB},
]}
MASK_SCALE = 2
COLUMNS = ("MaskPath", "ImageID", "LabelName", "BoxID", "BoxXMin", "BoxXMax", "BoxYMin",
           "BoxYMax", "PredictedIoU", "Clicks")


def mask_file_name(image_id: str, mid: str, box_id: str) -> str:
    """The official naming: <ImageID>_<MID without slashes>_<BoxID>.png."""
    return f"{image_id}_{mid.replace('/', '')}_{box_id}.png"


def encode_mask(mask: np.ndarray, scale: int = MASK_SCALE) -> bytes:
    big = np.repeat(np.repeat(mask.astype(bool), scale, axis=0), scale, axis=1)
    out = io.BytesIO()
    Image.fromarray(big).save(out, format="PNG")  # a bool array is saved 1-bit
    return out.getvalue()


def write(images: list[ShapeImage], output_dir: Path, split: str) -> Path:
    """Writes annotations/openimages_<split>/ and returns that directory."""
    folder = Path(output_dir) / "annotations" / f"openimages_{split}"
    masks_dir = folder / "masks"
    masks_dir.mkdir(parents=True, exist_ok=True)
    rows = io.StringIO()
    writer = csv.writer(rows, lineterminator="\n")
    writer.writerow(COLUMNS)
    for image in images:
        image_id = image.file_name.rsplit(".", 1)[0]
        for index, obj in enumerate(image.objects):
            mid = MIDS[obj.class_name]
            box_id = f"{zlib.crc32(f'{image_id}/{index}'.encode()):08x}"
            mask_name = mask_file_name(image_id, mid, box_id)
            (masks_dir / mask_name).write_bytes(encode_mask(obj.mask))
            x, y, w, h = obj.bbox
            writer.writerow([mask_name, image_id, mid, box_id, f"{x / image.width:.6f}",
                             f"{(x + w) / image.width:.6f}", f"{y / image.height:.6f}",
                             f"{(y + h) / image.height:.6f}", "1.00000", ""])
    write_text_atomic(folder / f"{split}-annotations-object-segmentation.csv", rows.getvalue())
    descriptions = io.StringIO()
    csv.writer(descriptions, lineterminator="\n").writerows(
        [("LabelName", "DisplayName"), *DISPLAY_NAMES.items()])
    write_text_atomic(folder / "class-descriptions.csv", descriptions.getvalue())
    write_json_atomic(folder / "hierarchy.json", HIERARCHY)
    return folder
