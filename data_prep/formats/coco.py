"""COCO instances JSON -> AnnotationSet.

Handles polygons (one or more parts), uncompressed and compressed RLE, crowd annotations in
either form, and the category ids as they are: the label map's ids are COCO's category ids,
as the OD API and Model Garden have them (COCO itself goes up to 90 with gaps), unless
`contiguous_ids` asks for 1..K in category-id order, in which case the category ids are
recorded for category_ids.json. The quirks of annotation tools' COCO exports are handled in
coco_tools.py. Masks are rasterized later exactly as pycocotools' `COCO.annToMask` does.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from data_prep import field_checks
from data_prep.annotations import (
    AnnotationFileError,
    AnnotationSet,
    ImageAnnotation,
    ObjectAnnotation,
    Polygons,
    Problem,
    RunLengths,
    load_json,
    resolve_inside,
)
from data_prep.boxes import clip_box
from data_prep.field_checks import FieldError, coordinates, finite_number, identifier, integer
from data_prep.formats import coco_tools
from data_prep.run_lengths import run_length_counts


def _require_coco_layout(data: Any, path: str) -> None:
    if isinstance(data, list):
        raise AnnotationFileError(
            f"{path}: not a COCO instances file: the top level is a list (a COCO results "
            "file?); expected an object with 'images', 'annotations' and 'categories'")
    if not isinstance(data, dict):
        raise AnnotationFileError(f"{path}: not a COCO instances file: the top level is "
                                  f"{type(data).__name__}, expected an object")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            found = "missing" if key not in data else f"a {type(data[key]).__name__}"
            raise AnnotationFileError(f"{path}: not a COCO instances file: '{key}' is {found}, "
                                      "expected a list")


class _Reader:
    def __init__(self, path: str, images_dir: str, crowd_masks_as_objects: bool = False):
        self.path = path
        self.images_dir = images_dir
        self.crowd_masks_as_objects = crowd_masks_as_objects
        self.problems: list[Problem] = []
        self.skipped_image_ids: set = set()  # images already reported (e.g. bad path)
        self.seen: dict[Any, dict] = {}  # annotation id -> its first annotation

    def problem(self, reason: str, record: str, message: str, is_error: bool = True,
                scope: str = "annotation") -> None:
        self.problems.append(Problem(reason, message, self.path, record, is_error, scope))

    def images(self, entries: list) -> dict[Any, ImageAnnotation]:
        images: dict[Any, ImageAnnotation] = {}
        entries_by_id: dict[Any, dict] = {}
        numeric_ids = all(isinstance(e, dict) and isinstance(e.get("id"), int)
                          and not isinstance(e.get("id"), bool) and e["id"] >= 0
                          for e in entries)
        for index, entry in enumerate(entries):
            if not isinstance(entry, dict) or "id" not in entry or "file_name" not in entry:
                raise AnnotationFileError(f"{self.path}: images[{index}] needs an 'id' and a "
                                          "'file_name'")
            try:
                image_id = identifier(entry["id"], "id")
            except FieldError as err:
                self.problem("bad_image_entry", f"images[{index}]", str(err), scope="image")
                continue
            record = f"image {image_id} ({entry['file_name']!r})"
            if image_id in entries_by_id:
                if entries_by_id[image_id] == entry:
                    self.problem("duplicate_image", record, "is listed again, identically; "
                                 "kept once", is_error=False, scope="image")
                    continue
                raise AnnotationFileError(f"{self.path}: {record}: image id is used twice")
            entries_by_id[image_id] = entry
            try:
                file_name = field_checks.file_name(entry["file_name"], "file_name")
                width, height = (None if entry.get(key) is None else
                                 integer(entry[key], key, minimum=1)
                                 for key in ("width", "height"))
            except FieldError as err:
                self.problem("bad_image_entry", record, str(err), scope="image")
                continue
            path = coco_tools.image_file(self.images_dir, file_name, resolve_inside,
                                         self.problem, record)
            if path is None:
                self.problem("path_escapes_images_dir", record,
                             f"file name escapes the images directory {self.images_dir}",
                             scope="image")
                continue
            images[image_id] = ImageAnnotation(
                image_path=str(path), file_name=file_name, image_id=str(image_id),
                source_id=image_id if numeric_ids else index + 1, width=width, height=height)
        return images

    def segmentation(self, ann: dict, record: str, image: ImageAnnotation):
        segm = ann.get("segmentation")
        if isinstance(segm, dict):
            size = segm.get("size")
            if "counts" not in segm or not (isinstance(size, list) and len(size) == 2):
                self.problem("bad_rle", record, "RLE segmentation needs 'counts' and "
                             "'size' [height, width]")
                return None
            try:
                height, width = (integer(v, f"segmentation.size[{i}]", minimum=1)
                                 for i, v in enumerate(size))
                counts = run_length_counts(segm["counts"], height, width)
            except FieldError as err:
                self.problem("bad_rle", record, str(err))
                return None
            if image.height and image.width and (height, width) != (image.height, image.width):
                self.problem("rle_size_mismatch", record,
                             f"RLE size {height}x{width} differs from the image's "
                             f"{image.height}x{image.width} (height x width)")
                return None
            return RunLengths(counts, height, width)
        if isinstance(segm, list) and segm and not any(isinstance(v, list) for v in segm):
            self.problem("flat_polygon", record, "segmentation is one flat list of numbers, "
                         "not a list of polygons; read as one polygon", is_error=False)
            segm = [segm]
        if not isinstance(segm, list) or not segm:
            box_only = " (a box only: box tools export rectangles so)" if ann.get("bbox") else ""
            self.problem("no_segmentation", record,
                         f"has no segmentation (polygon or RLE){box_only}; instance masks "
                         "need one")
            return None
        parts = []
        for part_index, part in enumerate(segm):
            field = f"segmentation[{part_index}]"
            if not isinstance(part, list) or len(part) % 2:
                self.problem("bad_polygon", record, f"polygon part {part_index} is not a flat "
                             "list of x, y numbers")
                return None
            try:
                part = coordinates(part, field)
            except FieldError as err:
                self.problem("bad_polygon", record, f"polygon part {part_index}: {err}")
                return None
            if len(part) < 6:
                self.problem("polygon_too_few_points", record,
                             f"polygon part {part_index} has {len(part) // 2} point(s); a "
                             "polygon needs at least 3")
                return None
            parts.append(part)
        return Polygons(tuple(parts))

    def box(self, bbox: Any, record: str, image: ImageAnnotation):
        """The checked (x, y, w, h) box; False when it is unusable (reported)."""
        if not (isinstance(bbox, list) and len(bbox) == 4):
            self.problem("bad_box", record, f"bbox {bbox!r} is not [x, y, width, height]")
            return False
        try:
            bbox = coordinates(bbox, "bbox")
        except FieldError as err:
            self.problem("bad_box", record, str(err))
            return False
        if bbox[2] <= 0 or bbox[3] <= 0:
            self.problem("zero_area_box", record, f"bbox {list(bbox)} has zero area "
                         "(width or height <= 0)")
            return False
        if image.width and image.height:
            clipped = clip_box(bbox, image.width, image.height)
            if clipped is None:
                self.problem("box_outside_image", record, f"bbox {list(bbox)} lies outside "
                             f"the {image.width}x{image.height} image")
                return False
            if clipped != bbox:
                self.problem("box_clipped", record, f"bbox {list(bbox)} extends beyond the "
                             f"{image.width}x{image.height} image; clipped to "
                             f"{[round(v, 2) for v in clipped]}", is_error=False)
            bbox = clipped
        return bbox

    def _repeated(self, ann: dict, ann_id: Any, record: str) -> bool:
        """True for an annotation identical to an earlier one with its id (VIA writes a
        region matching several attribute options once per option): reported, dropped.
        Only annotations whose ids collide are compared."""
        earlier = self.seen.setdefault(ann_id, ann)
        if earlier is ann:
            return False
        if earlier == ann:
            self.problem("duplicate_annotation", record, "is listed again, identically; kept "
                         "once", is_error=False)
            return True
        self.problem("annotation_id_reused", record, "shares its id with another annotation; "
                     "both are kept", is_error=False)
        return False

    def _ids(self, ann: dict, record: str, images: dict, categories: dict):
        """The image and category keys an annotation names; None when it names no image
        or category (reported)."""
        if "category_id" not in ann or ann["category_id"] is None:
            self.problem("no_category", record, "has no category_id (makesense.ai exports "
                         "polygons left without a label so): give it a label")
            return None
        try:
            image_id = identifier(ann.get("image_id"), "image_id")
            category_id = identifier(ann.get("category_id"), "category_id")
        except FieldError as err:
            self.problem("bad_annotation", record, str(err))
            return None
        image_key, retyped_image = coco_tools.lookup(images, image_id)
        if image_key is None:
            if image_id not in self.skipped_image_ids:
                self.problem("unknown_image", record,
                             f"names image id {image_id!r}, which is not in 'images'")
            return None
        category_key, retyped_category = coco_tools.lookup(categories, category_id)
        where = f"{record} (image {images[image_key].file_name!r})"
        if category_key is None:
            self.problem("unknown_category", where, f"names category id {category_id!r}, "
                         "which is not in 'categories'")
            return None
        for retyped, name, written, key in ((retyped_image, "image", image_id, image_key),
                                            (retyped_category, "category", category_id,
                                             category_key)):
            if retyped:
                self.problem("id_type_mismatch", where, f"{name}_id {written!r} is written "
                             f"as {type(written).__name__}, where '{name}s' has {key!r}; "
                             "matched", is_error=False)
        return image_key, category_key

    def annotation(self, ann: Any, index: int, images: dict, categories: dict
                   ) -> tuple[Any, Any, ObjectAnnotation] | None:
        if not isinstance(ann, dict):
            self.problem("bad_annotation", f"annotations[{index}]", "is not an object")
            return None
        try:
            ann_id = identifier(ann["id"], "id") if "id" in ann else f"#{index}"
        except FieldError as err:
            self.problem("bad_annotation", f"annotations[{index}]", str(err))
            return None
        record = f"annotation {ann_id}"
        if self._repeated(ann, ann_id, record):
            return None
        if coco_tools.is_keypoint_only(ann):
            self.problem("keypoints_only", record, "holds keypoints and no segmentation (VIA "
                         "exports point regions so): not an instance; skipped",
                         is_error=False)
            return None
        keys = self._ids(ann, record, images, categories)
        if keys is None:
            return None
        image_key, category_key = keys
        image = images[image_key]
        record += f" (image {image.file_name!r})"
        try:
            is_crowd = field_checks.flag(ann.get("iscrowd", 0), "iscrowd")
            area = (None if ann.get("area") is None
                    else finite_number(ann["area"], "area"))
        except FieldError as err:
            self.problem("bad_annotation", record, str(err))
            return None
        segmentation = self.segmentation(ann, record, image)
        if segmentation is None:
            return None
        if coco_tools.is_crowd_mask(ann, ann.get("segmentation")):
            if self.crowd_masks_as_objects:
                is_crowd = False
                self.problem("crowd_mask_as_object", record, "a crowd mask (iscrowd 1, RLE) "
                             "taken as one object (--crowd_masks_as_objects)", is_error=False)
            elif isinstance(ann.get("attributes"), dict):
                self.problem("crowd_mask", record, coco_tools.crowd_mask_message(ann),
                             is_error=False)
        bbox = ann.get("bbox")
        if bbox is not None:
            bbox = self.box(bbox, record, image)
            if bbox is False:
                return None
        return image_key, category_key, ObjectAnnotation(
            annotation_id=str(ann_id), class_name="", segmentation=segmentation, bbox=bbox,
            is_crowd=is_crowd, area=area if area is not None and area >= 0 else None)


def read_coco(annotations_file: str | Path, images_dir: str | Path,
              contiguous_ids: bool = False, crowd_masks_as_objects: bool = False
              ) -> AnnotationSet:
    """Reads a COCO instances file; problems are collected, not raised, except for a file
    that is not COCO at all (AnnotationFileError).

    contiguous_ids: label-map ids 1..K in category-id order (the category ids are kept for
    category_ids.json) instead of the category ids themselves.
    crowd_masks_as_objects: RLE annotations marked iscrowd are single objects (CVAT).
    """
    path = str(annotations_file)
    data = load_json(path, "COCO")
    _require_coco_layout(data, path)
    reader = _Reader(path, str(images_dir), crowd_masks_as_objects)
    categories = coco_tools.read_categories(data["categories"], path, reader.problem)
    images = reader.images(data["images"])
    reader.skipped_image_ids = {_hashable(e.get("id")) for e in data["images"]
                                if isinstance(e, dict)} - set(images)
    used: set = set()
    for index, ann in enumerate(data["annotations"]):
        result = reader.annotation(ann, index, images, categories)
        if result is not None:
            image_key, category_key, obj = result
            obj.class_name = categories[category_key].name
            images[image_key].objects.append(obj)
            used.add(category_key)
    coco_tools.drop_grouping_categories(categories, used, reader.problem)
    order, label_ids, category_ids = coco_tools.label_ids(categories, contiguous_ids,
                                                          reader.problem)
    return AnnotationSet(source=path, class_names=[categories[c].name for c in order],
                         images=list(images.values()), problems=reader.problems,
                         label_ids=label_ids, category_ids=category_ids)


def _hashable(value: Any) -> Any:
    return value if isinstance(value, (str, int, float, type(None))) else repr(value)
