"""Each annotation format's flags of create_tfrecords.py, and the reader call they make.

The readers themselves (coco.py, via.py, labelme.py, openimages.py, voc.py, tfds_source.py) take
explicit arguments and know nothing of the command line; this module is the one adapter
between `--format NAME` plus its flags and a reader. A new format adds a module with a
`read_...` function and one `Format` entry here.
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib
from pathlib import Path
from typing import Callable

from data_prep.annotations import AnnotationFileError, AnnotationSet
from data_prep.safe_files import FileLimits


@dataclasses.dataclass(frozen=True)
class Format:
    name: str
    module: str  # the reader module, imported only when its format runs
    add_flags: Callable[[argparse._ArgumentGroup], None]
    read: Callable[[argparse.Namespace], AnnotationSet]


def _reader(module: str, function: str):
    return getattr(importlib.import_module(module), function)


def _annotations(args: argparse.Namespace, name: str, what: str) -> str:
    if not args.annotations:
        raise AnnotationFileError(f"--format {name} needs --annotations ({what})")
    return args.annotations


def _images_dir(args: argparse.Namespace) -> str:
    return args.images_dir or str(Path(args.annotations).parent)


# --- coco ---------------------------------------------------------------------------------
def _coco_flags(group) -> None:
    group.add_argument("--contiguous_ids", action="store_true",
                       help="coco: number the classes 1..K in category-id order instead of "
                       "keeping the category ids as label-map ids (the default, as the OD "
                       "API does: COCO's go up to 90); the category ids are kept in "
                       "category_ids.json beside label_map.pbtxt for COCO results")
    group.add_argument("--crowd_masks_as_objects", action="store_true",
                       help="coco: take run-length masks marked iscrowd 1 as single objects "
                       "(CVAT's COCO export marks every mask as crowd; training skips crowd "
                       "regions)")


def _read_coco(args: argparse.Namespace) -> AnnotationSet:
    path = _annotations(args, "coco", "a COCO instances JSON")
    return _reader("data_prep.formats.coco", "read_coco")(
        path, _images_dir(args), contiguous_ids=args.contiguous_ids,
        crowd_masks_as_objects=args.crowd_masks_as_objects)


# --- labelme ------------------------------------------------------------------------------
def _labelme_flags(group) -> None:
    group.add_argument("--labelme_work_dir", metavar="DIR",
                       help="labelme: extract images embedded in the JSON files (imageData) "
                       "here and keep them (default: a hidden directory in --output_dir, "
                       "deleted at exit)")


def _read_labelme(args: argparse.Namespace) -> AnnotationSet:
    from data_prep.formats import labelme, work_dir

    path = _annotations(args, "labelme", "a Labelme JSON file or a directory of them")
    return labelme.read_labelme(
        path, images_dir=args.images_dir or None,
        work_dir=work_dir.WorkDir(args.output_dir, args.labelme_work_dir),
        limits=FileLimits(args.max_file_mb * 2**20, args.max_image_pixels),
        exclude=args.output_dir)


# --- via ----------------------------------------------------------------------------------
def _via_flags(group) -> None:
    group.add_argument("--class_attribute", metavar="NAME",
                       help="region attribute holding the class name (dropdown, radio, "
                       "checkbox or text); default: found automatically when only one "
                       "attribute can be meant")
    group.add_argument("--default_class", metavar="NAME",
                       help="class of regions without a class value; needed for files with "
                       "no region attributes (e.g. --default_class balloon)")


def _read_via(args: argparse.Namespace) -> AnnotationSet:
    path = _annotations(args, "via", "a VIA JSON export, project file or CSV export")
    return _reader("data_prep.formats.via", "read_via")(
        path, _images_dir(args), args.class_attribute or None, args.default_class or None)


# --- openimages ---------------------------------------------------------------------------
def _openimages_flags(group) -> None:
    from records.class_hierarchy import GROUPS

    group.add_argument("--masks_dir", help="openimages: folder of the mask PNGs named by "
                       "MaskPath, directly or one folder below (default: 'masks' beside "
                       "--annotations)")
    group.add_argument("--class_descriptions", help="openimages: class descriptions CSV "
                       "(MID,display name), e.g. oidv6-class-descriptions.csv")
    group.add_argument("--hierarchy", help="openimages: bbox_labels_600_hierarchy.json, for "
                       "--expand_hierarchy and --hierarchy_group")
    group.add_argument("--classes", help="comma-separated subset of classes, by display name "
                       "or MID (openimages: e.g. 'Dog,Pizza,/m/0pg52'); the label map lists "
                       "them in this order")
    group.add_argument("--expand_hierarchy", action="store_true",
                       help="openimages: also label each instance with every ancestor class, "
                       "as the Open Images challenge scores it")
    group.add_argument("--hierarchy_group", choices=GROUPS,
                       help="openimages: layer0 keeps the depth-0 classes (deeper ones become "
                       "their depth-0 ancestor); layer1 keeps the deeper classes and hides "
                       "depth-0 objects that have subclasses under gray boxes")
    group.add_argument("--image_extension", default="jpg",
                       help="openimages: images are <ImageID>.<this> (default: jpg)")


def _read_openimages(args: argparse.Namespace) -> AnnotationSet:
    for flag, value in (("--annotations", args.annotations), ("--images_dir", args.images_dir),
                        ("--class_descriptions", args.class_descriptions)):
        if not value:
            raise AnnotationFileError(f"--format openimages needs {flag}")
    classes = [c.strip() for c in (args.classes or "").split(",") if c.strip()]
    masks_dir = args.masks_dir or Path(args.annotations).parent / "masks"
    return _reader("data_prep.formats.openimages", "read_openimages")(
        args.annotations, args.images_dir, masks_dir, args.class_descriptions, args.hierarchy,
        classes or None, args.hierarchy_group, args.expand_hierarchy, args.image_extension)


# --- voc ----------------------------------------------------------------------------------
def _voc_flags(group) -> None:
    group.add_argument("--image_set", help="VOC image set to read, e.g. train: "
                       "ImageSets/Segmentation/NAME.txt, else ImageSets/Main/NAME.txt, or a "
                       "list file path ending in .txt (default: every image with a "
                       "SegmentationObject PNG)")
    group.add_argument("--drop_difficult", action="store_true",
                       help="leave out objects marked <difficult>1 (kept by default and "
                       "written as image/object/difficult)")


def _read_voc(args: argparse.Namespace) -> AnnotationSet:
    root = _annotations(args, "voc", "the VOC root directory: the folder holding "
                        "Annotations/, JPEGImages/, SegmentationObject/ ...")
    return _reader("data_prep.formats.voc", "read_voc")(
        root, images_dir=args.images_dir, image_set=args.image_set,
        drop_difficult=args.drop_difficult,
        limits=FileLimits(args.max_file_mb * 2**20, args.max_image_pixels))


# --- tfds ---------------------------------------------------------------------------------
_TFDS_KEYS = (("image", "the image (top level)"),
              ("objects", "the Sequence of per-instance dicts"),
              ("mask", "the instance mask Image, inside objects"),
              ("label", "the ClassLabel, inside objects"),
              ("bbox", "the BBoxFeature, inside objects (none: boxes from masks)"))


def _tfds_flags(group) -> None:
    group.add_argument("--tfds_name", help="TFDS data set, e.g. lvis or my_set/config:1.0.0")
    group.add_argument("--tfds_data_dir", help="TFDS data dir holding the prepared data set "
                       "(or the data set's own directory with dataset_info.json)")
    group.add_argument("--tfds_split", help="TFDS split to read, slices too, e.g. "
                       "'train[:100]' (default: --split)")
    for name, what in _TFDS_KEYS:
        group.add_argument(f"--tfds_{name}_key", help=f"feature of {what} (default: detected)")
    group.add_argument("--tfds_work_dir", help="extract images and masks here and keep them "
                       "(default: a hidden directory in --output_dir, deleted at exit)")


def _read_tfds(args: argparse.Namespace) -> AnnotationSet:
    from data_prep.formats import tfds_source

    builder = tfds_source.open_builder(args.tfds_name, args.tfds_data_dir)
    work_dir = tfds_source.make_work_dir(args.output_dir, args.tfds_work_dir)
    keys = tfds_source.FeatureKeys(**{name: getattr(args, f"tfds_{name}_key")
                                      for name, _ in _TFDS_KEYS})
    return tfds_source.read_tfds(builder, args.tfds_split or args.split or "train", work_dir,
                                 keys, progress=not args.no_progress)


FORMATS = {f.name: f for f in (
    Format("coco", "data_prep.formats.coco", _coco_flags, _read_coco),
    Format("via", "data_prep.formats.via", _via_flags, _read_via),
    Format("labelme", "data_prep.formats.labelme", _labelme_flags, _read_labelme),
    Format("openimages", "data_prep.formats.openimages", _openimages_flags, _read_openimages),
    Format("voc", "data_prep.formats.voc", _voc_flags, _read_voc),
    Format("tfds", "data_prep.formats.tfds_source", _tfds_flags, _read_tfds),
)}


def add_format_flags(parser: argparse.ArgumentParser) -> None:
    for entry in FORMATS.values():
        entry.add_flags(parser.add_argument_group(f"--format {entry.name}"))


def read_annotations(args: argparse.Namespace) -> AnnotationSet:
    """The AnnotationSet of `--format` with its flags."""
    return FORMATS[args.format].read(args)
