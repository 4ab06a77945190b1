"""Turns any `Segmentation` into a full-image binary mask.

Polygons and RLE go through pycocotools exactly as `COCO.annToMask` does, so masks match it
bit for bit; mask files are read with PIL (palette indices stay indices, 1-bit stays binary)
and resized to the image with nearest-neighbour sampling.
"""
from __future__ import annotations

import functools

import cv2
import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from core.errors import UserError
from data_prep.annotations import MaskFile, Polygons, RunLengths, Segmentation


class MaskError(UserError, ValueError):
    """A segmentation cannot be turned into a mask."""


def rasterize(segmentation: Segmentation, height: int, width: int) -> np.ndarray:
    """Returns a uint8 [height, width] mask with values 0/1."""
    if isinstance(segmentation, Polygons):
        rles = mask_utils.frPyObjects([list(p) for p in segmentation.parts], height, width)
        return mask_utils.decode(mask_utils.merge(rles))
    if isinstance(segmentation, RunLengths):
        rle = {"counts": segmentation.counts, "size": [segmentation.height, segmentation.width]}
        if isinstance(segmentation.counts, list):
            rle = mask_utils.frPyObjects(rle, segmentation.height, segmentation.width)
        try:
            return mask_utils.decode(rle)
        except Exception as err:  # pycocotools raises bare ValueError/TypeError
            raise MaskError(f"RLE does not decode: {err}") from None
    if isinstance(segmentation, MaskFile):
        return _mask_from_file(segmentation, height, width)
    raise TypeError(f"unknown segmentation type {type(segmentation).__name__}")


@functools.lru_cache(maxsize=8)
def _read_mask_image(path: str) -> np.ndarray:
    # Cached: a VOC SegmentationObject PNG holds every instance of its image.
    try:
        with Image.open(path) as img:
            if img.mode not in ("1", "L", "P", "I;16", "I"):
                img = img.convert("L")
            return np.asarray(img)
    except FileNotFoundError:
        raise MaskError(f"mask file {path} does not exist") from None
    except OSError as err:
        raise MaskError(f"mask file {path} cannot be read: {err}") from None


def _mask_from_file(spec: MaskFile, height: int, width: int) -> np.ndarray:
    pixels = _read_mask_image(spec.path)
    mask = (pixels != 0) if spec.value is None else (pixels == spec.value)
    mask = mask.astype(np.uint8)
    if mask.shape != (height, width):
        mask = cv2.resize(mask, (width, height), interpolation=cv2.INTER_NEAREST)
    if spec.crop_box is not None:
        x0, y0, x1, y1 = spec.crop_box
        keep = np.zeros_like(mask)
        r0, c0 = max(int(np.floor(y0)), 0), max(int(np.floor(x0)), 0)
        r1, c1 = min(int(np.ceil(y1)), height), min(int(np.ceil(x1)), width)
        keep[r0:r1, c0:c1] = 1
        mask &= keep
    return mask
