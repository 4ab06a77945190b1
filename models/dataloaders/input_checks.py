"""Checks of the inputs before any TensorFlow graph is built, with messages that say what
to fix: record paths that match nothing or hold no records, records without PNG masks,
labels beyond num_classes, and a label map that does not match num_classes."""
from __future__ import annotations

from pathlib import Path

from core.errors import UserError
from records import keys
from records.label_map import LabelMap, LabelMapError, read_label_map
from records.protos import example_pb2
from records.tfrecord_io import expand_paths, is_remote, read_records

RECORDS_SAMPLED = 50


class InputCheckError(UserError, ValueError):
    """The configured inputs cannot train or evaluate this model."""


def _sample_examples(paths: list[str], limit: int):
    seen = 0
    for path in paths:
        for index, serialized in enumerate(read_records(path)):
            yield path, index, example_pb2.Example.FromString(serialized)
            seen += 1
            if seen >= limit:
                return


def _size(path: str) -> int:
    if is_remote(path):
        import tensorflow as tf

        return tf.io.gfile.stat(path).length
    return Path(path).stat().st_size


def check_label_map(label_map_path: str, num_classes: int, field: str) -> LabelMap | None:
    """The label map, after checking that its largest id is num_classes.

    Ids may have gaps (COCO's category ids, kept as label-map ids, go up to 90 for 80
    classes): num_classes is the largest id, as in the OD API's COCO configs, and the unused
    ids are classes that never occur."""
    if not label_map_path:
        return None
    try:
        label_map = read_label_map(label_map_path)
    except LabelMapError as err:
        raise InputCheckError(f"{field}.label_map_path: {err}") from None
    if label_map.max_id != num_classes:
        gaps = (f", {label_map.max_id - len(label_map)} of them unused: num_classes counts "
                "to the largest id, as the OD API's COCO configs have num_classes: 90"
                if len(label_map) != label_map.max_id else "")
        raise InputCheckError(
            f"{field}.label_map_path: {label_map_path} has {len(label_map)} classes (ids up to "
            f"{label_map.max_id}{gaps}) but model.faster_rcnn.num_classes is {num_classes}; "
            f"set num_classes: {label_map.max_id} or use the label map the records were "
            "written with")
    return label_map


def check_records(patterns: list[str], field: str, num_classes: int, need_masks: bool) -> int:
    """Checks the record files of one input reader; returns the number of files."""
    try:
        paths = expand_paths(patterns)
    except FileNotFoundError as err:
        raise InputCheckError(f"{field}.tf_record_input_reader.input_path: {err}") from None
    if all(_size(p) == 0 for p in paths):
        raise InputCheckError(f"{field}.tf_record_input_reader.input_path: the "
                              f"{len(paths)} file(s) matching {patterns} hold no records")
    instances = masks_found = 0
    for path, index, example in _sample_examples(paths, RECORDS_SAMPLED):
        feature = example.features.feature
        where = f"{path}: record {index}"
        labels = list(feature[keys.OBJECT_CLASS_LABEL].int64_list.value) \
            if keys.OBJECT_CLASS_LABEL in feature else []
        n = len(feature[keys.OBJECT_BBOX_XMIN].float_list.value) \
            if keys.OBJECT_BBOX_XMIN in feature else 0
        if n and len(labels) != n:
            raise InputCheckError(f"{where}: {n} boxes but {len(labels)} class labels "
                                  "(image/object/class/label); convert with "
                                  "data_prep/create_tfrecords.py")
        bad = [label for label in labels if not 1 <= label <= num_classes]
        if bad:
            raise InputCheckError(f"{where}: class labels {sorted(set(bad))} are outside "
                                  f"1..{num_classes} (model.faster_rcnn.num_classes)")
        instances += n
        if keys.OBJECT_MASK in feature:
            kind = feature[keys.OBJECT_MASK].WhichOneof("kind")
            if kind == "float_list":
                raise InputCheckError(
                    f"{where}: masks are stored as float lists (the OD API's "
                    "NUMERICAL_MASKS); this project reads PNG masks: re-convert with "
                    "data_prep/create_tfrecords.py")
            masks_found += len(feature[keys.OBJECT_MASK].bytes_list.value)
    if need_masks and instances and not masks_found:
        raise InputCheckError(
            f"{field}: the records {patterns} have no instance masks (image/object/mask); "
            "Mask R-CNN needs them: convert with data_prep/create_tfrecords.py, or train "
            "boxes only with number_of_stages: 2")
    return len(paths)
