"""COCO files as annotation tools export them: each tool's quirk is accepted with a warning
counted in the summary when its meaning is plain, and is a clear error when it is not. Each
fixture is the synthetic val split rewritten the way that tool writes COCO (the shapes of
their exporters, described in docs/data_formats.md)."""
from __future__ import annotations

import contextlib
import copy
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from data_prep import create_tfrecords
from data_prep.annotations import AnnotationFileError
from data_prep.conversion.image_record import ConversionError
from records.label_map import read_category_ids, read_label_map
from records.reader import read_examples
from records.record_checks import check_records
from records.tfrecord_io import shard_glob
from tests.coco_helpers import uncompressed_rle


@pytest.fixture
def val(shapes_dir, tmp_path) -> tuple[dict, Path]:
    """The synthetic val split (6 images, 128 px) and a private copy of its images."""
    images = tmp_path / "images"
    shutil.copytree(shapes_dir / "images/val", images)
    return json.loads((shapes_dir / "annotations/instances_val.json").read_text()), images


def convert(data: dict, images: Path, out: Path, *flags: str) -> dict:
    """Converts in this process; returns the summary, after checking every record."""
    path = out.parent / f"{out.name}.json"
    path.write_text(json.dumps(data))
    with contextlib.redirect_stdout(io.StringIO()):
        create_tfrecords.main(["--format", "coco", "--annotations", str(path), "--images_dir",
                               str(images), "--output_dir", str(out), "--workers", "1",
                               "--no_progress", "--no_tfds_metadata", *flags])
    summary = json.loads((out / "train.summary.json").read_text())
    checked = check_records(shard_glob(out, "train"), read_label_map(out / "label_map.pbtxt"))
    assert (checked.records, checked.instances) == (summary["images"], summary["instances"])
    return summary


def instances(data: dict) -> int:
    return len(data["annotations"])


# --- VIA (VGG Image Annotator) ------------------------------------------------------------

def via_export(data: dict) -> dict:
    """As VIA 2's export_project_to_coco_format writes it: info and licenses of its own, a
    category per option of each dropdown/radio attribute (supercategory: the attribute),
    flickr_url/coco_url on images, a point region as keypoints with `segmentation [[]]`,
    `area []` and `bbox []`, a region matching two attribute values pushed twice, and a
    category listed again (two attributes sharing option ids)."""
    via = copy.deepcopy(data)
    via["info"] = {"year": 2024, "version": "1.0", "description": "VIA project exported to "
                   "COCO format using VGG Image Annotator (http://www.robots.ox.ac.uk/~vgg/"
                   "software/via/)", "contributor": "", "url": "", "date_created": ""}
    via["licenses"] = [{"id": 0, "name": "Unknown License", "url": ""}]
    for category in via["categories"]:
        category["supercategory"] = "shape"
    via["categories"].append(dict(via["categories"][0]))
    for image in via["images"]:
        image.update(license=0, flickr_url=image["file_name"], coco_url=image["file_name"],
                     date_captured="")
    next_id = max(a["id"] for a in via["annotations"]) + 1
    via["annotations"].append({"segmentation": [[]], "area": [], "bbox": [], "iscrowd": 0,
                               "keypoints": [40, 50, 2], "num_keypoints": 1, "id": next_id,
                               "image_id": via["images"][0]["id"], "category_id": 1})
    via["annotations"].insert(3, copy.deepcopy(via["annotations"][2]))
    return via


def test_via_export_repeats_are_kept_once_and_points_skipped(val, tmp_path):
    data, images = val
    summary = convert(via_export(data), images, tmp_path / "out")
    assert summary["warnings"] == {"duplicate_category": 1, "duplicate_annotation": 1,
                                   "keypoints_only": 1}, summary["warnings"]
    assert summary["instances"] == instances(data) and not summary["skipped"]["annotations"]
    assert [item.name for item in read_label_map(tmp_path / "out/label_map.pbtxt")] == [
        c["name"] for c in data["categories"]]


def test_one_category_id_with_two_names_is_an_error(val, tmp_path):
    data, images = val
    conflicting = via_export(data)
    conflicting["categories"][-1]["name"] = "blob"
    with pytest.raises(AnnotationFileError, match="category id 1 is used twice, for 'circle' "
                       "and 'blob'"):
        convert(conflicting, images, tmp_path / "out")
    assert not (tmp_path / "out").exists()


# --- Roboflow -----------------------------------------------------------------------------

def roboflow_export(data: dict) -> dict:
    """As Roboflow's COCO download (_annotations.coco.json): the data set's name as category
    0 with supercategory "none", every class with that name as supercategory, ids from 0."""
    roboflow = copy.deepcopy(data)
    roboflow["categories"] = [{"id": 0, "name": "shapes-dataset", "supercategory": "none"}] + [
        {"id": c["id"], "name": c["name"], "supercategory": "shapes-dataset"}
        for c in data["categories"]]
    shift = {image["id"]: index for index, image in enumerate(roboflow["images"])}
    for image in roboflow["images"]:
        image.update(id=shift[image["id"]], license=1, date_captured="2024-01-01T00:00:00+00:00")
    for index, annotation in enumerate(roboflow["annotations"]):
        annotation.update(id=index, image_id=shift[annotation["image_id"]])
    return roboflow


def test_roboflow_data_set_category_is_left_out(val, tmp_path):
    data, images = val
    summary = convert(roboflow_export(data), images, tmp_path / "out")
    assert summary["warnings"] == {"grouping_category": 1}
    assert "'shapes-dataset'" in summary["examples"]["grouping_category"][0]
    label_map = read_label_map(tmp_path / "out/label_map.pbtxt")
    assert [(i.id, i.name) for i in label_map] == [(c["id"], c["name"])
                                                   for c in data["categories"]]
    assert summary["instances"] == instances(data)


def test_a_used_supercategory_stays_a_class(val, tmp_path):
    data, images = val
    roboflow = roboflow_export(data)
    roboflow["annotations"][0]["category_id"] = 0
    summary = convert(roboflow, images, tmp_path / "out", "--contiguous_ids")
    assert "grouping_category" not in summary["warnings"]
    assert read_label_map(tmp_path / "out/label_map.pbtxt").names[0] == "shapes-dataset"


# --- Label Studio ------------------------------------------------------------------------

def label_studio_export(data: dict) -> dict:
    """As label-studio-converter's convert_to_coco writes it: categories {id, name} from 0
    without supercategory, image ids from 0 with file_name the downloaded path (Windows
    separators on Windows, or Label Studio's own media path), `ignore: 0`, an info block,
    no licenses, and a rectangle as `segmentation []` with its bbox."""
    studio = {"images": [], "categories": [], "annotations": [],
              "info": {"year": 2024, "version": "1.0", "description": "",
                       "contributor": "Label Studio", "url": "", "date_created": ""}}
    category = {c["id"]: index for index, c in enumerate(data["categories"])}
    studio["categories"] = [{"id": category[c["id"]], "name": c["name"]}
                            for c in data["categories"]]
    image_ids = {}
    for index, image in enumerate(data["images"]):
        image_ids[image["id"]] = index
        name = (f"images\\{image['file_name']}" if index % 2 else
                f"..\\..\\label-studio\\media\\upload\\4\\{image['file_name']}")
        studio["images"].append({"width": image["width"], "height": image["height"],
                                 "id": index, "file_name": name})
    for annotation in data["annotations"]:
        studio["annotations"].append({
            "id": len(studio["annotations"]), "image_id": image_ids[annotation["image_id"]],
            "category_id": category[annotation["category_id"]],
            "segmentation": annotation["segmentation"], "bbox": annotation["bbox"],
            "ignore": 0, "iscrowd": 0, "area": annotation["area"]})
    return studio


def test_label_studio_ids_from_zero_and_its_paths(val, tmp_path):
    data, images = val
    (images / "images").mkdir()
    for index, image in enumerate(data["images"]):
        if index % 2:  # what "images\\a.jpg" means: images/a.jpg below --images_dir
            (images / image["file_name"]).rename(images / "images" / image["file_name"])
    summary = convert(label_studio_export(data), images, tmp_path / "out")
    count = len(data["images"])
    assert summary["warnings"] == {"category_ids_renumbered": 1, "windows_path": count,
                                   "image_found_by_file_name": count - count // 2}
    assert summary["images"] == count and summary["instances"] == instances(data)
    label_map = read_label_map(tmp_path / "out/label_map.pbtxt")
    assert [(i.id, i.name) for i in label_map] == [(c["id"], c["name"])
                                                   for c in data["categories"]]
    assert read_category_ids(tmp_path / "out/label_map.pbtxt") == {1: 0, 2: 1, 3: 2, 4: 3}


def test_label_studio_rectangles_have_no_mask(val, tmp_path):
    data, images = val
    studio = label_studio_export(data)
    for image in studio["images"]:
        image["file_name"] = image["file_name"].rsplit("\\", 1)[1]
    studio["annotations"][0]["segmentation"] = []
    with pytest.raises(ConversionError, match=r"annotation 0 .*no segmentation .*a box only"):
        convert(studio, images, tmp_path / "out")
    summary = convert(studio, images, tmp_path / "out", "--skip_errors")
    assert summary["skipped"]["annotations"] == {"no_segmentation": 1}


# --- CVAT (Datumaro) ---------------------------------------------------------------------

def cvat_export(data: dict) -> dict:
    """As CVAT's COCO 1.0 export (Datumaro) writes it: licenses and an empty info, categories
    with supercategory "", images with license, flickr_url, coco_url and date_captured 0,
    every annotation with `attributes` (occluded, rotation), and masks as uncompressed RLE
    with iscrowd 1."""
    cvat = copy.deepcopy(data)
    cvat["licenses"] = [{"name": "", "id": 0, "url": ""}]
    cvat["info"] = {"contributor": "", "date_created": "", "description": "", "url": "",
                    "version": "", "year": ""}
    for category in cvat["categories"]:
        category["supercategory"] = ""
    sizes = {}
    for image in cvat["images"]:
        image.update(license=0, flickr_url="", coco_url="", date_captured=0)
        sizes[image["id"]] = (image["height"], image["width"])
    for index, annotation in enumerate(cvat["annotations"]):
        annotation["attributes"] = {"occluded": False, "rotation": 0.0}
        if index % 2:
            h, w = sizes[annotation["image_id"]]
            mask = mask_utils.decode(mask_utils.merge(
                mask_utils.frPyObjects(annotation["segmentation"], h, w)))
            annotation.update(segmentation=uncompressed_rle(mask), iscrowd=1)
    return cvat


def test_cvat_masks_are_crowd_unless_asked(val, tmp_path):
    data, images = val
    cvat = cvat_export(data)
    masks = sum(a["iscrowd"] for a in cvat["annotations"])
    summary = convert(cvat, images, tmp_path / "crowd")
    assert summary["warnings"] == {"crowd_mask": masks} and summary["crowd_instances"] == masks
    assert "--crowd_masks_as_objects" in summary["examples"]["crowd_mask"][0]
    summary = convert(cvat, images, tmp_path / "objects", "--crowd_masks_as_objects")
    assert summary["warnings"] == {"crowd_mask_as_object": masks}
    assert summary["crowd_instances"] == 0 and summary["instances"] == instances(data)
    for example in read_examples(shard_glob(tmp_path / "objects", "train")):
        assert not np.any(example.is_crowd)


# --- makesense.ai --------------------------------------------------------------------------

def makesense_export(data: dict) -> dict:
    """As make-sense's COCOExporter writes it: info with the project name only, categories
    {id, name} from 1, annotation ids from 0, and no category_id on a polygon that was left
    without a label (its labelId maps to undefined, which JSON.stringify leaves out)."""
    makesense = {"info": {"description": "my-project-name"},
                 "images": [{k: i[k] for k in ("id", "width", "height", "file_name")}
                            for i in data["images"]],
                 "annotations": [], "categories": [{"id": c["id"], "name": c["name"]}
                                                   for c in data["categories"]]}
    for index, annotation in enumerate(data["annotations"]):
        makesense["annotations"].append({
            "id": index, "iscrowd": 0, "image_id": annotation["image_id"],
            "category_id": annotation["category_id"],
            "segmentation": annotation["segmentation"], "bbox": annotation["bbox"],
            "area": annotation["area"]})
    del makesense["annotations"][1]["category_id"]
    return makesense


def test_makesense_unlabelled_polygon_is_a_clear_error(val, tmp_path):
    data, images = val
    makesense = makesense_export(data)
    with pytest.raises(ConversionError, match="annotation 1: has no category_id "
                       r"\(makesense.ai exports polygons left without a label so\)"):
        convert(makesense, images, tmp_path / "out")
    summary = convert(makesense, images, tmp_path / "out", "--skip_errors")
    assert summary["skipped"]["annotations"] == {"no_category": 1}
    assert summary["instances"] == instances(data) - 1 and not summary["warnings"]


# --- ids written as text, flat polygons ----------------------------------------------------

def test_ids_written_as_text_are_matched(val, tmp_path):
    data, images = val
    texts = copy.deepcopy(data)
    texts["annotations"][0]["image_id"] = str(texts["annotations"][0]["image_id"])
    texts["annotations"][1]["category_id"] = str(texts["annotations"][1]["category_id"])
    summary = convert(texts, images, tmp_path / "out")
    assert summary["warnings"] == {"id_type_mismatch": 2}
    assert summary["instances"] == instances(data)
    examples = {e.source_id: e for e in read_examples(shard_glob(tmp_path / "out", "train"))}
    first = texts["annotations"][0]
    assert str(first["image_id"]) in examples  # the numeric image ids stay the source ids


def test_text_that_names_no_id_is_still_an_error(val, tmp_path):
    data, images = val
    texts = copy.deepcopy(data)
    texts["annotations"][0]["image_id"] = "999"
    with pytest.raises(ConversionError, match="names image id '999'"):
        convert(texts, images, tmp_path / "out")


def test_a_polygon_written_as_one_flat_list_is_read_and_counted(val, tmp_path):
    data, images = val
    flat = copy.deepcopy(data)
    polygons = [a for a in flat["annotations"] if len(a["segmentation"]) == 1][:2]
    for annotation in polygons:
        annotation["segmentation"] = annotation["segmentation"][0]
    summary = convert(flat, images, tmp_path / "out")
    assert summary["warnings"] == {"flat_polygon": 2}
    assert summary["instances"] == instances(data)
