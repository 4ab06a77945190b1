"""Drawing instances (masks, boxes, class names, scores) on an image, for people to look at.

Shared by `python -m records.inspect --render` (what the model will be trained on) and the
inference command (what it predicted), so ground truth and predictions look alike. Pure
NumPy/OpenCV/PIL: no TensorFlow.
"""
from __future__ import annotations

import functools
from typing import Sequence

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

# Distinct, saturated colours (RGB); instance i gets PALETTE[i % len(PALETTE)].
PALETTE = (
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
    (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212),
    (0, 128, 128), (220, 190, 255), (170, 110, 40), (255, 250, 200), (128, 0, 0),
    (170, 255, 195), (128, 128, 0), (255, 215, 180), (0, 0, 128), (255, 255, 255),
)
MASK_ALPHA = 0.45  # the object stays visible under its colour
MASK_THRESHOLD = 0.5  # masks may be 0/1 or probabilities
FONT_FILES = ("DejaVuSans.ttf",)


def color_of(index: int) -> tuple[int, int, int]:
    return PALETTE[index % len(PALETTE)]


def enlarge_for_display(image: np.ndarray, boxes_pixels: np.ndarray,
                        masks: np.ndarray | None, min_side: int
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, int]:
    """Scales small images up by a whole factor (nearest neighbour) so labels stay legible.

    Returns the image, boxes, masks and the factor used (1 when the image is big enough).
    A whole factor keeps every original pixel a sharp k x k block: nothing is invented.
    """
    shorter = min(image.shape[:2])
    factor = max(1, min_side // shorter) if shorter and min_side > shorter else 1
    if factor == 1:
        return image, boxes_pixels, masks, 1
    image = np.repeat(np.repeat(image, factor, axis=0), factor, axis=1)
    if masks is not None and len(masks):
        masks = np.repeat(np.repeat(masks, factor, axis=1), factor, axis=2)
    return image, np.asarray(boxes_pixels, np.float64) * factor, masks, factor


def draw_instances(image: np.ndarray, boxes_pixels: np.ndarray, masks: np.ndarray | None,
                   labels_text: Sequence[str], scores: Sequence[float] | None = None
                   ) -> np.ndarray:
    """Returns a copy of `image` with every instance drawn in its own colour.

    image: uint8 RGB [H, W, 3]. boxes_pixels: [N, 4] ymin, xmin, ymax, xmax in pixel edges
    (a box around pixel columns 3..5 has xmin 3, xmax 6), the records' order. masks: None, or
    [N, H, W] full-image masks (0/1 or probabilities, >= 0.5 counts), blended in at
    MASK_ALPHA with their outline drawn. labels_text: N names; scores, when given, are
    appended as "name 0.93". Pixels away from every instance are left untouched.
    """
    canvas = np.array(image, dtype=np.uint8, copy=True)
    if canvas.ndim == 2:
        canvas = np.stack([canvas] * 3, axis=-1)
    height, width = canvas.shape[:2]
    boxes = np.asarray(boxes_pixels, np.float64).reshape(-1, 4)
    if masks is not None and len(masks):
        if tuple(masks.shape[1:]) != (height, width):
            raise ValueError(f"masks are {masks.shape[1:]} but the image is {(height, width)}")
        for i, mask in enumerate(masks):
            _blend_mask(canvas, mask >= MASK_THRESHOLD, color_of(i))
    thickness = max(1, min(height, width) // 300)
    for i, (ymin, xmin, ymax, xmax) in enumerate(boxes.tolist()):
        top_left = (int(round(xmin)), int(round(ymin)))
        bottom_right = (max(int(round(xmax)) - 1, top_left[0]),
                        max(int(round(ymax)) - 1, top_left[1]))
        cv2.rectangle(canvas, top_left, bottom_right, color_of(i), thickness)
    texts = [_caption(labels_text, scores, i) for i in range(len(boxes))]
    return _draw_captions(canvas, boxes, texts)


def draw_enlarged(image: np.ndarray, boxes_pixels: np.ndarray, masks: np.ndarray | None,
                  labels_text: Sequence[str], scores: Sequence[float] | None = None,
                  min_side: int = 512) -> np.ndarray:
    """draw_instances on the image, enlarged first (enlarge_for_display) when its shorter
    side is under `min_side`: what every picture for people (records, predictions, eval
    images) goes through."""
    image, boxes_pixels, masks, _ = enlarge_for_display(image, boxes_pixels, masks, min_side)
    return draw_instances(image, boxes_pixels, masks, labels_text, scores)


def _caption(labels_text: Sequence[str], scores: Sequence[float] | None, i: int) -> str:
    text = labels_text[i] if i < len(labels_text) else ""
    if scores is not None and i < len(scores):
        text = f"{text} {float(scores[i]):.2f}".strip()
    return text


def _blend_mask(canvas: np.ndarray, mask: np.ndarray, color: tuple[int, int, int]) -> None:
    if not mask.any():
        return
    pixels = canvas[mask].astype(np.float32)
    canvas[mask] = np.round(pixels * (1 - MASK_ALPHA) + np.float32(color) * MASK_ALPHA
                            ).astype(np.uint8)
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL,
                                   cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(canvas, contours, -1, color, 1)


@functools.lru_cache(maxsize=16)
def _font(height: int, width: int) -> ImageFont.ImageFont:
    """DejaVu Sans when installed (it has accented and Greek/Cyrillic letters, Pillow's
    built-in font lacks even "É"), else Pillow's built-in font."""
    size = int(np.clip(min(height, width) / 32, 11, 28))
    for name in FONT_FILES:
        try:
            return ImageFont.truetype(name, size)  # Pillow also searches the system's fonts
        except OSError:
            continue
    try:
        return ImageFont.load_default(size=size)  # scalable when Pillow has FreeType
    except (TypeError, OSError):
        return ImageFont.load_default()


def _draw_captions(canvas: np.ndarray, boxes: np.ndarray, texts: list[str]) -> np.ndarray:
    """Writes each caption on a patch of its instance's colour above the box (or inside it
    when the box touches the top of the image). PIL draws any Unicode name, OpenCV cannot."""
    if not any(texts):
        return canvas
    height, width = canvas.shape[:2]
    picture = Image.fromarray(canvas)
    draw = ImageDraw.Draw(picture)
    font = _font(height, width)
    pad = 2
    placed: list[tuple[int, int, int, int]] = []
    for i, (text, (ymin, xmin, _, _)) in enumerate(zip(texts, boxes.tolist())):
        if not text:
            continue
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        text_w, text_h = right - left, bottom - top
        patch_w, patch_h = text_w + 2 * pad, text_h + 2 * pad
        x = int(np.clip(round(xmin), 0, max(width - patch_w, 0)))
        y = int(round(ymin)) - patch_h
        if y < 0:
            y = max(int(round(ymin)), 0)
        while any(_overlaps((x, y, patch_w, patch_h), other) for other in placed):
            y += patch_h  # boxes sharing a corner: stack their captions
        placed.append((x, y, patch_w, patch_h))
        color = color_of(i)
        draw.rectangle((x, y, x + patch_w - 1, y + patch_h - 1), fill=color)
        luminance = 0.299 * color[0] + 0.587 * color[1] + 0.114 * color[2]
        ink = (0, 0, 0) if luminance > 140 else (255, 255, 255)
        draw.text((x + pad - left, y + pad - top), text, font=font, fill=ink)
    return np.asarray(picture).copy()


def _overlaps(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
    """Whether two (x, y, width, height) rectangles share any pixel."""
    return a[0] < b[0] + b[2] and b[0] < a[0] + a[2] and a[1] < b[1] + b[3] and b[1] < a[1] + a[3]
