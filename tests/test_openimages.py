"""Open Images segmentation CSV -> records: real masks at other resolutions, the real class
hierarchy, Datumaro's format fixtures, synthetic scenes equal to their COCO twins, and bad
input (named file and CSV line, non-zero exit, nothing written; counted with --skip_errors)."""
from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from data_prep.annotations import AnnotationFileError
from data_prep.formats.openimages import read_class_descriptions
from data_prep.formats.openimages_classes import resolve_classes
from data_prep.synthetic.__main__ import write_split
from data_prep.synthetic.openimages_writer import COLUMNS, MIDS
from records.label_map import read_label_map
from records.reader import read_examples
from records.tfrecord_io import shard_glob
from tests.conftest import run_command

CSV_NAME = "train-annotations-object-segmentation.csv"
DOG, PIZZA, TAXI, PERSON = "/m/0bt9lr", "/m/0663v", "/m/0pg52", "/m/01g317"


def convert(csv_path: Path, images: Path, out: Path, descriptions: Path, *extra: str,
            check: bool = True):
    return run_command("data_prep/create_tfrecords.py", "--format", "openimages",
                       "--annotations", str(csv_path), "--images_dir", str(images),
                       "--class_descriptions", str(descriptions), "--output_dir", str(out),
                       "--no_progress", *extra, check=check)


def records(out: Path) -> dict:
    return {e.filename: e for e in read_examples(shard_glob(out, "train"))}


def read_rows(path: Path) -> list[list[str]]:
    with open(path, newline="") as f:
        return list(csv.reader(f))


def write_rows(path: Path, rows: list) -> Path:
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows(rows)
    return path


def mask_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(mask)
    return xs.min(), ys.min(), xs.max() + 1, ys.max() + 1


# --- real data ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def real_oid(realdata, tmp_path_factory) -> dict:
    """The 15 real masks with a segmentation CSV written from their names
    (<ImageID>_<MID without slashes>_<BoxID>.png) and boxes from the masks themselves."""
    root, tmp = realdata / "oid_masks_efoks/test", tmp_path_factory.mktemp("real_oid")
    images, masks = tmp / "images", tmp / "masks"
    images.mkdir(), masks.mkdir()
    for jpg in root.glob("*/images/*.jpg"):
        (images / jpg.name).symlink_to(jpg)
    rows, sources = [COLUMNS], {}
    for png in sorted(root.glob("*/segmentations/*.png")):
        (masks / png.name).symlink_to(png)
        image_id, mid, box_id = png.stem.split("_")
        mask = np.asarray(Image.open(png)) != 0
        x0, y0, x1, y1 = mask_box(mask)
        h, w = mask.shape
        rows.append([png.name, image_id, "/m/" + mid[1:], box_id, x0 / w, x1 / w, y0 / h,
                     y1 / h, "", ""])
        sources.setdefault(f"{image_id}.jpg", []).append(png)
    meta = realdata / "openimages_meta"
    return {"csv": write_rows(tmp / CSV_NAME, rows), "images": images, "masks": masks,
            "rows": rows, "sources": sources, "tmp": tmp,
            "descriptions": meta / "class-descriptions-boxable.csv",
            "oidv6": meta / "oidv6-class-descriptions.csv",
            "hierarchy": meta / "bbox_labels_600_hierarchy.json"}


def convert_real(real: dict, out: Path, *extra: str, csv_path: Path | None = None):
    return convert(csv_path or real["csv"], real["images"], out, real["descriptions"],
                   "--masks_dir", str(real["masks"]), "--hierarchy", str(real["hierarchy"]),
                   *extra)


@pytest.mark.realdata
def test_real_masks_are_resized_to_their_images_by_nearest_neighbour(real_oid, tmp_path):
    out = tmp_path / "out"
    convert(real_oid["csv"], real_oid["images"], out, real_oid["oidv6"],
            "--masks_dir", str(real_oid["masks"]))  # the 19,994-class file without header
    label_map = read_label_map(out / "label_map.pbtxt")
    # Descriptions order; MIDs as names, display names from the file (OD API convention).
    assert [(i.name, i.display_name) for i in label_map] == [
        (PIZZA, "Pizza"), (DOG, "Dog"), (TAXI, "Taxi")]
    examples = records(out)
    assert sorted(examples) == sorted(real_oid["sources"]) and len(examples) == 10
    ratios, checked = set(), 0
    for name, example in examples.items():
        masks = example.decode_masks()
        assert len(masks) == len(real_oid["sources"][name])
        for png, mask, box, text in zip(real_oid["sources"][name], masks, example.boxes,
                                        example.texts):
            source = (np.asarray(Image.open(png)) != 0).astype(np.uint8)
            (h, w), (H, W) = source.shape, mask.shape
            ratios.add(round(w / W, 3))
            # Nearest neighbour written independently: output pixel i samples floor(i*h/H).
            expected = source[(np.arange(H) * h) // H][:, (np.arange(W) * w) // W]
            np.testing.assert_array_equal(mask, expected)
            # PIL samples pixel centres instead: within 1 px of each other along the edges,
            # but a speck thinner than the sampling step can be caught by one only.
            pil = np.asarray(Image.fromarray(source * 255).resize((W, H), Image.NEAREST)) > 0
            farther = (pil & ~_dilate(mask)) | (mask.astype(bool) & ~_dilate(pil))
            assert farther.sum() <= max(1, mask.sum() // 10000)
            assert (pil & (mask > 0)).sum() / (pil | (mask > 0)).sum() > 0.93
            # The box is the resized mask's own, so it always encloses it.
            x0, y0, x1, y1 = mask_box(mask)
            np.testing.assert_allclose(box, [y0 / H, x0 / W, y1 / H, x1 / W], atol=1e-6)
            assert text == "/m/" + png.stem.split("_")[1][1:]
            checked += 1
    assert checked == 15
    assert {1.0, 1.562, 0.703} <= ratios  # same size, downscaled and upscaled masks


def _dilate(mask: np.ndarray) -> np.ndarray:
    padded = np.pad(mask.astype(bool), 1)
    return np.logical_or.reduce([padded[1 + dy:padded.shape[0] - 1 + dy,
                                        1 + dx:padded.shape[1] - 1 + dx]
                                 for dy in (-1, 0, 1) for dx in (-1, 0, 1)])


def _paths_to(node: dict, target: str, path: tuple = ()) -> list[tuple]:
    """Every root-to-class path in the raw JSON: an independent view of the hierarchy."""
    if node["LabelName"] == target:
        return [path]
    return [p for child in node.get("Subcategory", [])
            for p in _paths_to(child, target, path + (node["LabelName"],))]


@pytest.mark.realdata
def test_real_expand_hierarchy_adds_every_real_ancestor(real_oid, tmp_path):
    out = tmp_path / "out"
    convert_real(real_oid, out, "--expand_hierarchy")
    tree = json.loads(real_oid["hierarchy"].read_text())
    names = {i.name: i.display_name for i in read_label_map(out / "label_map.pbtxt")}
    assert "/m/0bl9f" not in names and "Entity" not in names.values()
    for name, example in records(out).items():
        masks = example.decode_masks()
        start = 0
        for png in real_oid["sources"][name]:
            mid = "/m/" + png.stem.split("_")[1][1:]
            ancestors = {a for p in _paths_to(tree, mid) for a in p[1:]}
            group = example.texts[start:start + 1 + len(ancestors)]
            assert group[0] == mid and set(group[1:]) == ancestors
            for mask in masks[start + 1:start + len(group)]:
                np.testing.assert_array_equal(mask, masks[start])  # same mask, other label
            start += len(group)
        assert start == len(example.texts)
    dog = next(e for e in records(out).values() if DOG in e.texts)
    assert [names[t] for t in dog.texts[:4]] == ["Dog", "Carnivore", "Mammal", "Animal"]


@pytest.mark.realdata
def test_real_layer0_and_layer1(real_oid, tmp_path):
    """A made-up Person row (depth 0, with children) joins the real dog, pizza and taxi."""
    pizza_image = "0a9e4fa5b0806fc2"
    person = [next(r for r in real_oid["rows"] if r[1] == pizza_image)[0], pizza_image,
              PERSON, "person01", 0.0, 0.25, 0.0, 0.25, "", ""]
    csv_path = write_rows(real_oid["tmp"] / "with_person.csv", real_oid["rows"] + [person])
    out0 = tmp_path / "layer0"
    convert_real(real_oid, out0, "--hierarchy_group", "layer0", csv_path=csv_path)
    labels = {i.name: i.display_name for i in read_label_map(out0 / "label_map.pbtxt")}
    assert sorted(labels.values()) == ["Animal", "Food", "Person", "Vehicle"]
    by_image = {n: [labels[t] for t in e.texts] for n, e in records(out0).items()}
    assert by_image[f"{pizza_image}.jpg"] == ["Food", "Food", "Person"]
    assert by_image["00bd3f67d6e5d850.jpg"] == ["Animal", "Animal"]

    out1 = tmp_path / "layer1"
    convert_real(real_oid, out1, "--hierarchy_group", "layer1", csv_path=csv_path)
    labels = {i.name: i.display_name for i in read_label_map(out1 / "label_map.pbtxt")}
    assert list(labels.values()) == ["Pizza", "Dog", "Taxi"]  # dog (depth 3) is kept
    example = records(out1)[f"{pizza_image}.jpg"]
    assert [labels[t] for t in example.texts] == ["Pizza", "Pizza"]
    pixels = example.decode_image().astype(int)
    h, w = pixels.shape[:2]
    assert np.abs(pixels[:h // 4 - 16, :w // 4 - 16] - 128).max() <= 3  # the person, hidden
    assert np.abs(pixels[h // 2:, w // 2:] - 128).mean() > 10
    summary = json.loads((out1 / "train.summary.json").read_text())
    assert summary["warnings"] == {"gray_filled": 1}


@pytest.mark.realdata
def test_datumaro_fixtures_v6_csv_and_v5_descriptions(realdata, tmp_path):
    """v6: empty Clicks, a 1-bit mask, a hierarchy whose root is /m/x; v5: no header."""
    base = realdata / "datumaro_fixtures/tests/assets/open_images_dataset"
    v6, v5 = base / "v6", base / "v5"
    assert read_class_descriptions(v6 / "annotations/oidv6-class-descriptions.csv") == {
        f"/m/{i}": f"Generic label #{i}" for i in range(4)}
    assert list(read_class_descriptions(v5 / "annotations/class-descriptions.csv")) == [
        "/m/0", "/m/1"]
    csv_path = v6 / "annotations/train-annotations-object-segmentation.csv"
    args = (csv_path, v6 / "images/train", tmp_path / "plain",
            v5 / "annotations/class-descriptions.csv", "--masks_dir", str(v6 / "masks/train"),
            "--hierarchy", str(v6 / "annotations/bbox_labels_600_hierarchy.json"))
    convert(*args, "--expand_hierarchy")
    [item] = read_label_map(tmp_path / "plain/label_map.pbtxt")
    assert (item.name, item.display_name) == ("/m/0", "Generic label #0")
    [example] = records(tmp_path / "plain").values()
    assert example.texts == ["/m/0"]  # /m/x is the root: no ancestor to add
    expected = np.asarray(Image.open(v6 / "masks/train/b_m0_01234567.png")).astype(np.uint8)
    np.testing.assert_array_equal(example.decode_masks()[0], expected)
    # layer1: /m/0 has a child (/m/1), so its box (x 0.2-1, y 0.3-0.5 of 8x2) turns gray.
    out = tmp_path / "layer1"
    convert(*args[:2], out, *args[3:], "--hierarchy_group", "layer1")
    [example] = records(out).values()
    assert example.texts == [] and read_label_map(out / "label_map.pbtxt").names == []
    gray = example.decode_image()[:, :, 0].astype(int)
    assert gray[0, 2:].mean() > 100 and gray[1].max() < 60


@pytest.mark.realdata
def test_classes_by_display_name_or_mid(realdata, shapes_oid):
    descriptions = read_class_descriptions(shapes_oid["folder"] / "class-descriptions.csv")
    assert resolve_classes(["star", MIDS["circle"], "Star"], descriptions, "d.csv") == [
        MIDS["star"], MIDS["circle"]]
    with pytest.raises(AnnotationFileError, match="'Circel' is not a class of d.csv "
                       r"\(close matches: 'Circle'\)"):
        resolve_classes(["Circel"], descriptions, "d.csv")
    oidv6 = read_class_descriptions(realdata / "openimages_meta/oidv6-class-descriptions.csv")
    assert oidv6["/m/01c_0l"] == "Ducks, geese and swans"
    assert oidv6["/m/02wvth"] == 'Fiat 500 "topolino"' and len(oidv6) == 19994
    with pytest.raises(AnnotationFileError, match="'Ball' names 2 classes"):
        resolve_classes(["Ball"], oidv6, "oidv6.csv")


# --- synthetic data ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def shapes_oid(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("shapes_oid")
    write_split(root, "train", 12, seed=1, formats=("coco", "openimages"))
    folder = root / "annotations/openimages_train"
    return {"root": root, "folder": folder, "images": root / "images/train"}


@pytest.fixture
def oid(shapes_oid, tmp_path) -> dict:
    """A private copy of the synthetic Open Images split that a test may break."""
    shutil.copytree(shapes_oid["images"], tmp_path / "images")
    shutil.copytree(shapes_oid["folder"], tmp_path / "oid")
    folder = tmp_path / "oid"
    return {"csv": folder / CSV_NAME, "images": tmp_path / "images", "folder": folder,
            "descriptions": folder / "class-descriptions.csv",
            "hierarchy": folder / "hierarchy.json", "out": tmp_path / "out"}


def convert_oid(oid: dict, *extra: str, check: bool = True):
    return convert(oid["csv"], oid["images"], oid["out"], oid["descriptions"],
                   "--hierarchy", str(oid["hierarchy"]), *extra, check=check)


def test_synthetic_openimages_converts_to_the_same_masks_as_coco(shapes_oid, tmp_path):
    root = shapes_oid["root"]
    run_command("data_prep/create_tfrecords.py", "--format", "coco", "--annotations",
                str(root / "annotations/instances_train.json"), "--images_dir",
                str(shapes_oid["images"]), "--output_dir", str(tmp_path / "coco"),
                "--no_progress", check=True)
    folder = shapes_oid["folder"]
    convert(folder / CSV_NAME, shapes_oid["images"], tmp_path / "oid",
            folder / "class-descriptions.csv")  # masks: the default 'masks' beside the CSV
    coco, oid = records(tmp_path / "coco"), records(tmp_path / "oid")
    assert set(oid) <= set(coco) and all(coco[n].num_instances == 0 for n in set(coco) - set(oid))
    instances = 0
    for name, example in oid.items():
        twin = coco[name]
        # 2x upscaled masks come back exactly: not even the 1 px edge tolerance is needed.
        np.testing.assert_array_equal(example.decode_masks(), twin.decode_masks())
        np.testing.assert_array_equal(example.boxes, twin.boxes)
        assert example.texts == [MIDS[t] for t in twin.texts]
        instances += example.num_instances
    assert instances > 30
    mask = Image.open(next((folder / "masks").iterdir()))
    assert mask.mode == "1" and mask.size == (256, 256)


def test_layer1_hides_unlabelled_parents_under_gray(oid):
    rows = read_rows(oid["csv"])
    first_image = rows[1][1]
    image_rows = [r for r in rows[1:] if r[1] == first_image]
    assert len(image_rows) >= 2
    hidden, dropped = image_rows[0], image_rows[1]
    hidden[2], dropped[2] = "/m/shape", "/m/blob"  # depth 0 with children; depth-0 leaf
    duplicate = rows[-1][:]  # a Shape box on an object labelled as its subclass: not hidden
    duplicate[2], duplicate[3] = "/m/shape", "dup"
    write_rows(oid["csv"], rows + [duplicate])
    convert_oid(oid, "--hierarchy_group", "layer1")
    examples = records(oid["out"])
    example = examples[f"{first_image}.jpg"]
    assert len(example.texts) == len(image_rows) - 2
    x0, x1, y0, y1 = (round(float(v) * 128) for v in hidden[4:8])
    inside = example.decode_image()[y0 + 2:y1 - 2, x0 + 2:x1 - 2].astype(int)
    assert (np.abs(inside - 128) <= 4).all(axis=2).mean() > 0.95  # JPEG: gray up to +-4
    x0, x1, y0, y1 = (round(float(v) * 128) for v in duplicate[4:8])
    kept = examples[f"{duplicate[1]}.jpg"].decode_image()[y0:y1, x0:x1].astype(int)
    assert (np.abs(kept - 128) <= 4).all(axis=2).mean() < 0.5
    summary = json.loads((oid["out"] / "train.summary.json").read_text())
    assert summary["warnings"] == {"gray_filled": 1}
    assert "/m/shape" not in read_label_map(oid["out"] / "label_map.pbtxt").names


def test_classes_combined_with_groups_and_expansion(oid):
    convert_oid(oid, "--hierarchy_group", "layer0")
    assert [i.display_name for i in read_label_map(oid["out"] / "label_map.pbtxt")] == [
        "Shape", "Symbol"]  # star: depth 1 under Symbol beats depth 2 under Polygon
    shutil.rmtree(oid["out"])
    convert_oid(oid, "--hierarchy_group", "layer0", "--classes", "shape")
    texts = [t for e in records(oid["out"]).values() for t in e.texts]
    assert set(texts) == {"/m/shape"}
    shutil.rmtree(oid["out"])
    convert_oid(oid, "--expand_hierarchy", "--classes", "Polygon,/m/shape_circle")
    assert read_label_map(oid["out"] / "label_map.pbtxt").names == ["/m/shape_polygon",
                                                                    MIDS["circle"]]
    labels = [r[2] for r in read_rows(oid["csv"])[1:]]
    texts = [t for e in records(oid["out"]).values() for t in e.texts]
    assert texts.count("/m/shape_polygon") == len(labels) - labels.count(MIDS["circle"])
    assert texts.count(MIDS["circle"]) == labels.count(MIDS["circle"]) > 0
    result = convert_oid(oid, "--hierarchy_group", "layer0", "--classes", "Circle", check=False)
    assert result.returncode == 1
    assert "'Circle' (/m/shape_circle) is not a layer0 class (depth 1" in result.stderr
    assert "'Shape'" in result.stderr


def test_a_mask_empty_after_resizing_is_skipped_and_counted(oid):
    path = oid["folder"] / "masks" / read_rows(oid["csv"])[1][0]
    speck = np.zeros((256, 256), bool)
    speck[101, 101] = True  # odd pixels are never sampled when halving
    Image.fromarray(speck).save(path)
    convert_oid(oid)
    summary = json.loads((oid["out"] / "train.summary.json").read_text())
    assert summary["warnings"] == {"empty_mask": 1}
    assert "line 2" in summary["examples"]["empty_mask"][0]


def _missing_mask(rows, oid):
    (oid["folder"] / "masks" / rows[3][0]).unlink()
    return "missing_mask", "line 4", rows[3][0], "annotations"


def _missing_image(rows, oid):
    (oid["images"] / f"{rows[1][1]}.jpg").unlink()
    return "missing_image", f"image {rows[1][1]}", "does not exist", "images"


def _class_not_in_descriptions(rows, oid):
    rows[2][2] = "/m/unknown"
    return "class_not_in_descriptions", "line 3", "'/m/unknown' is not in", "annotations"


def _short_row(rows, oid):
    del rows[5][4:]
    return "bad_row", "line 6", "has 4 fields, the header 10", "annotations"


def _escaping_image_id(rows, oid):
    rows[1][1] = "../../etc/passwd"
    return "bad_image_id", "line 2", "escapes the images directory", "images"


@pytest.mark.parametrize("breaker", [_missing_mask, _missing_image, _class_not_in_descriptions,
                                     _short_row, _escaping_image_id],
                         ids=lambda f: f.__name__.strip("_"))
def test_bad_rows_stop_with_file_and_line_or_are_counted(oid, breaker):
    rows = read_rows(oid["csv"])
    reason, record, phrase, scope = breaker(rows, oid)
    write_rows(oid["csv"], rows)
    result = convert_oid(oid, check=False)
    assert result.returncode == 1
    assert all(s in result.stderr for s in (record, phrase, "--skip_errors")), result.stderr
    assert str(oid["csv"]) in result.stderr
    assert not oid["out"].exists() or not any(oid["out"].iterdir())
    convert_oid(oid, "--skip_errors")
    summary = json.loads((oid["out"] / "train.summary.json").read_text())
    assert summary["skipped"][scope] == {reason: 1}, summary
    assert any(record in m for m in summary["examples"][reason])
    images = {r[1] for r in read_rows(oid["csv"])[1:]}
    assert summary["images"] == len(images) - (scope == "images")


@pytest.mark.parametrize("change, phrase", [
    (lambda oid: oid["csv"].write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00"), "not UTF-8 text"),
    (lambda oid: oid["csv"].write_text('{"images": []}'), "missing column(s) MaskPath"),
    (lambda oid: write_rows(oid["csv"], [r[1:] for r in read_rows(oid["csv"])]),
     "missing column(s) MaskPath; the first line has ImageID, LabelName"),
    (lambda oid: oid["csv"].write_text("ImageID,Source,LabelName,XMin\n"), "a box annotations"),
    (lambda oid: oid["csv"].write_text(""), "the file is empty"),
    (lambda oid: oid["csv"].unlink(), "does not exist"),
    (lambda oid: oid["descriptions"].write_text("/m/a,A,extra\n"), "line 1: expected 'MID"),
    (lambda oid: oid["hierarchy"].write_text("[]"), "top level must be an object"),
])
def test_unusable_files_are_named_and_nothing_is_written(oid, change, phrase):
    change(oid)
    result = convert_oid(oid, "--skip_errors", check=False)
    assert result.returncode == 1 and phrase in result.stderr, result.stderr
    assert not oid["out"].exists()


def test_bad_class_options_are_errors(oid):
    result = convert_oid(oid, "--classes", "Circel,Star", check=False)
    assert result.returncode == 1
    assert "--classes: 'Circel' is not a class of" in result.stderr, result.stderr
    result = convert(oid["csv"], oid["images"], oid["out"], oid["descriptions"],
                     "--hierarchy_group", "layer1", check=False)  # no --hierarchy
    assert result.returncode == 1 and "need --hierarchy" in result.stderr, result.stderr
    assert not oid["out"].exists()


def test_label_map_carries_the_hierarchy_as_ancestor_and_descendant_ids(oid):
    convert_oid(oid, "--expand_hierarchy")
    label_map = read_label_map(oid["out"] / "label_map.pbtxt")
    by_name = {item.display_name: item for item in label_map}
    star = by_name["Star"]
    # Star sits under Polygon (under Shape) and under Symbol.
    assert {label_map.get(i).display_name for i in star.ancestor_ids} == {
        "Polygon", "Shape", "Symbol"}
    assert {label_map.get(i).display_name for i in by_name["Shape"].descendant_ids} >= {
        "Circle", "Polygon", "Square", "Triangle", "Star"}
    assert by_name["Circle"].descendant_ids == ()
