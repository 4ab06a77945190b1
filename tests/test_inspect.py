"""python -m records.inspect: statistics, rendered pictures and the record validator."""
from __future__ import annotations

import io
import json
from collections import Counter
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO

from records import keys
from records.example_codec import ImageExample, encode_example, encode_mask_png
from records.inspect import caption
from records.label_map import LabelMap, LabelMapItem, write_label_map
from records.protos import example_pb2
from records.reader import iter_examples
from records.record_statistics import class_keys
from records.render import MASK_ALPHA, color_of, draw_instances
from records.tfrecord_io import ShardedWriter, shard_glob
from tests.coco_helpers import convert, rich_coco
from tests.conftest import run_command

OD_API_FIXTURE = "datumaro_fixtures/tests/assets/tf_detection_api_dataset"


def inspect(*args: str, check: bool = False):
    return run_command("-m", "records.inspect", *args, check=check)


@pytest.fixture(scope="module")
def converted(shapes_dir, tmp_path_factory) -> tuple[Path, Path]:
    """The synthetic train split with crowd, RLE and two-part polygons, in 2 shards, its
    category ids 3, 7, 90, 12 renumbered 1..4."""
    root = tmp_path_factory.mktemp("inspect")
    annotation_file = root / "rich.json"
    annotation_file.write_text(json.dumps(rich_coco(shapes_dir)))
    convert(annotation_file, shapes_dir / "images/train", root / "records", "--num_shards", "2",
            "--contiguous_ids")
    return annotation_file, root / "records"


def test_statistics_match_counts_from_the_coco_json(converted):
    annotation_file, records = converted
    stats = json.loads(inspect(shard_glob(records, "train"), "--json", check=True).stdout)
    coco = COCO(str(annotation_file))
    names = {c["id"]: c["name"] for c in coco.loadCats(coco.getCatIds())}
    anns = coco.loadAnns(coco.getAnnIds())
    instances = Counter(names[a["category_id"]] for a in anns)
    images = Counter(name for image_id in coco.getImgIds() for name in
                     {names[a["category_id"]] for a in coco.imgToAnns[image_id]})
    crowd = Counter(names[a["category_id"]] for a in anns if a["iscrowd"])
    rows = {row["name"]: row for row in stats["classes"]}
    assert set(rows) == set(names.values()) and all(r["in_label_map"] for r in rows.values())
    for name in names.values():
        assert (rows[name]["instances"], rows[name]["images"], rows[name]["crowd"]) == (
            instances[name], images[name], crowd[name]), name
    assert stats["images"] == len(coco.getImgIds()) and stats["instances"] == len(anns)
    assert stats["crowd_instances"] == sum(crowd.values()) > 0
    per_image = [len(coco.imgToAnns[i]) for i in coco.getImgIds()]
    histogram = Counter(per_image)
    assert stats["instances_per_image"]["histogram"] == {
        str(n): histogram[n] for n in range(min(per_image), max(per_image) + 1)}
    assert (stats["instances_per_image"]["min"], stats["instances_per_image"]["max"]) == (
        min(per_image), max(per_image))
    assert stats["instances_per_image"]["median"] == pytest.approx(np.median(per_image))
    sizes = Counter(f"{img['width']}x{img['height']}" for img in coco.dataset["images"])
    assert stats["image_sizes"]["most_common"] == dict(sizes)
    # Mask coverage recomputed with pycocotools from the annotations themselves.
    per_instance, per_union = [], []
    for image_id in coco.getImgIds():
        img = coco.imgs[image_id]
        masks = [coco.annToMask(a) for a in coco.imgToAnns[image_id]]
        per_instance += [m.sum() / (img["height"] * img["width"]) for m in masks]
        per_union.append(np.any(masks, axis=0).sum() / (img["height"] * img["width"]))
    coverage = stats["mask_coverage"]
    for got, expected in ((coverage["per_instance"], per_instance),
                          (coverage["per_image"], per_union)):
        assert got["min"] == pytest.approx(min(expected), abs=1e-6)
        assert got["max"] == pytest.approx(max(expected), abs=1e-6)
        assert got["mean"] == pytest.approx(np.mean(expected), abs=1e-4)
    assert coverage["masks"] == len(anns) and coverage["empty_masks"] == 0


def test_text_report_names_classes_and_flags_ids_missing_from_the_label_map(converted,
                                                                           tmp_path):
    _, records = converted
    report = inspect(shard_glob(records, "train"), check=True).stdout
    for heading in ("circle", "triangle", "instances per image:", "image sizes",
                    "mask coverage", "per instance:", "per image:", "128x128"):
        assert heading in report
    assert "not in the label map" not in report
    smaller = tmp_path / "three.pbtxt"
    write_label_map(LabelMap.from_names(["circle", "square", "star"],
                                        ["Circle", "Square", "Étoile"]), smaller)
    flagged = inspect(shard_glob(records, "train"), "--label_map", str(smaller), check=True)
    assert "star (Étoile)" in flagged.stdout
    [triangle_row] = [line for line in flagged.stdout.splitlines()
                      if line.startswith("triangle")]
    assert "! not in the label map" in triangle_row
    stats = json.loads(inspect(shard_glob(records, "train"), "--label_map", str(smaller),
                               "--json", check=True).stdout)
    assert [(r["id"], r["name"]) for r in stats["classes"] if not r["in_label_map"]] == [
        (4, "triangle")]


def test_render_draws_masks_over_their_objects_and_leaves_the_rest(converted, tmp_path):
    _, records = converted
    out = tmp_path / "pictures"
    result = inspect(shard_glob(records, "train"), "--render", "3", "--out", str(out),
                     check=True)
    assert "wrote 3 picture(s)" in result.stdout
    examples = [(path, e) for path, _, e in iter_examples(shard_glob(records, "train"))][:3]
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f"train-{e.source_id}.png" for _, e in examples)
    for _, example in examples:
        original = example.decode_image()
        rendered = np.asarray(Image.open(out / f"train-{example.source_id}.png").convert("RGB"))
        factor = rendered.shape[0] // example.height
        assert factor > 1 and rendered.shape[:2] == (example.height * factor,
                                                     example.width * factor)
        original = np.repeat(np.repeat(original, factor, axis=0), factor, axis=1)
        masks = np.repeat(np.repeat(example.decode_masks(), factor, 1), factor, 2)
        blended_exactly = 0
        for i, mask in enumerate(masks):
            depth = cv2.distanceTransform(mask, cv2.DIST_L2, 3)
            y, x = np.unravel_index(np.argmax(depth), depth.shape)
            assert np.any(rendered[y, x] != original[y, x]), f"mask {i} is not drawn"
            expected = np.round(original[y, x] * (1 - MASK_ALPHA) +
                                np.float32(color_of(i)) * MASK_ALPHA)
            blended_exactly += np.array_equal(rendered[y, x], expected)
        assert blended_exactly >= len(masks) - 1  # one may lie under another's caption
        # Far from every box and its caption band, the picture is the image itself.
        busy = np.zeros(rendered.shape[:2], bool)
        scale = np.array([example.height, example.width, example.height, example.width])
        for ymin, xmin, ymax, xmax in (example.boxes * scale * factor).astype(int):
            busy[max(ymin - 4 * factor, 0):ymax + factor, max(xmin - factor, 0):xmax + factor] = 1
            busy[max(ymin - 12 * factor, 0):ymin + 12 * factor,
                 max(min(xmin, rendered.shape[1] - 40 * factor) - factor, 0):
                 xmin + 40 * factor] = 1  # "square (crowd)"
        assert (~busy).sum() > 0.3 * busy.size
        np.testing.assert_array_equal(rendered[~busy], original[~busy])


def test_render_random_sample_depends_on_the_seed(converted, tmp_path):
    _, records = converted
    picked = []
    for seed in ("1", "1", "2"):
        out = tmp_path / f"seed{seed}-{len(picked)}"
        inspect(shard_glob(records, "train"), "--render", "4", "--random", "--seed", seed,
                "--out", str(out), check=True)
        picked.append(sorted(p.name for p in out.iterdir()))
    assert len(picked[0]) == 4 and picked[0] == picked[1] and picked[0] != picked[2]


def test_draw_instances_blends_masks_and_draws_boxes_only_where_objects_are():
    image = np.full((60, 80, 3), 100, np.uint8)
    mask = np.zeros((1, 60, 80), np.uint8)
    mask[0, 30:40, 30:50] = 1
    boxes = np.array([[30, 30, 40, 50]], np.float64)  # pixel edges around the mask
    drawn = draw_instances(image, boxes, mask, ["circle"], scores=[0.9])
    expected = np.round(100 * (1 - MASK_ALPHA) + np.float32(color_of(0)) * MASK_ALPHA)
    np.testing.assert_array_equal(drawn[35, 40], expected)  # inside the mask
    np.testing.assert_array_equal(drawn[30, 40], color_of(0))  # on the box's top edge
    np.testing.assert_array_equal(drawn[55:, :], image[55:, :])  # far below everything
    assert drawn.shape == image.shape and np.array_equal(image, np.full_like(image, 100))
    without_masks = draw_instances(image, boxes, None, [""])
    np.testing.assert_array_equal(without_masks[35, 40], [100, 100, 100])


def test_check_passes_on_converted_records(converted):
    _, records = converted
    stats = json.loads(inspect(shard_glob(records, "train"), "--json", check=True).stdout)
    result = inspect(shard_glob(records, "train"), "--check", check=True)
    assert f"OK: {stats['images']} records, {stats['instances']} instances checked" in (
        result.stdout)


# ---------------------------------------------------------------------------------------
# Records crafted with one fault each: the check names the file, the record and the fault.

def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def _good_example(source_id: str) -> ImageExample:
    height, width = 24, 32
    rng = np.random.default_rng(int(source_id))
    masks = np.zeros((2, height, width), np.uint8)
    masks[0, 2:10, 3:12] = 1
    masks[1, 12:22, 15:30] = 1
    return ImageExample(
        encoded_image=_png(rng.integers(0, 255, (height, width, 3), dtype=np.uint8)),
        image_format="png", height=height, width=width, filename=f"img{source_id}.png",
        source_id=source_id,
        boxes=np.array([[2 / 24, 3 / 32, 10 / 24, 12 / 32], [12 / 24, 15 / 32, 22 / 24, 30 / 32]],
                       np.float32),
        labels=np.array([1, 2]), texts=["cat", "dog"], areas=np.array([72.0, 150.0]),
        is_crowd=np.array([0, 1]), masks_png=[encode_mask_png(m) for m in masks])


def _with_mask(example: ImageExample, i: int, mask: np.ndarray) -> ImageExample:
    example.masks_png[i] = _png(mask) if mask.ndim == 3 else encode_mask_png(mask)
    return example


def _drop_one_area(example: ImageExample) -> bytes:
    proto = example_pb2.Example.FromString(encode_example(example))
    del proto.features.feature[keys.OBJECT_AREA].float_list.value[-1]
    return proto.SerializeToString()


def _drop_masks(example: ImageExample) -> bytes:
    proto = example_pb2.Example.FromString(encode_example(example))
    del proto.features.feature[keys.OBJECT_MASK]
    return proto.SerializeToString()


def _set(example: ImageExample, **changes) -> ImageExample:
    for name, value in changes.items():
        setattr(example, name, value)
    return example


FAULTS: dict[str, tuple[Callable[[ImageExample], object], str]] = {
    "mask_wrong_size": (lambda e: _with_mask(e, 1, np.ones((12, 16), np.uint8)),
                        "mask 1 (dog) is 16x12 but the image is 32x24"),
    "mask_value_255": (lambda e: _with_mask(e, 0, e.decode_masks()[0] * 255),
                       "mask 0 (cat) holds values 0, 255"),
    "mask_three_channels": (lambda e: _with_mask(e, 0, np.dstack([e.decode_masks()[0]] * 3)),
                            "mask 0 (cat) has 3 channels"),
    "box_outside_image": (lambda e: _set(e, boxes=e.boxes + [0, 0, 0, 0.2]),
                          "box 1 (ymin 0.5, xmin 0.46875, ymax 0.916667, xmax 1.1375) is not "
                          "normalized"),
    "box_not_ordered": (lambda e: _set(e, boxes=e.boxes[:, [2, 1, 0, 3]]), "is not ordered"),
    "box_not_around_mask": (lambda e: _set(e, boxes=e.boxes[::-1].copy()),
                            "box 0 is not around mask 0 (cat): the mask spans x 3..12, y 2..10"),
    "label_not_in_label_map": (lambda e: _set(e, labels=np.array([1, 7])),
                               "instance 1: label 7 (class/text 'dog') is not in the label map"),
    "text_mismatch": (lambda e: _set(e, texts=["cat", "bird"]),
                      "label 2 (class/text 'bird') does not match the label map, where 2 is "
                      "'dog'"),
    "corrupt_image": (lambda e: _set(e, encoded_image=e.encoded_image[:60]),
                      "the image does not decode"),
    "image_size_mismatch": (lambda e: _set(e, height=25), "the image is 32x24 but"),
    "field_counts_differ": (_drop_one_area, "2 boxes but 1 values of image/object/area"),
    "missing_masks": (_drop_masks, "2 boxes but no image/object/mask"),
}


def _write_records(directory: Path, bad: bytes | None) -> Path:
    """Three records; the middle one (record 1) is `bad` when given."""
    write_label_map(LabelMap.from_names(["cat", "dog"]), directory / "label_map.pbtxt")
    records = [encode_example(_good_example("1")), bad or encode_example(_good_example("2")),
               encode_example(_good_example("3"))]
    with ShardedWriter(directory, "faulty", 1) as writer:
        for record in records:
            writer.write(record)
    return writer.paths[0]


def _serialize_fault(name: str) -> bytes:
    make, _ = FAULTS[name]
    result = make(_good_example("2"))
    return result if isinstance(result, bytes) else encode_example(result)


def test_crafted_good_records_pass(tmp_path):
    path = _write_records(tmp_path, None)
    result = inspect(str(path), "--check", check=True)
    assert "OK: 3 records, 6 instances checked" in result.stdout


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_check_names_the_file_record_and_fault(tmp_path, fault):
    path = _write_records(tmp_path, _serialize_fault(fault))
    result = inspect(str(path), "--check")
    assert result.returncode == 1, result.stdout
    assert "OK:" not in result.stdout
    assert (f"FAULT: {path}: record 1 (source_id '2', filename 'img2.png'): "
            in result.stderr), result.stderr
    assert FAULTS[fault][1] in result.stderr, result.stderr


def test_missing_masks_pass_when_allowed(tmp_path):
    path = _write_records(tmp_path, _serialize_fault("missing_masks"))
    result = inspect(str(path), "--check", "--allow_missing_masks", check=True)
    assert "OK: 3 records, 6 instances checked" in result.stdout
    assert "1 records with instances have no masks" in result.stdout


def test_corrupt_tfrecord_framing_is_a_fault(tmp_path):
    path = _write_records(tmp_path, None)
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF  # inside the last record's data: its checksum no longer matches
    path.write_bytes(bytes(data))
    result = inspect(str(path), "--check")
    assert result.returncode == 1
    assert f"FAULT: {path}: record 2 at byte" in result.stderr
    assert "checksum mismatch" in result.stderr


def test_captions_use_display_names_and_mark_crowd_and_unknown_ids():
    example = _set(_good_example("2"), labels=np.array([1, 5]))  # instance 1 is crowd
    label_map = LabelMap.from_names(["cat", "dog"], ["Katze", "Hund"])
    assert [caption(example, i, label_map, key) for i, key in
            enumerate(class_keys(example, label_map))] == ["Katze",
                                                           "dog (not in label map) (crowd)"]
    assert caption(example, 0, None, 1) == "cat"


def test_render_skips_an_image_that_does_not_decode(tmp_path):
    path = _write_records(tmp_path, _serialize_fault("corrupt_image"))
    result = inspect(str(path), "--render", "3", "--out", str(tmp_path / "pictures"),
                     check=True)
    assert "wrote 2 picture(s)" in result.stdout
    assert f"{path}: record 1: the image does not decode" in result.stderr
    assert sorted(p.name for p in (tmp_path / "pictures").iterdir()) == [
        "faulty-1.png", "faulty-3.png"]


def test_records_with_names_only_get_ids_from_the_label_map(tmp_path):
    """The OD API's COCO tool writes class/text without class/label."""
    proto = example_pb2.Example.FromString(encode_example(_good_example("2")))
    del proto.features.feature[keys.OBJECT_CLASS_LABEL]
    path = _write_records(tmp_path, proto.SerializeToString())
    assert "OK: 3 records" in inspect(str(path), "--check", check=True).stdout
    stats = json.loads(inspect(str(path), "--json", check=True).stdout)
    assert [(r["id"], r["name"], r["instances"]) for r in stats["classes"]] == [
        (1, "cat", 3), (2, "dog", 3)]


def test_object_detection_api_records(realdata):
    """The OD API fixture has no masks and an instance with label 0 and empty text.

    Without --allow_missing_masks the missing masks are the first fault (Mask R-CNN cannot
    train on them); with it, label 0 is: 0 is the background id, never a class, and
    Model Garden would train that box as background. The other two files pass."""
    fixture = realdata / OD_API_FIXTURE
    first = inspect(str(fixture / "*.tfrecord"), "--check")
    where = f"FAULT: {fixture / 'train.tfrecord'}: record 0 (source_id '1', filename '1.jpg')"
    assert first.returncode == 1 and where in first.stderr
    assert "3 boxes but no image/object/mask" in first.stderr
    second = inspect(str(fixture / "*.tfrecord"), "--check", "--allow_missing_masks")
    assert second.returncode == 1 and where in second.stderr
    assert "instance 2: label 0 (class/text '') is not a class id" in second.stderr
    rest = inspect(f"{fixture / 'val.tfrecord'},{fixture / 'test.tfrecord'}", "--check",
                   "--allow_missing_masks", check=True)
    assert "OK: 2 records, 1 instances checked" in rest.stdout
    stats = json.loads(inspect(str(fixture / "*.tfrecord"), "--json", check=True).stdout)
    unknown = [row for row in stats["classes"] if not row["in_label_map"]]
    assert [(row["id"], row["instances"]) for row in unknown] == [(0, 1)]
    assert stats["mask_coverage"]["instances_without_masks"] == stats["instances"] == 4


def test_usage_errors_are_one_line_errors(tmp_path):
    missing = inspect(str(tmp_path / "nothing-*.tfrecord"))
    assert missing.returncode == 1 and missing.stderr.startswith(
        "error: no TFRecord files match") and "Traceback" not in missing.stderr
    no_out = inspect(str(tmp_path / "x.tfrecord"), "--render", "2")  # argparse's usage error
    assert no_out.returncode == 2 and "--render needs --out" in no_out.stderr


def test_inspection_never_imports_tensorflow(converted):
    _, records = converted
    code = ("import sys; from records.inspect import main; "
            f"main([{shard_glob(records, 'train')!r}, '--check', '--json']); "
            "assert not any(m.split('.')[0] == 'tensorflow' for m in sys.modules), 'tf'")
    run_command("-c", code, check=True)
    help_run = run_command("-X", "importtime", "-m", "records.inspect", "--help", check=True)
    assert "usage:" in help_run.stdout and "tensorflow" not in help_run.stderr


def test_plots_picture_classes_instances_per_image_and_object_sizes(converted, tmp_path):
    """--plots beside the statistics, still without TensorFlow; the object sizes counted by
    COCO's ranges from the annotations' areas."""
    annotation_file, records = converted
    out = tmp_path / "plots"
    code = ("import sys; from records.inspect import main; "
            f"main([{shard_glob(records, 'train')!r}, '--json', '--plots', {str(out)!r}]); "
            "assert not any(m.split('.')[0] == 'tensorflow' for m in sys.modules), 'tf'")
    result = run_command("-c", code, check=True)
    assert f"wrote 3 plot(s) to {out}" in result.stderr  # stdout stays JSON
    for name in ("classes.png", "instances_per_image.png", "object_sizes.png"):
        picture = cv2.imread(str(out / name))
        assert picture is not None and min(picture.shape[:2]) > 150, name
    areas = np.array([a["area"] for a in COCO(str(annotation_file)).loadAnns(
        COCO(str(annotation_file)).getAnnIds())])
    sizes = json.loads(result.stdout)["object_sizes"]
    assert (sizes["small"], sizes["medium"], sizes["large"]) == (
        np.sum(areas < 32 ** 2), np.sum((areas >= 32 ** 2) & (areas < 96 ** 2)),
        np.sum(areas >= 96 ** 2))
    assert sizes["sqrt_area"]["max"] == pytest.approx(np.sqrt(areas.max()), rel=1e-5)
    text = inspect(shard_glob(records, "train"), check=True).stdout
    assert f"object sizes (COCO): {sizes['small']} small, {sizes['medium']} medium" in text


def test_records_with_display_names_as_class_text_pass_the_check(tmp_path):
    """class/text may hold an item's display name, as the OD API's decoder accepts (its Open
    Images label maps name items by MID); the reader fills labels from either."""
    directory = tmp_path / "records"
    directory.mkdir()
    label_map = LabelMap([LabelMapItem(1, "/m/01yrx", "cat"), LabelMapItem(2, "/m/0bt9lr",
                                                                         "dog")])
    write_label_map(label_map, directory / "label_map.pbtxt")
    with_labels = _set(_good_example("1"), texts=["cat", "/m/0bt9lr"])
    names_only = example_pb2.Example.FromString(encode_example(_good_example("2")))
    del names_only.features.feature[keys.OBJECT_CLASS_LABEL]
    with ShardedWriter(directory, "oid", 1) as writer:
        writer.write(encode_example(with_labels))
        writer.write(names_only.SerializeToString())
    path = writer.paths[0]
    result = inspect(str(path), "--check", check=True)
    assert "OK: 2 records, 4 instances checked" in result.stdout
    examples = [example for _, _, example in iter_examples(str(path), label_map)]
    assert [list(e.labels) for e in examples] == [[1, 2], [1, 2]]
    mismatch = _set(_good_example("3"), texts=["dog", "cat"])  # label 1 with text 'dog'
    (tmp_path / "bad").mkdir()
    path = _write_records(tmp_path / "bad", encode_example(mismatch))
    write_label_map(label_map, path.parent / "label_map.pbtxt")
    result = inspect(str(path), "--check")
    assert result.returncode == 1
    assert "does not match the label map, where 1 is '/m/01yrx' (display name 'cat')" in (
        result.stderr)
