"""Image files in and pictures out, for the inference tools.

Images: anything TensorFlow or OpenCV decodes; grayscale, palette, alpha and 16-bit images
are converted to 8-bit RGB. Pictures: masks, boxes and captions drawn with records/render.py,
small images enlarged so the captions stay legible.
"""
from __future__ import annotations

import glob
import os
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import tensorflow as tf

from core.errors import UserError
from records.label_map import LabelMap, read_label_map
from records.render import draw_enlarged

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
DISPLAY_MIN_SIDE = 512  # smaller images are drawn enlarged (whole factor) so text is legible


class InferError(UserError, ValueError):
    """Inference cannot run on these inputs; the message names the file and the fix."""


def find_images(pattern: str) -> list[Path]:
    """A directory (its image files) or a glob -> sorted image paths; none is an error."""
    if os.path.isdir(pattern):
        paths = [p for p in Path(pattern).iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS]
    else:
        paths = [Path(p) for p in glob.glob(pattern, recursive=True) if os.path.isfile(p)]
    if not paths:
        raise InferError(f"no image files match {pattern!r} (give a glob such as "
                         "'images/*.jpg' in quotes, or a directory)")
    return sorted(paths)


def _opencv_decode(data: bytes) -> np.ndarray | None:
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if image is None:
        return None
    if image.dtype == np.uint16:
        image = np.round(image / 257.0).astype(np.uint8)
    elif image.dtype != np.uint8:
        image = cv2.normalize(image, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    if image.ndim == 2:
        return np.stack([image] * 3, axis=-1)
    return cv2.cvtColor(image, cv2.COLOR_BGRA2RGB if image.shape[2] == 4 else cv2.COLOR_BGR2RGB)


def read_image(path: Path) -> np.ndarray:
    """uint8 RGB [H, W, 3]. TensorFlow decodes first (the pixels training saw), OpenCV next."""
    try:
        data = path.read_bytes()
    except OSError as err:
        raise InferError(f"{path}: cannot be read ({err.strerror})") from None
    try:
        return tf.io.decode_image(data, channels=3, dtype=tf.uint8,
                                  expand_animations=False).numpy()
    except (tf.errors.InvalidArgumentError, ValueError):
        image = _opencv_decode(data)
    if image is None:
        raise InferError(f"{path}: not an image that TensorFlow or OpenCV can decode "
                         "(corrupt or not an image file)")
    return image


def picture_name(path: Path, taken: set[str]) -> str:
    name, suffix = f"{path.stem}.png", 1
    while name in taken:
        name, suffix = f"{path.stem}_{suffix}.png", suffix + 1
    taken.add(name)
    return name


def render(image: np.ndarray, boxes: np.ndarray, masks: np.ndarray | None,
           captions: list[str], scores: np.ndarray) -> np.ndarray:
    """The pictures of infer, debug_stages and ensemble: small images drawn enlarged."""
    return draw_enlarged(image, boxes, masks, captions, scores, DISPLAY_MIN_SIDE)


def write_png(path: Path, image: np.ndarray) -> None:
    ok, encoded = cv2.imencode(".png", np.ascontiguousarray(image[..., ::-1]))
    if not ok:
        raise InferError(f"could not encode {path.name}")
    path.write_bytes(encoded.tobytes())


def class_names(label_map: LabelMap | None) -> Callable[[int], str]:
    """Label-map id -> display name (the id itself without a label map)."""
    return label_map.label_of if label_map is not None else (lambda i: str(int(i)))


def find_label_map(saved_model: Path, given: str | None) -> LabelMap | None:
    if given:
        return read_label_map(given)
    beside = saved_model.absolute().parent / "label_map.pbtxt"
    return read_label_map(beside) if beside.exists() else None
