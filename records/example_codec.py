"""Encoding and decoding of one image's tf.train.Example under the record contract.

`ImageExample` is the in-memory form of one record. `encode_example` writes every key of
`records.keys` that the contract requires; `decode_example` reads records written by this
project, by the Object Detection API or by Model Garden, tolerating the keys they omit
(no masks, no area, no class/label ...), so inspection and tests can read any of them.
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
from typing import Sequence

import cv2
import numpy as np
from PIL import Image

from records import keys
from records.protos import example_pb2


@dataclasses.dataclass
class ImageExample:
    """One image and its instances, as stored in a record."""

    encoded_image: bytes
    image_format: str  # "jpeg" or "png"
    height: int
    width: int
    filename: str = ""
    source_id: str = ""
    sha256: str = ""
    boxes: np.ndarray = dataclasses.field(  # [N, 4] normalized ymin, xmin, ymax, xmax
        default_factory=lambda: np.zeros((0, 4), np.float32))
    labels: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros((0,), np.int64))
    texts: list[str] = dataclasses.field(default_factory=list)
    areas: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros((0,), np.float32))
    is_crowd: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros((0,), np.int64))
    masks_png: list[bytes] = dataclasses.field(default_factory=list)
    difficult: np.ndarray | None = None
    group_of: np.ndarray | None = None

    @property
    def num_instances(self) -> int:
        return int(self.boxes.shape[0])

    def decode_image(self) -> np.ndarray:
        """Returns the image as uint8 RGB [H, W, 3], as the training input pipeline sees it."""
        with Image.open(io.BytesIO(self.encoded_image)) as img:
            return np.asarray(img.convert("RGB"))

    def decode_masks(self) -> np.ndarray:
        """Returns the instance masks as uint8 [N, H, W] with values 0/1."""
        if not self.masks_png:
            return np.zeros((0, self.height, self.width), np.uint8)
        return np.stack([decode_mask_png(png) for png in self.masks_png])


# Run-length deflate of unfiltered rows. For 0/1 masks this is OpenCV's fastest setting
# and its smallest output: 0.35 ms and 0.8 kB for a 640x480 mask against 0.45 ms and 1.7 kB
# at its defaults (which filter each row by its left neighbour first), 1.6 ms with an
# explicit compression level (measured on the 2-core development machine).
_PNG_PARAMS = [cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE,
               cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_NONE]


def encode_mask_png(mask: np.ndarray) -> bytes:
    """Encodes a [H, W] binary mask as an 8-bit single-channel PNG holding 0/1.

    A column-major mask (what pycocotools decodes) is made row-major by OpenCV's transpose
    of its transposed view, four times faster than numpy's copy.
    """
    mask = np.asarray(mask)
    if mask.dtype != np.uint8:
        mask = mask.astype(np.uint8)
    if not mask.flags.c_contiguous:
        mask = cv2.transpose(mask.T) if mask.ndim == 2 and mask.flags.f_contiguous \
            else np.ascontiguousarray(mask)
    ok, buf = cv2.imencode(".png", mask, _PNG_PARAMS)
    if not ok:
        raise ValueError(f"could not PNG-encode a mask of shape {mask.shape}")
    return buf.tobytes()


def decode_mask_png(png: bytes) -> np.ndarray:
    """Decodes a mask PNG to uint8 [H, W] with values 0/1 (any non-zero value counts)."""
    mask = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_GRAYSCALE)
    if mask is None:
        raise ValueError("an instance mask is not a decodable PNG")
    return (mask > 0).astype(np.uint8)


def _bytes(feature, values: Sequence[bytes]) -> None:
    feature.bytes_list.value.extend(values)


def encode_example(example: ImageExample) -> bytes:
    """Serializes `example` as a tf.train.Example with the contract's keys."""
    n = example.num_instances
    for name, value in (("labels", example.labels), ("texts", example.texts),
                        ("areas", example.areas), ("is_crowd", example.is_crowd),
                        ("masks_png", example.masks_png)):
        if len(value) != n:
            raise ValueError(f"{example.filename}: {n} boxes but {len(value)} {name}")
    proto = example_pb2.Example()
    feature = proto.features.feature
    _bytes(feature[keys.IMAGE_ENCODED], [example.encoded_image])
    _bytes(feature[keys.IMAGE_FORMAT], [example.image_format.encode()])
    feature[keys.IMAGE_HEIGHT].int64_list.value.append(example.height)
    feature[keys.IMAGE_WIDTH].int64_list.value.append(example.width)
    _bytes(feature[keys.IMAGE_FILENAME], [example.filename.encode()])
    _bytes(feature[keys.IMAGE_SOURCE_ID], [example.source_id.encode()])
    sha256 = example.sha256 or hashlib.sha256(example.encoded_image).hexdigest()
    _bytes(feature[keys.IMAGE_KEY_SHA256], [sha256.encode()])
    boxes = np.asarray(example.boxes, np.float32).reshape(-1, 4)
    for column, key in enumerate(keys.BBOX_KEYS):
        feature[key].float_list.value.extend(boxes[:, column].tolist())
    feature[keys.OBJECT_CLASS_LABEL].int64_list.value.extend(
        np.asarray(example.labels, np.int64).tolist())
    _bytes(feature[keys.OBJECT_CLASS_TEXT], [t.encode() for t in example.texts])
    feature[keys.OBJECT_AREA].float_list.value.extend(
        np.asarray(example.areas, np.float32).tolist())
    feature[keys.OBJECT_IS_CROWD].int64_list.value.extend(
        np.asarray(example.is_crowd, np.int64).tolist())
    _bytes(feature[keys.OBJECT_MASK], example.masks_png)
    for key, values in ((keys.OBJECT_DIFFICULT, example.difficult),
                        (keys.OBJECT_GROUP_OF, example.group_of)):
        if values is not None:
            feature[key].int64_list.value.extend(np.asarray(values, np.int64).tolist())
    return proto.SerializeToString(deterministic=True)  # sorted keys: reproducible shards


def _values(features, key: str) -> list:
    if key not in features:
        return []
    feature = features[key]
    kind = feature.WhichOneof("kind")
    return list(getattr(feature, kind).value) if kind else []


def _scalar(features, key: str, default):
    values = _values(features, key)
    return values[0] if values else default


def decode_example(serialized: bytes) -> ImageExample:
    """Parses a serialized tf.train.Example written by this project, the OD API or Model Garden."""
    proto = example_pb2.Example.FromString(serialized)
    f = proto.features.feature
    columns = [_values(f, key) for key in keys.BBOX_KEYS]
    n = len(columns[0])
    boxes = np.array(columns, np.float32).T.reshape(n, 4) if n else np.zeros((0, 4), np.float32)
    texts = [t.decode("utf-8") for t in _values(f, keys.OBJECT_CLASS_TEXT)]
    labels = np.array(_values(f, keys.OBJECT_CLASS_LABEL), np.int64)
    areas = np.array(_values(f, keys.OBJECT_AREA), np.float32)
    is_crowd = np.array(_values(f, keys.OBJECT_IS_CROWD), np.int64)
    difficult = _values(f, keys.OBJECT_DIFFICULT)
    group_of = _values(f, keys.OBJECT_GROUP_OF)
    return ImageExample(
        encoded_image=_scalar(f, keys.IMAGE_ENCODED, b""),
        image_format=_scalar(f, keys.IMAGE_FORMAT, b"").decode(),
        height=int(_scalar(f, keys.IMAGE_HEIGHT, 0)),
        width=int(_scalar(f, keys.IMAGE_WIDTH, 0)),
        filename=_scalar(f, keys.IMAGE_FILENAME, b"").decode("utf-8"),
        source_id=_scalar(f, keys.IMAGE_SOURCE_ID, b"").decode("utf-8"),
        sha256=_scalar(f, keys.IMAGE_KEY_SHA256, b"").decode(),
        boxes=boxes,
        labels=labels if labels.size else np.zeros((0,), np.int64),
        texts=texts,
        areas=areas if areas.size else np.zeros((0,), np.float32),
        is_crowd=is_crowd if is_crowd.size else np.zeros((n,), np.int64),
        masks_png=list(_values(f, keys.OBJECT_MASK)),
        difficult=np.array(difficult, np.int64) if difficult else None,
        group_of=np.array(group_of, np.int64) if group_of else None,
    )
