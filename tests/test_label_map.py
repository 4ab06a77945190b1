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


# The shape of the OD API's mscoco_label_map.pbtxt: items named by MID with the text in
# display_name, and COCO's ids with their gaps (12 is unused).
OD_API_COCO_STYLE = """
item { name: "/m/01g317" id: 1 display_name: "person" }
item { name: "/m/0199g" id: 2 display_name: "bicycle" }
item { name: "/m/01pns0" id: 11 display_name: "fire hydrant" }
item { name: "/m/02pv19" id: 13 display_name: "stop sign" }
"""


def test_items_are_found_by_name_or_display_name_as_the_od_api_decoder_does():
    label_map = parse_label_map(OD_API_COCO_STYLE, source="mscoco_label_map.pbtxt")
    assert [item.id for item in label_map] == [1, 2, 11, 13] and label_map.max_id == 13
    assert label_map.item_for_text("/m/02pv19").id == 13
    assert label_map.item_for_text("stop sign").id == 13
    assert label_map.item_for_text("Stop sign") is None  # exact, as the OD API's tables
    assert label_map.matches(13, "stop sign") and label_map.matches(13, "/m/02pv19")
    assert not label_map.matches(11, "stop sign") and not label_map.matches(12, "stop sign")


def test_a_display_name_shared_by_two_items_cannot_name_either():
    label_map = LabelMap([LabelMapItem(1, "/m/a", "bass"), LabelMapItem(2, "/m/b", "bass"),
                          LabelMapItem(3, "bass")])
    assert label_map.item_for_text("bass").id == 3  # a name wins over display names
    shared = LabelMap([LabelMapItem(1, "/m/a", "bass"), LabelMapItem(2, "/m/b", "bass")])
    with pytest.raises(LabelMapError, match="display name 'bass' belongs to ids 1, 2"):
        shared.item_for_text("bass")


def test_category_ids_round_trip_beside_the_label_map(tmp_path):
    from records.label_map import (
        copy_category_ids,
        format_category_ids,
        read_category_ids,
    )

    write_label_map(LabelMap.from_names(["cat", "dog"]), tmp_path / "label_map.pbtxt")
    assert read_category_ids(tmp_path / "label_map.pbtxt") is None
    (tmp_path / "category_ids.json").write_text(format_category_ids({1: 17, 2: "dog-7"},
                                                                    "x.json"))
    assert read_category_ids(tmp_path / "label_map.pbtxt") == {1: 17, 2: "dog-7"}
    export = tmp_path / "export"
    export.mkdir()
    assert copy_category_ids(tmp_path / "label_map.pbtxt", export) == (
        export / "category_ids.json")
    assert read_category_ids(export / "label_map.pbtxt") == {1: 17, 2: "dog-7"}
    (tmp_path / "category_ids.json").write_text('{"category_ids": {"0": 5}}')
    with pytest.raises(LabelMapError, match="'0' is not a label-map id"):
        read_category_ids(tmp_path / "label_map.pbtxt")
