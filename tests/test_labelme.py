"""--format labelme: one JSON per image as Labelme writes it (shapes, group_id, imagePath,
imageData, imageHeight/imageWidth), in its 5.x form and its 3.x form without shape_type."""
from __future__ import annotations

import base64
import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from data_prep import create_tfrecords
from data_prep.annotations import AnnotationFileError
from data_prep.conversion.image_record import ConversionError
from records.label_map import read_label_map
from records.reader import read_examples
from records.record_checks import check_records
from records.tfrecord_io import shard_glob
from tests.conftest import run_command

HEIGHT, WIDTH = 48, 64


def png_bytes(array: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(array).save(out, format="PNG")
    return out.getvalue()


def picture(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (HEIGHT, WIDTH, 3), dtype=np.uint8)


def shape(label, points, shape_type="polygon", group_id=None, **extra) -> dict:
    """A shape as Labelme 5 saves it (format_shape in its app)."""
    return {"label": label, "points": points, "group_id": group_id, "description": "",
            "shape_type": shape_type, "flags": {}, "mask": None, **extra}


def labelme_file(shapes: list, image_path: str = "a.png", image_data: bytes | None = None,
                 size: tuple[int, int] | None = (HEIGHT, WIDTH)) -> dict:
    """A label file as Labelme 5's LabelFile.save writes it."""
    return {"version": "5.5.0", "flags": {}, "shapes": shapes, "imagePath": image_path,
            "imageData": None if image_data is None else base64.b64encode(image_data).decode(),
            "imageHeight": size[0] if size else None, "imageWidth": size[1] if size else None}


def write(directory: Path, name: str, document: dict) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(json.dumps(document, allow_nan=True))
    return path


def convert(annotations: Path, out: Path, *flags: str) -> dict:
    """Converts in this process; returns the summary after checking every record."""
    with contextlib.redirect_stdout(io.StringIO()):
        create_tfrecords.main(["--format", "labelme", "--annotations", str(annotations),
                               "--output_dir", str(out), "--workers", "1", "--no_progress",
                               "--no_tfds_metadata", *flags])
    summary = json.loads((out / "train.summary.json").read_text())
    checked = check_records(shard_glob(out, "train"), read_label_map(out / "label_map.pbtxt"))
    assert (checked.records, checked.instances) == (summary["images"], summary["instances"])
    return summary


def coco_mask(*polygons: list[float]) -> np.ndarray:
    """What pycocotools (and so Labelme's labelme2coco) makes of these polygons."""
    return mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(list(polygons), HEIGHT,
                                                                     WIDTH)))


def test_polygon_rectangle_and_circle_become_the_masks_labelme2coco_gives(tmp_path):
    folder = tmp_path / "labelme"
    folder.mkdir()
    (folder / "a.png").write_bytes(png_bytes(picture()))
    triangle = [[4.5, 3.0], [30.0, 10.25], [12.0, 40.0]]
    write(folder, "a.json", labelme_file([
        shape("leaf", triangle),
        shape("box", [[60.0, 44.0], [40.0, 20.0]], "rectangle"),  # drawn up and left
        shape("coin", [[20.0, 30.0], [26.0, 30.0]], "circle")]))
    summary = convert(folder, tmp_path / "out")
    assert summary["instances"] == 3 and not summary["warnings"]
    [example] = read_examples(shard_glob(tmp_path / "out", "train"))
    assert example.filename == "a.png" and example.encoded_image == (folder / "a.png").read_bytes()
    masks = dict(zip(example.texts, example.decode_masks()))
    np.testing.assert_array_equal(masks["leaf"], coco_mask(sum(triangle, [])))
    np.testing.assert_array_equal(masks["box"], coco_mask([40, 20, 60, 20, 60, 44, 40, 44]))
    yy, xx = np.mgrid[:HEIGHT, :WIDTH] + 0.5
    disc = (yy - 30) ** 2 + (xx - 20) ** 2 <= 36
    assert np.sum(masks["coin"] != disc) <= 4  # pixels the rim crosses near their centre
    assert read_label_map(tmp_path / "out/label_map.pbtxt").names == ["box", "coin", "leaf"]


def test_shapes_with_one_group_id_and_label_are_one_instance(tmp_path):
    """Labelme's own example: a person split by a bottle is two polygons with group_id 0."""
    folder = tmp_path / "labelme"
    folder.mkdir()
    (folder / "a.png").write_bytes(png_bytes(picture()))
    left, right = [[2, 2], [20, 2], [20, 30]], [[30, 2], [50, 2], [50, 30]]
    write(folder, "a.json", labelme_file([
        shape("person", left, group_id=0), shape("bottle", [[22, 5], [28, 5], [25, 40]]),
        shape("person", right, group_id=0), shape("person", [[2, 40], [10, 40], [6, 46]]),
        shape("hat", [[40, 40], [60, 40], [50, 46]], group_id=0)]))
    summary = convert(folder, tmp_path / "out")
    assert summary["instances"] == 4 and summary["instances_per_class"] == {
        "bottle": 1, "hat": 1, "person": 2}
    assert summary["warnings"] == {"group_of_several_labels": 1}
    assert "['hat', 'person']" in summary["examples"]["group_of_several_labels"][0]
    [example] = read_examples(shard_glob(tmp_path / "out", "train"))
    masks = example.decode_masks()
    assert example.texts[0] == "person"
    np.testing.assert_array_equal(masks[0], coco_mask(sum(left, []), sum(right, [])))


def test_lines_points_and_ignored_labels_are_skipped_and_counted(tmp_path):
    folder = tmp_path / "labelme"
    folder.mkdir()
    (folder / "a.png").write_bytes(png_bytes(picture()))
    write(folder, "a.json", labelme_file([
        shape("cat", [[2, 2], [20, 2], [20, 30]]),
        shape("tail", [[1, 1], [9, 9]], "line"),
        shape("whisker", [[1, 1], [5, 5], [9, 2]], "linestrip"),
        shape("eye", [[4, 4]], "point"),
        shape("__ignore__", [[30, 30], [40, 30], [40, 40]]),
        shape("dot", [[3, 3], [3, 3]], "rectangle")]))
    summary = convert(folder, tmp_path / "out")
    assert summary["instances"] == 1
    assert summary["warnings"] == {"not_an_area": 3, "ignored_label": 1, "zero_area_shape": 1}


def test_embedded_image_data_is_extracted_then_removed_or_kept(tmp_path):
    """imageData is what Labelme annotated; the image file may be gone. Run as the command,
    so that the exit removes the work directory."""
    folder = tmp_path / "labelme"
    data = png_bytes(picture(3))
    write(folder, "a.json", labelme_file([shape("cat", [[2, 2], [20, 2], [20, 30]])],
                                          image_path="C:\\Users\\me\\photos\\a.png",
                                          image_data=data))
    out = tmp_path / "out"
    result = run_command("data_prep/create_tfrecords.py", "--format", "labelme",
                         "--annotations", str(folder), "--output_dir", str(out),
                         "--no_progress", check=True)
    assert "1 images, 1 instances" in result.stdout
    [example] = read_examples(shard_glob(out, "train"))
    assert example.encoded_image == data and example.filename == "C:/Users/me/photos/a.png"
    assert not [p for p in out.iterdir() if p.name.startswith(".")]
    kept = tmp_path / "extracted"
    run_command("data_prep/create_tfrecords.py", "--format", "labelme", "--annotations",
                str(folder), "--output_dir", str(tmp_path / "out2"), "--labelme_work_dir",
                str(kept), "--no_progress", check=True)
    assert [p.read_bytes() for p in kept.iterdir()] == [data]
    # A failed run into a new directory leaves no directory, the work directory included.
    write(folder, "b.json", labelme_file([shape("cat", [[2, 2], [20, 2], [float("nan"), 30]])],
                                          image_path="b.png", image_data=data))
    failed = run_command("data_prep/create_tfrecords.py", "--format", "labelme",
                         "--annotations", str(folder), "--output_dir", str(tmp_path / "new"),
                         "--no_progress")
    assert failed.returncode == 1 and "Traceback" not in failed.stderr
    assert "b.json: image 'b.png', shape 0 ('cat'): points[2][0] is nan" in failed.stderr
    assert not (tmp_path / "new").exists()


def test_image_path_beside_the_json_windows_separators_and_images_dir(tmp_path):
    """Labelme stores imagePath relative to the JSON file, with backslashes on Windows."""
    (tmp_path / "set/imgs").mkdir(parents=True)
    (tmp_path / "set/imgs/a.png").write_bytes(png_bytes(picture()))
    write(tmp_path / "set/ann", "a.json", labelme_file(
        [shape("cat", [[2, 2], [20, 2], [20, 30]])], image_path="..\\imgs\\a.png"))
    assert convert(tmp_path / "set", tmp_path / "out")["images"] == 1
    with pytest.raises(ConversionError, match=r"imagePath '../imgs/a.png' leads out of .*ann"
                       ".*--images_dir"):
        convert(tmp_path / "set/ann", tmp_path / "out2")
    summary = convert(tmp_path / "set/ann", tmp_path / "out3", "--images_dir",
                      str(tmp_path / "set/imgs"))
    assert summary["images"] == 1 and summary["warnings"] == {"image_found_by_file_name": 1}


def test_labelme_3_files_without_shape_type_group_id_or_size(tmp_path):
    """As Labelme 3 saved them (its instance-segmentation example): no shape_type (polygon),
    no group_id, no imageHeight/imageWidth, and fill and line colours."""
    folder = tmp_path / "labelme"
    folder.mkdir()
    (folder / "2011_000025.png").write_bytes(png_bytes(picture()))
    write(folder, "2011_000025.json", {
        "imageData": None, "imagePath": "2011_000025.png", "fillColor": [255, 0, 0, 128],
        "lineColor": [0, 255, 0, 128],
        "shapes": [{"fill_color": None, "line_color": None, "label": "bus",
                    "points": [[2, 2], [40, 3], [30, 40]]}]})
    summary = convert(folder, tmp_path / "out")
    assert summary["instances_per_class"] == {"bus": 1}


def test_a_labelme_mask_shape_is_placed_at_its_first_point(tmp_path):
    """Labelme's AI masks: a base64 PNG of the mask's box, points = its two corners."""
    folder = tmp_path / "labelme"
    folder.mkdir()
    (folder / "a.png").write_bytes(png_bytes(picture()))
    patch = np.zeros((10, 12), np.uint8)
    patch[2:8, 3:11] = 1
    encoded = base64.b64encode(png_bytes(patch)).decode()
    write(folder, "a.json", labelme_file([
        shape("blob", [[20.4, 5.6], [31.4, 14.6]], "mask", mask=encoded),
        shape("blob", [[58.0, 40.0], [69.0, 49.0]], "mask", mask=encoded)]))  # at the edge
    convert(folder, tmp_path / "out")
    [example] = read_examples(shard_glob(tmp_path / "out", "train"))
    first, edge = example.decode_masks()
    expected = np.zeros((HEIGHT, WIDTH), np.uint8)
    expected[6:16, 20:32] = patch
    np.testing.assert_array_equal(first, expected)
    expected = np.zeros((HEIGHT, WIDTH), np.uint8)
    expected[40:48, 58:64] = patch[:8, :6]
    np.testing.assert_array_equal(edge, expected)


@pytest.mark.parametrize("breaker, reason, phrase", [
    (lambda d: d["shapes"][0].update(points=[[1, 2], [3, True], [5, 9]]), "bad_shape",
     "points[1][1] is True, not a number"),
    (lambda d: d["shapes"][0].update(points=[[1, 2], [3, 4, 5], [5, 9]]), "bad_shape",
     "points[1] is [3, 4, 5], not an [x, y] pair"),
    (lambda d: d["shapes"][0].update(group_id="first"), "bad_shape",
     "group_id is 'first', not an integer"),
    (lambda d: d["shapes"][0].update(label=7), "bad_shape", "label is 7, not a class name"),
    (lambda d: d["shapes"][0].update(shape_type="cuboid"), "unknown_shape",
     "shape_type 'cuboid' is none of Labelme's"),
    (lambda d: d["shapes"][0].update(points=[[1, 2], [1e9, 4], [5, 9]]), "bad_shape",
     "far beyond any image"),
    (lambda d: d.update(imageHeight="tall"), "bad_image_entry",
     "imageHeight is 'tall', not an integer"),
    (lambda d: d.update(imageData="not base64!"), "bad_image_entry",
     "imageData is not valid base64"),
    (lambda d: d.update(imagePath=None), "bad_image_entry", "imagePath is None, not a file"),
    (lambda d: d.update(shapes={"0": {}}), "not_labelme", "'shapes' is dict"),
    (lambda d: d.update(imageWidth=80), "image_size_mismatch",
     "annotations give size 80x48 but the image file is 64x48"),
])
def test_bad_values_are_errors_naming_the_field_and_skippable(tmp_path, breaker, reason,
                                                              phrase):
    folder = tmp_path / "labelme"
    folder.mkdir()
    for name in ("a", "b"):
        (folder / f"{name}.png").write_bytes(png_bytes(picture()))
        document = labelme_file([shape("cat", [[2, 2], [20, 2], [20, 30]])],
                                image_path=f"{name}.png")
        if name == "b":
            breaker(document)
        write(folder, f"{name}.json", document)
    with pytest.raises(ConversionError) as error:
        convert(folder, tmp_path / "out")
    assert "b.json" in str(error.value) and phrase in str(error.value), str(error.value)
    assert not (tmp_path / "out").exists()
    summary = convert(folder, tmp_path / "out", "--skip_errors")
    found = {**summary["skipped"]["images"], **summary["skipped"]["annotations"]}
    assert found == {reason: 1}, summary
    assert summary["instances_per_class"]["cat"] >= 1


def test_a_mask_shape_in_an_absurd_image_size_is_an_error_not_an_allocation(tmp_path):
    # Found by the long fuzz run: imageHeight 1e300 made numpy refuse the mask's array.
    folder = tmp_path / "labelme"
    folder.mkdir()
    (folder / "a.png").write_bytes(png_bytes(picture()))
    encoded = base64.b64encode(png_bytes(np.ones((4, 4), np.uint8))).decode()
    document = labelme_file([shape("blob", [[2.0, 2.0], [6.0, 6.0]], "mask", mask=encoded)])
    document["imageHeight"] = 1e300
    write(folder, "a.json", document)
    with pytest.raises(ConversionError) as error:
        convert(folder, tmp_path / "out")
    assert "over the limit of" in str(error.value) and "--max_image_pixels" in str(error.value)
    assert not (tmp_path / "out").exists()


def test_a_json_that_is_not_labelme_is_named(tmp_path):
    folder = tmp_path / "labelme"
    folder.mkdir()
    (folder / "a.png").write_bytes(png_bytes(picture()))
    write(folder, "a.json", labelme_file([shape("cat", [[2, 2], [20, 2], [20, 30]])]))
    (folder / "notes.json").write_text('{"a": 1, "a": 2}')
    with pytest.raises(ConversionError, match="notes.json: the file: .*'a' appears twice"):
        convert(folder, tmp_path / "out")
    assert convert(folder, tmp_path / "out", "--skip_errors")["skipped"]["images"] == {
        "not_labelme": 1}
    (tmp_path / "empty").mkdir()
    with pytest.raises(AnnotationFileError, match="no Labelme JSON files"):
        convert(tmp_path / "empty", tmp_path / "out2")
    # Summaries of a run whose output directory is inside the annotations are not read.
    assert convert(folder, folder / "records", "--skip_errors")["images"] == 1
