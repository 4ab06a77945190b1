"""Hostile and sloppy input never hangs, blows up, leaves a traceback or writes a wrong
record: each case is an error naming the field (or a counted skip with --skip_errors), and
the output directory is byte for byte what it was before the failed run."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from records.reader import read_examples
from records.tfrecord_io import shard_glob
from tests.coco_helpers import convert
from tests.conftest import run_command


def snapshot(directory: Path) -> dict[str, bytes]:
    """Every file below `directory` (hidden ones too) and its bytes."""
    if not directory.exists():
        return {}
    return {str(p.relative_to(directory)): p.read_bytes() if p.is_file() else b"<dir>"
            for p in sorted(directory.rglob("*"))}


@pytest.fixture
def coco(shapes_dir, tmp_path):
    """A private copy of the synthetic val split (6 images), its JSON, and an output
    directory already holding a good conversion of it."""
    images = tmp_path / "images"
    shutil.copytree(shapes_dir / "images/val", images)
    data = json.loads((shapes_dir / "annotations/instances_val.json").read_text())
    good = tmp_path / "good.json"
    good.write_text(json.dumps(data))
    out = tmp_path / "out"
    convert(good, images, out, "--workers", "2", "--num_shards", "2")
    return data, images, out


def _write(data, tmp_path: Path, text: str | None = None) -> Path:
    path = tmp_path / "bad.json"
    path.write_text(text if text is not None else json.dumps(data))
    return path


def _run_bad(path, images, out, *extra):
    """Runs the converter on bad input; checks the one-line error and the untouched output,
    and returns stderr."""
    before = snapshot(out)
    result = convert(path, images, out, "--num_shards", "2", *extra, check=False)
    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    assert result.stderr.startswith("error: "), result.stderr
    assert snapshot(out) == before, "the output directory changed"
    return result.stderr


def _first_polygon(data):
    return next(a for a in data["annotations"] if isinstance(a["segmentation"], list))


# --- numbers and types where they enter -----------------------------------------------------

@pytest.mark.parametrize("workers", ["1", "2"])
@pytest.mark.parametrize("value, phrase", [
    ("NaN", "not a finite number"), ("Infinity", "not a finite number"),
    ("1e9", "far beyond any image"), ("true", "not a number"),
])
def test_absurd_polygon_coordinates_are_per_annotation_errors(coco, tmp_path, value, phrase,
                                                              workers):
    data, images, out = coco
    ann = _first_polygon(data)
    ann["segmentation"][0][2] = "__VALUE__"
    path = _write(data, tmp_path, json.dumps(data).replace('"__VALUE__"', value))
    message = _run_bad(path, images, out, "--workers", workers)
    assert f"annotation {ann['id']}" in message and phrase in message, message
    summary_dir = tmp_path / "skipped"
    convert(path, images, summary_dir, "--workers", workers, "--skip_errors")
    summary = json.loads((summary_dir / "train.summary.json").read_text())
    assert summary["skipped"]["annotations"] == {"bad_polygon": 1}, summary


def test_a_huge_coordinate_within_bounds_of_the_file_but_not_of_the_image(coco, tmp_path):
    data, images, out = coco
    ann = _first_polygon(data)
    ann["segmentation"][0][2] = 5000.0  # the images are 128 px: more than an image outside
    message = _run_bad(_write(data, tmp_path), images, out, "--workers", "2")
    assert "more than an image size outside the 128x128 image" in message, message


@pytest.mark.parametrize("breaker, reason, phrase", [
    (lambda d: d["images"][0].__setitem__("id", [1, 2]), "bad_image_entry", "not an id"),
    (lambda d: d["images"][0].__setitem__("width", "wide"), "bad_image_entry",
     "width is 'wide', not an integer"),
    (lambda d: d["images"][0].__setitem__("file_name", "a\x00b.jpg"), "bad_image_entry",
     "NUL byte"),
    (lambda d: d["annotations"][0].__setitem__("image_id", {"id": 1}), "bad_annotation",
     "image_id is {'id': 1}, not an id"),
    (lambda d: d["annotations"][0].__setitem__("bbox", ["1", "2", "3", "4"]), "bad_box",
     "bbox[0] is '1', not a number"),
    (lambda d: d["annotations"][0].__setitem__("bbox", [1, 2, float("nan"), 4]), "bad_box",
     "not a finite number"),
    (lambda d: d["annotations"][0].__setitem__("iscrowd", "yes"), "bad_annotation",
     "iscrowd is 'yes', not 0 or 1"),
])
def test_wrong_types_are_errors_naming_the_field(coco, tmp_path, breaker, reason, phrase):
    data, images, out = coco
    breaker(data)
    message = _run_bad(_write(data, tmp_path), images, out, "--workers", "2")
    assert phrase in message, message
    skipped = tmp_path / "skipped"
    convert(_write(data, tmp_path), images, skipped, "--skip_errors")
    summary = json.loads((skipped / "train.summary.json").read_text())
    found = {**summary["skipped"]["images"], **summary["skipped"]["annotations"]}
    assert found.get(reason) == 1, summary


# --- run-length encodings --------------------------------------------------------------------

def _rle_annotation(data):
    ann = _first_polygon(data)
    image = next(i for i in data["images"] if i["id"] == ann["image_id"])
    return ann, image["height"], image["width"]


def test_rle_counts_short_of_the_image_are_refused(coco, tmp_path):
    data, images, out = coco
    ann, h, w = _rle_annotation(data)
    ann["segmentation"] = {"size": [h, w], "counts": [h * w - 10, 5]}  # 10 pixels undefined
    message = _run_bad(_write(data, tmp_path), images, out)
    assert f"covers {h * w - 5} pixels but the RLE size {h}x{w} has {h * w}" in message


@pytest.mark.parametrize("counts", ["garbage!!", "0`", "\x7f\x7f", "OO"])
def test_garbage_compressed_rle_strings_are_refused(coco, tmp_path, counts):
    data, images, out = coco
    ann, h, w = _rle_annotation(data)
    ann["segmentation"] = {"size": [h, w], "counts": counts}
    message = _run_bad(_write(data, tmp_path), images, out)
    assert f"annotation {ann['id']}" in message and "segmentation.counts" in message


def test_an_rle_of_another_size_than_the_image_file_is_refused(coco, tmp_path):
    from pycocotools import mask as mask_utils

    data, images, out = coco
    ann, h, w = _rle_annotation(data)
    for image in data["images"]:  # sizes unknown until the image file is read
        image.pop("width"), image.pop("height")
    rle = mask_utils.encode(np.asfortranarray(np.ones((h // 2, w), np.uint8)))
    ann["segmentation"] = {"size": [h // 2, w], "counts": rle["counts"].decode()}
    message = _run_bad(_write(data, tmp_path), images, out)
    assert f"RLE size {h // 2}x{w} differs from the image's {h}x{w}" in message, message


# --- boxes ---------------------------------------------------------------------------------

def test_a_box_far_from_its_mask_follows_the_mask_and_is_counted(coco, tmp_path):
    data, images, out = coco
    ann = _first_polygon(data)
    true_box = list(ann["bbox"])
    ann["bbox"] = [0.0, 0.0, 4.0, 4.0]  # nowhere near the object
    fixed = tmp_path / "fixed"
    convert(_write(data, tmp_path), images, fixed)
    summary = json.loads((fixed / "train.summary.json").read_text())
    assert summary["warnings"]["box_from_mask"] == 1, summary
    image_index = [i["id"] for i in data["images"]].index(ann["image_id"])
    example = read_examples(shard_glob(fixed, "train"))[image_index]
    first = [a for a in data["annotations"] if a["image_id"] == ann["image_id"]].index(ann)
    ymin, xmin, ymax, xmax = example.boxes[first] * 128
    assert abs(xmin - true_box[0]) <= 1 and abs(ymin - true_box[1]) <= 1
    assert abs(xmax - xmin - true_box[2]) <= 1.5 and abs(ymax - ymin - true_box[3]) <= 1.5


def test_a_box_that_cuts_off_part_of_its_mask_follows_the_mask(coco, tmp_path):
    """IoU above 0.5, but mask pixels 4 px outside the box: the record would fail --check."""
    data, images, _ = coco
    ann = max(_polygons(data), key=lambda a: a["bbox"][2])
    x, y, w, h = ann["bbox"]
    ann["bbox"] = [x, y, w - 4, h]
    out = tmp_path / "cut"
    convert(_write(data, tmp_path), images, out)
    summary = json.loads((out / "train.summary.json").read_text())
    assert summary["warnings"]["box_from_mask"] == 1, summary
    assert "px outside of its mask's box" in summary["examples"]["box_from_mask"][0]
    check = run_command("-m", "records.inspect", shard_glob(out, "train"), "--check")
    assert check.returncode == 0, check.stderr


def _polygons(data):
    return [a for a in data["annotations"] if isinstance(a["segmentation"], list)]


# --- files -----------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["fifo", "dev_zero", "directory"])
def test_only_regular_files_are_read(coco, tmp_path, kind):
    data, images, out = coco
    name = data["images"][1]["file_name"]
    (images / name).unlink()
    if kind == "fifo":
        os.mkfifo(images / name)
    elif kind == "dev_zero":
        (images / name).symlink_to("/dev/zero")
    else:
        (images / name).mkdir()
    message = _run_bad(_write(data, tmp_path), images, out, "--workers", "2")
    assert "only regular files are read" in message, message


def test_the_file_size_and_pixel_caps_apply_and_can_be_raised(coco, tmp_path):
    data, images, out = coco
    path = _write(data, tmp_path)
    message = _run_bad(path, images, out, "--max_image_pixels", "1000")
    assert "more than the limit of 1,000 (raise it with --max_image_pixels)" in message
    message = _run_bad(path, images, out, "--max_file_mb", "0")
    assert "--max_file_mb must be at least 1" in message


def test_an_open_images_mask_over_the_pixel_limit_is_an_error(tmp_path):
    """A 14000 x 14000 PNG (compressed to a few hundred KB) that Pillow would refuse with a
    DecompressionBombError traceback."""
    from data_prep.synthetic.__main__ import write_split

    root = tmp_path / "oid"
    paths = write_split(root, "train", 2, seed=3, formats=("openimages",))
    masks = paths["openimages"] / "masks"
    victim = sorted(masks.rglob("*.png"))[0]
    Image.new("1", (14000, 14000)).save(victim)
    out = tmp_path / "out"
    result = run_command("data_prep/create_tfrecords.py", "--format", "openimages",
                         "--annotations", str(paths["openimages"] / "train-annotations-object-segmentation.csv"),
                         "--images_dir", str(root / "images/train"), "--masks_dir", str(masks),
                         "--class_descriptions",
                         str(paths["openimages"] / "class-descriptions.csv"),
                         "--output_dir", str(out), "--no_progress")
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert "14000x14000 = 196,000,000 pixels, more than the limit" in result.stderr


# --- EXIF orientation -----------------------------------------------------------------------

@pytest.mark.parametrize("orientation", range(1, 9))
def test_our_orientation_transforms_are_pillows(tmp_path, orientation):
    from PIL import ImageOps

    from data_prep.conversion.orientation import display_to_stored, stored_to_display

    stored = np.arange(5 * 7, dtype=np.uint8).reshape(5, 7) * 7
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / "o.png"
    Image.fromarray(stored).save(path, exif=exif)
    with Image.open(path) as img:
        shown = np.asarray(ImageOps.exif_transpose(img))
    np.testing.assert_array_equal(stored_to_display(stored, orientation), shown)
    np.testing.assert_array_equal(display_to_stored(shown, orientation), stored)


def _rotated_square_photo(tmp_path: Path) -> tuple[Path, dict, np.ndarray]:
    """A 64x64 JPEG with EXIF orientation 6 whose stored pixels hold a bright square at
    rows 4-20, columns 8-28, annotated on the image as viewers show it (turned 90 degrees
    clockwise: the square is at rows 8-28, columns 43-59 there)."""
    pixels = np.full((64, 64, 3), 40, np.uint8)
    pixels[4:20, 8:28] = 230
    exif = Image.Exif()
    exif[0x0112] = 6
    images = tmp_path / "photos"
    images.mkdir()
    Image.fromarray(pixels).save(images / "phone.jpg", quality=95, exif=exif)
    expected = np.zeros((64, 64), np.uint8)
    expected[4:20, 8:28] = 1
    x0, y0, x1, y1 = 64 - 20, 8, 64 - 4, 28  # the square in display coordinates
    data = {"images": [{"id": 1, "file_name": "phone.jpg", "width": 64, "height": 64}],
            "categories": [{"id": 1, "name": "square"}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "iscrowd": 0,
                             "bbox": [x0, y0, x1 - x0, y1 - y0],
                             "segmentation": [[x0, y0, x1, y0, x1, y1, x0, y1]]}]}
    return images, data, expected


def test_exif_rotated_square_images_are_reported_and_the_convention_can_be_chosen(tmp_path):
    images, data, expected = _rotated_square_photo(tmp_path)
    path = _write(data, tmp_path)
    stored = tmp_path / "stored"
    result = convert(path, images, stored)
    summary = json.loads((stored / "train.summary.json").read_text())
    assert summary["warnings"] == {"exif_orientation": 1}, summary
    assert "--exif_orientation display" in summary["examples"]["exif_orientation"][0]
    assert "exif_orientation: 1" in result.stdout
    display = tmp_path / "display"
    convert(path, images, display, "--exif_orientation", "display")
    example = read_examples(shard_glob(display, "train"))[0]
    assert example.encoded_image == (images / "phone.jpg").read_bytes()  # pixels as stored
    mask = example.decode_masks()[0]
    np.testing.assert_array_equal(mask, expected)  # on the object in the stored pixels
    ymin, xmin, ymax, xmax = example.boxes[0] * 64
    assert (xmin, ymin, xmax, ymax) == (8, 4, 28, 20)
    wrong = read_examples(shard_glob(stored, "train"))[0].decode_masks()[0]
    assert (wrong & expected).sum() == 0  # taken as stored, the mask misses the object


def test_a_rotated_image_annotated_at_its_shown_size_names_the_flag(tmp_path):
    images, data, _ = _rotated_square_photo(tmp_path)
    pixels = np.full((48, 64, 3), 40, np.uint8)  # stored 64 wide, shown 48 wide
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(pixels).save(images / "phone.jpg", exif=exif)
    data["images"][0].update(width=48, height=64)
    result = convert(_write(data, tmp_path), images, tmp_path / "out", check=False)
    assert result.returncode == 1 and "pass --exif_orientation display" in result.stderr


# --- VIA ----------------------------------------------------------------------------------

def _via_project(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "via.json"
    path.write_text(text)
    return path


def _via(path: Path, images: Path, out: Path, *extra: str):
    return run_command("data_prep/create_tfrecords.py", "--format", "via", "--annotations",
                       str(path), "--images_dir", str(images), "--output_dir", str(out),
                       "--no_progress", *extra)


def test_a_via_file_with_a_repeated_key_is_ambiguous(tmp_path, coco):
    _, images, _ = coco
    name = sorted(p.name for p in images.iterdir())[0]
    entry = ('{"filename": "%s", "regions": [{"shape_attributes": {"name": "rect", "x": 1, '
             '"y": 1, "width": 9, "height": 9}, "region_attributes": {}}]}' % name)
    text = '{"%s1": %s, "%s1": %s}' % (name, entry, name, entry)  # the same key twice
    result = _via(_via_project(tmp_path, text), images, tmp_path / "via_out", "--default_class",
                  "x")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"the key '{name}1' appears twice in one JSON object" in result.stderr


def test_via_structure_errors_are_named_before_the_class_attribute(tmp_path, coco):
    _, images, _ = coco
    name = sorted(p.name for p in images.iterdir())[0]
    text = json.dumps({f"{name}1": {"filename": name, "regions": "not regions"}})
    result = _via(_via_project(tmp_path, text), images, tmp_path / "via_out",
                  "--class_attribute", "kind")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "'regions' is str, expected a list or an object" in result.stderr, result.stderr
    assert "is not a region attribute" not in result.stderr
    csv = tmp_path / "via.csv"
    csv.write_text("filename,file_size,file_attributes,region_count,region_id,"
                   "region_shape_attributes,region_attributes\n"
                   f'{name},1,{{}},1,0,{{"name":"rect","x":1,"y":1,"width":5,"height":5}},'
                   '{"kind":"a"}\n')  # JSON cells not quoted: the commas split them
    result = _via(csv, images, tmp_path / "via_out2", "--class_attribute", "kind")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "(are the JSON cells quoted?)" in result.stderr, result.stderr
    assert "is not a region attribute" not in result.stderr


# --- the output directory: all or nothing ------------------------------------------------------

def _convert_in_process(path: Path, images: Path, out: Path, **kwargs):
    from data_prep.conversion.dataset_writer import SplitPlan, write_dataset
    from data_prep.formats.coco import read_coco

    return write_dataset(read_coco(path, images), out, "coco", SplitPlan("train"),
                         num_shards=2, workers=kwargs.pop("workers", 0), progress=False,
                         **kwargs)


def test_an_output_path_that_is_a_file_is_a_one_line_error(coco, tmp_path):
    data, images, _ = coco
    target = tmp_path / "a_file"
    target.write_text("mine")
    result = convert(_write(data, tmp_path), images, target, check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith(f"error: output directory {target} exists and is not a "
                                    "directory")
    assert target.read_text() == "mine"


@pytest.mark.parametrize("errno_name", ["ENOSPC", "EROFS"])
def test_a_full_or_read_only_disk_while_writing_leaves_the_directory_as_it_was(
        coco, tmp_path, monkeypatch, errno_name):
    import errno

    from core.errors import OutputError
    from records import tfrecord_io

    data, images, out = coco
    before = snapshot(out)
    calls = []

    def failing_frame(data):
        calls.append(1)
        if len(calls) > 2:
            raise OSError(getattr(errno, errno_name), os.strerror(getattr(errno, errno_name)))
        return frame_record(data)

    frame_record = tfrecord_io.frame_record
    monkeypatch.setattr(tfrecord_io, "frame_record", failing_frame)
    with pytest.raises(OutputError, match=os.strerror(getattr(errno, errno_name))):
        _convert_in_process(_write(data, tmp_path), images, out)
    assert snapshot(out) == before


def test_a_failure_after_a_shard_was_renamed_puts_everything_back(coco, tmp_path, monkeypatch):
    import errno

    from core import directory_commit
    from core.errors import OutputError

    data, images, out = coco
    before = snapshot(out)
    real_replace, calls = os.replace, []

    def replace(src, dst):
        calls.append((src, dst))
        if Path(dst).name == "train-00001-of-00002.tfrecord" and ".tmp-" in Path(src).name:
            raise OSError(errno.ENOSPC, "No space left on device")  # shard 0 is in place
        return real_replace(src, dst)

    monkeypatch.setattr(directory_commit.os, "replace", replace)
    with pytest.raises(OutputError, match="the output directory is as it was before"):
        _convert_in_process(_write(data, tmp_path), images, out)
    monkeypatch.undo()
    assert snapshot(out) == before
    assert any(Path(dst).name == "train-00000-of-00002.tfrecord" and ".tmp-" in Path(src).name
               for src, dst in calls)


def test_a_truncated_shard_of_another_split_is_never_part_of_this_commit(coco, tmp_path):
    data, images, out = coco
    broken = out / "val-00000-of-00001.tfrecord"
    broken.write_bytes((out / "train-00000-of-00002.tfrecord").read_bytes()[:-7])
    result = convert(_write(data, tmp_path), images, out, "--num_shards", "2")
    assert "leaves out val" in result.stderr and "truncated" in result.stderr
    info = json.loads((out / "dataset_info.json").read_text())
    assert [s["name"] for s in info["splits"]] == ["train"]
    assert len(read_examples(shard_glob(out, "train"))) == len(data["images"])


def test_the_next_run_removes_what_a_killed_run_left(coco, tmp_path):
    data, images, out = coco
    dead = 2 ** 22 + 12345  # above this machine's pid_max: no such process
    leftovers = [out / f".train-00000-of-00002.tfrecord.tmp-{dead}-1",
                 out / f".train.summary.json.tmp-{dead}-3"]
    for path in leftovers:
        path.write_bytes(b"half written")
    (out / f".label_map.pbtxt.bak-{dead}").write_bytes((out / "label_map.pbtxt").read_bytes())
    set_aside = (out / "label_map.pbtxt").read_bytes()
    (out / "label_map.pbtxt").unlink()  # a commit killed between set-aside and rename
    convert(_write(data, tmp_path), images, out, "--num_shards", "2")
    assert not any(p.exists() for p in leftovers)
    assert not [p for p in out.iterdir() if p.name.startswith(".")]
    assert (out / "label_map.pbtxt").read_bytes() == set_aside


def test_a_failed_run_into_a_new_directory_leaves_no_directory(coco, tmp_path):
    data, images, _ = coco
    data["annotations"][0]["segmentation"] = [[1, 2, 3]]
    out = tmp_path / "new" / "out"
    result = convert(_write(data, tmp_path), images, out, check=False)
    assert result.returncode == 1 and not out.exists()


# --- a worker that dies ----------------------------------------------------------------------

def test_a_worker_that_dies_stops_the_run_naming_the_image(coco, tmp_path, monkeypatch):
    import signal

    from data_prep.conversion import image_record, local_runner

    data, images, out = coco
    victim = data["images"][3]["file_name"]
    real_load = image_record.load_image

    def load_or_die(path, limits):  # forked workers inherit this patched function
        if path.endswith(victim):
            os.kill(os.getpid(), signal.SIGKILL)
        return real_load(path, limits)

    monkeypatch.setattr(image_record, "load_image", load_or_die)
    monkeypatch.setattr(local_runner, "START_METHOD", "fork")  # fork-server workers would not
    before = snapshot(out)
    with pytest.raises(local_runner.WorkerDiedError) as err:
        _convert_in_process(_write(data, tmp_path), images, out, workers=2)
    assert repr(victim) in str(err.value) and "killed by SIGKILL" in str(err.value)
    assert snapshot(out) == before
