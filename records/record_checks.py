"""Validation of records against the record contract, one record at a time.

`python -m records.inspect --check` runs `check_records`, which stops at the first fault:
a broken record usually means a broken converter, and its location is what a user needs to
fix it. Everything is checked the way the training input pipeline will read the record
(Model Garden's `TfExampleDecoder`), without importing TensorFlow:

* the image decodes (JPEG/PNG/GIF/BMP, what `tf.io.decode_image` reads) and its size equals
  image/height x image/width;
* every per-instance field has one value per box (optional fields may be absent);
* boxes are finite, normalized, inside the image and ordered (min < max);
* labels are label-map ids (>= 1, 0 is the background) and class/text, when written, is
  the label map's name or display name for the label (the OD API's decoder reads either);
* each mask is an 8-bit single-channel PNG of the image's size holding only 0 and 1 (Model
  Garden's decoder uses the values as they are: 255 would be a mask weight of 255);
* each box is around its mask: every mask pixel lies inside the box, with one pixel of
  tolerance for boxes rounded from float polygons (crowd annotations included).
"""
from __future__ import annotations

import dataclasses
import io
from typing import Iterable

import cv2
import numpy as np
from PIL import Image

from core.errors import UserError
from records import keys
from records.example_codec import ImageExample, decode_example
from records.label_map import LabelMap
from records.protos import example_pb2
from records.reader import RecordError, fill_labels_from_texts
from records.tfrecord_io import CorruptRecordError, expand_paths, read_records

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TF_IMAGE_FORMATS = ("JPEG", "PNG", "GIF", "BMP")  # what tf.io.decode_image decodes
BOX_TOLERANCE = 1e-5  # normalized coordinates are float32
MASK_BOX_TOLERANCE_PIXELS = 1.0
OPTIONAL_INSTANCE_KEYS = (keys.OBJECT_CLASS_LABEL, keys.OBJECT_CLASS_TEXT, keys.OBJECT_AREA,
                          keys.OBJECT_IS_CROWD, keys.OBJECT_DIFFICULT, keys.OBJECT_GROUP_OF,
                          keys.OBJECT_MASK)


class RecordFault(UserError, ValueError):
    """A record breaks the contract; the message says where and what."""

    def __init__(self, path: str, index: int | None, problem: str, source_id: str = "",
                 filename: str = ""):
        self.path, self.index, self.problem = path, index, problem
        self.source_id, self.filename = source_id, filename
        where = path if index is None else f"{path}: record {index}"
        names = ", ".join(part for part in (f"source_id {source_id!r}" if source_id else "",
                                            f"filename {filename!r}" if filename else "")
                          if part)
        super().__init__(f"{where}{f' ({names})' if names else ''}: {problem}")


class _Problem(ValueError):
    """What is wrong with one record, before its location is attached."""


@dataclasses.dataclass
class CheckSummary:
    records: int = 0
    instances: int = 0
    empty_masks: int = 0  # allowed, but worth a note: the instance teaches nothing
    records_without_masks: int = 0  # only with allow_missing_masks


def check_records(patterns: str | Iterable[str], label_map: LabelMap | None,
                  allow_missing_masks: bool = False, max_records: int = 0) -> CheckSummary:
    """Checks every record matching `patterns`; raises RecordFault at the first fault."""
    summary = CheckSummary()
    for path in expand_paths(patterns):
        index = 0
        try:
            for index, serialized in enumerate(read_records(path)):
                if max_records and summary.records >= max_records:
                    return summary
                _check_one(path, index, serialized, label_map, allow_missing_masks, summary)
        except CorruptRecordError as err:
            raise RecordFault(path, None, str(err).removeprefix(f"{path}: ")) from None
    return summary


def _check_one(path: str, index: int, serialized: bytes, label_map: LabelMap | None,
               allow_missing_masks: bool, summary: CheckSummary) -> None:
    try:
        proto = example_pb2.Example.FromString(serialized)
    except Exception as err:  # protobuf raises its own DecodeError types
        raise RecordFault(path, index, f"not a tf.train.Example ({err})") from None
    features = proto.features.feature
    source_id = _first_text(features, keys.IMAGE_SOURCE_ID)
    filename = _first_text(features, keys.IMAGE_FILENAME)
    try:
        count = _check_instance_counts(features, allow_missing_masks)
        example = decode_example(serialized)
        _fill_labels_from_texts(example, label_map)
        check_image(example)
        check_boxes(example)
        check_labels(example, label_map)
        empty = check_masks(example)
    except _Problem as problem:
        raise RecordFault(path, index, str(problem), source_id, filename) from None
    except Exception as err:  # anything unforeseen is still this record's fault
        raise RecordFault(path, index, f"cannot be read: {type(err).__name__}: {err}",
                          source_id, filename) from None
    summary.records += 1
    summary.instances += count
    summary.empty_masks += empty
    summary.records_without_masks += bool(count and not example.masks_png)


def _first_text(features, key: str) -> str:
    if key in features and features[key].bytes_list.value:
        return features[key].bytes_list.value[0].decode("utf-8", errors="replace")
    return ""


def _feature_length(features, key: str) -> int:
    if key not in features:
        return 0
    kind = features[key].WhichOneof("kind")
    return len(getattr(features[key], kind).value) if kind else 0


def _check_instance_counts(features, allow_missing_masks: bool) -> int:
    """The number of instances, after checking that every per-instance field agrees."""
    box_lengths = {key: _feature_length(features, key) for key in keys.BBOX_KEYS}
    count = box_lengths[keys.OBJECT_BBOX_YMIN]
    if len(set(box_lengths.values())) > 1:
        raise _Problem("the box coordinate lists differ in length: " +
                       ", ".join(f"{k} {v}" for k, v in box_lengths.items()))
    for key in OPTIONAL_INSTANCE_KEYS:
        length = _feature_length(features, key)
        if length and length != count:
            raise _Problem(f"{count} boxes but {length} values of {key}")
    if count and not (_feature_length(features, keys.OBJECT_CLASS_LABEL) or
                      _feature_length(features, keys.OBJECT_CLASS_TEXT)):
        raise _Problem(f"{count} boxes but neither {keys.OBJECT_CLASS_LABEL} nor "
                       f"{keys.OBJECT_CLASS_TEXT}")
    if count and not _feature_length(features, keys.OBJECT_MASK) and not allow_missing_masks:
        raise _Problem(f"{count} boxes but no {keys.OBJECT_MASK}: Mask R-CNN needs a mask "
                       "per instance (pass --allow_missing_masks for box-only records)")
    return count


def _fill_labels_from_texts(example: ImageExample, label_map: LabelMap | None) -> None:
    """Records of the OD API's COCO tool carry names only; its decoder maps them to ids."""
    if example.labels.size or not example.texts:
        return
    if label_map is None:
        raise _Problem("records carry class/text but no class/label, and there is no label "
                       "map to give the ids (pass --label_map)")
    try:
        fill_labels_from_texts(example, label_map)
    except RecordError as err:
        raise _Problem(f"{err} (and no class/label is written)") from None


def check_image(example: ImageExample) -> np.ndarray:
    """Decodes the image fully and compares its size with image/height and image/width."""
    if example.height <= 0 or example.width <= 0:
        raise _Problem(f"image/height {example.height} and image/width {example.width} must "
                       "be positive")
    if not example.encoded_image:
        raise _Problem(f"no {keys.IMAGE_ENCODED}")
    try:
        with Image.open(io.BytesIO(example.encoded_image)) as image:
            image_format = image.format
            pixels = np.asarray(image.convert("RGB"))  # forces a full decode
    except Exception as err:  # PIL raises OSError, SyntaxError, ValueError ...
        raise _Problem(f"the image does not decode ({type(err).__name__}: {err})") from None
    if image_format not in TF_IMAGE_FORMATS:
        raise _Problem(f"the image is {image_format}; TensorFlow decodes only "
                       f"{', '.join(TF_IMAGE_FORMATS)}")
    height, width = pixels.shape[:2]
    if (height, width) != (example.height, example.width):
        raise _Problem(f"the image is {width}x{height} but image/width x image/height say "
                       f"{example.width}x{example.height}")
    return pixels


def check_boxes(example: ImageExample) -> None:
    for i, (ymin, xmin, ymax, xmax) in enumerate(example.boxes.tolist()):
        box = f"box {i} (ymin {ymin:.6g}, xmin {xmin:.6g}, ymax {ymax:.6g}, xmax {xmax:.6g})"
        if not np.all(np.isfinite([ymin, xmin, ymax, xmax])):
            raise _Problem(f"{box} is not finite")
        if min(ymin, xmin) < -BOX_TOLERANCE or max(ymax, xmax) > 1 + BOX_TOLERANCE:
            raise _Problem(f"{box} is not normalized to [0, 1] (outside the image)")
        if not (ymin < ymax and xmin < xmax):
            raise _Problem(f"{box} is not ordered: needs ymin < ymax and xmin < xmax")


def check_labels(example: ImageExample, label_map: LabelMap | None) -> None:
    for i, label in enumerate(example.labels.tolist()):
        text = example.texts[i] if example.texts else None
        shown = f"instance {i}: label {label}" + (f" (class/text {text!r})" if text is not None
                                                   else "")
        if label < 1:
            raise _Problem(f"{shown} is not a class id: ids start at 1, 0 is the background")
        if label_map is None:
            continue
        item = label_map.get(label)
        if item is None:
            raise _Problem(f"{shown} is not in the label map {label_map.source}")
        if text is not None and not label_map.matches(label, text):
            also = f" (display name {item.display_name!r})" if item.display_name else ""
            raise _Problem(f"{shown} does not match the label map, where {label} is "
                           f"{item.name!r}{also}")


def decode_mask_strict(png: bytes) -> np.ndarray:
    """Decodes a mask PNG as it is stored, raising _Problem if the contract is broken."""
    if not png.startswith(PNG_SIGNATURE):
        raise _Problem("is not a PNG")
    mask = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_UNCHANGED)
    if mask is None:
        raise _Problem("does not decode")
    if mask.ndim != 2:
        raise _Problem(f"has {mask.shape[2]} channels; a mask has one")
    if mask.dtype != np.uint8:
        raise _Problem(f"is {mask.dtype.itemsize * 8}-bit; masks are 8-bit")
    if mask.max(initial=0) > 1:
        values = np.unique(mask)
        shown = ", ".join(str(v) for v in values[:6]) + (" ..." if values.size > 6 else "")
        raise _Problem(f"holds values {shown}; masks hold only 0 and 1")
    return mask


def check_masks(example: ImageExample) -> int:
    """Checks every mask and that its box is around it; returns how many masks are empty."""
    empty = 0
    for i, png in enumerate(example.masks_png):
        name = f"mask {i}" + (f" ({example.texts[i]})" if example.texts else "")
        try:
            mask = decode_mask_strict(png)
        except _Problem as problem:
            raise _Problem(f"{name} {problem}") from None
        if mask.shape != (example.height, example.width):
            raise _Problem(f"{name} is {mask.shape[1]}x{mask.shape[0]} but the image is "
                           f"{example.width}x{example.height}")
        rows = np.flatnonzero(mask.any(axis=1))
        if rows.size == 0:
            empty += 1
            continue
        cols = np.flatnonzero(mask.any(axis=0))
        _check_box_around_mask(example, i, name, rows, cols)
    return empty


def _check_box_around_mask(example: ImageExample, i: int, name: str, rows: np.ndarray,
                           cols: np.ndarray) -> None:
    """Pixel (r, c) covers [r, r + 1) x [c, c + 1); the box's edges are in the same units."""
    ymin, xmin, ymax, xmax = (example.boxes[i] * [example.height, example.width,
                                                  example.height, example.width]).tolist()
    top, bottom = float(rows[0]), float(rows[-1] + 1)
    left, right = float(cols[0]), float(cols[-1] + 1)
    tolerance = MASK_BOX_TOLERANCE_PIXELS + 1e-3
    if (top < ymin - tolerance or left < xmin - tolerance or bottom > ymax + tolerance or
            right > xmax + tolerance):
        crowd = " (crowd)" if example.is_crowd.size and example.is_crowd[i] else ""
        raise _Problem(
            f"box {i} is not around {name}{crowd}: the mask spans x {left:g}..{right:g}, "
            f"y {top:g}..{bottom:g} but the box is x {xmin:.1f}..{xmax:.1f}, "
            f"y {ymin:.1f}..{ymax:.1f} (pixels, 1 pixel of tolerance)")
