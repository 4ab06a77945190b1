"""Bad input: one clear message naming the file and the record, a non-zero exit (or, with
--skip_errors, a skip that is counted), and never a half-written shard."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from records.reader import read_examples
from records.tfrecord_io import shard_glob
from tests.coco_helpers import convert


@pytest.fixture
def dataset(shapes_dir, tmp_path) -> tuple[dict, Path]:
    """A private copy of the synthetic val split that a test may break."""
    images = tmp_path / "images"
    shutil.copytree(shapes_dir / "images/val", images)
    data = json.loads((shapes_dir / "annotations/instances_val.json").read_text())
    return data, images


def _write(data: dict, tmp_path: Path) -> Path:
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(data))
    return path


def _first_ann(data: dict) -> dict:
    return data["annotations"][0]


def _missing_image(data, images):
    (images / data["images"][1]["file_name"]).unlink()
    return "missing_image", f"image {data['images'][1]['id']}", "does not exist", "images"


def _corrupt_image(data, images):
    path = images / data["images"][1]["file_name"]
    path.write_bytes(path.read_bytes()[:300])  # truncated JPEG
    return "corrupt_image", f"image {data['images'][1]['id']}", "truncated or corrupt", "images"


def _unknown_image(data, images):
    _first_ann(data)["image_id"] = 999
    return "unknown_image", "annotation 1", "image id 999", "annotations"


def _unknown_category(data, images):
    _first_ann(data)["category_id"] = 42
    return "unknown_category", "annotation 1", "category id 42", "annotations"


def _two_point_polygon(data, images):
    _first_ann(data)["segmentation"] = [[1, 1, 5, 5]]
    return "polygon_too_few_points", "annotation 1", "2 point(s)", "annotations"


def _zero_area_box(data, images):
    _first_ann(data)["bbox"] = [10, 10, 0, 5]
    return "zero_area_box", "annotation 1", "zero area", "annotations"


def _escaping_file_name(data, images):
    data["images"][2]["file_name"] = "../../etc/passwd"
    return ("path_escapes_images_dir", f"image {data['images'][2]['id']}", "escapes the images",
            "images")


def _wrong_image_size(data, images):
    data["images"][0]["width"] = 300
    return ("image_size_mismatch", f"image {data['images'][0]['id']}", "300x128 but the image "
            "file is 128x128", "images")


CASES = [_missing_image, _corrupt_image, _unknown_image, _unknown_category, _two_point_polygon,
         _zero_area_box, _escaping_file_name, _wrong_image_size]


@pytest.mark.parametrize("breaker", CASES, ids=lambda f: f.__name__.strip("_"))
def test_bad_input_stops_with_a_clear_message_and_writes_nothing(dataset, tmp_path, breaker):
    data, images = dataset
    reason, record, phrase, scope = breaker(data, images)
    path = _write(data, tmp_path)
    out = tmp_path / "out"
    result = convert(path, images, out, "--workers", "2", "--num_shards", "2", check=False)
    assert result.returncode == 1
    message = result.stderr
    assert str(path) in message and record in message and phrase in message, message
    assert "--skip_errors" in message
    assert not out.exists() or not any(out.iterdir()), list(out.iterdir())

    # With --skip_errors the item is skipped and counted, and the rest is written.
    result = convert(path, images, out, "--workers", "2", "--num_shards", "2", "--skip_errors")
    summary = json.loads((out / "train.summary.json").read_text())
    assert summary["skipped"][scope] == {reason: 1}, summary
    assert any(record in m for m in summary["examples"][reason])
    expected_images = len(data["images"]) - (scope == "images")
    assert summary["images"] == len(read_examples(shard_glob(out, "train"))) == expected_images
    assert sorted(p.name for p in out.iterdir()) == [
        "dataset_info.json", "features.json", "image.object.class.label.labels.txt",
        "label_map.pbtxt", "train-00000-of-00002.tfrecord", "train-00001-of-00002.tfrecord",
        "train.summary.json"]


def test_a_failed_run_keeps_the_previous_shards(dataset, tmp_path):
    data, images = dataset
    out = tmp_path / "out"
    convert(_write(data, tmp_path), images, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    _corrupt_image(data, images)
    assert convert(_write(data, tmp_path), images, out, check=False).returncode == 1
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_box_outside_the_image_is_clipped_and_counted(dataset, tmp_path):
    data, images = dataset
    ann = min(data["annotations"], key=lambda a: a["bbox"][0])  # nearest the left edge
    x, y, w, h = ann["bbox"]
    ann["bbox"] = [-1.5, y, w + x + 1.5, h]  # reaches 1.5 px beyond the left edge
    out = tmp_path / "out"
    result = convert(_write(data, tmp_path), images, out)
    assert result.returncode == 0
    summary = json.loads((out / "train.summary.json").read_text())
    assert summary["warnings"] == {"box_clipped": 1}
    assert f"annotation {ann['id']}" in summary["examples"]["box_clipped"][0]
    index = [a for a in data["annotations"] if a["image_id"] == ann["image_id"]].index(ann)
    first = next(e for e in read_examples(shard_glob(out, "train"))
                 if e.source_id == str(ann["image_id"]))
    assert first.boxes[index][1] == 0.0  # xmin clipped to the image's left edge
    # 500 px beyond the image, a box far from the left edge is nowhere near its mask once
    # clipped: it is replaced by the mask's box (docs/bad_input.md); both are counted.
    ann["bbox"] = [x, y, w, h]
    far = max(data["annotations"], key=lambda a: a["bbox"][0])
    fx, fy, fw, fh = far["bbox"]
    far["bbox"] = [fx - 500, fy, fw + 500, fh]
    result = convert(_write(data, tmp_path), images, out)
    summary = json.loads((out / "train.summary.json").read_text())
    assert summary["warnings"] == {"box_clipped": 1, "box_from_mask": 1}
    index = [a for a in data["annotations"] if a["image_id"] == far["image_id"]].index(far)
    record = next(e for e in read_examples(shard_glob(out, "train"))
                  if e.source_id == str(far["image_id"]))
    assert abs(record.boxes[index][1] * 128 - fx) <= 1  # the mask's left edge, not 0
    ann = far
    # Entirely outside: nothing is left after clipping, which is an error.
    ann["bbox"] = [500, 500, 10, 10]
    result = convert(_write(data, tmp_path), images, out, check=False)
    assert result.returncode == 1 and f"annotation {ann['id']}" in result.stderr
    assert "outside" in result.stderr


@pytest.mark.parametrize("content, phrase", [
    ("{not json", "invalid JSON at line 1 column 2"),
    ("[]", "a COCO results file?"),
    ('{"images": [], "annotations": []}', "'categories' is missing"),
    ("\x80{}", "not UTF-8"),
])
def test_a_file_that_is_not_coco_json_is_named(tmp_path, content, phrase):
    path = tmp_path / "broken.json"
    path.write_bytes(content.encode("latin-1"))
    result = convert(path, tmp_path, tmp_path / "out", "--skip_errors", check=False)
    assert result.returncode == 1
    assert str(path) in result.stderr and phrase in result.stderr, result.stderr
    assert not (tmp_path / "out").exists()


def test_all_annotation_errors_are_reported_at_once(dataset, tmp_path):
    data, images = dataset
    data["annotations"][0]["category_id"] = 42
    data["annotations"][1]["bbox"] = [0, 0, 0, 0]
    result = convert(_write(data, tmp_path), images, tmp_path / "out", check=False)
    assert "2 error(s)" in result.stderr
    assert "annotation 1 " in result.stderr and "annotation 2 " in result.stderr
