"""ImageAnnotation -> one serialized record: the per-image work of every runner.

`convert_image` loads and checks the image, rasterizes each instance's mask, and encodes
the record; it never raises for bad input but returns the Problems, which the runner
(local_runner.py, beam_runner.py) counts or stops on.
"""
from __future__ import annotations

import dataclasses
import os
from collections import Counter
from typing import Sequence

import numpy as np

from core.errors import UserError
from data_prep.annotations import ImageAnnotation, Polygons, Problem
from data_prep.boxes import box_iou, clip_box, mask_box
from data_prep.conversion.image_files import fill_boxes_gray, load_image
from data_prep.conversion.orientation import display_to_stored, orientation_note
from data_prep.conversion.rasterize import MaskError, rasterize_instance
from data_prep.safe_files import FileLimits, ImageFileError
from records.example_codec import ImageExample, encode_example, encode_mask_png
from records.label_map import LabelMap
from records.record_checks import MASK_BOX_TOLERANCE_PIXELS


class ConversionError(UserError, RuntimeError):
    """A problem stopped the run (without --skip_errors); no shard was written."""

    def __init__(self, problems: Sequence[Problem]):
        self.problems = list(problems)
        shown = "\n".join(f"  {p}" for p in self.problems[:20])
        more = len(self.problems) - 20
        super().__init__(f"{len(self.problems)} error(s) in the input:\n{shown}" +
                         (f"\n  ... and {more} more" if more > 0 else "") +
                         "\nFix them, or pass --skip_errors to skip and count them.")


@dataclasses.dataclass(frozen=True)
class ConvertOptions:
    skip_errors: bool = False
    drop_empty_images: bool = False
    limits: FileLimits = FileLimits()  # file size and pixel caps of images and masks
    exif_orientation: str = "stored"  # what the annotations were drawn on (orientation.py)


# A given box whose IoU with its mask's tight box is below this is replaced by the latter.
BOX_MASK_MIN_IOU = 0.5
# A given box must hold its mask to within the record check's tolerance.
MASK_OUTSIDE_PIXELS = MASK_BOX_TOLERANCE_PIXELS
# Polygons reaching further than this beyond the image are counted as clipped.
OVERHANG_PIXELS = 1.0


@dataclasses.dataclass
class ImageResult:
    """What converting one image produced: a record or nothing, and what went wrong."""

    serialized: bytes | None
    class_counts: Counter
    num_crowd: int = 0
    problems: list[Problem] = dataclasses.field(default_factory=list)
    dropped_reason: str | None = None  # set when the image is left out without an error


def default_workers() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def convert_image(item: ImageAnnotation, label_map: LabelMap, options: ConvertOptions,
                  source: str) -> ImageResult:
    """Builds the record of one image; errors are returned as Problems, never raised."""
    record = f"image {item.image_id} ({item.file_name!r})"
    try:
        image = load_image(item.image_path, options.limits)
    except ImageFileError as err:
        return _image_error(err.reason, str(err), source, record)
    problems: list[Problem] = []
    if image.reencoded:
        problems.append(Problem("reencoded_image", "not JPEG/PNG (or CMYK): re-encoded as PNG",
                                source, record, is_error=False, scope="image"))
    display = options.exif_orientation == "display" and image.orientation != 1
    if image.orientation != 1:
        problems.append(Problem("exif_orientation", orientation_note(
            image.orientation, options.exif_orientation), source, record, is_error=False,
            scope="image"))
    # the pixel grid the annotations were drawn on
    drawn_width, drawn_height = image.display_size if display else (image.width, image.height)
    if item.width and item.height and (item.width, item.height) != (drawn_width, drawn_height):
        hint = ""
        if image.orientation != 1 and (item.width, item.height) == image.display_size:
            hint = (" (that is the size viewers show: the file has EXIF orientation "
                    f"{image.orientation}; pass --exif_orientation display)")
        return _image_error("image_size_mismatch", f"annotations give size {item.width}x"
                            f"{item.height} but the image file is {drawn_width}x"
                            f"{drawn_height}{hint}", source, record)
    width, height = image.width, image.height
    example = ImageExample(encoded_image=b"", image_format=image.image_format, height=height,
                           width=width, filename=item.file_name, source_id=str(item.source_id))
    boxes, labels, texts, areas, crowd, masks, difficult, group_of = [], [], [], [], [], [], [], []
    counts: Counter = Counter()
    for obj in item.objects:
        obj_record = f"annotation {obj.annotation_id} ({item.file_name!r})"
        try:
            raster = rasterize_instance(obj.segmentation, drawn_height, drawn_width,
                                        options.limits)
        except MaskError as err:
            problems.append(Problem("bad_mask", str(err), source, obj_record))
            continue
        if isinstance(obj.segmentation, Polygons) and raster.overhang > OVERHANG_PIXELS:
            problems.append(Problem("polygon_clipped", "polygon reaches beyond the image; its "
                                    "mask is clipped to the image", source, obj_record,
                                    is_error=False))
        mask, given, tight = raster.mask, obj.bbox, raster.box
        if display:
            mask, given = display_to_stored(mask, image.orientation), None
            tight = mask_box(mask)
        if tight is None:
            problems.append(Problem("empty_mask", "mask has no pixels inside the image; "
                                    "instance left out", source, obj_record, is_error=False))
            continue
        box = tight if given is None else given
        disagreement = None if given is None else _box_disagreement(given, tight)
        if disagreement:
            problems.append(Problem("box_from_mask", f"bbox {[round(v, 2) for v in given]} "
                                    f"{disagreement} its mask's box {list(tight)}; the "
                                    "mask's box is used", source, obj_record, is_error=False))
            box = tight
        clipped = clip_box(box, width, height)
        if clipped is None:
            problems.append(Problem("box_outside_image", f"box {list(box)} lies outside the "
                                    f"{width}x{height} image", source, obj_record))
            continue
        if not _allclose(clipped, box, atol=1e-3):
            problems.append(Problem("box_clipped", f"box {list(box)} clipped to the image",
                                    source, obj_record, is_error=False))
        x, y, w, h = clipped
        boxes.append((y / height, x / width, (y + h) / height, (x + w) / width))
        labels.append(label_map.id_of(obj.class_name))
        texts.append(obj.class_name)
        areas.append(obj.area if obj.area is not None else float(raster.pixels))
        crowd.append(int(obj.is_crowd))
        difficult.append(int(obj.difficult))
        group_of.append(int(obj.group_of))
        masks.append(encode_mask_png(mask))
        counts[obj.class_name] += 1
    if not masks and options.drop_empty_images:
        return ImageResult(None, Counter(), problems=problems,
                           dropped_reason="no_annotations")
    if item.gray_boxes:
        image = fill_boxes_gray(image, item.gray_boxes)
    example.encoded_image = image.encoded
    example.image_format = image.image_format
    example.boxes = np.array(boxes, np.float32).reshape(-1, 4)
    example.labels = np.array(labels, np.int64)
    example.texts = texts
    example.areas = np.array(areas, np.float32)
    example.is_crowd = np.array(crowd, np.int64)
    example.masks_png = masks
    example.difficult = np.array(difficult, np.int64) if any(difficult) else None
    example.group_of = np.array(group_of, np.int64) if any(group_of) else None
    return ImageResult(encode_example(example), counts, num_crowd=sum(crowd),
                       problems=problems)


def _box_disagreement(given: tuple, tight: tuple) -> str | None:
    """How a given (x, y, w, h) box disagrees with its mask's tight box, None when it does
    not: an IoU below BOX_MASK_MIN_IOU, or mask pixels outside the box by more than
    MASK_OUTSIDE_PIXELS (which the record check, records/record_checks.py, refuses)."""
    iou = box_iou(given, tight)
    if iou < BOX_MASK_MIN_IOU:
        return f"overlaps by IoU {iou:.2f}"
    outside = max(given[0] - tight[0], given[1] - tight[1],
                  tight[0] + tight[2] - given[0] - given[2],
                  tight[1] + tight[3] - given[1] - given[3])
    if outside > MASK_OUTSIDE_PIXELS:
        return f"leaves mask pixels {outside:.1f} px outside of"
    return None


def _allclose(a: Sequence[float], b: Sequence[float], atol: float) -> bool:
    """np.allclose(a, b, atol=atol) (rtol 1e-5) for two boxes, without numpy's per-call cost
    (a tenth of a millisecond, as much as the rest of a box's checks)."""
    return all(x == y or abs(x - y) <= atol + 1e-5 * abs(y) for x, y in zip(a, b))


def _image_error(reason: str, message: str, source: str, record: str) -> ImageResult:
    return ImageResult(None, Counter(), problems=[Problem(reason, message, source, record,
                                                          scope="image")])
