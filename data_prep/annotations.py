"""The format-neutral annotations every reader produces and the converter consumes.

A reader (COCO, VIA, Open Images, VOC) turns its files into an `AnnotationSet`: class names in
label-map order, one `ImageAnnotation` per image, and the `Problem`s it found. It checks what
can be checked from the annotations alone; what needs the image (size, decodability) is
checked by the converter. Readers know nothing of TensorFlow or of the record format.
"""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path, PureWindowsPath
from typing import Any, Union

from core.errors import UserError


@dataclasses.dataclass(frozen=True)
class Polygons:
    """One or more polygon parts, each a flat [x0, y0, x1, y1, ...] list in image pixels.

    Parts are unioned, as COCO does. Coordinates follow COCO: (0, 0) is the top-left corner
    of the top-left pixel.
    """

    parts: tuple[tuple[float, ...], ...]


@dataclasses.dataclass(frozen=True)
class RunLengths:
    """A COCO run-length encoding: `counts` is a list (uncompressed) or a string (compressed)."""

    counts: Union[list, str, bytes]
    height: int
    width: int


@dataclasses.dataclass(frozen=True)
class MaskFile:
    """A mask stored as an image file, possibly at another resolution than the image.

    `value` selects the pixels of this instance (VOC's instance index); None means every
    non-zero pixel (Open Images' binary masks). `crop_box` (x0, y0, x1, y1, in image
    pixels) zeroes everything outside it after resizing, for masks shared by several boxes.
    """

    path: str
    value: int | None = None
    crop_box: tuple[float, float, float, float] | None = None


Segmentation = Union[Polygons, RunLengths, MaskFile]


@dataclasses.dataclass
class ObjectAnnotation:
    annotation_id: str  # as the source names it, for messages
    class_name: str
    segmentation: Segmentation
    bbox: tuple[float, float, float, float] | None = None  # x, y, w, h pixels; None: from mask
    is_crowd: bool = False
    area: float | None = None  # None: the mask's pixel count
    difficult: bool = False
    group_of: bool = False


@dataclasses.dataclass
class ImageAnnotation:
    image_path: str  # where the image file is
    file_name: str  # as the annotations name it, written as image/filename
    image_id: str  # as the source names it, for messages
    source_id: int  # numeric id written as image/source_id
    width: int | None = None  # as annotated; None: taken from the image
    height: int | None = None
    objects: list[ObjectAnnotation] = dataclasses.field(default_factory=list)
    # Regions (x0, y0, x1, y1, pixels) to fill with gray before writing: unlabelled objects
    # that must not be learned as background (Open Images layer1 groups).
    gray_boxes: list[tuple[float, float, float, float]] = dataclasses.field(default_factory=list)


@dataclasses.dataclass(frozen=True)
class Problem:
    """Something wrong or noteworthy in the input, with where it is.

    `reason` is a short stable code used for counting in the summary; `message` is the
    sentence a user reads. Errors stop the run unless --skip_errors; warnings never do.
    """

    reason: str
    message: str
    file: str
    record: str  # e.g. "annotation 17" or "image 'a.jpg' (id 3)"
    is_error: bool = True
    scope: str = "annotation"  # what is skipped under --skip_errors: annotation or image

    def __str__(self) -> str:
        return f"{self.file}: {self.record}: {self.message}"


@dataclasses.dataclass
class AnnotationSet:
    source: str  # the annotation file or directory read
    class_names: list[str]  # label-map order: ids 1..K
    images: list[ImageAnnotation]
    problems: list[Problem] = dataclasses.field(default_factory=list)
    display_names: list[str] | None = None  # parallel to class_names, when they differ
    # The label-map id of each class, parallel to class_names; None: 1..K in that order.
    # COCO keeps its category ids here, as the OD API does (COCO's label map goes to 90).
    label_ids: list[int] | None = None
    # The source's own id of each class when the label map renumbers them (--contiguous_ids,
    # or ids a label map cannot hold such as 0): kept beside the label map in
    # category_ids.json, so that COCO results can carry the source's ids again.
    category_ids: list[int | str] | None = None
    # class name -> (ancestor names, descendant names), for hierarchical label sets (Open
    # Images): written as the label map's ancestor_ids / descendant_ids.
    class_relations: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] | None = None

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.is_error]


def resolve_inside(images_dir: str | Path, file_name: str) -> Path | None:
    """Joins `file_name` to `images_dir`; None when the result would escape the directory.

    Guards against annotation files that name `../../etc/passwd` or absolute paths. The
    check is lexical, so an images directory holding symlinks to elsewhere still works.
    """
    normalized = os.path.normpath(file_name)
    if (os.path.isabs(normalized) or normalized == os.pardir
            or normalized.startswith(os.pardir + os.sep) or normalized == os.curdir):
        return None
    return Path(images_dir) / normalized


def posix_file_name(file_name: str) -> str:
    """A file name written with Windows separators (`images\\a.jpg`, as Label Studio and
    Labelme on Windows write them) as the relative POSIX path it means."""
    return PureWindowsPath(file_name).as_posix() if "\\" in file_name else file_name


def found_by_file_name(images_dir: str | Path, file_name: str, resolved: Path | None
                       ) -> Path | None:
    """images_dir/<last part of file_name> when `resolved` (the name as written, None when
    it escapes the directory) is no file but that one is: for names that point into the
    annotation tool's own storage (`/data/upload/3/a.jpg`, `C:/Users/me/a.jpg`) while the
    image sits in the images directory."""
    if resolved is not None and resolved.is_file():
        return None
    name = PureWindowsPath(file_name).name
    candidate = Path(images_dir) / name
    if not name or name in (os.curdir, os.pardir) or candidate == resolved:
        return None
    return candidate if candidate.is_file() else None


class AnnotationFileError(UserError, ValueError):
    """The annotation file as a whole cannot be used (unreadable, not this format)."""


class DuplicateKeyError(ValueError):
    """A JSON object names the same key twice (json keeps the last one silently)."""

    def __init__(self, key: str):
        super().__init__(key)
        self.key = key


def unique_keys(pairs: list[tuple[str, Any]]) -> dict:
    """json's object_pairs_hook that refuses repeated keys."""
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set = set()
        for key, _ in pairs:
            if key in seen:
                raise DuplicateKeyError(key)
            seen.add(key)
    return result


def load_json(path: str | Path, format_name: str) -> Any:
    """Loads a JSON annotation file, with errors that name the file and the position.

    A key repeated in one object is an error: json would keep only its last value, so an
    image or region written twice (a hand edit, a bad merge) would silently lose the first.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            return json.load(f, object_pairs_hook=unique_keys)
    except FileNotFoundError:
        raise AnnotationFileError(f"{path}: annotation file does not exist") from None
    except IsADirectoryError:
        raise AnnotationFileError(f"{path}: is a directory, not an annotation file") from None
    except UnicodeDecodeError as err:
        raise AnnotationFileError(f"{path}: not a {format_name} JSON file (not UTF-8 text: "
                                  f"{err.reason} at byte {err.start})") from None
    except json.JSONDecodeError as err:
        raise AnnotationFileError(f"{path}: not a {format_name} JSON file (invalid JSON at "
                                  f"line {err.lineno} column {err.colno}: {err.msg})") from None
    except DuplicateKeyError as err:
        raise AnnotationFileError(
            f"{path}: the key {err.key!r} appears twice in one JSON object, so the file is "
            "ambiguous (JSON readers keep only the last one): remove or rename one of them"
        ) from None
    except RecursionError:
        raise AnnotationFileError(f"{path}: not a {format_name} JSON file (nested too deeply)"
                                  ) from None
    except OSError as err:
        raise AnnotationFileError(f"{path}: annotation file cannot be read: {err.strerror}"
                                  ) from None
