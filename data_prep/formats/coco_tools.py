"""What the COCO exports of annotation tools write that COCO itself does not, recognized.

Each quirk is accepted with a warning when its meaning is plain, and refused when it is not
(docs/data_formats.md has the table: tool, quirk, what happens):

* VIA lists a category again (identical: kept once) and writes a region that matches several
  attribute options once per option (identical annotations: kept once); its point regions
  are keypoints (`segmentation [[]]`, `area []`, `keypoints`): skipped, not instances.
* Roboflow prepends the data set's name as a category that no annotation uses and that every
  real category names as its supercategory: dropped.
* Label Studio numbers categories from 0 (no label map can hold id 0: the ids become 1..K,
  recorded in category_ids.json) and writes Windows paths or its own storage paths as
  file_name (found by file name in --images_dir).
* CVAT (Datumaro) marks every mask as crowd (`iscrowd 1` with RLE), which training skips:
  a warning, and --crowd_masks_as_objects takes them as single objects.
* makesense.ai leaves out category_id for polygons left without a label: an error naming it.
* Ids written as text where the other side has numbers ("3" vs 3) are matched.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable

from data_prep.annotations import AnnotationFileError, found_by_file_name, posix_file_name
from data_prep.field_checks import FieldError, identifier

Report = Callable[..., None]  # (reason, record, message, is_error=..., scope=...)
# Kept category ids become the classifier's size (num_classes = the largest id): beyond this
# the head would be mostly unused outputs, so larger ids are renumbered 1..K instead.
MAX_KEPT_CATEGORY_ID = 10_000


@dataclasses.dataclass(frozen=True)
class Category:
    id: Any  # int or str, as the file writes it
    name: str
    supercategory: Any = None


def read_categories(entries: list, path: str, report: Report) -> dict[Any, Category]:
    """Category id -> Category; a category listed twice identically is kept once (VIA),
    one id with two names is an error."""
    categories: dict[Any, Category] = {}
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict) or "id" not in entry or not entry.get("name"):
            raise AnnotationFileError(f"{path}: categories[{index}] needs an 'id' and a "
                                      "'name'")
        try:
            category_id = identifier(entry["id"], f"categories[{index}].id")
        except FieldError as err:
            raise AnnotationFileError(f"{path}: {err}") from None
        name = entry["name"]
        if not isinstance(name, (str, int, float)) or isinstance(name, bool):
            raise AnnotationFileError(f"{path}: categories[{index}].name is {name!r}, not a "
                                      "name")
        category = Category(category_id, str(name), entry.get("supercategory"))
        known = categories.get(category_id)
        if known is None:
            categories[category_id] = category
        elif known.name == category.name:
            report("duplicate_category", f"categories[{index}]",
                   f"category {category_id} ({category.name!r}) is listed again; kept once "
                   "(VIA's COCO export repeats categories)", is_error=False)
        else:
            raise AnnotationFileError(
                f"{path}: category id {category_id} is used twice, for {known.name!r} and "
                f"{category.name!r}: which one an annotation means cannot be told")
    names = [c.name for c in categories.values()]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise AnnotationFileError(f"{path}: category names {duplicates} are used by more than "
                                  "one category id")
    return categories


def drop_grouping_categories(categories: dict[Any, Category], used: set, report: Report
                             ) -> None:
    """Removes categories no annotation uses that other categories name as their
    supercategory: Roboflow's data-set category (id 0, every class's supercategory)."""
    for category_id, category in list(categories.items()):
        children = [c for c in categories.values()
                    if c is not category and c.supercategory == category.name]
        if category_id not in used and children:
            del categories[category_id]
            report("grouping_category", f"category {category_id}",
                   f"category {category_id} ({category.name!r}) is no annotation's category "
                   "but the supercategory of the others (as Roboflow exports name the data "
                   "set): left out of the label map", is_error=False)


def label_ids(categories: dict[Any, Category], contiguous: bool, report: Report
              ) -> tuple[list[Any], list[int] | None, list[Any] | None]:
    """(category ids in label-map order, label-map ids or None for 1..K, the source's ids
    to record when the label map renumbers them)."""
    order = sorted(categories, key=sort_key)
    odd = [i for i in order if not (isinstance(i, int) and 1 <= i <= MAX_KEPT_CATEGORY_ID)]
    if not contiguous and not odd:
        return order, list(order), None
    if not contiguous:
        report("category_ids_renumbered", "categories",
               f"category ids {odd[:5]} cannot be label-map ids (those are integers from 1 "
               f"to {MAX_KEPT_CATEGORY_ID}: 0 is the background, and the model gets one "
               "output per id up to the largest), so the classes get ids 1..K in "
               "category-id order, recorded with the source's ids in category_ids.json "
               "(Label Studio numbers categories from 0)", is_error=False)
    renumbered = order != list(range(1, len(order) + 1))
    return order, None, (order if renumbered else None)


def lookup(table: dict, key: Any) -> tuple[Any, bool]:
    """The key of `table` that `key` means, and whether it was written with the other type
    (the text "3" for the number 3, or the reverse); None when there is none."""
    if key in table:
        return key, False
    if isinstance(key, str) and key.strip().lstrip("-").isdigit():
        other: Any = int(key)
    elif isinstance(key, int):
        other = str(key)
    else:
        return None, False
    return (other, True) if other in table else (None, False)


def is_keypoint_only(ann: dict) -> bool:
    """VIA's COCO export of a point region: keypoints, and an empty segmentation."""
    segm = ann.get("segmentation")
    empty = segm in ([], [[]], None)
    return empty and isinstance(ann.get("keypoints"), list) and bool(ann["keypoints"])


def is_crowd_mask(ann: dict, segmentation: Any) -> bool:
    return isinstance(segmentation, dict) and ann.get("iscrowd") in (1, True)


def crowd_mask_message(ann: dict) -> str:
    tool = (" with CVAT's 'attributes' (CVAT's COCO export marks every mask as crowd)"
            if isinstance(ann.get("attributes"), dict) else "")
    return (f"is a crowd region (iscrowd 1) in run-length form{tool}; training skips crowd "
            "regions: if it is one object, pass --crowd_masks_as_objects")


def image_file(images_dir: str, file_name: str, resolve: Callable[[str, str], Path | None],
               report: Report, record: str) -> Path | None:
    """The image file `file_name` names: Windows separators read as such, and a name that
    points into an annotation tool's storage found by its last part in images_dir."""
    posix = posix_file_name(file_name)
    if posix != file_name and not Path(images_dir, file_name).is_file():
        report("windows_path", record, f"file name {file_name!r} has Windows separators; "
               f"read as {posix!r}", is_error=False)
        file_name = posix
    resolved = resolve(images_dir, file_name)
    fallback = found_by_file_name(images_dir, file_name, resolved)
    if fallback is not None:
        report("image_found_by_file_name", record, f"{file_name!r} is no file in "
               f"{images_dir}; using {fallback} (Label Studio writes its own storage paths)",
               is_error=False)
        return fallback
    return resolved


def sort_key(category_id: Any) -> tuple:
    return ((0, category_id, "") if isinstance(category_id, (int, float))
            else (1, 0, str(category_id)))
