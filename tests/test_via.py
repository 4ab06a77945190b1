"""VIA (VGG Image Annotator) 1.x/2.x JSON, project files and CSV -> records: every flavour,
every shape, class attributes, and bad input with a clear message."""
from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from data_prep.formats.via import CSV_COLUMNS, read_raw, read_via
from records.label_map import read_label_map
from records.reader import read_examples
from records.tfrecord_io import shard_glob
from tests.conftest import run_command

BALLOON = "balloon_via/datasets/balloon_original"


# --- builders -----------------------------------------------------------------------------

def _image(directory: Path, name: str, width: int = 40, height: int = 30) -> None:
    Image.new("RGB", (width, height), (120, 80, 40)).save(directory / name)


def _rect(x, y, w, h) -> dict:
    return {"name": "rect", "x": x, "y": y, "width": w, "height": h}


def _region(shape: dict, attributes: dict | None = None) -> dict:
    return {"shape_attributes": shape, "region_attributes": attributes or {}}


def _export(images: dict[str, list[dict]]) -> dict:
    """A VIA 2.x export: keyed by file name + size, regions as a list."""
    return {f"{name}-1": {"filename": name, "size": -1, "regions": regions,
                          "file_attributes": {}} for name, regions in images.items()}


def _regions(entry: dict) -> list[dict]:
    """An image's regions, whether a 1.x object or a 2.x list."""
    regions = entry["regions"]
    return list(regions.values()) if isinstance(regions, dict) else regions


def _as_via1(export: dict) -> dict:
    return {key: dict(entry, regions={str(i): r for i, r in enumerate(entry["regions"])})
            for key, entry in export.items()}


def _as_project(export: dict, region_attributes: dict) -> dict:
    return {"_via_settings": {"project": {"name": "test"}}, "_via_img_metadata": export,
            "_via_attributes": {"region": region_attributes, "file": {}},
            "_via_data_format_version": "2.0.10", "_via_image_id_list": list(export)}


def _as_csv(export: dict, first_column: str = "filename") -> str:
    """The export as VIA's CSV: one row per region, JSON cells, a row for region-less images."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([first_column, *CSV_COLUMNS[1:]])
    for entry in export.values():
        regions = _regions(entry)
        if not regions:
            writer.writerow([entry["filename"], entry["size"], "{}", 0, 0, "{}", "{}"])
        for index, region in enumerate(regions):
            writer.writerow([entry["filename"], entry["size"], "{}", len(regions), index,
                             json.dumps(region["shape_attributes"], ensure_ascii=False),
                             json.dumps(region["region_attributes"], ensure_ascii=False)])
    return out.getvalue()


def _write(path: Path, content) -> Path:
    text = content if isinstance(content, str) else json.dumps(content, ensure_ascii=False)
    path.write_text(text, encoding="utf-8")
    return path


def _convert(annotations: Path, output_dir: Path, *extra: str, check: bool = True):
    return run_command("data_prep/create_tfrecords.py", "--format", "via", "--annotations",
                       str(annotations), "--output_dir", str(output_dir), "--no_progress",
                       "--workers", "2", *extra, check=check)


def _summary(output_dir: Path, split: str = "train") -> dict:
    return json.loads((output_dir / f"{split}.summary.json").read_text())


def _polygon_mask(flat, height: int, width: int) -> np.ndarray:
    rles = mask_utils.frPyObjects([[float(v) for v in flat]], height, width)
    return mask_utils.decode(mask_utils.merge(rles))


# --- real data ----------------------------------------------------------------------------

def _assert_records_match_polygons(output_dir: Path, export: dict) -> list:
    """Every record's masks equal pycocotools' rasterization of the source polygons, in
    file order, with source ids 1..N."""
    entries = list(export.values())
    examples = read_examples(shard_glob(output_dir, "train"))
    assert [e.filename for e in examples] == [e["filename"] for e in entries]
    assert [e.source_id for e in examples] == [str(i) for i in range(1, len(entries) + 1)]
    for example, entry in zip(examples, entries):
        masks = example.decode_masks()
        assert len(masks) == len(_regions(entry)) > 0
        for mask, region in zip(masks, _regions(entry)):
            shape = region["shape_attributes"]
            flat = [v for xy in zip(shape["all_points_x"], shape["all_points_y"]) for v in xy]
            assert mask.any()
            np.testing.assert_array_equal(mask, _polygon_mask(flat, *mask.shape))
    return examples


@pytest.mark.realdata
@pytest.mark.parametrize("split, images, polygons", [("train", 61, 255), ("val", 13, 50)])
def test_balloon_via1_export(realdata, tmp_path, split, images, polygons):
    annotations = realdata / BALLOON / split / "via_region_data.json"
    assert read_raw(str(annotations)).flavour == "VIA 1.x export"
    out = tmp_path / "records"
    # No region attributes at all: the error says what to pass, and nothing is written.
    result = _convert(annotations, out, check=False)
    assert result.returncode == 1 and str(annotations) in result.stderr
    assert "--default_class balloon" in result.stderr and not out.exists()
    _convert(annotations, out, "--default_class", "balloon")
    summary = _summary(out)
    assert (summary["images"], summary["instances"]) == (images, polygons)
    assert summary["warnings"] == {} and summary["skipped"] == {"images": {}, "annotations": {}}
    assert read_label_map(out / "label_map.pbtxt").names == ["balloon"]
    examples = _assert_records_match_polygons(out, json.loads(annotations.read_text()))
    assert {int(label) for e in examples for label in e.labels} == {1}


@pytest.mark.realdata
@pytest.mark.parametrize("split, images, polygons", [("train", 68, 136), ("val", 21, 42)])
def test_eye_pupil_via2_project_and_export_agree(realdata, tmp_path, split, images, polygons):
    folder = realdata / "via2_eye_pupil" / split
    project, export = folder / f"{split}.json", folder / "via_region_data.json"
    assert read_raw(str(project)).flavour == "VIA 2.x project"
    assert read_raw(str(export)).flavour == "VIA 2.x export"
    shards = []
    for name, annotation_file in (("project", project), ("export", export)):
        out = tmp_path / name
        _convert(annotation_file, out, "--default_class", "pupil")
        assert (_summary(out)["images"], _summary(out)["instances"]) == (images, polygons)
        metadata = json.loads(annotation_file.read_text())
        examples = _assert_records_match_polygons(out, metadata.get("_via_img_metadata",
                                                                    metadata))
        # File names with spaces and parentheses reach the records unchanged.
        assert all(" " in e.filename and "(" in e.filename for e in examples)
        shards.append((out / "train-00000-of-00001.tfrecord").read_bytes())
    assert shards[0] == shards[1]
    if split == "train":  # one image in the folder is not annotated and is not converted
        assert len(list(folder.glob("*.jpg"))) == images + 1


# --- synthetic: every flavour of the same scenes -----------------------------------------

def test_synthetic_via_matches_coco_mask_for_mask_in_every_flavour(tmp_path):
    data = tmp_path / "shapes"
    run_command("-m", "data_prep.synthetic", "--output_dir", str(data), "--split", "train:12",
                "--formats", "coco,via", check=True)
    images_dir = str(data / "images/train")
    run_command("data_prep/create_tfrecords.py", "--format", "coco", "--annotations",
                str(data / "annotations/instances_train.json"), "--images_dir", images_dir,
                "--output_dir", str(tmp_path / "coco"), "--no_progress", check=True)
    export = json.loads((data / "annotations/via_train.json").read_text())
    classes = sorted({r["region_attributes"]["shape"] for e in export.values()
                      for r in e["regions"]})
    flavours = {"via2": export, "via1": _as_via1(export), "csv": _as_csv(export),
                "csv1": _as_csv(_as_via1(export), "#filename"),
                "project": _as_project(export, {"shape": {
                    "type": "dropdown", "options": {c: "" for c in classes}}})}
    shards = {}
    for name, content in flavours.items():
        out = tmp_path / name
        _convert(_write(tmp_path / f"{name}.via", content), out, "--images_dir", images_dir)
        shards[name] = (out / "train-00000-of-00001.tfrecord").read_bytes()
    assert len(set(shards.values())) == 1  # byte-identical records from all five
    coco = {e.filename: e for e in read_examples(shard_glob(tmp_path / "coco", "train"))}
    via = read_examples(shard_glob(tmp_path / "via2", "train"))
    assert len(via) == len(coco) == 12 and sum(e.num_instances for e in via) > 24
    for example in via:
        reference = coco[example.filename]
        assert example.encoded_image == reference.encoded_image
        assert example.texts == reference.texts
        np.testing.assert_array_equal(example.decode_masks(), reference.decode_masks())
        np.testing.assert_allclose(example.boxes, reference.boxes, atol=1e-6)


# --- shapes -------------------------------------------------------------------------------

def _single_region_masks(tmp_path: Path, regions: list[dict], width: int, height: int,
                         *extra: str) -> tuple[np.ndarray, dict]:
    _image(tmp_path, "a.png", width, height)
    annotations = _write(tmp_path / "via.json", _export({"a.png": regions}))
    _convert(annotations, tmp_path / "out", "--default_class", "thing", *extra)
    (example,) = read_examples(shard_glob(tmp_path / "out", "train"))
    return example.decode_masks(), _summary(tmp_path / "out")


def _assert_within_one_pixel_of_ellipse(mask, cx, cy, rx, ry, theta=0.0) -> None:
    """Pixels whose centre is inside the ellipse are set; any that differ lie between the
    ellipses with semi-axes 1 px shorter and 1 px longer, i.e. within 1 px of the edge."""
    rows, cols = np.mgrid[0:mask.shape[0], 0:mask.shape[1]]
    dx, dy = cols + 0.5 - cx, rows + 0.5 - cy
    u = dx * math.cos(theta) + dy * math.sin(theta)
    v = -dx * math.sin(theta) + dy * math.cos(theta)

    def inside(grow):
        return (u / (rx + grow)) ** 2 + (v / (ry + grow)) ** 2 <= 1

    differ = mask.astype(bool) != inside(0)
    assert not (differ & (~inside(1) | inside(-1))).any()
    assert differ.sum() < 0.2 * inside(0).sum()  # and far from everywhere along the edge


def test_rect_mask_is_exact(tmp_path):
    regions = [_region(_rect(5, 7, 10, 6)), _region(_rect(15, 13, -10, -6))]  # same, reversed
    masks, _ = _single_region_masks(tmp_path, regions, 40, 30)
    expected = np.zeros((30, 40), np.uint8)
    expected[7:13, 5:15] = 1
    np.testing.assert_array_equal(masks[0], expected)
    np.testing.assert_array_equal(masks[1], expected)


@pytest.mark.parametrize("cx, cy, r", [(20.5, 15.2, 3.5), (50.3, 40.0, 20.3), (400, 300, 290)])
def test_circle_is_within_one_pixel_of_the_disc(tmp_path, cx, cy, r):
    shape = {"name": "circle", "cx": cx, "cy": cy, "r": r}
    masks, _ = _single_region_masks(tmp_path, [_region(shape)], 800, 600)
    _assert_within_one_pixel_of_ellipse(masks[0], cx, cy, r, r)


def test_polygon_of_vanishingly_small_offsets_is_a_zero_area_warning(tmp_path):
    # Found by the long fuzz run: squares of 1e-201 underflow to 0 (a ZeroDivisionError).
    tiny = 2.3620164453949497e-201
    regions = [_region({"name": "polygon", "all_points_x": [tiny, 0.0, tiny],
                        "all_points_y": [0.0, 0.0, tiny]}),
               _region({"name": "polygon", "all_points_x": [2, 30, 10],
                        "all_points_y": [3, 8, 25]})]
    masks, summary = _single_region_masks(tmp_path, regions, 40, 30)
    assert summary["warnings"] == {"zero_area_shape": 1}
    assert summary["instances"] == len(masks) == 1


def test_rotated_ellipse_and_via1_ellipse(tmp_path):
    rotated = {"name": "ellipse", "cx": 60.2, "cy": 40.7, "rx": 35.5, "ry": 12.25, "theta": 0.6}
    upright = {"name": "ellipse", "cx": 30, "cy": 25, "rx": 8, "ry": 20}  # 1.x: no theta
    masks, _ = _single_region_masks(tmp_path, [_region(rotated), _region(upright)], 120, 80)
    _assert_within_one_pixel_of_ellipse(masks[0], 60.2, 40.7, 35.5, 12.25, 0.6)
    _assert_within_one_pixel_of_ellipse(masks[1], 30, 25, 8, 20)
    # The rotation turns clockwise on screen: the long axis runs down to the right.
    assert masks[0][40 + 15, 60 + 20] == 1 and masks[0][40 - 15, 60 + 20] == 0


def test_polyline_is_closed_and_points_and_tiny_shapes_are_counted_warnings(tmp_path):
    triangle = {"all_points_x": [2, 30, 10], "all_points_y": [3, 8, 25]}
    regions = [_region({"name": "polyline", **triangle}),
               _region({"name": "point", "cx": 5, "cy": 5}),
               _region({"name": "polyline", "all_points_x": [1, 9], "all_points_y": [1, 9]}),
               _region({"name": "polygon", "all_points_x": [1, 9, 1, 1],
                        "all_points_y": [1, 9, 1, 1]}),  # 2 distinct points
               _region({"name": "polygon", "all_points_x": [1, 5, 9],
                        "all_points_y": [1, 5, 9]}),  # collinear
               _region(_rect(3, 3, 0, 5)), _region({"name": "circle", "cx": 5, "cy": 5, "r": 0}),
               _region({"name": "polygon", **triangle})]
    masks, summary = _single_region_masks(tmp_path, regions, 40, 30)
    assert summary["warnings"] == {"point_shape": 1, "too_few_points": 2, "zero_area_shape": 3}
    assert summary["instances"] == len(masks) == 2
    expected = _polygon_mask([v for xy in zip(*triangle.values()) for v in xy], 30, 40)
    np.testing.assert_array_equal(masks[0], expected)
    np.testing.assert_array_equal(masks[1], expected)
    assert any("region 1" in m for m in summary["examples"]["point_shape"])


# --- classes ------------------------------------------------------------------------------

def _class_dataset(tmp_path: Path, attributes: list[dict], file_name: str = "a.jpg") -> dict:
    _image(tmp_path, file_name)
    return _export({file_name: [_region(_rect(2 * i, 2, 5, 5), a)
                                for i, a in enumerate(attributes)]})


def test_single_class_attribute_is_found_and_classes_sorted(tmp_path):
    data = _class_dataset(tmp_path, [{"kind": "dog"}, {"kind": "cat"}, {"kind": "dog"}])
    result = read_via(_write(tmp_path / "v.json", data), tmp_path)
    assert result.class_names == ["cat", "dog"] and not result.problems
    assert [o.class_name for o in result.images[0].objects] == ["dog", "cat", "dog"]


def test_several_candidate_attributes_are_listed(tmp_path):
    data = _class_dataset(tmp_path, [{"kind": "dog", "colour": "brown"}, {"kind": "cat"}])
    path = _write(tmp_path / "v.json", data)
    result = _convert(path, tmp_path / "out", check=False)
    assert result.returncode == 1 and str(path) in result.stderr
    assert "'colour', 'kind'" in result.stderr and "--class_attribute" in result.stderr
    assert not (tmp_path / "out").exists()
    _convert(path, tmp_path / "out", "--class_attribute", "kind")
    assert read_label_map(tmp_path / "out/label_map.pbtxt").names == ["cat", "dog"]
    assert read_via(path, tmp_path, "colour", "none").class_names == ["brown", "none"]
    with pytest.raises(ValueError, match="'nope' is not a region attribute here; region "
                       "attributes found: 'colour', 'kind'"):
        read_via(path, tmp_path, class_attribute="nope")


def test_project_dropdown_radio_and_checkbox(tmp_path):
    definitions = {
        "species": {"type": "dropdown", "options": {"dog": "Dog", "cat": "Cat", "bird": ""}},
        "quality": {"type": "checkbox", "options": {"blur": "", "sharp": ""}},
        "note": {"type": "text"}}
    attributes = [{"species": "cat", "quality": {"blur": True, "sharp": False}, "note": "x"},
                  {"species": "dog", "quality": {"blur": True, "sharp": True}}]
    path = _write(tmp_path / "p.json", _as_project(_class_dataset(tmp_path, attributes),
                                                   definitions))
    by_dropdown = read_via(path, tmp_path)  # the one dropdown wins over checkbox and text
    assert by_dropdown.class_names == ["dog", "cat", "bird"]  # option order, unused kept
    assert by_dropdown.display_names == ["Dog", "Cat", ""]
    assert [o.class_name for o in by_dropdown.images[0].objects] == ["cat", "dog"]
    by_checkbox = read_via(path, tmp_path, class_attribute="quality")
    assert [o.class_name for o in by_checkbox.images[0].objects] == ["blur"]
    (problem,) = by_checkbox.errors
    assert problem.reason == "several_classes" and problem.record == "image 'a.jpg' region 1"
    assert "'blur', 'sharp'" in problem.message
    definitions["species"]["type"] = "radio"
    definitions["size"] = {"type": "dropdown", "options": {"big": ""}}
    with pytest.raises(ValueError, match="'species', 'size' could all be meant"):
        read_via(_write(path, _as_project(_class_dataset(tmp_path, attributes), definitions)),
                 tmp_path)


def test_default_class_fills_regions_without_one(tmp_path):
    data = _class_dataset(tmp_path, [{"kind": "cat"}, {"kind": ""}, {}])
    path = _write(tmp_path / "v.json", data)
    result = read_via(path, tmp_path, default_class="animal")
    assert [o.class_name for o in result.images[0].objects] == ["cat", "animal", "animal"]
    assert result.class_names == ["animal", "cat"] and not result.problems
    errors = read_via(path, tmp_path).errors
    assert [(p.reason, p.record) for p in errors] == [("no_class", "image 'a.jpg' region 1"),
                                                      ("no_class", "image 'a.jpg' region 2")]
    assert "--default_class" in errors[0].message


def test_unicode_classes_and_file_names_with_spaces_in_csv(tmp_path):
    data = _class_dataset(tmp_path, [{"类别": "éléphant 象"}, {"类别": "chat"}],
                          file_name="my photo (1).jpg")
    path = _write(tmp_path / "export.csv", _as_csv(data))
    assert read_raw(str(path)).flavour == "VIA 2.x CSV export"
    _convert(path, tmp_path / "out")
    (example,) = read_examples(shard_glob(tmp_path / "out", "train"))
    assert example.filename == "my photo (1).jpg"
    assert example.texts == ["éléphant 象", "chat"] and list(example.labels) == [2, 1]
    assert read_label_map(tmp_path / "out/label_map.pbtxt").names == ["chat", "éléphant 象"]


def test_csv_cell_that_is_not_json_names_its_line(tmp_path):
    data = _class_dataset(tmp_path, [{"kind": "cat"}, {"kind": "dog"}])
    data.update(_export({"empty.jpg": []}))  # VIA writes one row with "{}" cells for it
    lines = _as_csv(data, "#filename").splitlines(keepends=True)
    lines[2] = lines[2].replace('""rect""', '""rect')  # region 1's shape: broken JSON
    path = _write(tmp_path / "export.csv", "".join(lines))
    result = read_via(path, tmp_path)
    assert read_raw(str(path)).flavour == "VIA 1.x CSV export"
    assert [[o.class_name for o in i.objects] for i in result.images] == [["cat"], []]
    ((reason, record, message),) = [(p.reason, p.record, p.message) for p in result.errors]
    assert (reason, record) == ("bad_region", "image 'a.jpg' region 1")
    assert message.startswith("line 3: region_shape_attributes is not valid JSON")


# --- bad input ----------------------------------------------------------------------------

@pytest.mark.parametrize("content, phrase", [
    ("{not json", "invalid JSON at line 1 column 2"),
    ("[]", "the top level is a list"),
    ("{}", "lists no images"),
    ("name,size\nx.jpg,3\n", "CSV export whose header is filename,file_size"),
    ('{"images": [], "annotations": [], "categories": []}', "use --format coco"),
    ('{"project": {}, "config": {}, "attribute": {}, "metadata": {}}', "VIA 3.x project"),
    ('{"a.jpg1": {"size": 3}}', "entry 'a.jpg1' is not an image"),
])
def test_a_file_that_is_not_via_is_named(tmp_path, content, phrase):
    path = _write(tmp_path / "broken.json", content)
    result = _convert(path, tmp_path / "out", "--skip_errors", check=False)
    assert result.returncode == 1
    assert str(path) in result.stderr and phrase in result.stderr, result.stderr
    assert not (tmp_path / "out").exists()


def _missing_image(data, images):
    (images / "b.jpg").unlink()
    return "missing_image", "image 2 ('b.jpg')", "does not exist", "images"


def _url_file_name(data, images):
    data["b.jpg-1"]["filename"] = "https://example.com/b.jpg"
    return "remote_image", "image 'https://example.com/b.jpg'", "is a URL", "images"


def _escaping_file_name(data, images):
    data["b.jpg-1"]["filename"] = "../b.jpg"
    return "path_escapes_images_dir", "image '../b.jpg'", "escapes the images", "images"


def _region_without_class(data, images):
    data["b.jpg-1"]["regions"][1]["region_attributes"] = {}
    return "no_class", "image 'b.jpg' region 1", "no value for the class attribute 'kind'", \
        "annotations"


def _unknown_shape(data, images):
    data["c.jpg-1"]["regions"][0]["shape_attributes"] = {"name": "freehand"}
    return "unknown_shape", "image 'c.jpg' region 0", "unknown shape 'freehand'", "annotations"


def _malformed_rect(data, images):
    del data["c.jpg-1"]["regions"][1]["shape_attributes"]["width"]
    return "bad_shape", "image 'c.jpg' region 1", "needs a number 'width'", "annotations"


@pytest.mark.parametrize("breaker", [_missing_image, _url_file_name, _escaping_file_name,
                                     _region_without_class, _unknown_shape, _malformed_rect],
                         ids=lambda f: f.__name__.strip("_"))
def test_bad_input_stops_with_a_clear_message_and_writes_nothing(tmp_path, breaker):
    images = tmp_path / "images"
    images.mkdir()
    regions = {}
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        _image(images, name)
        regions[name] = [_region(_rect(2, 2, 9, 9), {"kind": "cat"}),
                         _region(_rect(20, 10, 9, 9), {"kind": "dog"})]
    data = _export(regions)
    reason, record, phrase, scope = breaker(data, images)
    path = _write(tmp_path / "via.json", data)
    out = tmp_path / "out"
    result = _convert(path, out, "--images_dir", str(images), check=False)
    assert result.returncode == 1
    assert str(path) in result.stderr and record in result.stderr, result.stderr
    assert phrase in result.stderr and "--skip_errors" in result.stderr, result.stderr
    assert not out.exists() or not any(out.iterdir())

    _convert(path, out, "--images_dir", str(images), "--skip_errors")
    summary = _summary(out)
    assert summary["skipped"][scope] == {reason: 1}, summary
    assert any(record in m for m in summary["examples"][reason])
    assert summary["images"] == len(read_examples(shard_glob(out, "train"))) == \
        3 - (scope == "images")
    assert summary["instances"] == 6 - (2 if scope == "images" else 1)
