"""Open Images (V5-V7) instance segmentation -> AnnotationSet.

    python data_prep/create_tfrecords.py --format openimages \\
        --annotations train-annotations-object-segmentation.csv \\
        --images_dir train/ --masks_dir train-masks/ \\
        --class_descriptions oidv6-class-descriptions.csv \\
        --hierarchy bbox_labels_600_hierarchy.json --output_dir records/

Inputs: the segmentation CSV (MaskPath, ImageID, LabelName, BoxID, BoxXMin, BoxXMax,
BoxYMin, BoxYMax; PredictedIoU and Clicks are not used), one binary PNG per row found by
MaskPath in --masks_dir or one folder below it (each train-masks-X.zip may be unpacked into
its own folder), <ImageID>.jpg in --images_dir, the class descriptions CSV (MID, display
name; with or without a header row) and, for the hierarchy options, the hierarchy JSON.

Masks are kept at their own resolution and resized to the image by the converter (nearest
neighbour); boxes are taken from the resized masks, so they always enclose them (the CSV
boxes are used only to hide objects and to tell duplicates apart in layer1).

Label map: item names are MIDs and display names come from the descriptions, as in the
Object Detection API's Open Images label maps; ids follow the descriptions file's order (the
boxable file gives the OD API's order) over the classes that occur, or the --classes order.
Only images named in the CSV are converted; those left without instances (by --classes or a
hierarchy group) stay as negatives unless --drop_empty_images.
"""
from __future__ import annotations

import concurrent.futures
import csv
import gc
import math
import os
from pathlib import Path
from typing import Callable

from PIL import Image

from data_prep.annotations import (
    AnnotationFileError,
    AnnotationSet,
    ImageAnnotation,
    MaskFile,
    ObjectAnnotation,
    Problem,
    resolve_inside,
)
from data_prep.formats.openimages_classes import (
    open_csv_error,
    read_class_descriptions,
    resolve_classes,
)
from data_prep.safe_files import is_regular_file
from records.class_hierarchy import GROUPS, LAYER1, GroupDecision, Hierarchy, load_hierarchy

REQUIRED_COLUMNS = ("MaskPath", "ImageID", "LabelName", "BoxID", "BoxXMin", "BoxXMax",
                    "BoxYMin", "BoxYMax")
SAME_OBJECT_IOU = 0.5  # a hidden class's box this close to a labelled subclass's is that one
Box = tuple[float, float, float, float]  # normalized x0, y0, x1, y1
_NOT_IN_HIERARCHY = GroupDecision(())


class _MaskIndex:
    """Finds mask files by listing each directory once: one stat per mask (2.1M of them)
    would take minutes on network file systems."""

    def __init__(self, root: Path):
        if not root.is_dir():
            raise AnnotationFileError(f"masks directory {root} does not exist (pass "
                                      "--masks_dir)")
        self.root = str(root)
        self._root_prefix = os.path.join(self.root, "")
        self._listings: dict[str, frozenset[str]] = {}
        self._subdirs: list[str] | None = None

    def _names(self, directory: str) -> frozenset[str]:
        names = self._listings.get(directory)
        if names is None:
            try:
                with os.scandir(directory) as entries:
                    names = frozenset(entry.name for entry in entries)
            except OSError:
                names = frozenset()
            self._listings[directory] = names
        return names

    def find(self, mask_path: str) -> str | None:
        if not mask_path or "/" in mask_path or "\\" in mask_path or mask_path in (".", ".."):
            resolved = resolve_inside(self.root, mask_path) if mask_path else None
            if resolved is None or resolved.name not in self._names(str(resolved.parent)):
                return None
            return str(resolved)
        if mask_path in self._names(self.root):
            return self._root_prefix + mask_path  # the usual case: no os.path.join, fast
        if self._subdirs is None:
            try:
                with os.scandir(self.root) as entries:
                    self._subdirs = sorted(e.path for e in entries if e.is_dir())
            except OSError:
                self._subdirs = []
        for subdir in self._subdirs:
            if mask_path in self._names(subdir):
                return os.path.join(subdir, mask_path)
        return None


def _record(line: int, image_id: str, box_id: str) -> str:
    return f"line {line} (ImageID {image_id!r}, BoxID {box_id!r})"


def _parse_box(row: list[str], columns: tuple[int, int, int, int]) -> Box | None:
    try:
        values = [float(row[i]) for i in columns]
    except (ValueError, IndexError):
        return None
    if not all(math.isfinite(v) for v in values):  # float() reads "nan" and "inf"
        return None
    x0, x1, y0, y1 = (min(max(v, 0.0), 1.0) for v in values)
    return (x0, y0, x1, y1) if x0 < x1 and y0 < y1 else None


def _iou(a: Box, b: Box) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def _image_size(path: str) -> tuple[int, int] | None:
    if not is_regular_file(path):
        return None  # the converter reports the image itself
    try:
        with Image.open(path) as img:  # reads the header only
            return img.size
    except (OSError, ValueError, Image.DecompressionBombError):
        return None  # the converter reports the image itself


class _Reader:
    def __init__(self, path: Path, images_dir: str, masks: _MaskIndex,
                 descriptions: dict[str, str], hierarchy: Hierarchy | None,
                 selected: list[str] | None, group: str | None, expand: bool,
                 image_extension: str):
        self.path, self.source = path, str(path)
        self.images_dir, self.masks, self.descriptions = images_dir, masks, descriptions
        self.images_prefix = os.path.join(images_dir, "")
        self.hierarchy, self.group, self.expand = hierarchy, group, expand
        self.selected = set(selected) if selected is not None else None
        self.extension = image_extension
        self.problems: list[Problem] = []
        self.images: dict[str, ImageAnnotation] = {}
        self.bad_image_ids: set[str] = set()
        self.decisions: dict[str, GroupDecision] = {}
        self.used_classes: dict[str, None] = {}
        # layer1, per ImageID: the labelled rows (labels, raw box fields), and the rows of
        # depth-0 classes to hide (class, box, record); resolved once all rows are read.
        self.labelled: dict[str, list[tuple[tuple[str, ...], list[str]]]] = {}
        self.to_hide: dict[str, list[tuple[str, Box, str]]] = {}

    def problem(self, reason: str, record: str, message: str, is_error: bool = True,
                scope: str = "annotation") -> None:
        self.problems.append(Problem(reason, message, self.source, record, is_error, scope))

    def decision(self, label: str) -> GroupDecision:
        decision = self.decisions.get(label)
        if decision is None:
            if self.hierarchy is None or not (self.group or self.expand):
                decision = GroupDecision((label,))
            elif label not in self.hierarchy:
                decision = _NOT_IN_HIERARCHY
            else:
                decision = self.hierarchy.map_to_group(label, self.group, self.expand)
            if self.selected is not None and decision is not _NOT_IN_HIERARCHY:
                decision = GroupDecision(tuple(c for c in decision.labels
                                               if c in self.selected), decision.gray)
            self.decisions[label] = decision
        return decision

    def image(self, image_id: str, where: Callable[[], str]) -> ImageAnnotation | None:
        image = self.images.get(image_id)
        if image is None and image_id not in self.bad_image_ids:
            file_name = f"{image_id}.{self.extension}"
            if image_id and "/" not in file_name and "\\" not in file_name:
                path = self.images_prefix + file_name  # the usual case: fast
            else:
                path = resolve_inside(self.images_dir, file_name) if image_id else None
            if path is None:
                self.bad_image_ids.add(image_id)
                self.problem("bad_image_id", where(), f"ImageID {image_id!r} is empty or "
                             f"escapes the images directory {self.images_dir}", scope="image")
                return None
            image = ImageAnnotation(image_path=str(path), file_name=file_name,
                                    image_id=image_id, source_id=len(self.images) + 1)
            self.images[image_id] = image
        return image

    def read_rows(self) -> None:
        what, line = "an Open Images segmentation CSV", 1
        try:
            with open(self.path, newline="", encoding="utf-8-sig") as f:
                reader = csv.reader(f)
                header = [h.strip() for h in next(reader, None) or []]
                self._check_header(header, what)
                index = {name: i for i, name in enumerate(header)}
                columns = tuple(index[c] for c in REQUIRED_COLUMNS)
                for row in reader:
                    line = reader.line_num
                    if row:
                        self.row(row, line, columns, len(header))
        except (OSError, UnicodeDecodeError, csv.Error) as err:
            raise open_csv_error(self.path, what, err, line + 1) from None

    def _check_header(self, header: list[str], what: str) -> None:
        if not header:
            raise AnnotationFileError(f"{self.path}: not {what}: the file is empty")
        missing = [c for c in REQUIRED_COLUMNS if c not in header]
        if missing:
            hint = (" (a box annotations CSV? instance masks need the *-annotations-object-"
                    "segmentation.csv)" if "XMin" in header else "")
            raise AnnotationFileError(
                f"{self.path}: not {what}: missing column(s) {', '.join(missing)}; the first "
                f"line has {', '.join(h[:40] for h in header[:12])}{hint}")

    def row(self, row: list[str], line: int, columns: tuple[int, ...], width: int) -> None:
        if len(row) != width:
            image_id, box_id = (row[i] if i < len(row) else "" for i in columns[1:4:2])
            self.problem("bad_row", _record(line, image_id, box_id),
                         f"has {len(row)} fields, the header {width}")
            return
        mask_path, image_id, label, box_id = (row[columns[0]].strip(), row[columns[1]].strip(),
                                              row[columns[2]].strip(), row[columns[3]].strip())

        def where() -> str:  # the row's name in messages, built only when needed
            return _record(line, image_id, box_id)

        image = self.images.get(image_id) or self.image(image_id, where)
        if image is None:
            return
        if label not in self.descriptions:
            self.problem("class_not_in_descriptions", where(),
                         f"LabelName {label!r} is not in the class descriptions file")
            return
        decision = self.decision(label)
        if decision is _NOT_IN_HIERARCHY:
            self.problem("class_not_in_hierarchy", where(), f"class {label} "
                         f"({self.descriptions[label]!r}) is not in the hierarchy "
                         f"{self.hierarchy.source}")
            return
        if decision.gray:
            box = _parse_box(row, columns[4:])
            if box is None:
                self.problem("bad_box", where(), "BoxXMin/BoxXMax/BoxYMin/BoxYMax are not a "
                             "box within 0..1, needed to hide this object")
            else:
                self.to_hide.setdefault(image_id, []).append((label, box, where()))
        if not decision.labels:
            return
        mask = self.masks.find(mask_path)
        if mask is None:
            self.problem("missing_mask", where(), f"mask file {mask_path!r} is not in the "
                         f"masks directory {self.masks.root}")
            return
        segmentation = MaskFile(mask)
        annotation_id = f"{box_id} (line {line})"
        for class_name in decision.labels:
            image.objects.append(ObjectAnnotation(annotation_id, class_name, segmentation))
            self.used_classes[class_name] = None
        if self.group == LAYER1:  # the box is parsed later, if at all
            self.labelled.setdefault(image_id, []).append(
                (decision.labels, [row[i] for i in columns[4:]]))

    def hide_unlabelled_objects(self) -> None:
        """layer1: fills with gray the boxes of dropped depth-0 objects, except where a
        labelled subclass (a man in a person's box) already covers the same object."""
        gray: dict[str, list[Box]] = {}
        for image_id, hidden in self.to_hide.items():
            kept = [(labels, _parse_box(fields, (0, 1, 2, 3)))
                    for labels, fields in self.labelled.get(image_id, ())]
            for label, box, record in hidden:
                if any(box2 is not None and _iou(box, box2) >= SAME_OBJECT_IOU and any(
                        self.hierarchy.is_ancestor(label, k) for k in labels)
                       for labels, box2 in kept):
                    continue
                gray.setdefault(image_id, []).append(box)
                self.problem("gray_filled", record, f"{self.descriptions[label]!r} is not a "
                             "layer1 class but may be one of its subclasses: left out and its "
                             "box filled with gray", is_error=False)
        self.labelled.clear()
        self.to_hide.clear()
        ids = list(gray)
        if not ids:
            return
        with concurrent.futures.ThreadPoolExecutor(16) as pool:  # header reads: I/O bound
            sizes = list(pool.map(_image_size, [self.images[i].image_path for i in ids]))
        for image_id, size in zip(ids, sizes):
            if size is not None:
                image, (width, height) = self.images[image_id], size
                image.width, image.height = width, height
                image.gray_boxes = [(x0 * width, y0 * height, x1 * width, y1 * height)
                                    for x0, y0, x1, y1 in gray[image_id]]


def read_openimages(annotations_file: str | Path, images_dir: str | Path,
                    masks_dir: str | Path, class_descriptions: str | Path,
                    hierarchy: str | Path | Hierarchy | None = None,
                    classes: list[str] | None = None, hierarchy_group: str | None = None,
                    expand_hierarchy: bool = False, image_extension: str = "jpg"
                    ) -> AnnotationSet:
    """Reads a segmentation CSV; problems are collected, not raised, except for inputs
    that are unusable as a whole (AnnotationFileError)."""
    if hierarchy_group not in (None, *GROUPS):
        raise AnnotationFileError(f"--hierarchy_group must be one of {', '.join(GROUPS)}")
    if (hierarchy_group or expand_hierarchy) and hierarchy is None:
        raise AnnotationFileError("--hierarchy_group and --expand_hierarchy need --hierarchy "
                                  "(bbox_labels_600_hierarchy.json)")
    descriptions = read_class_descriptions(class_descriptions)
    if isinstance(hierarchy, (str, Path)):
        hierarchy = load_hierarchy(hierarchy)
    selected = (resolve_classes(classes, descriptions, str(class_descriptions), hierarchy,
                                hierarchy_group) if classes else None)
    reader = _Reader(Path(annotations_file), str(images_dir), _MaskIndex(Path(masks_dir)),
                     descriptions, hierarchy, selected, hierarchy_group, expand_hierarchy,
                     image_extension.lstrip("."))
    collecting = gc.isenabled()
    gc.disable()  # millions of acyclic objects: the cycle collector would only rescan them
    try:
        reader.read_rows()
    finally:
        if collecting:
            gc.enable()
    if hierarchy_group == LAYER1:
        reader.hide_unlabelled_objects()
    order = {mid: i for i, mid in enumerate(descriptions)}
    class_names = selected if selected is not None else sorted(
        reader.used_classes, key=lambda m: (order.get(m, len(order)), m))
    for mid in class_names:
        if mid not in descriptions:
            reader.problem("ancestor_not_in_descriptions", f"class {mid}", "has no display "
                           "name in the class descriptions file", is_error=False)
    result = AnnotationSet(source=str(annotations_file), class_names=list(class_names),
                           images=list(reader.images.values()), problems=reader.problems,
                           display_names=[descriptions.get(m, "") for m in class_names])
    if hierarchy is not None:
        result.class_relations = hierarchy.relations(class_names)
    return result
