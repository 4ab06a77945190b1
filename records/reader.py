"""Reading records back: from file patterns to `ImageExample`s with arrays.

Pure Python (no TensorFlow), so inspection, tests and tools start in a fraction of a second.
Records of the Object Detection API's COCO tool carry class/text but no class/label; given
a label map, the labels are filled in from the names, as the OD API's own decoder does.
"""
from __future__ import annotations

from typing import Iterable, Iterator

import numpy as np

from core.errors import UserError
from records.example_codec import ImageExample, decode_example
from records.label_map import LabelMap, LabelMapError
from records.tfrecord_io import expand_paths, read_records


class RecordError(UserError, ValueError):
    """A record cannot be decoded or breaks the contract."""


def iter_examples(patterns: str | Iterable[str], label_map: LabelMap | None = None,
                  verify_crc: bool = True) -> Iterator[tuple[str, int, ImageExample]]:
    """Yields (file, record index, example) for every record matching `patterns`."""
    for path in expand_paths(patterns):
        for index, serialized in enumerate(read_records(path, verify=verify_crc)):
            try:
                example = decode_example(serialized)
            except Exception as err:  # protobuf raises its own DecodeError types
                raise RecordError(f"{path}: record {index} is not a tf.train.Example: {err}"
                                  ) from None
            if label_map is not None:
                try:
                    fill_labels_from_texts(example, label_map)
                except RecordError as err:
                    raise RecordError(f"{path}: record {index}: {err}") from None
            yield path, index, example


def read_examples(patterns: str | Iterable[str], label_map: LabelMap | None = None
                  ) -> list[ImageExample]:
    """All examples matching `patterns`, in file order."""
    return [example for _, _, example in iter_examples(patterns, label_map)]


def fill_labels_from_texts(example: ImageExample, label_map: LabelMap) -> None:
    """Gives records that carry class/text but no class/label (the OD API's COCO tool writes
    them) their ids from the label map, by name or display name, as the OD API's decoder
    does."""
    if example.labels.size or not example.texts:
        return
    try:
        items = {t: label_map.item_for_text(t) for t in set(example.texts)}
    except LabelMapError as err:
        raise RecordError(str(err)) from None
    unknown = sorted(t for t, item in items.items() if item is None)
    if unknown:
        raise RecordError(f"classes {unknown} are not in the label map {label_map.source} "
                          "(as names or display names)")
    example.labels = np.array([items[t].id for t in example.texts], np.int64)
