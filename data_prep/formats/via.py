"""VGG Image Annotator (VIA) annotations -> AnnotationSet.

Reads, telling them apart by content rather than by file name:
  * VIA 1.x JSON exports: an object keyed by file name + size, `regions` an object "0", "1"...
  * VIA 2.x JSON exports: the same with `regions` a list;
  * VIA 2.x project files: `_via_img_metadata` (the export) with `_via_attributes`, whose
    dropdown/radio/checkbox options give the class names and their order;
  * VIA CSV exports: one row per region, JSON in the shape and attribute cells.
Shapes become polygons (see via_shapes). The class is the value of one region attribute,
named by --class_attribute or found automatically; regions without one take --default_class.
Image sizes come from the image files, which are looked up next to the annotation file or
in --images_dir.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import json
import re
from pathlib import Path
from typing import Any

from data_prep.annotations import (
    AnnotationFileError,
    AnnotationSet,
    DuplicateKeyError,
    ImageAnnotation,
    ObjectAnnotation,
    Polygons,
    Problem,
    load_json,
    resolve_inside,
    unique_keys,
)
from data_prep.formats.via_shapes import UnusableShape, shape_polygon

CSV_COLUMNS = ("filename", "file_size", "file_attributes", "region_count", "region_id",
               "region_shape_attributes", "region_attributes")
CHOICE_TYPES = ("dropdown", "radio")  # one option per region: made for class names
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


@dataclasses.dataclass
class RawRegion:
    index: str  # as VIA numbers it: the key in 1.x, the position in 2.x, region_id in CSV
    shape: Any
    attributes: Any
    error: str | None = None  # why the region could not be read (a CSV cell that is not JSON)


@dataclasses.dataclass
class RawImage:
    filename: str
    regions: list[RawRegion]
    error: str | None = None  # why its regions could not be read


@dataclasses.dataclass
class RawFile:
    """A VIA file of any flavour, reduced to what every flavour has."""

    flavour: str
    images: list[RawImage]
    attribute_definitions: dict[str, dict]  # project files' _via_attributes["region"]


# --- reading the flavours ---------------------------------------------------------------

def _not_via(path: str, why: str) -> AnnotationFileError:
    return AnnotationFileError(f"{path}: not a VIA file: {why}")


def _raw_regions(entry: dict) -> tuple[list[RawRegion], str | None]:
    regions = entry.get("regions", [])
    if isinstance(regions, dict):  # VIA 1.x
        items = list(regions.items())
    elif isinstance(regions, list):  # VIA 2.x
        items = [(str(i), r) for i, r in enumerate(regions)]
    else:
        return [], f"'regions' is {type(regions).__name__}, expected a list or an object"
    raw = []
    for key, region in items:
        if isinstance(region, dict):
            raw.append(RawRegion(str(key), region.get("shape_attributes"),
                                 region.get("region_attributes", {})))
        else:
            raw.append(RawRegion(str(key), None, None, error=f"region is "
                                 f"{type(region).__name__}, expected an object"))
    return raw, None


def _read_json(path: str) -> RawFile:
    data = load_json(path, "VIA")
    if not isinstance(data, dict):
        raise _not_via(path, f"the top level is a {type(data).__name__}; expected an object "
                       "keyed by image (VIA 1.x/2.x export) or a VIA 2.x project")
    definitions: dict[str, dict] = {}
    flavour = ""
    if "_via_img_metadata" in data:
        flavour = "VIA 2.x project"
        attributes = data.get("_via_attributes") or {}
        region_attributes = attributes.get("region") if isinstance(attributes, dict) else None
        definitions = {str(k): v for k, v in (region_attributes or {}).items()
                       if isinstance(v, dict)}
        data = data["_via_img_metadata"]
        if not isinstance(data, dict):
            raise _not_via(path, "'_via_img_metadata' is not an object")
    elif {"project", "config", "attribute", "metadata"} <= set(data):
        raise _not_via(path, "this is a VIA 3.x project, which is not supported; open it "
                       "in VIA 2 or export its annotations as VIA 2.x JSON or CSV")
    elif {"images", "annotations"} <= set(data):
        raise _not_via(path, "it has 'images' and 'annotations', like a COCO file: use "
                       "--format coco")
    if not data:
        raise _not_via(path, "it lists no images")
    images = []
    for key, entry in data.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("filename"), str):
            raise _not_via(path, f"entry {key!r} is not an image (an object with 'filename' "
                           "and 'regions')")
        regions, error = _raw_regions(entry)
        images.append(RawImage(entry["filename"], regions, error))
        if not flavour:
            flavour = ("VIA 1.x export" if isinstance(entry.get("regions"), dict)
                       else "VIA 2.x export")
    return RawFile(flavour, images, definitions)


def _json_cell(row: dict, column: str) -> tuple[Any, str | None]:
    text = row.get(column)
    if text is None or not text.strip():
        return {}, None
    try:
        return json.loads(text, object_pairs_hook=unique_keys), None
    except json.JSONDecodeError as err:
        return None, f"{column} is not valid JSON ({err.msg}): {text[:60]!r}"
    except DuplicateKeyError as err:
        return None, f"{column} names the key {err.key!r} twice (ambiguous): {text[:60]!r}"
    except RecursionError:
        return None, f"{column} is nested too deeply"


def _read_csv(path: str, text: str) -> RawFile:
    reader = csv.reader(io.StringIO(text))
    first_row = next(reader)
    flavour = "VIA 1.x CSV export" if first_row[0].startswith("#") else "VIA 2.x CSV export"
    header = [h.strip().lstrip("#").strip() for h in first_row]
    missing = [c for c in ("filename", "region_shape_attributes") if c not in header]
    if missing:
        raise _not_via(path, f"the CSV header lacks {missing}; a VIA CSV export has the columns "
                       f"{','.join(CSV_COLUMNS)}")
    images: dict[tuple[str, str], RawImage] = {}
    for row_values in reader:
        if not any(v.strip() for v in row_values):
            continue
        row = dict(zip(header, row_values))
        line = reader.line_num
        filename = row.get("filename", "")
        image = images.setdefault((filename, row.get("file_size", "")), RawImage(filename, []))
        shape, shape_error = _json_cell(row, "region_shape_attributes")
        attributes, attributes_error = _json_cell(row, "region_attributes")
        if shape == {} and not shape_error and row.get("region_count", "1").strip() in ("0", ""):
            continue  # VIA's row for an image without regions
        index = row.get("region_id", "").strip() or str(len(image.regions))
        error = shape_error or attributes_error
        if len(row_values) != len(header):
            error = (f"has {len(row_values)} columns but the header {len(header)} (are the "
                     "JSON cells quoted?)")
        image.regions.append(RawRegion(index, shape, attributes,
                                       error=f"line {line}: {error}" if error else None))
    if not images:
        raise _not_via(path, "the CSV has a header but no rows")
    return RawFile(flavour, list(images.values()), {})


def read_raw(path: str) -> RawFile:
    """Reads any VIA flavour, telling JSON from CSV by the first character."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise AnnotationFileError(f"{path}: annotation file does not exist") from None
    except OSError as err:
        raise AnnotationFileError(f"{path}: annotation file cannot be read: {err.strerror}"
                                  ) from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise _not_via(path, f"not UTF-8 text ({err.reason} at byte {err.start})") from None
    start = text.lstrip()[:1]
    if start in ("{", "["):
        return _read_json(path)
    first_line = text.lstrip().split("\n", 1)[0]
    if "filename" in first_line and "region_shape_attributes" in first_line:
        return _read_csv(path, text)
    raise _not_via(path, "expected a JSON object (VIA export or project) or a CSV export "
                   f"whose header is {','.join(CSV_COLUMNS)}; the file starts with "
                   f"{first_line[:40]!r}")


# --- classes ------------------------------------------------------------------------------

class SeveralClasses(ValueError):
    """A checkbox attribute with more than one option ticked: one region, one class."""


def class_value(value: Any) -> str | None:
    """The class a region attribute value names: a dropdown/radio/text string, or the one
    ticked option of a checkbox ({"cat": true, "dog": false}); None when it names none."""
    if isinstance(value, str):
        return value.strip() or None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, dict):
        value = [key for key, ticked in value.items() if ticked is True or ticked == "true"]
    if isinstance(value, list):
        names = [str(v).strip() for v in value if str(v).strip()]
        if len(names) > 1:
            raise SeveralClasses(", ".join(repr(n) for n in names))
        return names[0] if names else None
    return None


def _has_class_value(value: Any) -> bool:
    try:
        return class_value(value) is not None
    except SeveralClasses:
        return True


def choose_class_attribute(raw: RawFile, requested: str | None, path: str) -> str | None:
    """The region attribute holding class names, or None when no region has any.

    In order: --class_attribute; the single dropdown/radio attribute a project defines; the
    single attribute with values in the regions. Anything else is ambiguous and an error.
    """
    regions = [r for image in raw.images for r in image.regions if isinstance(r.attributes, dict)]
    seen = {name for r in regions for name in r.attributes}
    valued = sorted({name for r in regions for name, value in r.attributes.items()
                     if _has_class_value(value)})
    unreadable = any(image.error or any(r.error or not isinstance(r.attributes, dict)
                                        for r in image.regions) for image in raw.images)
    if requested:
        # Regions that could not be read may hold the attribute: their structure errors are
        # reported (per image or region) instead of blaming the attribute.
        if requested not in seen and requested not in raw.attribute_definitions \
                and not unreadable:
            found = ", ".join(repr(n) for n in sorted(seen | set(raw.attribute_definitions)))
            raise AnnotationFileError(f"{path}: --class_attribute {requested!r} is not a region "
                                      f"attribute here; region attributes found: "
                                      f"{found or 'none'}")
        return requested
    choices = [name for name, d in raw.attribute_definitions.items()
               if d.get("type") in CHOICE_TYPES]
    candidates = choices if choices else valued
    if len(candidates) > 1:
        listed = ", ".join(repr(n) for n in candidates)
        raise AnnotationFileError(f"{path}: cannot tell which region attribute holds the class: "
                                  f"{listed} could all be meant. Pass --class_attribute NAME "
                                  f"(e.g. --class_attribute {candidates[0]}).")
    return candidates[0] if candidates else None


def _defined_options(raw: RawFile, attribute: str | None) -> dict[str, str]:
    """Option -> description of the attribute's definition in a project file (else {})."""
    options = raw.attribute_definitions.get(attribute or "", {}).get("options")
    if not isinstance(options, dict):
        return {}
    return {str(k).strip(): str(v or "").strip() for k, v in options.items() if str(k).strip()}


# --- regions and images -------------------------------------------------------------------

class _Reader:
    def __init__(self, path: str, images_dir: str, class_attribute: str | None,
                 default_class: str | None):
        self.path = path
        self.images_dir = images_dir
        self.class_attribute = class_attribute
        self.default_class = default_class
        self.problems: list[Problem] = []
        self.used_classes: set[str] = set()

    def problem(self, reason: str, record: str, message: str, is_error: bool = True,
                scope: str = "annotation") -> None:
        self.problems.append(Problem(reason, message, self.path, record, is_error, scope))

    def region(self, region: RawRegion, file_name: str) -> ObjectAnnotation | None:
        record = f"image {file_name!r} region {region.index}"
        if region.error:
            self.problem("bad_region", record, region.error)
            return None
        try:
            polygon = shape_polygon(region.shape)
        except UnusableShape as err:
            self.problem(err.reason, record, str(err), is_error=err.is_error)
            return None
        if region.attributes is not None and not isinstance(region.attributes, dict):
            self.problem("bad_region", record, f"region_attributes is "
                         f"{type(region.attributes).__name__}, expected an object")
            return None
        attributes = region.attributes or {}
        try:
            class_name = class_value(attributes.get(self.class_attribute or ""))
        except SeveralClasses as err:
            self.problem("several_classes", record, f"class attribute "
                         f"{self.class_attribute!r} has several options ticked ({err}); a "
                         "region must have exactly one class")
            return None
        if class_name is None:
            class_name = self.default_class
        if class_name is None:
            self.problem("no_class", record, f"has no value for the class attribute "
                         f"{self.class_attribute!r}; set it in VIA, or pass --default_class "
                         "NAME for regions without one")
            return None
        self.used_classes.add(class_name)
        return ObjectAnnotation(annotation_id=f"region {region.index}", class_name=class_name,
                                segmentation=Polygons((polygon,)))

    def image(self, raw: RawImage, source_id: int, seen: set[str]) -> ImageAnnotation | None:
        file_name = raw.filename
        record = f"image {file_name!r}"
        if _URL.match(file_name):
            self.problem("remote_image", record, "the file name is a URL; VIA can show remote "
                         "images but conversion needs local files: download the image into "
                         "the images directory and set 'filename' to its name there",
                         scope="image")
            return None
        if not file_name.strip():
            self.problem("no_file_name", f"image {source_id}", "has an empty 'filename'",
                         scope="image")
            return None
        image_path = resolve_inside(self.images_dir, file_name)
        if image_path is None:
            self.problem("path_escapes_images_dir", record, "file name escapes the images "
                         f"directory {self.images_dir}", scope="image")
            return None
        if file_name in seen:
            self.problem("duplicate_image", record, "the image is listed twice; merge its "
                         "regions into one entry", scope="image")
            return None
        seen.add(file_name)
        if raw.error:
            self.problem("bad_regions", record, raw.error, scope="image")
            return None
        objects = [obj for obj in (self.region(r, file_name) for r in raw.regions) if obj]
        return ImageAnnotation(image_path=str(image_path), file_name=file_name,
                               image_id=str(source_id), source_id=source_id, objects=objects)


def _require_a_class_source(raw: RawFile, path: str, class_attribute: str | None,
                            default_class: str | None) -> None:
    """A file whose regions carry no attributes at all (the balloon and eye-pupil sets)
    needs --default_class; say so once instead of once per region."""
    if class_attribute or default_class:
        return
    count = sum(1 for image in raw.images for r in image.regions  # points need no class
                if not (isinstance(r.shape, dict) and r.shape.get("name") == "point"))
    if count:
        raise AnnotationFileError(
            f"{path}: none of its {count} regions has a class: no region attribute holds a "
            "value. Pass --default_class NAME to give every region that class (e.g. "
            "--default_class balloon), or set a region attribute in VIA and pass "
            "--class_attribute NAME.")


def read_via(annotations_file: str | Path, images_dir: str | Path,
             class_attribute: str | None = None, default_class: str | None = None
             ) -> AnnotationSet:
    """Reads any VIA flavour; problems are collected, not raised, except for a file that is
    not VIA at all or whose classes cannot be determined (AnnotationFileError)."""
    path = str(annotations_file)
    raw = read_raw(path)
    attribute = choose_class_attribute(raw, class_attribute, path)
    _require_a_class_source(raw, path, attribute, default_class)
    reader = _Reader(path, str(images_dir), attribute, default_class)
    seen: set[str] = set()
    images = [image for image in (reader.image(r, source_id, seen)
                                  for source_id, r in enumerate(raw.images, start=1)) if image]
    options = _defined_options(raw, attribute)
    extra = sorted(reader.used_classes - set(options))
    class_names = list(options) + extra
    described = [options[n] if options.get(n, n) != n else "" for n in class_names]
    display_names = described if any(described) else None
    return AnnotationSet(source=path, class_names=class_names, images=images,
                         problems=reader.problems, display_names=display_names)
