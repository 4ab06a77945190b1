"""Validation splits and class balancing for small, unbalanced data sets."""
from __future__ import annotations

import json
from collections import Counter

from data_prep.annotations import ImageAnnotation, ObjectAnnotation, Polygons
from data_prep.conversion.splits import (
    cap_images_per_class,
    image_classes,
    repeat_rare_classes,
    split_train_val,
)
from records.reader import read_examples
from records.tfrecord_io import shard_glob
from tests.coco_helpers import convert

SQUARE = Polygons(((0, 0, 4, 0, 4, 4, 0, 4),))


def _images(class_lists: list[list[str]]) -> list[ImageAnnotation]:
    return [ImageAnnotation(f"/x/{i}.jpg", f"{i}.jpg", str(i), i + 1,
                            objects=[ObjectAnnotation(f"{i}-{k}", c, SQUARE)
                                     for k, c in enumerate(classes)])
            for i, classes in enumerate(class_lists)]


def _unbalanced() -> list[ImageAnnotation]:
    """50 classes with 1 to 32 images each, as in the 101-photo VIA project."""
    lists = []
    for c in range(50):
        lists += [[f"class{c}"]] * (1 + (c * 31) // 49)
    return _images(lists)


def test_validation_split_is_deterministic_and_covers_every_class_it_can():
    images = _unbalanced()
    train, val = split_train_val(images, 0.2, seed=7)
    again_train, again_val = split_train_val(images, 0.2, seed=7)
    assert [i.image_id for i in val] == [i.image_id for i in again_val]
    assert [i.image_id for i in train] == [i.image_id for i in again_train]
    assert {i.image_id for i in train}.isdisjoint({i.image_id for i in val})
    assert len(train) + len(val) == len(images)
    counts = Counter(c for i in images for c in image_classes(i))
    val_classes = {c for i in val for c in image_classes(i)}
    train_classes = {c for i in train for c in image_classes(i)}
    assert val_classes == {c for c, n in counts.items() if n >= 2}
    assert train_classes == set(counts)  # single-image classes stay in training
    assert abs(len(val) - 0.2 * len(images)) <= 0.05 * len(images)
    _, other_val = split_train_val(images, 0.2, seed=8)
    assert {i.image_id for i in other_val} != {i.image_id for i in val}


def test_cap_keeps_images_that_also_show_a_rare_class():
    images = _images([["a"]] * 10 + [["a", "rare"]] + [[]])
    kept, dropped = cap_images_per_class(images, max_images=3, seed=0)
    counts = Counter(c for i in kept for c in image_classes(i))
    assert counts["rare"] == 1 and counts["a"] <= 4
    assert any(not i.objects for i in kept)  # images without objects are kept
    assert dropped == len(images) - len(kept) >= 7


def test_repeats_bring_rare_classes_up_to_the_minimum():
    images = _images([["a"]] * 8 + [["b"]] * 2 + [["c", "a"]])
    balanced, repeated = repeat_rare_classes(images, min_images=5)
    counts = Counter(c for i in balanced for c in image_classes(i))
    assert counts["b"] == 5 and counts["c"] == 5 and counts["a"] >= 8
    assert repeated == len(balanced) - len(images) == 3 + 4


def test_command_line_writes_train_and_val_with_summaries(shapes_dir, tmp_path):
    out = tmp_path / "records"
    convert(shapes_dir / "annotations/instances_train.json", shapes_dir / "images/train", out,
            "--val_fraction", "0.25", "--seed", "3", "--min_images_per_class", "16")
    train = read_examples(shard_glob(out, "train"))
    val = read_examples(shard_glob(out, "val"))
    assert {e.source_id for e in train}.isdisjoint({e.source_id for e in val})
    assert len({e.source_id for e in train}) + len(val) == 24
    assert len(val) == 6 and {t for e in val for t in e.texts} == {"circle", "square",
                                                                    "triangle", "star"}
    train_summary = json.loads((out / "train.summary.json").read_text())
    val_summary = json.loads((out / "val.summary.json").read_text())
    assert val_summary["images"] == 6 and "images_repeated_by_min_images_per_class" not in \
        val_summary
    assert train_summary["images"] == len(train) == 18 + train_summary[
        "images_repeated_by_min_images_per_class"]
    assert train_summary["images_repeated_by_min_images_per_class"] > 0
    assert min(train_summary["images_per_class"].values()) >= 16
