"""Synthetic scenes: shapes with overlaps and occlusion on varied backgrounds.

Everything is determined by the seed: image i of a split is the same whatever the number
of images asked for. Each object's ground truth is its visible pixel set, and its polygon is
the exact pixel-edge outline of that set, so every format that stores the scene (COCO
polygons, VIA polygons, PNG masks) converts back to the same masks.
"""
from __future__ import annotations

import dataclasses
import zlib

import cv2
import numpy as np
from pycocotools import mask as mask_utils

from data_prep.synthetic.mask_outline import is_simple_region, outline

CLASSES = ("circle", "square", "triangle", "star")
MIN_VISIBLE_FRACTION = 0.5  # an occluded object keeps at least half of itself
PLACEMENT_TRIES = 30


@dataclasses.dataclass
class ShapeObject:
    class_name: str
    mask: np.ndarray  # uint8 [H, W] 0/1: the visible pixels (the ground truth)
    polygon: list[tuple[int, int]]  # exact outline of `mask` along pixel edges
    full_area: int  # pixels of the whole shape inside the image, occluded parts included

    @property
    def bbox(self) -> tuple[int, int, int, int]:
        """(x, y, w, h) in pixels."""
        xs = [p[0] for p in self.polygon]
        ys = [p[1] for p in self.polygon]
        return min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)


@dataclasses.dataclass
class ShapeImage:
    file_name: str  # relative to the split's image directory
    pixels: np.ndarray  # uint8 [H, W, 3] RGB
    objects: list[ShapeObject]

    @property
    def height(self) -> int:
        return self.pixels.shape[0]

    @property
    def width(self) -> int:
        return self.pixels.shape[1]


def _shape_vertices(class_name: str, cx: float, cy: float, radius: float, angle: float
                    ) -> np.ndarray:
    if class_name == "circle":
        t = np.linspace(0, 2 * np.pi, 64, endpoint=False)
        r = np.full_like(t, radius)
    elif class_name == "square":
        t = angle + np.pi / 4 + np.arange(4) * np.pi / 2
        r = np.full_like(t, radius)
    elif class_name == "triangle":
        t = angle + np.arange(3) * 2 * np.pi / 3
        r = np.full_like(t, radius * 1.15)
    elif class_name == "star":
        t = angle + np.arange(10) * np.pi / 5
        r = np.where(np.arange(10) % 2 == 0, radius * 1.2, radius * 0.5)
    else:
        raise ValueError(f"unknown shape class {class_name!r}")
    return np.stack([cx + r * np.cos(t), cy + r * np.sin(t)], axis=1)


def _rasterize(vertices: np.ndarray, height: int, width: int) -> np.ndarray:
    rles = mask_utils.frPyObjects([vertices.ravel().tolist()], height, width)
    return mask_utils.decode(mask_utils.merge(rles))


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    kind = rng.integers(4)
    base = rng.uniform(0, 255, 3)
    if kind == 0:  # solid
        img = np.broadcast_to(base, (height, width, 3)).astype(np.float64)
    elif kind == 1:  # linear gradient
        other = rng.uniform(0, 255, 3)
        direction = rng.uniform(0, 2 * np.pi)
        yy, xx = np.mgrid[0:height, 0:width]
        t = (np.cos(direction) * xx / width + np.sin(direction) * yy / height)
        t = (t - t.min()) / max(np.ptp(t), 1e-6)
        img = base * (1 - t[..., None]) + other * t[..., None]
    elif kind == 2:  # smooth noise texture
        small = rng.uniform(0, 255, (max(height // 16, 2), max(width // 16, 2), 3))
        img = cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)
        img = 0.6 * img + 0.4 * base
    else:  # stripes
        other = rng.uniform(0, 255, 3)
        period = rng.uniform(6, 24)
        direction = rng.uniform(0, np.pi)
        yy, xx = np.mgrid[0:height, 0:width]
        phase = (np.cos(direction) * xx + np.sin(direction) * yy) / period
        t = (np.sin(2 * np.pi * phase) > 0).astype(np.float64)
        img = base * (1 - t[..., None]) + other * t[..., None]
    return img


def generate_image(seed: int, split: str, index: int, height: int = 128, width: int = 128,
                   min_objects: int = 2, max_objects: int = 6,
                   radius_range: tuple[float, float] = (0.08, 0.2)) -> ShapeImage:
    """One scene, determined by (seed, split, index) alone."""
    rng = np.random.default_rng([seed, zlib.crc32(split.encode()), index])
    canvas = _background(rng, height, width)
    wanted = int(rng.integers(min_objects, max_objects + 1))
    placed: list[tuple[str, np.ndarray, np.ndarray, np.ndarray]] = []  # name, full, vis, color
    side = min(height, width)
    for _ in range(wanted):
        for _ in range(PLACEMENT_TRIES):
            name = CLASSES[int(rng.integers(len(CLASSES)))]
            radius = rng.uniform(*radius_range) * side
            cx, cy = rng.uniform(0.05, 0.95) * width, rng.uniform(0.05, 0.95) * height
            full = _rasterize(_shape_vertices(name, cx, cy, radius, rng.uniform(0, 2 * np.pi)),
                              height, width)
            if full.sum() < 0.5 * np.pi * radius ** 2 * 0.6 or not is_simple_region(full):
                continue  # mostly outside the image
            below = [(n, f, v & (1 - full), c) for n, f, v, c in placed]
            if all(is_simple_region(v) and v.sum() >= MIN_VISIBLE_FRACTION * f.sum()
                   for _, f, v, _ in below):
                color = rng.uniform(0, 255, 3)
                while np.abs(color - canvas[full > 0].mean(axis=0)).max() < 60:
                    color = rng.uniform(0, 255, 3)  # keep objects visible on their background
                placed = below + [(name, full, full.copy(), color)]
                break
    for _, full, _, color in placed:  # paint bottom to top
        shade = rng.uniform(0.85, 1.15)
        canvas[full > 0] = np.clip(color * shade, 0, 255)
    canvas += rng.normal(0, 4, canvas.shape)
    pixels = np.clip(canvas, 0, 255).astype(np.uint8)
    objects = [ShapeObject(n, v, outline(v), int(f.sum())) for n, f, v, _ in placed]
    return ShapeImage(f"{split}_{index:06d}.jpg", pixels, objects)


def encode_image(image: ShapeImage, image_format: str = "jpeg") -> bytes:
    bgr = image.pixels[..., ::-1]
    if image_format == "png":
        ok, buf = cv2.imencode(".png", bgr)
    else:
        ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 92])
    if not ok:
        raise RuntimeError(f"could not encode {image.file_name}")
    return buf.tobytes()
