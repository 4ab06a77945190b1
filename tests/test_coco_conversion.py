"""COCO JSON -> sharded TFRecords: masks equal pycocotools' annToMask bit for bit."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO

from records.label_map import read_label_map
from records.reader import read_examples
from records.tfrecord_io import shard_glob
from tests.coco_helpers import convert, rich_coco


def _assert_masks_match_ann_to_mask(annotation_file: Path, output_dir: Path, split: str):
    coco = COCO(str(annotation_file))
    examples = read_examples(shard_glob(output_dir, split))
    label_map = read_label_map(output_dir / "label_map.pbtxt")
    category_names = {c["id"]: c["name"] for c in coco.loadCats(coco.getCatIds())}
    checked = 0
    for example in examples:
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[int(example.source_id)]))
        masks = example.decode_masks()
        assert len(anns) == len(masks)
        for ann, mask, label, crowd in zip(anns, masks, example.labels, example.is_crowd):
            np.testing.assert_array_equal(mask, coco.annToMask(ann))
            assert label_map.name_of(int(label)) == category_names[ann["category_id"]]
            assert crowd == ann.get("iscrowd", 0)
            checked += 1
    return examples, checked


def test_every_segmentation_form_matches_ann_to_mask(shapes_dir, tmp_path):
    data = rich_coco(shapes_dir)
    annotation_file = tmp_path / "rich.json"
    annotation_file.write_text(json.dumps(data))
    out = tmp_path / "records"
    convert(annotation_file, shapes_dir / "images/train", out, "--num_shards", "3",
            "--workers", "2")
    examples, checked = _assert_masks_match_ann_to_mask(annotation_file, out, "train")
    assert checked == len(data["annotations"]) and len(examples) == len(data["images"])
    kinds = Counter(type(a["segmentation"]).__name__ + ("-crowd" if a["iscrowd"] else "")
                    for a in data["annotations"])
    assert kinds["dict"] and kinds["list"] and kinds["dict-crowd"] and kinds["list-crowd"]
    assert any(len(a["segmentation"]) == 2 for a in data["annotations"]
               if isinstance(a["segmentation"], list))
    # Non-contiguous ids 3, 7, 12, 90 stay the label-map ids, as the OD API keeps COCO's.
    label_map = read_label_map(out / "label_map.pbtxt")
    assert [(i.id, i.name) for i in label_map] == [(3, "circle"), (7, "square"), (12, "star"),
                                                   (90, "triangle")]
    assert not (out / "category_ids.json").exists()
    # Image bytes are the original files, and the source ids are the numeric image ids.
    by_id = {img["id"]: img for img in data["images"]}
    for example in examples:
        original = shapes_dir / "images/train" / by_id[int(example.source_id)]["file_name"]
        assert example.encoded_image == original.read_bytes()
        assert example.image_format == "jpeg"


def test_real_compressed_rle_from_the_coco_api(realdata, tmp_path):
    """734 compressed RLE strings of pycocotools' own sample results on 100 val2014 sizes."""
    results = json.loads((realdata / "coco_api_results/results/"
                          "instances_val2014_fakesegm100_results.json").read_text())
    images_dir = tmp_path / "images"
    images_dir.mkdir()
    sizes = {r["image_id"]: r["segmentation"]["size"] for r in results}
    for image_id, (h, w) in sizes.items():
        Image.new("RGB", (w, h), (90, 120, 150)).save(images_dir / f"{image_id}.jpg")
    data = {
        "images": [{"id": i, "file_name": f"{i}.jpg", "height": h, "width": w}
                   for i, (h, w) in sizes.items()],
        "categories": [{"id": c, "name": f"category {c}"}
                       for c in sorted({r["category_id"] for r in results})],
        "annotations": [{"id": n + 1, "image_id": r["image_id"], "category_id": r["category_id"],
                         "segmentation": r["segmentation"], "iscrowd": 0}
                        for n, r in enumerate(results)],
    }
    annotation_file = tmp_path / "gt.json"
    annotation_file.write_text(json.dumps(data))
    out = tmp_path / "records"
    result = convert(annotation_file, images_dir, out, "--num_shards", "2", "--workers", "2",
                     "--skip_errors")
    summary = json.loads((out / "train.summary.json").read_text())
    written = summary["instances"] + sum(summary["warnings"].get(k, 0) for k in ["empty_mask"])
    assert written == len(results), result.stdout
    _, checked = _assert_masks_match_ann_to_mask(annotation_file, out, "train")
    assert checked == summary["instances"] > 700


def test_output_is_identical_for_any_number_of_workers(shapes_dir, tmp_path):
    annotations = shapes_dir / "annotations/instances_train.json"
    outputs = []
    for workers in ("1", "2"):
        out = tmp_path / f"w{workers}"
        convert(annotations, shapes_dir / "images/train", out, "--num_shards", "4",
                "--workers", workers)
        outputs.append({p.name: p.read_bytes() for p in out.glob("*.tfrecord")})
    assert outputs[0] == outputs[1] and len(outputs[0]) == 4


def test_summary_and_label_map_are_written(shapes_dir, tmp_path):
    annotations = shapes_dir / "annotations/instances_val.json"
    out = tmp_path / "records"
    result = convert(annotations, shapes_dir / "images/val", out, split="val")
    summary = json.loads((out / "val.summary.json").read_text())
    data = json.loads(annotations.read_text())
    assert summary["images"] == len(data["images"])
    assert summary["instances"] == len(data["annotations"])
    expected = Counter(c["name"] for a in data["annotations"] for c in data["categories"]
                       if c["id"] == a["category_id"])
    assert summary["instances_per_class"] == {n: expected[n] for n in
                                              ("circle", "square", "triangle", "star")}
    assert summary["shards"] == ["val-00000-of-00001.tfrecord"]
    assert "split 'val'" in result.stdout and "label_map.pbtxt" in result.stdout
    assert (out / "label_map.pbtxt").exists()


def test_images_without_annotations_are_kept_or_dropped(shapes_dir, tmp_path):
    data = json.loads((shapes_dir / "annotations/instances_val.json").read_text())
    empty_id = data["images"][0]["id"]
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] != empty_id]
    annotation_file = tmp_path / "some_empty.json"
    annotation_file.write_text(json.dumps(data))
    kept, dropped = tmp_path / "kept", tmp_path / "dropped"
    convert(annotation_file, shapes_dir / "images/val", kept)
    convert(annotation_file, shapes_dir / "images/val", dropped, "--drop_empty_images")
    kept_ids = {e.source_id for e in read_examples(shard_glob(kept, "train"))}
    dropped_ids = {e.source_id for e in read_examples(shard_glob(dropped, "train"))}
    assert str(empty_id) in kept_ids and kept_ids - dropped_ids == {str(empty_id)}
    summary = json.loads((dropped / "train.summary.json").read_text())
    assert summary["skipped"]["images"] == {"no_annotations": 1}


def test_splits_converted_separately_must_share_the_label_map(shapes_dir, tmp_path):
    out = tmp_path / "records"
    convert(shapes_dir / "annotations/instances_train.json", shapes_dir / "images/train", out)
    data = json.loads((shapes_dir / "annotations/instances_val.json").read_text())
    data["categories"].reverse()
    for i, cat in enumerate(data["categories"]):  # same names, other ids
        old = cat["id"]
        cat["id"] = 100 + i
        for ann in data["annotations"]:
            if ann["category_id"] == old:
                ann["category_id"] = cat["id"]
    reordered = tmp_path / "val.json"
    reordered.write_text(json.dumps(data))
    result = convert(reordered, shapes_dir / "images/val", out, split="val", check=False)
    assert result.returncode == 1 and "already exists with other classes" in result.stderr
    assert not list(out.glob("val-*"))
    convert(reordered, shapes_dir / "images/val", out, "--label_map",
            str(out / "label_map.pbtxt"), split="val")
    train_map = read_label_map(out / "label_map.pbtxt")
    for example in read_examples(shard_glob(out, "val")):
        assert [train_map.name_of(int(i)) for i in example.labels] == example.texts


@pytest.mark.realdata
def test_datumaro_coco_fixture(realdata, tmp_path):
    root = realdata / "datumaro_fixtures/tests/assets/coco_dataset/coco_instances"
    out = tmp_path / "records"
    convert(root / "annotations/instances_val.json", root / "images/val", out, split="val")
    [example] = read_examples(shard_glob(out, "val"))
    masks = example.decode_masks()
    coco = COCO(str(root / "annotations/instances_val.json"))
    for mask, ann in zip(masks, coco.loadAnns(coco.getAnnIds())):
        np.testing.assert_array_equal(mask, coco.annToMask(ann))
    np.testing.assert_array_equal(example.is_crowd, [0, 1])
    # The train file holds a box without a segmentation: an error, or skipped and counted.
    result = convert(root / "annotations/instances_train.json", root / "images/train", out,
                     check=False)
    assert result.returncode == 1 and "annotation 1" in result.stderr
    assert "no segmentation" in result.stderr
    convert(root / "annotations/instances_train.json", root / "images/train", out,
            "--skip_errors")
    summary = json.loads((out / "train.summary.json").read_text())
    assert summary["skipped"]["annotations"] == {"no_segmentation": 1}
