"""Pascal VOC instance segmentation: a synthetic VOC tree built here (palette PNGs with void
borders, a difficult object, image sets, a detection-only image) and Datumaro's VOC fixture,
converted through the CLI and read back."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from data_prep.formats.voc import VOC_CLASSES, read_voc, voc_box_to_pixels, voc_colormap
from records.label_map import read_label_map
from records.reader import read_examples
from records.tfrecord_io import shard_glob
from tests.conftest import run_command

# id -> (width, height, [(name, (x0, y0, x1, y1) 0-based pixel edges, difficult)])
TREE = {
    "2008_000001": (48, 40, [("person", (4, 4, 20, 30), False), ("dog", (24, 6, 44, 22), False),
                             ("car", (26, 28, 40, 36), True)]),
    "2008_000002": (40, 32, [("cat", (3, 3, 18, 28), False), ("cat", (20, 3, 36, 28), False)]),
    "2008_000003": (32, 32, [("bird", (8, 8, 24, 20), False)]),
}
DETECTION_ONLY = "2008_000004"  # has an XML and a JPEG but no SegmentationObject PNG
REAL_VOC = "datumaro_fixtures/tests/assets/voc_dataset/voc_dataset1"


def _save_png(array: np.ndarray, path: Path, rgb: bool = False) -> None:
    """A VOC label PNG: palette indices, or (rgb) the VOC colours Datumaro writes."""
    if rgb:
        Image.fromarray(voc_colormap()[array]).save(path)
        return
    image = Image.fromarray(array.astype(np.uint8), mode="P")
    image.putpalette(voc_colormap().ravel().tolist())
    image.save(path)


def _paint(width: int, height: int, objects: list, values: list[int]) -> np.ndarray:
    """Objects filled with their value, then VOC's 2-pixel void band (255) across each edge."""
    array = np.zeros((height, width), np.uint8)
    for (_, (x0, y0, x1, y1), _), value in zip(objects, values):
        array[y0:y1, x0:x1] = value
    for _, (x0, y0, x1, y1), _ in objects:
        band = np.zeros_like(array, bool)
        band[max(y0 - 1, 0):y1 + 1, max(x0 - 1, 0):x1 + 1] = True
        band[y0 + 1:y1 - 1, x0 + 1:x1 - 1] = False
        array[band] = 255
    return array


def _xml(image_id: str, width: int, height: int, objects: list) -> str:
    parts = [f"<annotation>\n<folder>VOC2012</folder>\n<filename>{image_id}.jpg</filename>\n"
             f"<size>\n<width>{width}</width>\n<height>{height}</height>\n<depth>3</depth>\n"
             "</size>\n<segmented>1</segmented>\n"]
    for name, (x0, y0, x1, y1), difficult in objects:  # bndbox: 1-based, inclusive
        parts.append(f"<object>\n<name>{name}</name>\n<difficult>{int(difficult)}</difficult>\n"
                     f"<bndbox>\n<xmin>{x0 + 1}</xmin>\n<ymin>{y0 + 1}</ymin>\n"
                     f"<xmax>{x1}</xmax>\n<ymax>{y1}</ymax>\n</bndbox>\n</object>\n")
    return "".join(parts) + "</annotation>\n"


def build_tree(root: Path, tree: dict = TREE, rgb: bool = False) -> dict[str, np.ndarray]:
    """Writes a VOC root; returns each image's SegmentationObject array."""
    for folder in ("Annotations", "JPEGImages", "SegmentationObject", "SegmentationClass",
                   "ImageSets/Segmentation", "ImageSets/Main"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    instances = {}
    for image_id, (width, height, objects) in {**tree, DETECTION_ONLY: (32, 24, [
            ("horse", (2, 2, 20, 20), False)])}.items():
        (root / "Annotations" / f"{image_id}.xml").write_text(_xml(image_id, width, height,
                                                                   objects))
        Image.fromarray(rng.integers(0, 255, (height, width, 3), np.uint8)).save(
            root / "JPEGImages" / f"{image_id}.jpg")
        if image_id == DETECTION_ONLY:
            continue
        instances[image_id] = _paint(width, height, objects, list(range(1, len(objects) + 1)))
        _save_png(instances[image_id], root / "SegmentationObject" / f"{image_id}.png", rgb)
        classes = _paint(width, height, objects, [VOC_CLASSES.index(o[0]) + 1 for o in objects])
        _save_png(classes, root / "SegmentationClass" / f"{image_id}.png", rgb)
    ids = sorted(tree)
    (root / "ImageSets/Segmentation/train.txt").write_text("\n".join(ids[:2]) + "\n")
    (root / "ImageSets/Segmentation/val.txt").write_text("".join(i + "\n" for i in ids[2:]))
    (root / "ImageSets/Main/trainval.txt").write_text("\n".join(ids + [DETECTION_ONLY]) + "\n")
    return instances


@pytest.fixture
def voc(tmp_path) -> tuple[Path, dict[str, np.ndarray]]:
    root = tmp_path / "VOC2012"
    return root, build_tree(root)


def convert(root: Path, out: Path, *extra: str, check: bool = True):
    return run_command("data_prep/create_tfrecords.py", "--format", "voc", "--annotations",
                       str(root), "--output_dir", str(out), "--no_progress", *extra,
                       check=check)


def _records(out: Path, split: str = "train") -> dict:
    return {e.filename: e for e in read_examples(shard_glob(out, split))}


def _summary(out: Path, split: str = "train") -> dict:
    return json.loads((out / f"{split}.summary.json").read_text())


def test_palette_colours_are_vocs():
    colors = voc_colormap()
    assert colors[1].tolist() == [128, 0, 0] and colors[15].tolist() == [192, 128, 128]
    assert colors[255].tolist() == [224, 224, 192] and len({tuple(c) for c in colors}) == 256


def test_masks_classes_and_difficult_flags_survive_conversion(voc, tmp_path):
    root, instances = voc
    out = tmp_path / "out"
    convert(root, out, "--num_shards", "2")
    records = _records(out)
    assert sorted(records) == [f"{i}.jpg" for i in sorted(TREE)]  # not the detection-only one
    assert read_label_map(out / "label_map.pbtxt").names == list(VOC_CLASSES)
    for image_id, (width, height, objects) in TREE.items():
        example, pixels = records[f"{image_id}.jpg"], instances[image_id]
        assert example.source_id == image_id.replace("_", "")
        assert example.texts == [name for name, _, _ in objects]
        assert example.labels.tolist() == [VOC_CLASSES.index(n) + 1 for n, _, _ in objects]
        masks = example.decode_masks()
        assert (pixels == 255).sum() > 0  # the void band is there, and in no mask
        for index, mask in enumerate(masks, start=1):
            assert np.array_equal(mask, pixels == index), (image_id, index)
            rows, cols = np.nonzero(mask)
            expected = [rows.min() / height, cols.min() / width, (rows.max() + 1) / height,
                        (cols.max() + 1) / width]
            assert np.allclose(example.boxes[index - 1], expected, atol=1e-6)
            assert example.areas[index - 1] == mask.sum()
        difficult = [int(d) for _, _, d in objects]  # written only where some object is
        assert (example.difficult.tolist() if any(difficult) else example.difficult) == (
            difficult if any(difficult) else None)
    assert records["2008_000001.jpg"].difficult.tolist() == [0, 0, 1]
    summary = _summary(out)
    assert summary["instances"] == 6 and summary["warnings"] == {} and not any(
        summary["skipped"].values())


def test_drop_difficult_leaves_difficult_objects_out(voc, tmp_path):
    root, _ = voc
    out = tmp_path / "out"
    convert(root, out, "--drop_difficult")
    example = _records(out)["2008_000001.jpg"]
    assert example.texts == ["person", "dog"] and example.difficult is None
    assert _summary(out)["warnings"] == {"difficult_dropped": 1}


def test_rgb_masks_read_like_palette_masks(tmp_path):
    root = tmp_path / "rgb"
    instances = build_tree(root, rgb=True)
    assert Image.open(root / "SegmentationObject/2008_000002.png").mode == "RGB"
    out = tmp_path / "out"
    convert(root, out)
    for image_id, pixels in instances.items():
        masks = _records(out)[f"{image_id}.jpg"].decode_masks()
        assert len(masks) == len(TREE[image_id][2])
        for index, mask in enumerate(masks, start=1):
            assert np.array_equal(mask, pixels == index)
    # A colour outside VOC's palette is named.
    rgb = np.array(Image.open(root / "SegmentationObject/2008_000003.png"))
    rgb[0, 0] = (1, 2, 3)
    Image.fromarray(rgb).save(root / "SegmentationObject/2008_000003.png")
    problems = read_voc(root).problems
    assert [(p.reason, p.record) for p in problems] == [("bad_mask_file", "image '2008_000003'")]
    assert "(1, 2, 3)" in problems[0].message


def test_image_sets_select_images(voc, tmp_path):
    root, _ = voc
    assert [i.image_id for i in read_voc(root).images] == sorted(TREE)
    assert [i.image_id for i in read_voc(root, image_set="train").images] == sorted(TREE)[:2]
    assert [i.image_id for i in read_voc(root, image_set="val").images] == sorted(TREE)[2:]
    listed = tmp_path / "mine.txt"
    listed.write_text("# my list\n2008_000003\n2008_000001  1\n2008_000003\n")
    result = read_voc(root, image_set=str(listed))
    assert [i.image_id for i in result.images] == ["2008_000003", "2008_000001"]
    assert [p.reason for p in result.problems] == ["duplicate_in_image_set"]
    with pytest.raises(ValueError, match="ImageSets/Segmentation/test.txt.*ImageSets/Main"):
        read_voc(root, image_set="test")
    # With a validation fraction, the image set is split in two.
    out = tmp_path / "out"
    convert(root, out, "--image_set", "train", "--val_fraction", "0.5")
    assert len(_records(out)) + len(_records(out, "val")) == 2


def test_listed_image_without_instance_masks_is_an_error(voc, tmp_path):
    root, _ = voc
    out = tmp_path / "out"
    # trainval is not in ImageSets/Segmentation: read from ImageSets/Main, with 2008_000004.
    result = convert(root, out, "--image_set", "trainval", check=False)
    assert result.returncode == 1, result.stdout
    assert f"SegmentationObject/{DETECTION_ONLY}.png: image '{DETECTION_ONLY}'" in result.stderr
    assert "detection-only" in result.stderr and not out.exists()
    convert(root, out, "--image_set", "trainval", "--skip_errors")
    assert _summary(out)["skipped"]["images"] == {"no_instance_masks": 1}
    assert len(_records(out)) == 3


def test_class_mismatch_is_detected(voc, tmp_path):
    root, instances = voc
    path = root / "SegmentationClass/2008_000002.png"
    classes = np.array(Image.open(path))
    classes[:20][instances["2008_000002"][:20] == 1] = 255  # most of cat 1 void: the rest votes
    _save_png(classes, path)
    assert read_voc(root).problems == []
    classes[instances["2008_000002"] == 2] = VOC_CLASSES.index("dog") + 1
    _save_png(classes, path)
    out = tmp_path / "out"
    result = convert(root, out, check=False)
    assert result.returncode == 1 and not out.exists()
    assert ("Annotations/2008_000002.xml: object 2 ('cat') of image '2008_000002'"
            in result.stderr) and "'dog' (index 12) for 100%" in result.stderr, result.stderr
    convert(root, out, "--skip_errors")
    assert _summary(out)["skipped"]["annotations"] == {"class_mismatch": 1}
    assert _records(out)["2008_000002.jpg"].texts == ["cat"]


def _replace(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


def _malformed_xml(root):
    path = root / "Annotations/2008_000001.xml"
    _replace(path, "</object>", "</objet>")
    line = path.read_text().splitlines().index("</objet>") + 1
    return "bad_xml", path, "image '2008_000001'", f"at line {line}", "images"


def _not_xml(root):
    path = root / "Annotations/2008_000001.xml"
    path.write_bytes((root / "JPEGImages/2008_000001.jpg").read_bytes())
    return "bad_xml", path, "image '2008_000001'", "at line 1", "images"


def _not_voc_xml(root):
    path = root / "Annotations/2008_000002.xml"
    path.write_text("<?xml version='1.0'?>\n<doc>\n<annotation/>\n</doc>\n")
    return "not_voc_xml", path, "image '2008_000002'", "root element is <doc>", "images"


def _object_without_name(root):
    path = root / "Annotations/2008_000001.xml"
    _replace(path, "<name>dog</name>", "")
    return ("object_without_name", path, "object 2 of image '2008_000001'", "has no <name>",
            "annotations")


def _instance_without_object(root):
    path = root / "SegmentationObject/2008_000003.png"
    pixels = np.array(Image.open(path))
    pixels[28:31, 2:5] = 2  # the XML lists one object
    _save_png(pixels, path)
    return ("instance_without_object", path, "image '2008_000003'", "instance 2 (9 pixels)",
            "images")


def _missing_image(root):
    path = root / "JPEGImages/2008_000002.jpg"
    path.unlink()
    return "missing_image", path, "image '2008_000002'", "does not exist", "images"


def _mask_size_mismatch(root):
    _replace(root / "Annotations/2008_000003.xml", "<width>32</width>", "<width>33</width>")
    return ("mask_size_mismatch", root / "SegmentationObject/2008_000003.png",
            "image '2008_000003'", "mask is 32x32 but 2008_000003.xml gives size 33x32",
            "images")


def _unreadable_mask(root):
    path = root / "SegmentationObject/2008_000001.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    return "bad_mask_file", path, "image '2008_000001'", "cannot be read as an image", "images"


CASES = [_malformed_xml, _not_xml, _not_voc_xml, _object_without_name,
         _instance_without_object, _missing_image, _mask_size_mismatch, _unreadable_mask]


@pytest.mark.parametrize("breaker", CASES, ids=lambda f: f.__name__.strip("_"))
def test_bad_input_stops_with_a_clear_message_and_writes_nothing(voc, tmp_path, breaker):
    root, _ = voc
    reason, path, record, phrase, scope = breaker(root)
    out = tmp_path / "out"
    result = convert(root, out, "--workers", "2", check=False)
    assert result.returncode == 1
    assert f"{path}: {record}" in result.stderr and phrase in result.stderr, result.stderr
    assert "--skip_errors" in result.stderr and not out.exists()
    convert(root, out, "--workers", "2", "--skip_errors")
    summary = _summary(out)
    assert summary["skipped"][scope] == {reason: 1}, summary
    assert any(record in m for m in summary["examples"][reason])
    assert summary["images"] == len(_records(out)) == len(TREE) - (scope == "images")


def test_not_a_voc_root_is_named(voc, tmp_path):
    root, _ = voc
    result = convert(tmp_path, tmp_path / "out", check=False)
    assert result.returncode == 1 and not (tmp_path / "out").exists()
    assert "no Annotations/ folder" in result.stderr and f"did you mean {root}" in result.stderr
    result = convert(root / "Annotations/2008_000001.xml", tmp_path / "out", check=False)
    assert result.returncode == 1 and "takes the VOC root directory" in result.stderr


def test_object_without_pixels_is_a_counted_warning(voc):
    root, _ = voc
    _replace(root / "Annotations/2008_000003.xml", "</annotation>",
             "<object><name>bottle</name></object>\n</annotation>")
    result = read_voc(root)
    assert [(p.reason, p.is_error, p.record) for p in result.problems] == [
        ("object_without_pixels", False, "object 2 ('bottle') of image '2008_000003'")]
    assert [o.class_name for o in result.images[2].objects] == ["bird"]


def test_bndbox_is_one_based_and_inclusive(tmp_path):
    assert voc_box_to_pixels(1, 1, 1, 1) == (0.0, 0.0, 1.0, 1.0)
    # A one-pixel instance at column 7, row 5: VOC box xmin = xmax = 8, ymin = ymax = 6.
    tree = {"2008_000001": (16, 12, [("bottle", (7, 5, 8, 6), False)])}
    root = tmp_path / "voc"
    build_tree(root, tree)
    pixels = np.zeros((12, 16), np.uint8)
    pixels[5, 7] = 1  # no void band: it would cover a one-pixel object
    _save_png(pixels, root / "SegmentationObject/2008_000001.png")
    _save_png(pixels * 5, root / "SegmentationClass/2008_000001.png")
    assert read_voc(root).problems == []
    _replace(root / "Annotations/2008_000001.xml", "<xmin>8</xmin>", "<xmin>7</xmin>")
    _replace(root / "Annotations/2008_000001.xml", "<xmax>8</xmax>", "<xmax>7</xmax>")
    assert [p.reason for p in read_voc(root).problems] == ["mask_outside_box"]


def test_an_instance_outside_its_box_is_warned_about(voc):
    root, _ = voc  # both objects are cats: only their boxes can tell them apart
    _replace(root / "Annotations/2008_000002.xml", "<xmin>4</xmin>", "<xmin>21</xmin>")
    _replace(root / "Annotations/2008_000002.xml", "<xmax>18</xmax>", "<xmax>36</xmax>")
    problems = read_voc(root).problems
    assert [(p.reason, p.record) for p in problems] == [
        ("mask_outside_box", "object 1 ('cat') of image '2008_000002'")]
    assert "0% of instance 1's pixels" in problems[0].message


def test_names_outside_voc_get_a_sorted_label_map(tmp_path):
    root = tmp_path / "custom"
    build_tree(root, {"a1": (20, 20, [("bus", (2, 2, 9, 9), False),
                                      ("cow", (11, 11, 18, 18), False)])})
    _replace(root / "Annotations/a1.xml", "<name>bus</name>", "<name>widget</name>")
    _replace(root / "Annotations/a1.xml", "<name>cow</name>", "<name>gadget</name>")
    result = read_voc(root)
    assert result.class_names == ["gadget", "widget"]
    assert [p.reason for p in result.problems] == ["class_check_skipped"]
    assert [o.class_name for o in result.images[0].objects] == ["widget", "gadget"]
    assert result.images[0].source_id == 1  # a non-numeric id gets its position


@pytest.mark.realdata
def test_real_fixture_as_published_reports_its_inconsistencies(realdata, tmp_path):
    """Datumaro's fixture paints the whole image as instance 1 of class bicycle, while its
    XML lists a cat and a person: a class mismatch, and an object without pixels."""
    root, out = realdata / REAL_VOC, tmp_path / "out"
    result = convert(root, out, check=False)
    assert result.returncode == 1 and not out.exists()
    assert (f"{root}/Annotations/2007_000001.xml: object 1 ('cat') of image '2007_000001'"
            in result.stderr and "'bicycle' (index 2)" in result.stderr), result.stderr
    convert(root, out, "--skip_errors")
    summary = _summary(out)
    assert (summary["images"], summary["instances"]) == (1, 0)
    assert summary["skipped"]["annotations"] == {"class_mismatch": 1}
    assert summary["warnings"] == {"object_without_pixels": 1}
    result = convert(root, tmp_path / "test", "--image_set", "test", check=False)
    assert result.returncode == 1 and "2007_000002.png: image '2007_000002'" in result.stderr


@pytest.mark.realdata
def test_real_fixture_masks_classes_and_difficult(realdata, tmp_path):
    """The fixture copied with its XML made to agree with its PNGs (object 1 a difficult
    bicycle): the record holds the RGB PNG's instance pixels and the flag."""
    root = tmp_path / "voc_dataset1"
    shutil.copytree(realdata / REAL_VOC, root)
    _replace(root / "Annotations/2007_000001.xml", "<name>cat</name>", "<name>bicycle</name>")
    _replace(root / "Annotations/2007_000001.xml", "<difficult>0</difficult>",
             "<difficult>1</difficult>")
    rgb = np.array(Image.open(root / "SegmentationObject/2007_000001.png").convert("RGB"))
    expected = np.all(rgb == (128, 0, 0), axis=-1)  # VOC's colour of instance 1
    out = tmp_path / "out"
    convert(root, out)
    example = _records(out)["2007_000001.jpg"]
    assert (example.width, example.height, example.source_id) == (20, 10, "2007000001")
    assert example.texts == ["bicycle"] and example.labels.tolist() == [2]
    assert np.array_equal(example.decode_masks()[0], expected) and expected.sum() == 200
    assert example.difficult.tolist() == [1]
    # The person has no pixels; the bicycle's box (1-based 1,2-3,4) misses most of its mask.
    assert _summary(out)["warnings"] == {"object_without_pixels": 1, "mask_outside_box": 1}
    convert(root, tmp_path / "dropped", "--drop_difficult")
    assert _records(tmp_path / "dropped")["2007_000001.jpg"].num_instances == 0
    assert _summary(tmp_path / "dropped")["warnings"]["difficult_dropped"] == 1
