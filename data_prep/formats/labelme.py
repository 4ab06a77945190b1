"""Labelme JSON -> AnnotationSet (--format labelme).

Labelme (github.com/wkentaro/labelme) writes one JSON file per image: `shapes` (each with a
`label`, `points`, `shape_type`, `group_id`), `imagePath` relative to the JSON file,
`imageData` (the image itself, base64, unless Labelme ran with --nodata) and `imageHeight`
/ `imageWidth`. --annotations is one such file or a directory searched recursively.

* Shapes: polygon (and oriented_rectangle) as drawn; rectangle (two corners) and circle
  (centre and a point on the rim, within 0.05 px) become polygons; mask (Labelme's AI masks:
  a base64 PNG placed at the first of its two points) becomes a run-length mask. line,
  linestrip and point have no area: skipped and counted as warnings.
* Instances: shapes with the same label and group_id are one instance (parts unioned), as
  Labelme's own labelme2coco and shapes_to_label treat them; shapes without group_id are one
  each. The labels `__ignore__` and `_background_` (Labelme's labels.txt conventions) are no
  classes: left out and counted.
* The image: `imageData` when present, which is what Labelme shows and annotates (it applies
  the EXIF orientation before storing it), extracted into a work directory; otherwise the
  file at `imagePath` (Windows separators read as such) beside the JSON file, or in
  --images_dir. A name that is no file there is looked up by its last part.
"""
from __future__ import annotations

import base64
import binascii
import math
import os
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from core.directory_commit import describe_os_error
from core.errors import OutputError
from data_prep import field_checks
from data_prep.annotations import (
    AnnotationFileError,
    AnnotationSet,
    ImageAnnotation,
    ObjectAnnotation,
    Polygons,
    Problem,
    RunLengths,
    found_by_file_name,
    load_json,
    posix_file_name,
    resolve_inside,
)
from data_prep.field_checks import FieldError, coordinate, integer
from data_prep.formats.via_shapes import ellipse_polygon, spans_area
from data_prep.formats.work_dir import WorkDir
from data_prep.safe_files import FileLimits, ImageFileError, open_image

IGNORED_LABELS = ("__ignore__", "_background_")
NO_AREA_SHAPES = ("line", "linestrip", "point")
_SIGNATURES = ((b"\xff\xd8\xff", ".jpg"), (b"\x89PNG\r\n\x1a\n", ".png"), (b"GIF8", ".gif"),
               (b"BM", ".bmp"), (b"II*\x00", ".tif"), (b"MM\x00*", ".tif"))


class _File:
    """One Labelme JSON file being read."""

    def __init__(self, path: Path, record: str, problems: list[Problem]):
        self.path, self.record, self.problems = path, record, problems  # record: "image 'a'"

    def problem(self, reason: str, where: str, message: str, is_error: bool = True,
                scope: str = "annotation") -> None:
        record = f"{self.record}, {where}" if where else self.record
        self.problems.append(Problem(reason, message, str(self.path), record, is_error, scope))


def _label_files(annotations: Path, exclude: Path | None) -> tuple[list[Path], Path]:
    """The JSON files to read (none below `exclude`, the output directory, whose summaries
    are JSON too), and the directory image paths must stay in."""
    if annotations.is_dir():
        outside = (lambda p: True) if exclude is None else (
            lambda p: not p.resolve().is_relative_to(exclude.resolve()))
        files = sorted(p for p in annotations.rglob("*.json") if p.is_file() and outside(p))
        if not files:
            raise AnnotationFileError(f"{annotations}: no Labelme JSON files (*.json) in this "
                                      "directory or below")
        return files, annotations
    if not annotations.exists():
        raise AnnotationFileError(f"{annotations}: annotation file does not exist")
    return [annotations], annotations.parent


def _points(value: Any) -> list[tuple[float, float]]:
    if not isinstance(value, list) or not value:
        raise FieldError("points", f"is {value!r:.60}, not a list of [x, y] points")
    points = []
    for i, point in enumerate(value):
        if not isinstance(point, (list, tuple)) or len(point) != 2:
            raise FieldError(f"points[{i}]", f"is {point!r:.60}, not an [x, y] pair")
        points.append((coordinate(point[0], f"points[{i}][0]"),
                       coordinate(point[1], f"points[{i}][1]")))
    return points


class _NoArea(Exception):
    """A shape that yields no region: skipped with a warning of `reason`."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


def _polygon(shape_type: str, points: list[tuple[float, float]]) -> tuple[float, ...]:
    """The polygon of a polygon, rectangle or circle shape, in COCO pixel coordinates (the
    ones Labelme's own labelme2coco writes)."""
    if shape_type in ("rectangle", "circle"):
        if len(points) != 2:
            raise FieldError("points", f"holds {len(points)} point(s); a {shape_type} has 2")
        (x0, y0), (x1, y1) = points
        if shape_type == "circle":
            radius = math.hypot(x1 - x0, y1 - y0)
            if radius == 0:
                raise _NoArea("zero_area_shape", "circle has radius 0 (zero area)")
            return ellipse_polygon(x0, y0, radius, radius)
        (left, right), (top, bottom) = sorted((x0, x1)), sorted((y0, y1))
        if left == right or top == bottom:
            raise _NoArea("zero_area_shape", f"rectangle is {right - left:g}x{bottom - top:g} "
                          "(zero area)")
        return (left, top, right, top, right, bottom, left, bottom)
    distinct = len(set(points))
    if distinct < 3:
        raise _NoArea("too_few_points", f"{shape_type} has {distinct} distinct point(s); at "
                      "least 3 are needed for an area")
    if not spans_area(points):
        raise _NoArea("zero_area_shape", f"{shape_type} points all lie on one line (zero "
                      "area)")
    return tuple(v for point in points for v in point)


def _b64(value: Any, field: str) -> bytes:
    if not isinstance(value, str) or not value.strip():
        raise FieldError(field, f"is {value!r:.60}, not base64 text")
    try:
        return base64.b64decode("".join(value.split()), validate=True)
    except (binascii.Error, ValueError):
        raise FieldError(field, "is not valid base64") from None


def _mask(shape: dict, points: list[tuple[float, float]], size: tuple[int, int] | None,
          limits: FileLimits, where: str) -> np.ndarray:
    """The full-image 0/1 mask of a mask shape: its PNG patch at its first point, rounded
    as Labelme places it."""
    if size is None:
        raise FieldError("mask", "shape needs the image size: imageHeight and imageWidth")
    height, width = size
    if height * width > limits.max_pixels:  # the mask is allocated at the image's size
        raise FieldError("mask", f"image size {width:g}x{height:g} (imageWidth x imageHeight) is "
                         f"over the limit of {limits.max_pixels:,} pixels (--max_image_pixels)")
    data = _b64(shape.get("mask"), "mask")
    try:
        with open_image(data, where, limits, what="mask") as img:
            patch = np.asarray(img.convert("L")) > 0
    except ImageFileError as err:
        raise FieldError("mask", str(err)) from None
    full = np.zeros((height, width), bool)
    x, y = (int(round(v)) for v in points[0])
    top, left = max(y, 0), max(x, 0)
    bottom, right = min(y + patch.shape[0], height), min(x + patch.shape[1], width)
    if top < bottom and left < right:
        full[top:bottom, left:right] = patch[top - y:bottom - y, left - x:right - x]
    return full


def _run_lengths(mask: np.ndarray) -> RunLengths:
    """COCO's uncompressed RLE: column-major runs, zeros first."""
    flat = mask.ravel(order="F").astype(np.int8)
    changes = np.flatnonzero(np.diff(flat)) + 1
    counts = np.diff(np.concatenate([[0], changes, [flat.size]])).tolist()
    if flat.size and flat[0]:
        counts = [0] + counts
    return RunLengths(counts, int(mask.shape[0]), int(mask.shape[1]))


class _Instance:
    def __init__(self, label: str, first_shape: int):
        self.label, self.shapes = label, [first_shape]
        self.parts: list[tuple[float, ...]] = []
        self.masks: list[np.ndarray] = []


def _shapes(file: _File, shapes: list, size: tuple[int, int] | None, limits: FileLimits
            ) -> list[_Instance]:
    """The instances of one file's shapes (problems reported on `file`)."""
    instances: dict[Any, _Instance] = {}
    labels_of_group: dict[int, set[str]] = {}
    for i, shape in enumerate(shapes):
        where = f"shape {i}"
        if not isinstance(shape, dict):
            file.problem("bad_shape", where, f"is {type(shape).__name__}, not an object")
            continue
        label = shape.get("label")
        if not isinstance(label, str) or not label.strip():
            file.problem("bad_shape", where, f"label is {label!r:.60}, not a class name")
            continue
        where = f"shape {i} ({label!r})"
        if label in IGNORED_LABELS:
            file.problem("ignored_label", where, f"{label} marks a region to ignore, not a "
                         "class; left out", is_error=False)
            continue
        shape_type = shape.get("shape_type") or "polygon"  # Labelme 3 wrote none
        try:
            if not isinstance(shape_type, str):
                raise FieldError("shape_type", f"is {shape_type!r:.60}, not a shape name")
            group_id = (None if shape.get("group_id") is None
                        else integer(shape["group_id"], "group_id"))
            if shape_type in NO_AREA_SHAPES:
                raise _NoArea("not_an_area", f"a {shape_type} has no area: not an instance; "
                              "skipped")
            points = _points(shape.get("points"))
            if shape_type == "mask":
                region: Any = _mask(shape, points, size, limits, f"{file.path} {where}")
            elif shape_type in ("polygon", "oriented_rectangle", "rectangle", "circle"):
                region = _polygon(shape_type, points)
            else:
                file.problem("unknown_shape", where, f"shape_type {shape_type!r} is none of "
                             "Labelme's (polygon, rectangle, circle, mask, line, linestrip, "
                             "point)")
                continue
        except FieldError as err:
            file.problem("bad_shape", where, str(err))
            continue
        except _NoArea as skip:
            file.problem(skip.reason, where, str(skip), is_error=False)
            continue
        key = (label, group_id) if group_id is not None else ("", i)
        instance = instances.get(key)
        if instance is None:
            instance = instances[key] = _Instance(label, i)
        else:
            instance.shapes.append(i)
        (instance.masks if shape_type == "mask" else instance.parts).append(region)
        if group_id is not None:
            labels_of_group.setdefault(group_id, set()).add(label)
    for group_id, labels in labels_of_group.items():
        if len(labels) > 1:
            file.problem("group_of_several_labels", f"group_id {group_id}",
                         f"groups shapes of {sorted(labels)}: one instance per label, as "
                         "Labelme's own converters make them", is_error=False)
    return list(instances.values())


def _instance_object(file: _File, instance: _Instance) -> ObjectAnnotation | None:
    shapes = ", ".join(str(s) for s in instance.shapes)
    name = f"shape {shapes}" if len(instance.shapes) == 1 else f"shapes {shapes}"
    if instance.masks and instance.parts:
        file.problem("bad_group", name, "one group_id joins a mask shape with polygon "
                     "shapes, which cannot be one instance here: give them separate "
                     "group_ids or draw the mask as a polygon")
        return None
    segmentation: Any = (Polygons(tuple(instance.parts)) if instance.parts
                         else _run_lengths(np.logical_or.reduce(instance.masks)))
    return ObjectAnnotation(annotation_id=name, class_name=instance.label,
                            segmentation=segmentation)


class _Reader:
    def __init__(self, root: Path, images_dir: str | None, work_dir: WorkDir,
                 limits: FileLimits):
        self.root, self.images_dir, self.work_dir, self.limits = (root, images_dir, work_dir,
                                                                  limits)
        self.problems: list[Problem] = []

    def image(self, path: Path, index: int) -> ImageAnnotation | None:
        relative = path.relative_to(self.root).as_posix()
        file = _File(path, "the file", self.problems)
        try:
            data = load_json(path, "Labelme")
        except AnnotationFileError as err:
            file.problem("not_labelme", "", str(err).removeprefix(f"{path}: "), scope="image")
            return None
        if not isinstance(data, dict) or not isinstance(data.get("shapes"), list):
            found = (f"the top level is {type(data).__name__}" if not isinstance(data, dict)
                     else "'shapes' is missing" if "shapes" not in data
                     else f"'shapes' is {type(data['shapes']).__name__}")
            file.problem("not_labelme", "", f"not a Labelme file: {found}, expected an "
                         "object with a list 'shapes'", scope="image")
            return None
        try:
            image_path = posix_file_name(field_checks.file_name(data.get("imagePath"),
                                                                "imagePath"))
            width, height = (None if data.get(key) is None else integer(data[key], key, 1)
                             for key in ("imageWidth", "imageHeight"))
            embedded = (None if data.get("imageData") is None
                        else _b64(data["imageData"], "imageData"))
        except FieldError as err:
            file.problem("bad_image_entry", "", str(err), scope="image")
            return None
        file.record = f"image {image_path!r}"
        if embedded is not None:
            location = self._extract(embedded, index, image_path)
            if width is None or height is None:
                width, height = self._size(embedded, file) or (width, height)
        else:
            location = self._locate(path, image_path, file)
        if location is None:
            return None
        item = ImageAnnotation(image_path=str(location), file_name=image_path,
                               image_id=relative, source_id=index + 1, width=width,
                               height=height)
        size = (height, width) if width and height else None
        for instance in _shapes(file, data["shapes"], size, self.limits):
            obj = _instance_object(file, instance)
            if obj is not None:
                item.objects.append(obj)
        return item

    def _extract(self, data: bytes, index: int, image_path: str) -> Path:
        """Writes an embedded image where the converter reads it, named by its contents'
        format (Labelme stores JPEG and PNG, re-encoded when it applied an EXIF turn)."""
        suffix = next((ext for signature, ext in _SIGNATURES if data.startswith(signature)),
                      PurePosixPath(image_path).suffix or ".img")
        target = self.work_dir.path() / f"{index + 1:06d}-{PurePosixPath(image_path).stem}"
        target = target.with_name(target.name[:200] + suffix)
        try:
            target.write_bytes(data)
        except OSError as err:
            raise OutputError(describe_os_error(err, str(target))) from None
        return target

    def _size(self, data: bytes, file: _File) -> tuple[int, int] | None:
        try:
            with open_image(data, str(file.path), self.limits, what="imageData") as img:
                return img.size
        except ImageFileError:
            return None  # the converter reports the image itself

    def _locate(self, json_path: Path, image_path: str, file: _File) -> Path | None:
        """The image file: relative to the JSON file (inside --annotations), or in
        --images_dir; a name that is no file there is looked up by its last part."""
        if self.images_dir is not None:
            base, relative = Path(self.images_dir), image_path
        else:
            base = self.root
            relative = os.path.join(json_path.parent.relative_to(self.root).as_posix(),
                                    image_path)
        resolved = resolve_inside(base, relative)
        fallback = found_by_file_name(base if self.images_dir else json_path.parent,
                                      image_path, resolved)
        if fallback is not None:
            file.problem("image_found_by_file_name", "", f"imagePath {image_path!r} is no "
                         f"file there; using {fallback}", is_error=False, scope="image")
            return fallback
        if resolved is None:
            file.problem("path_escapes_images_dir", "", f"imagePath {image_path!r} leads out "
                         f"of {base}: pass the folder holding both as --annotations, or the "
                         "images' folder as --images_dir", scope="image")
        return resolved


def read_labelme(annotations: str | Path, images_dir: str | Path | None = None,
                 work_dir: WorkDir | None = None, limits: FileLimits = FileLimits(),
                 exclude: str | Path | None = None) -> AnnotationSet:
    """Reads one Labelme JSON file or every one in a directory (recursively, leaving out
    `exclude`: the output directory). Problems are collected per image and shape, not
    raised; a path that holds no Labelme file at all is an AnnotationFileError."""
    files, root = _label_files(Path(annotations), Path(exclude) if exclude else None)
    reader = _Reader(root, str(images_dir) if images_dir else None, work_dir or WorkDir(),
                     limits)
    images = [image for index, path in enumerate(files)
              if (image := reader.image(path, index)) is not None]
    names = sorted({obj.class_name for image in images for obj in image.objects})
    return AnnotationSet(source=str(annotations), class_names=names, images=images,
                         problems=reader.problems)
