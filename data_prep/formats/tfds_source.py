"""A TensorFlow Datasets data set prepared on disk -> AnnotationSet (--format tfds).

    python data_prep/create_tfrecords.py --format tfds --tfds_name lvis \\
        --tfds_data_dir ~/tensorflow_datasets --tfds_split validation \\
        --split val --output_dir records/

The data set needs per-instance masks: a Sequence of dicts (usually "objects") holding an
Image mask, a ClassLabel and optionally a BBoxFeature, as LVIS has. The keys are detected;
--tfds_image_key, --tfds_objects_key, --tfds_mask_key, --tfds_label_key and --tfds_bbox_key
name them when the data set has several candidates. Nothing is downloaded.

The converter reads image and mask FILES, so every example is extracted first: the image as
its stored JPEG/PNG bytes (no re-encoding; other encodings become PNG) and each mask as a
single-channel PNG (grayscale PNGs are copied as they are). Extraction goes to a hidden
directory inside --output_dir (the records' file system has room for about the same bytes
again), deleted when the process exits; --tfds_work_dir DIR extracts to DIR and keeps it.
TensorFlow is imported only when this reader runs, never by other formats' runs.
"""
from __future__ import annotations

import atexit
import dataclasses
import io
import math
import shutil
import tempfile
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from data_prep.annotations import (
    AnnotationFileError,
    AnnotationSet,
    ImageAnnotation,
    MaskFile,
    ObjectAnnotation,
    Problem,
)

JPEG_MAGIC = b"\xff\xd8\xff"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
PNG_GRAYSCALE = 0  # IHDR colour type
FILENAME_KEYS = ("image/filename", "image/file_name", "file_name", "filename")
IMAGE_ID_KEYS = ("image/id", "image_id", "id")


@dataclasses.dataclass
class Schema:
    """Which features of the data set hold what the records need."""

    image_key: str
    objects_key: str
    mask_key: str
    label_key: str
    bbox_key: str | None  # None: boxes come from the masks
    class_names: list[str] | None  # ClassLabel names; None: plain integer labels
    filename_key: str | None = None
    image_id_key: str | None = None
    crowd_key: str | None = None
    area_key: str | None = None


def _pick(kind: str, where: str, candidates: list[str], preferred: tuple[str, ...],
          given: str | None, option: str, required: bool = True) -> str | None:
    """The user's choice (checked), the only candidate, or the conventional name."""
    if given is not None:
        if given not in candidates:
            raise AnnotationFileError(f"{option} {given!r}: {where} has no {kind} feature of "
                                      f"that name (candidates: {candidates or 'none'})")
        return given
    if len(candidates) == 1:
        return candidates[0]
    for name in preferred:
        if name in candidates:
            return name
    if candidates:
        raise AnnotationFileError(f"{where} has several {kind} features {candidates}; "
                                  f"choose one with {option}")
    if required:
        raise AnnotationFileError(f"{where} has no {kind} feature")
    return None


@dataclasses.dataclass(frozen=True)
class FeatureKeys:
    """Feature names given by the user (--tfds_image_key ...); None: detected."""

    image: str | None = None
    objects: str | None = None
    mask: str | None = None
    label: str | None = None
    bbox: str | None = None


def detect_schema(features, keys: FeatureKeys = FeatureKeys()) -> Schema:
    """Finds image, objects, mask, label and box features in a tfds FeaturesDict."""
    import tensorflow_datasets as tfds

    f = tfds.features
    top = dict(features.items())

    def is_uint8_image(feature) -> bool:
        return isinstance(feature, f.Image) and np.dtype(feature.np_dtype) == np.uint8

    def object_dict(feature):
        if isinstance(feature, f.Sequence) and isinstance(feature.feature, f.FeaturesDict):
            return dict(feature.feature.items())
        return None

    images = [k for k, v in top.items() if is_uint8_image(v)]
    image_key = _pick("uint8 Image", "the data set", images, ("image",),
                      keys.image, "--tfds_image_key")
    with_masks = [k for k, v in top.items()
                  if object_dict(v) and any(is_uint8_image(x) for x in object_dict(v).values())]
    objects_key = _pick("Sequence-of-dict with an Image mask", "the data set", with_masks,
                        ("objects",), keys.objects,
                        "--tfds_objects_key")
    inner = object_dict(top[objects_key])
    where = f"objects feature {objects_key!r}"
    mask_key = _pick("Image", where, [k for k, v in inner.items() if is_uint8_image(v)],
                     ("mask", "segmentation"), keys.mask,
                     "--tfds_mask_key")
    given_label = keys.label
    labels = [k for k, v in inner.items() if isinstance(v, f.ClassLabel)]
    if given_label in inner and _is_int_scalar(inner[given_label]):
        labels = sorted(set(labels) | {given_label})  # plain integers, named by their value
    elif not labels and _is_int_scalar(inner.get("label")):
        labels = ["label"]
    label_key = _pick("ClassLabel", where, labels, ("label",), given_label,
                      "--tfds_label_key")
    boxes = [k for k, v in inner.items() if isinstance(v, f.BBoxFeature)]
    bbox_key = _pick("BBoxFeature", where, boxes, ("bbox",),
                     keys.bbox, "--tfds_bbox_key", required=False)
    label_feature = inner[label_key]
    return Schema(
        image_key=image_key, objects_key=objects_key, mask_key=mask_key, label_key=label_key,
        bbox_key=bbox_key,
        class_names=list(label_feature.names) if isinstance(label_feature, f.ClassLabel)
        else None,
        filename_key=next((k for k in FILENAME_KEYS if isinstance(top.get(k), f.Text)), None),
        image_id_key=next((k for k in IMAGE_ID_KEYS if _is_int_scalar(top.get(k))), None),
        crowd_key=next((k for k in ("is_crowd", "iscrowd") if _is_scalar(inner.get(k))), None),
        area_key="area" if _is_scalar(inner.get("area")) else None)


def _is_scalar(feature) -> bool:
    return feature is not None and getattr(feature, "shape", None) == ()


def _is_int_scalar(feature) -> bool:
    if not _is_scalar(feature):
        return False
    try:
        return np.issubdtype(np.dtype(feature.np_dtype), np.integer)
    except (AttributeError, TypeError):
        return False


def _image_bytes(raw: bytes) -> tuple[bytes, str]:
    """Stored bytes and extension for JPEG/PNG; anything else re-encoded as PNG."""
    if raw.startswith(JPEG_MAGIC):
        return raw, ".jpg"
    if raw.startswith(PNG_MAGIC):
        return raw, ".png"
    with Image.open(io.BytesIO(raw)) as img:
        out = io.BytesIO()
        img.convert("RGB").save(out, format="PNG")
    return out.getvalue(), ".png"


def _mask_png(raw: bytes) -> bytes:
    """A single-channel PNG whose non-zero pixels are the instance."""
    if raw.startswith(PNG_MAGIC) and len(raw) > 25 and raw[25] == PNG_GRAYSCALE:
        return raw
    pixels = cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_UNCHANGED)
    if pixels is None:
        raise ValueError("an instance mask does not decode")
    if pixels.ndim == 3:
        pixels = pixels.any(axis=-1)
    ok, buf = cv2.imencode(".png", (pixels != 0).astype(np.uint8) * 255)
    if not ok:
        raise ValueError("an instance mask cannot be PNG-encoded")
    return buf.tobytes()


def _text(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


class Extractor:
    """Writes one example's image and masks to files and describes them."""

    def __init__(self, schema: Schema, work_dir: Path, source: str):
        self.schema = schema
        self.work_dir = work_dir
        self.source = source
        self.problems: list[Problem] = []
        self.label_values: set[int] = set()

    def example(self, index: int, ex: dict) -> ImageAnnotation | None:
        s = self.schema
        stem = f"{index // 1000:04d}/{index:07d}"
        try:
            data, ext = _image_bytes(ex[s.image_key])
            with Image.open(io.BytesIO(data)) as img:
                width, height = img.size
        except (OSError, ValueError) as err:  # PIL's UnidentifiedImageError is an OSError
            self.problems.append(Problem("corrupt_image", f"image does not decode: {err}",
                                         self.source, f"example {index}", scope="image"))
            return None
        image_path = self.work_dir / "images" / f"{stem}{ext}"
        image_path.parent.mkdir(parents=True, exist_ok=True)
        image_path.write_bytes(data)
        file_name = _text(ex[s.filename_key]) if s.filename_key else image_path.name
        image_id = int(ex[s.image_id_key]) if s.image_id_key else -1
        item = ImageAnnotation(
            image_path=str(image_path), file_name=file_name, image_id=f"#{index} ({file_name})",
            source_id=image_id if image_id >= 0 else index + 1, width=width, height=height)
        objects = ex[s.objects_key]
        mask_dir = self.work_dir / "masks" / stem
        for k, raw_mask in enumerate(objects[s.mask_key]):
            obj = self._object(index, k, objects, raw_mask, mask_dir, width, height, item)
            if obj is not None:
                item.objects.append(obj)
        return item

    def _object(self, index: int, k: int, objects: dict, raw_mask: bytes, mask_dir: Path,
                width: int, height: int, item: ImageAnnotation) -> ObjectAnnotation | None:
        s = self.schema
        record = f"example {index} ({item.file_name!r}) object {k}"
        label = int(objects[s.label_key][k])
        self.label_values.add(label)
        if s.class_names is not None and not 0 <= label < len(s.class_names):
            self.problems.append(Problem("unknown_category", f"label {label} is outside the "
                                         f"{len(s.class_names)} ClassLabel names", self.source,
                                         record))
            return None
        bbox = None
        if s.bbox_key:
            ymin, xmin, ymax, xmax = (float(v) for v in objects[s.bbox_key][k])
            bbox = (xmin * width, ymin * height, (xmax - xmin) * width, (ymax - ymin) * height)
            if not all(math.isfinite(v) for v in bbox):
                self.problems.append(Problem("bad_box", f"bbox {bbox} is not finite",
                                             self.source, record))
                return None
            if bbox[2] <= 0 or bbox[3] <= 0:
                self.problems.append(Problem("zero_area_box", f"bbox {bbox} has zero area",
                                             self.source, record))
                return None
        try:
            png = _mask_png(raw_mask)
        except ValueError as err:
            self.problems.append(Problem("bad_mask", str(err), self.source, record))
            return None
        mask_path = mask_dir / f"{k:04d}.png"
        mask_path.parent.mkdir(parents=True, exist_ok=True)
        mask_path.write_bytes(png)
        return ObjectAnnotation(
            annotation_id=f"{index}/{k}",
            class_name=s.class_names[label] if s.class_names is not None else str(label),
            segmentation=MaskFile(str(mask_path)), bbox=bbox,
            is_crowd=bool(objects[s.crowd_key][k]) if s.crowd_key else False,
            area=float(objects[s.area_key][k]) if s.area_key else None)


def open_builder(name: str | None, data_dir: str | None):
    """The prepared data set: by catalog name in data_dir, or data_dir itself when it is a
    builder directory (holds dataset_info.json)."""
    import tensorflow_datasets as tfds

    if name is None:
        if data_dir and (Path(data_dir) / "dataset_info.json").is_file():
            return tfds.builder_from_directory(data_dir)
        raise AnnotationFileError("--format tfds needs --tfds_name (or --tfds_data_dir naming a "
                                  "prepared data set's directory, with dataset_info.json)")
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except Exception as err:  # DatasetNotFoundError and friends; no download is attempted
        raise AnnotationFileError(f"TFDS data set {name!r} not found in "
                                  f"{data_dir or 'the default data dir'}: {err}") from None
    if not builder.is_prepared():
        raise AnnotationFileError(f"TFDS data set {name!r} is not prepared in {builder.data_dir}"
                                  "; prepare it first (nothing is downloaded here)")
    return builder


def make_work_dir(output_dir: str | None, given: str | None) -> Path:
    """--tfds_work_dir as given (kept), else a hidden directory in the output directory
    removed at process exit, after the converter has read every file."""
    if given:
        path = Path(given)
        path.mkdir(parents=True, exist_ok=True)
        return path
    parent = Path(output_dir or ".")
    parent.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix=".tfds-extract-", dir=parent))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def read_tfds(builder, split: str, work_dir: Path, keys: FeatureKeys = FeatureKeys(),
              progress: bool = False) -> AnnotationSet:
    """Extracts `split` of a prepared tfds data set into `work_dir` as files."""
    import tensorflow_datasets as tfds
    from tqdm import tqdm

    info = builder.info
    if split.split("[")[0] not in info.splits:  # "train[:100]" slices are tfds' own syntax
        raise AnnotationFileError(f"{info.full_name} has no split {split!r} (splits: "
                                  f"{sorted(info.splits)}); choose one with --tfds_split")
    schema = detect_schema(info.features, keys)
    source = f"tfds {info.full_name}[{split}] in {builder.data_dir}"
    decoders = {schema.image_key: tfds.decode.SkipDecoding(),
                schema.objects_key: {schema.mask_key: tfds.decode.SkipDecoding()}}
    dataset = builder.as_dataset(split=split, decoders=decoders, shuffle_files=False)
    extractor = Extractor(schema, work_dir, source)
    images = []
    total = info.splits[split].num_examples
    for index, ex in enumerate(tqdm(tfds.as_numpy(dataset), total=total, unit="img",
                                    desc=f"extract {split}", disable=not progress)):
        item = extractor.example(index, ex)
        if item is not None:
            images.append(item)
    if schema.class_names is not None:
        class_names = schema.class_names
    else:
        class_names = [str(v) for v in sorted(extractor.label_values)]
    return AnnotationSet(source=source, class_names=class_names, images=images,
                         problems=extractor.problems)
