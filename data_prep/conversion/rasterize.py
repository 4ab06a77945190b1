"""Turns any `Segmentation` into a full-image binary mask.

Polygons and RLE go through pycocotools exactly as `COCO.annToMask` does, so masks match it
bit for bit; mask files are read with PIL (palette indices stay indices, 1-bit stays binary)
and resized to the image with nearest-neighbour sampling.

Nothing reaches pycocotools that could make it misbehave: polygon vertices must lie within
one image width (height) of the image, where the mask is clipped to the image (vertices
further out are absurd and refused: pycocotools overflows on them), and an RLE must be of
the image's size (its counts were checked by data_prep/run_lengths.py). Mask files are read
only when they are regular files within the size and pixel limits (image_files.py).

Masks come back C-ordered (pycocotools decodes column-major; OpenCV's transpose turns it
around in a quarter of numpy's time), with their tight box and pixel count read off the
run-length encoding where there is one, which costs microseconds instead of a pass over
the full-image mask.
"""
from __future__ import annotations

import dataclasses
import functools
import math

import cv2
import numpy as np
from pycocotools import mask as mask_utils

from core.errors import UserError
from data_prep.annotations import MaskFile, Polygons, RunLengths, Segmentation
from data_prep.boxes import Box, mask_box
from data_prep.safe_files import FileLimits, ImageFileError, open_image, read_regular_file


class MaskError(UserError, ValueError):
    """A segmentation cannot be turned into a mask."""


@dataclasses.dataclass
class Raster:
    """One instance's mask and what the converter asks of it."""

    mask: np.ndarray  # uint8 [height, width] of 0/1, C-contiguous
    box: Box | None  # the tight (x, y, w, h) around its pixels; None when it has none
    pixels: int  # how many pixels are 1
    overhang: float = 0.0  # how far (pixels) its polygons reach beyond the image


def polygon_overhang(polygons: Polygons, height: int, width: int) -> float:
    """How far (pixels) the polygon reaches beyond the image, 0 when it is inside."""
    xs = np.concatenate([np.asarray(p[0::2], np.float64) for p in polygons.parts])
    ys = np.concatenate([np.asarray(p[1::2], np.float64) for p in polygons.parts])
    return float(max(0.0, -xs.min(), xs.max() - width, -ys.min(), ys.max() - height))


def _checked_parts(polygons: Polygons, height: int, width: int
                   ) -> tuple[list[np.ndarray], float]:
    """Each part as float64 [x0, y0, x1, ...] and the overhang, from one conversion per
    part; MaskError unless every vertex is finite and within one image size of it.

    Both checks read the per-axis extremes: a NaN or an infinity anywhere is one of them.
    """
    parts, overhang = [], 0.0
    for index, part in enumerate(polygons.parts):
        flat = np.asarray(part, np.float64)
        points = flat.reshape(-1, 2)
        parts.append(flat)
        if not points.size:
            continue
        x_min, y_min = points.min(axis=0).tolist()
        x_max, y_max = points.max(axis=0).tolist()
        if not all(map(math.isfinite, (x_min, y_min, x_max, y_max))):
            raise MaskError(f"polygon part {index} has a coordinate that is not a finite "
                            "number")
        if x_min < -width or x_max > 2 * width or y_min < -height or y_max > 2 * height:
            outside = ((points[:, 0] < -width) | (points[:, 0] > 2 * width)
                       | (points[:, 1] < -height) | (points[:, 1] > 2 * height))
            x, y = points[np.argmax(outside)]
            raise MaskError(f"polygon part {index} has the point ({x:g}, {y:g}), more than an "
                            f"image size outside the {width}x{height} image (vertices may lie "
                            "up to one image width or height outside it, where the mask is "
                            "clipped)")
        overhang = max(overhang, -x_min, x_max - width, -y_min, y_max - height)
    return parts, overhang


def check_polygons(polygons: Polygons, height: int, width: int) -> None:
    """Raises MaskError unless every vertex is finite and within one image size of it."""
    _checked_parts(polygons, height, width)


def rasterize(segmentation: Segmentation, height: int, width: int,
              limits: "FileLimits | None" = None) -> np.ndarray:
    """Returns a uint8 [height, width] mask with values 0/1."""
    return rasterize_instance(segmentation, height, width, limits).mask


def _from_rle(rle: dict, overhang: float = 0.0) -> Raster:
    # decode() is column-major: its transpose, a C-contiguous view, is turned back by OpenCV
    mask = cv2.transpose(mask_utils.decode(rle).T)
    pixels = int(mask_utils.area(rle))
    box = tuple(float(v) for v in mask_utils.toBbox(rle)) if pixels else None
    return Raster(mask, box, pixels, overhang)


def rasterize_instance(segmentation: Segmentation, height: int, width: int,
                       limits: "FileLimits | None" = None) -> Raster:
    """The instance's mask, box, pixel count and polygon overhang; MaskError when the
    segmentation cannot be turned into a mask."""
    if isinstance(segmentation, Polygons):
        parts, overhang = _checked_parts(segmentation, height, width)
        # frPyObjects takes the parts as sequences (the first one's length tells polygons
        # from a box, as for annToMask's lists) and converts each to float64 itself
        return _from_rle(mask_utils.merge(mask_utils.frPyObjects(parts, height, width)),
                         max(0.0, overhang))
    if isinstance(segmentation, RunLengths):
        if (segmentation.height, segmentation.width) != (height, width):
            raise MaskError(f"RLE size {segmentation.height}x{segmentation.width} differs "
                            f"from the image's {height}x{width} (height x width)")
        rle = {"counts": segmentation.counts, "size": [segmentation.height, segmentation.width]}
        if isinstance(segmentation.counts, list):
            rle = mask_utils.frPyObjects(rle, segmentation.height, segmentation.width)
        try:
            return _from_rle(rle)
        except Exception as err:  # pycocotools raises bare ValueError/TypeError
            raise MaskError(f"RLE does not decode: {err}") from None
    if isinstance(segmentation, MaskFile):
        mask = _mask_from_file(segmentation, height, width, limits or FileLimits())
        return Raster(mask, mask_box(mask), int(np.count_nonzero(mask)))
    raise TypeError(f"unknown segmentation type {type(segmentation).__name__}")


@functools.lru_cache(maxsize=8)
def _read_mask_image(path: str, limits: FileLimits) -> np.ndarray:
    # Cached: a VOC SegmentationObject PNG holds every instance of its image.
    try:
        data = read_regular_file(path, limits, "mask file")
        with open_image(data, path, limits, "mask file") as img:
            if img.mode not in ("1", "L", "P", "I;16", "I"):
                img = img.convert("L")
            return np.asarray(img)
    except ImageFileError as err:
        raise MaskError(str(err)) from None
    except OSError as err:
        raise MaskError(f"mask file {path} cannot be read: {err}") from None


def _mask_from_file(spec: MaskFile, height: int, width: int, limits: FileLimits
                    ) -> np.ndarray:
    pixels = _read_mask_image(spec.path, limits)
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
