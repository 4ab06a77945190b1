"""Pascal VOC instance segmentation (a VOC root directory) -> AnnotationSet.

- Annotations/ID.xml gives the image size, file name and the objects in order: the i-th
  <object> (1-based) is the instance whose pixels have value i in SegmentationObject/ID.png.
- In both PNGs 0 is background and 255 the void band VOC draws around objects and over
  ambiguous regions: it belongs to no instance, so it is never part of a mask.
- SegmentationClass/ID.png (each pixel's VOC class index) only checks the XML: an object list
  out of step with the instance PNG would otherwise give masks wrong classes silently.
- An image set's images without a SegmentationObject PNG (detection-only) are errors.

Masks stay in their files (`MaskFile(path, value=i)`) for the converter's workers; RGB PNGs in
VOC's colours (Datumaro, CVAT) are mapped back to indices here and passed as RLE. Boxes come
from the masks; the bndbox only warns of an instance mostly outside its object's box.

Label map: the 20 VOC classes in the OD API's pascal_label_map.pbtxt order (aeroplane=1 ...
tvmonitor=20) when every name found is one, so all image sets get the same ids; otherwise the
sorted names found, and no class check (the class PNG then follows an unknown label map).
"""
from __future__ import annotations

import dataclasses
import functools
import math
import re
from collections import Counter
from pathlib import Path

import numpy as np
from lxml import etree
from pycocotools import mask as mask_utils

from core.errors import UserError
from data_prep.annotations import (
    AnnotationFileError,
    AnnotationSet,
    ImageAnnotation,
    MaskFile,
    ObjectAnnotation,
    Problem,
    RunLengths,
    resolve_inside,
)
from data_prep.safe_files import FileLimits, ImageFileError, open_image, read_regular_file

VOC_CLASSES = ("aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
               "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
               "sheep", "sofa", "train", "tvmonitor")
VOID = 255
# Below this share of its pixels inside its object's bndbox, an instance is reported.
MIN_SHARE_INSIDE_BOX = 0.5
_INDEX_MODES = ("P", "L", "I", "I;16")  # PIL modes whose pixel values are the indices
# No entity expansion or network access: annotation files are data, not trusted documents.
_XML_PARSER = etree.XMLParser(resolve_entities=False, no_network=True)


@functools.lru_cache(maxsize=1)
def voc_colormap() -> np.ndarray:
    """The 256 colours of VOC's palette: index bits spread from the top bit of R, G and B."""
    indices, colors = np.arange(256), np.zeros((256, 3), np.int64)
    for step in range(3):  # bits 0, 3, 6 of the index -> R's bits 7, 6, 5; 1, 4, 7 -> G's ...
        for channel in range(3):
            colors[:, channel] |= ((indices >> (3 * step + channel)) & 1) << (7 - step)
    return colors.astype(np.uint8)


def voc_box_to_pixels(xmin: float, ymin: float, xmax: float, ymax: float
                      ) -> tuple[float, float, float, float]:
    """VOC's bndbox counts pixels from 1 and includes xmax and ymax; returns 0-based pixel
    edges (x0, y0, x1, y1), so (1, 1, 1, 1) is the single top-left pixel (0, 0, 1, 1)."""
    return xmin - 1.0, ymin - 1.0, float(xmax), float(ymax)


class MaskPngError(UserError, ValueError):
    """A SegmentationObject/SegmentationClass PNG cannot be read as indices."""


def read_index_png(path: Path, limits: FileLimits = FileLimits()) -> tuple[np.ndarray, bool]:
    """The pixel indices of a VOC PNG, and whether the file stores them as they are (palette
    or gray) rather than as VOC colours."""
    try:
        data = read_regular_file(str(path), limits, "PNG")
        with open_image(data, str(path), limits, "PNG") as img:
            if img.mode in _INDEX_MODES:
                return np.asarray(img), True
            if img.mode in ("RGB", "RGBA"):
                return _indices_from_colors(np.asarray(img.convert("RGB"))), False
            mode = img.mode
    except ImageFileError as err:
        if err.reason == "missing_image":
            raise MaskPngError("file does not exist") from None
        detail = str(err).replace(f"PNG {path} ", "", 1)
        if err.reason == "corrupt_image":
            detail = "cannot be read as an image (" + detail.split("(", 1)[-1]
        raise MaskPngError(detail) from None
    except (OSError, ValueError) as err:
        raise MaskPngError(f"cannot be read as an image ({err})") from None
    raise MaskPngError(f"PIL mode {mode}: expected a palette (P), gray (L) or RGB PNG")


def _top_bits(red: np.ndarray, green: np.ndarray, blue: np.ndarray) -> np.ndarray:
    # A VOC colour keeps the index's 8 bits in the top 3 bits of R and G and 2 of B.
    return (red >> 5) | ((green >> 5) << 3) | ((blue >> 6) << 6)


@functools.lru_cache(maxsize=1)
def _index_of_top_bits() -> np.ndarray:
    colors = voc_colormap()
    table = np.zeros(256, np.uint8)
    table[_top_bits(colors[:, 0], colors[:, 1], colors[:, 2])] = np.arange(256)
    return table


def _indices_from_colors(rgb: np.ndarray) -> np.ndarray:
    """Inverts `voc_colormap`; a colour with any lower bit set is not VOC's."""
    red, green, blue = np.ascontiguousarray(rgb.transpose(2, 0, 1))  # planes: 2x faster
    foreign = ((red & 0x1F) | (green & 0x1F) | (blue & 0x3F)) != 0
    if foreign.any():
        shown = ", ".join(str(tuple(c)) for c in np.unique(rgb[foreign], axis=0)[:3].tolist())
        raise MaskPngError(f"RGB colours {shown} are not VOC palette colours")
    return _index_of_top_bits()[_top_bits(red, green, blue)]


@dataclasses.dataclass
class _XmlObject:
    index: int  # 1-based position among the <object>s: its value in SegmentationObject
    name: str | None
    difficult: bool
    box: tuple[float, float, float, float] | None  # 0-based pixel edges x0, y0, x1, y1


@dataclasses.dataclass
class _XmlImage:
    image_id: str
    xml_path: Path
    file_name: str
    width: int | None
    height: int | None
    objects: list[_XmlObject]


class _Reader:
    def __init__(self, root: Path, images_dir: Path, drop_difficult: bool,
                 limits: FileLimits = FileLimits()):
        self.root = root
        self.images_dir = images_dir
        self.drop_difficult = drop_difficult
        self.limits = limits
        self.problems: list[Problem] = []

    def problem(self, reason: str, file: Path, record: str, message: str,
                is_error: bool = True, scope: str = "annotation") -> None:
        self.problems.append(Problem(reason, message, str(file), record, is_error, scope))

    def parse_xml(self, image_id: str) -> _XmlImage | None:
        """The XML's size, file name and objects; None (with a problem) if unusable."""
        record = f"image {image_id!r}"
        path = self.root / "Annotations" / f"{image_id}.xml"
        try:
            root = etree.fromstring(path.read_bytes(), _XML_PARSER)
        except OSError as err:
            self.problem("missing_annotation" if isinstance(err, FileNotFoundError) else
                         "unreadable_annotation", path, record, f"cannot be read: {err.strerror}",
                         scope="image")
            return None
        except etree.XMLSyntaxError as err:
            line, column = err.position if err.position else (err.lineno, 0)
            detail = re.sub(r", line \d+, column \d+$", "", err.msg or "")
            self.problem("bad_xml", path, record, f"not a VOC XML file: not well-formed at "
                         f"line {line}, column {column}: {detail}", scope="image")
            return None
        if root.tag != "annotation":
            self.problem("not_voc_xml", path, record, f"not a VOC XML file: the root element "
                         f"is <{root.tag}> (line {root.sourceline}), expected <annotation>",
                         scope="image")
            return None
        try:
            width, height = (_size_value(root, "width"), _size_value(root, "height"))
        except ValueError as err:
            self.problem("bad_size", path, record, str(err), scope="image")
            return None
        objects = [self.parse_object(element, index, image_id, path)
                   for index, element in enumerate(root.iterfind("object"), start=1)]
        if not objects:
            self.problem("no_objects", path, record, "has no <object>: written without "
                         "instances", is_error=False, scope="image")
        file_name = (root.findtext("filename") or "").strip() or f"{image_id}.jpg"
        return _XmlImage(image_id, path, file_name, width, height, objects)

    def parse_object(self, element, index: int, image_id: str, path: Path) -> _XmlObject:
        name = (element.findtext("name") or "").strip() or None
        record = f"object {index} ({name!r}) of image {image_id!r}"
        if name is None:
            self.problem("object_without_name", path, f"object {index} of image {image_id!r}",
                         f"<object> (line {element.sourceline}) has no <name>")
        difficult_text = (element.findtext("difficult") or "0").strip()
        if difficult_text not in ("0", "1"):
            self.problem("bad_difficult", path, record, f"<difficult> is {difficult_text!r}, "
                         "expected 0 or 1")
            name = None  # left out like an object without a name
        return _XmlObject(index, name, difficult_text == "1", _bndbox(element.find("bndbox")))

    def image(self, xml: _XmlImage, source_id: int, check_classes: bool
              ) -> ImageAnnotation | None:
        """The image with its instances; None (with a problem) when it cannot be used."""
        record = f"image {xml.image_id!r}"
        mask_path = self.root / "SegmentationObject" / f"{xml.image_id}.png"
        try:
            instances, stored_as_indices = read_index_png(mask_path, self.limits)
        except MaskPngError as err:
            self.problem("bad_mask_file", mask_path, record, str(err), scope="image")
            return None
        height, width = instances.shape
        if xml.width and xml.height and (xml.width, xml.height) != (width, height):
            self.problem("mask_size_mismatch", mask_path, record, f"mask is {width}x{height} "
                         f"but {xml.xml_path.name} gives size {xml.width}x{xml.height}",
                         scope="image")
            return None
        pixel_counts = {value: count for value, count in
                        enumerate(np.bincount(instances.ravel()).tolist()) if count}
        orphans = sorted(v for v in pixel_counts if v not in (0, VOID) and v > len(xml.objects))
        if orphans:
            self.problem("instance_without_object", mask_path, record,
                         f"instance {orphans[0]} ({pixel_counts[orphans[0]]} pixels) has no "
                         f"<object>: {xml.xml_path.name} lists {len(xml.objects)}, and "
                         "instance i is the i-th <object>", scope="image")
            return None
        classes = (self.class_pixels(xml.image_id, instances.shape, record) if check_classes
                   else None)
        if classes is False:
            return None
        image_path = resolve_inside(self.images_dir, xml.file_name)
        if image_path is None:
            self.problem("path_escapes_images_dir", xml.xml_path, record, f"<filename> "
                         f"{xml.file_name!r} escapes the images directory", scope="image")
            return None
        if not image_path.is_file():
            self.problem("missing_image", image_path, record, "image file does not exist",
                         scope="image")
            return None
        objects = [self.instance(obj, xml, instances, pixel_counts, classes, mask_path,
                                 stored_as_indices) for obj in xml.objects]
        return ImageAnnotation(
            image_path=str(image_path), file_name=xml.file_name, image_id=xml.image_id,
            source_id=source_id, width=width, height=height,
            objects=[obj for obj in objects if obj is not None])

    def class_pixels(self, image_id: str, shape: tuple, record: str
                     ) -> np.ndarray | None | bool:
        """SegmentationClass indices; None when absent (no check), False when unusable."""
        path = self.root / "SegmentationClass" / f"{image_id}.png"
        if not path.is_file():
            self.problem("no_class_mask", path, record, "no SegmentationClass PNG: classes "
                         "taken from the XML unchecked", is_error=False, scope="image")
            return None
        try:
            classes, _ = read_index_png(path, self.limits)
        except MaskPngError as err:
            self.problem("bad_mask_file", path, record, str(err), scope="image")
            return False
        if classes.shape != shape:
            self.problem("mask_size_mismatch", path, record, f"class mask is "
                         f"{classes.shape[1]}x{classes.shape[0]} but SegmentationObject's "
                         f"is {shape[1]}x{shape[0]}", scope="image")
            return False
        return classes

    def instance(self, obj: _XmlObject, xml: _XmlImage, instances: np.ndarray,
                 pixel_counts: dict, classes: np.ndarray | None, mask_path: Path,
                 stored_as_indices: bool) -> ObjectAnnotation | None:
        if obj.name is None:  # already reported
            return None
        record = f"object {obj.index} ({obj.name!r}) of image {xml.image_id!r}"
        if obj.difficult and self.drop_difficult:
            self.problem("difficult_dropped", xml.xml_path, record, "difficult object left "
                         "out (--drop_difficult)", is_error=False)
            return None
        if not pixel_counts.get(obj.index):
            self.problem("object_without_pixels", mask_path, record, f"no pixel has value "
                         f"{obj.index}: the object has no mask and is left out",
                         is_error=False)
            return None
        selected = instances == obj.index
        if classes is not None and not self.class_agrees(obj, xml, classes[selected], record):
            return None
        if obj.box is not None:  # pixel (row r, column c) is inside when x0 <= c < x1 ...
            c0, r0, c1, r1 = (max(int(np.ceil(edge)), 0) for edge in obj.box)
            inside = selected[r0:r1, c0:c1].sum() / pixel_counts[obj.index]
            if inside < MIN_SHARE_INSIDE_BOX:
                self.problem("mask_outside_box", mask_path, record, f"only {inside:.0%} of "
                             f"instance {obj.index}'s pixels lie inside the object's bndbox: "
                             "is the <object> order out of step with the PNG?",
                             is_error=False)
        if stored_as_indices:
            segmentation = MaskFile(str(mask_path), value=obj.index)
        else:
            rle = mask_utils.encode(np.asfortranarray(selected.astype(np.uint8)))
            segmentation = RunLengths(rle["counts"], *selected.shape)
        return ObjectAnnotation(annotation_id=f"{xml.image_id} object {obj.index}",
                                class_name=obj.name, segmentation=segmentation,
                                difficult=obj.difficult)

    def class_agrees(self, obj: _XmlObject, xml: _XmlImage, under: np.ndarray,
                     record: str) -> bool:
        """Whether most non-void pixels of the instance carry the XML's class."""
        labelled = under[(under != 0) & (under != VOID)]
        expected = VOC_CLASSES.index(obj.name) + 1
        found = int(np.bincount(labelled).argmax()) if labelled.size else 0
        if found == expected:
            return True
        name = repr(VOC_CLASSES[found - 1]) if 0 < found <= len(VOC_CLASSES) else "no VOC class"
        what = (f"{name} (index {found}) for {np.mean(labelled == found):.0%} of its pixels"
                if found else "only background or void")
        self.problem("class_mismatch", xml.xml_path, record, f"is {obj.name!r} in the XML but "
                     f"SegmentationClass/{xml.image_id}.png gives {what}: is the <object> "
                     "order out of step with SegmentationObject?")
        return False


def _size_value(root, field: str) -> int | None:
    """<size>'s width or height; None when absent or 0 (unknown, as some tools write it)."""
    text = (root.findtext(f"size/{field}") or "0").strip()
    if not text.isdigit():
        raise ValueError(f"<size><{field}> is {text!r}, expected a whole number")
    return int(text) or None


def _bndbox(element) -> tuple[float, float, float, float] | None:
    """The box as 0-based pixel edges; None when absent or unreadable (it is only a check)."""
    try:
        values = [float(element.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax")]
    except (AttributeError, TypeError, ValueError):
        return None
    return voc_box_to_pixels(*values) if all(math.isfinite(v) for v in values) else None


def _image_set_ids(root: Path, image_set: str) -> tuple[Path, list[str]]:
    """The ids an image set lists: a name under ImageSets/Segmentation, then ImageSets/Main,
    or the path of a list file."""
    candidates = [root / "ImageSets" / "Segmentation" / f"{image_set}.txt",
                  root / "ImageSets" / "Main" / f"{image_set}.txt"]
    if image_set.endswith(".txt"):
        candidates.insert(0, Path(image_set))
    path = next((p for p in candidates if p.is_file()), None)
    if path is None:
        raise AnnotationFileError(f"image set {image_set!r} not found: none of "
                                  f"{', '.join(map(str, candidates))} exists")
    ids = [line.split()[0] for line in path.read_text(encoding="utf-8-sig").splitlines()
           if line.strip() and not line.lstrip().startswith("#")]
    return path, ids


def _source_ids(image_ids: list[str]) -> dict[str, int]:
    """Numeric ids for image/source_id: VOC's YYYY_NNNNNN read as one number (2007_000032 ->
    2007000032) when that is unique for all ids, else positions 1..N."""
    if all(re.fullmatch(r"\d+(_\d+)*", i) for i in image_ids):
        numbers = {i: int(i.replace("_", "")) for i in image_ids}
        if len(set(numbers.values())) == len(numbers):
            return numbers
    return {image_id: position for position, image_id in enumerate(image_ids, start=1)}


def _require_voc_root(root: Path) -> None:
    if not root.is_dir():
        raise AnnotationFileError(f"{root}: --format voc takes the VOC root directory (holding "
                                  "Annotations/, JPEGImages/, SegmentationObject/ ...)")
    inner = sorted(p for p in root.iterdir() if (p / "Annotations").is_dir())
    for folder in ("Annotations", "SegmentationObject"):
        if not (root / folder).is_dir():
            hint = f" (did you mean {inner[0]}?)" if inner else ""
            raise AnnotationFileError(f"{root}: not a VOC instance segmentation root: it has "
                                      f"no {folder}/ folder{hint}")


def read_voc(root: str | Path, images_dir: str | Path | None = None,
             image_set: str | None = None, drop_difficult: bool = False,
             limits: FileLimits = FileLimits()) -> AnnotationSet:
    """Reads a VOC root; problems are collected, not raised, except for a directory that is
    not a VOC root or a missing image set (AnnotationFileError).

    Without `image_set`, every image with a SegmentationObject PNG is read."""
    root = Path(root)
    _require_voc_root(root)
    reader = _Reader(root, Path(images_dir) if images_dir else root / "JPEGImages",
                     drop_difficult, limits)
    if image_set:
        list_path, listed = _image_set_ids(root, image_set)
        image_ids = list(dict.fromkeys(listed))
        for image_id in sorted(i for i, n in Counter(listed).items() if n > 1):
            reader.problem("duplicate_in_image_set", list_path, f"image {image_id!r}",
                           "listed more than once; read once", is_error=False, scope="image")
    else:
        image_ids = sorted(p.stem for p in (root / "SegmentationObject").glob("*.png"))
    parsed = []
    for image_id in image_ids:
        record = f"image {image_id!r}"
        if resolve_inside(root / "Annotations", f"{image_id}.xml") is None:
            reader.problem("path_escapes_root", root, record, "image id escapes the VOC root",
                           scope="image")
        elif not (root / "SegmentationObject" / f"{image_id}.png").is_file():
            reader.problem("no_instance_masks", root / "SegmentationObject" / f"{image_id}.png",
                           record, "no SegmentationObject PNG: a detection-only VOC image "
                           "cannot train masks (ImageSets/Segmentation lists only segmented "
                           "images)", scope="image")
        else:
            xml = reader.parse_xml(image_id)
            if xml is not None:
                parsed.append(xml)
    names = {obj.name for xml in parsed for obj in xml.objects if obj.name}
    all_voc = names <= set(VOC_CLASSES)
    if not all_voc:
        reader.problem("class_check_skipped", root, "all images", "class names "
                       f"{sorted(names - set(VOC_CLASSES))[:5]} are not VOC classes, so "
                       "SegmentationClass indices cannot be checked against the XML names",
                       is_error=False, scope="image")
    source_ids = _source_ids(image_ids)
    images = [reader.image(xml, source_ids[xml.image_id], check_classes=all_voc)
              for xml in parsed]
    return AnnotationSet(source=str(root),
                         class_names=list(VOC_CLASSES) if all_voc else sorted(names),
                         images=[image for image in images if image is not None],
                         problems=reader.problems)
