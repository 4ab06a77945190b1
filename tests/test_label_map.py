"""label_map.pbtxt in the Object Detection API's text format."""
from __future__ import annotations

import pytest

from records.label_map import (
    LabelMap,
    LabelMapError,
    LabelMapItem,
    parse_label_map,
    read_label_map,
    write_label_map,
)


def test_round_trip_keeps_unicode_and_display_names(tmp_path):
    original = LabelMap([LabelMapItem(1, "/m/01g317", "Person"), LabelMapItem(2, "ballon rouge"),
                         LabelMapItem(3, "猫", ancestor_ids=(1,))])
    path = write_label_map(original, tmp_path / "label_map.pbtxt")
    assert read_label_map(path) == original
    assert "猫" in path.read_text(encoding="utf-8")


def test_reads_the_object_detection_api_fixture(realdata):
    path = realdata / "datumaro_fixtures/tests/assets/tf_detection_api_dataset/label_map.pbtxt"
    label_map = read_label_map(path)
    assert len(label_map) == 10
    assert label_map.name_of(1) == "label_0" and label_map.id_of("label_9") == 10


@pytest.mark.parametrize("text, message", [
    ("item { id: 0 name: 'bg' }", "ids start at 1"),
    ("item { id: 1 name: 'a' } item { id: 1 name: 'b' }", "id 1 is used twice"),
    ("item { id: 1 name: 'a' } item { id: 2 name: 'a' }", "name 'a' is used twice"),
    ("item { name: 'a' }", "has no id"),
    ("item {\n  id: 1\n  nmae: 'a'\n}", r"map.pbtxt:3:3 .*nmae"),
])
def test_malformed_label_maps_are_clear_errors(text, message):
    with pytest.raises(LabelMapError, match=message):
        parse_label_map(text, source="map.pbtxt")


def test_missing_file_is_named(tmp_path):
    with pytest.raises(LabelMapError, match="does not exist"):
        read_label_map(tmp_path / "nope.pbtxt")


def test_label_of_prefers_the_display_name_and_falls_back_to_the_id():
    label_map = LabelMap([LabelMapItem(1, "/m/01g317", "Person"), LabelMapItem(2, "dog")])
    assert label_map.label_of(1) == "Person" and label_map.label_of(2) == "dog"
    assert label_map.label_of(7) == "7"  # predicted but not in this label map
