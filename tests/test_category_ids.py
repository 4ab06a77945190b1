"""Category ids: COCO's are the label-map ids by default, as the OD API and Model Garden keep
them (gaps included); --contiguous_ids numbers the classes 1..K and keeps the source's ids in
category_ids.json, through which the exporter and `models.tools.infer` give COCO results the
source's ids again. A gap-id data set trains, evaluates, exports and infers."""
from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest

from data_prep import create_tfrecords
from data_prep.formats.coco_tools import MAX_KEPT_CATEGORY_ID
from records.label_map import LabelMapError, read_category_ids, read_label_map
from records.reader import read_examples
from records.tfrecord_io import shard_glob
from tests.coco_helpers import convert

GAP_IDS = {1: 2, 2: 5, 3: 6, 4: 9}  # the synthetic shapes' ids 1..4, spread out
NAMES_BY_GAP_ID = {2: "circle", 5: "square", 6: "triangle", 9: "star"}


def with_ids(coco_file: Path, remap: dict, target: Path) -> Path:
    data = json.loads(coco_file.read_text())
    for category in data["categories"]:
        category["id"] = remap[category["id"]]
    for annotation in data["annotations"]:
        annotation["category_id"] = remap[annotation["category_id"]]
    target.write_text(json.dumps(data))
    return target


def run(*argv: str) -> str:
    """create_tfrecords.py in this process; returns what it printed."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        create_tfrecords.main([*argv, "--workers", "1", "--no_progress", "--no_tfds_metadata"])
    return out.getvalue()


@pytest.fixture
def gap_coco(shapes_dir, tmp_path) -> tuple[Path, Path]:
    return (with_ids(shapes_dir / "annotations/instances_val.json", GAP_IDS,
                     tmp_path / "gap.json"), shapes_dir / "images/val")


def test_category_ids_are_the_label_map_ids_unless_contiguous_ids(gap_coco, tmp_path):
    annotations, images = gap_coco
    kept, contiguous = tmp_path / "kept", tmp_path / "contiguous"
    run("--format", "coco", "--annotations", str(annotations), "--images_dir", str(images),
        "--output_dir", str(kept))
    label_map = read_label_map(kept / "label_map.pbtxt")
    assert {item.id: item.name for item in label_map} == NAMES_BY_GAP_ID
    assert label_map.max_id == 9 and not (kept / "category_ids.json").exists()
    data = json.loads(annotations.read_text())
    by_id = {image["id"]: image for image in data["images"]}
    for example in read_examples(shard_glob(kept, "train")):
        expected = [a["category_id"] for a in data["annotations"]
                    if a["image_id"] == int(example.source_id)]
        assert list(example.labels) == expected, by_id[int(example.source_id)]

    run("--format", "coco", "--annotations", str(annotations), "--images_dir", str(images),
        "--output_dir", str(contiguous), "--contiguous_ids")
    renumbered = read_label_map(contiguous / "label_map.pbtxt")
    assert [(i.id, i.name) for i in renumbered] == [(1, "circle"), (2, "square"),
                                                     (3, "triangle"), (4, "star")]
    assert read_category_ids(contiguous / "label_map.pbtxt") == {1: 2, 2: 5, 3: 6, 4: 9}
    # The other numbering into the same directory would silently change ids: refused.
    with pytest.raises(LabelMapError, match="already exists with other classes or ids"):
        run("--format", "coco", "--annotations", str(annotations), "--images_dir",
            str(images), "--output_dir", str(contiguous))
    # A split converted with the renumbered map gets its category ids too ...
    val = tmp_path / "val"
    run("--format", "coco", "--annotations", str(annotations), "--images_dir", str(images),
        "--output_dir", str(val), "--label_map", str(contiguous / "label_map.pbtxt"))
    assert read_category_ids(val / "label_map.pbtxt") == {1: 2, 2: 5, 3: 6, 4: 9}
    # ... and a run with the source's ids removes a mapping that would now be wrong.
    run("--format", "coco", "--annotations", str(annotations), "--images_dir", str(images),
        "--output_dir", str(val), "--label_map", str(kept / "label_map.pbtxt"))
    assert not (val / "category_ids.json").exists()
    assert read_label_map(val / "label_map.pbtxt").max_id == 9


@pytest.mark.parametrize("largest", [MAX_KEPT_CATEGORY_ID + 1, 44424252794227632])
def test_ids_too_large_for_a_classifier_or_a_label_map_are_renumbered(gap_coco, largest,
                                                                      tmp_path):
    """num_classes is the largest kept id: an id beyond 10,000 would make a head of mostly
    unused outputs, one beyond int32 cannot be in a label map at all (the fuzz suite found
    the second ending in protobuf's ValueError). Both are renumbered 1..K with a warning."""
    annotations, images = gap_coco
    remap = {2: 3, 5: 7, 6: 11, 9: largest}
    source = with_ids(annotations, remap, tmp_path / "large.json")
    out = tmp_path / "out"
    run("--format", "coco", "--annotations", str(source), "--images_dir", str(images),
        "--output_dir", str(out))
    assert [item.id for item in read_label_map(out / "label_map.pbtxt")] == [1, 2, 3, 4]
    assert read_category_ids(out / "label_map.pbtxt") == {1: 3, 2: 7, 3: 11, 4: largest}
    summary = json.loads((out / "train.summary.json").read_text())
    assert summary["warnings"]["category_ids_renumbered"] == 1


def test_a_label_map_id_beyond_int32_is_an_error_naming_the_item(tmp_path):
    path = tmp_path / "label_map.pbtxt"
    path.write_text("item { id: 1 name: 'cat' }\nitem { id: 2147483648 name: 'dog' }\n")
    with pytest.raises(LabelMapError, match=str(path)):
        read_label_map(path)


def test_the_od_api_coco_label_map_converts_coco_by_display_name(gap_coco, tmp_path):
    """mscoco_label_map.pbtxt names items by MID and keeps COCO's names in display_name."""
    annotations, images = gap_coco
    od_api_map = tmp_path / "mscoco_style.pbtxt"
    od_api_map.write_text("".join(
        f'item {{ name: "/m/{name}" id: {i} display_name: "{name}" }}\n'
        for i, name in NAMES_BY_GAP_ID.items()))
    out = tmp_path / "out"
    run("--format", "coco", "--annotations", str(annotations), "--images_dir", str(images),
        "--output_dir", str(out), "--label_map", str(od_api_map))
    examples = read_examples(shard_glob(out, "train"))
    texts = {t for e in examples for t in e.texts}
    assert texts <= {f"/m/{name}" for name in NAMES_BY_GAP_ID.values()} and texts
    for example in examples:
        assert [f"/m/{NAMES_BY_GAP_ID[int(label)]}" for label in example.labels] == (
            example.texts)


def test_infer_maps_label_ids_back_to_category_ids(tmp_path):
    from models.inference.image_io import InferError
    from models.inference.predict_images import source_category_ids, with_source_ids

    export = tmp_path / "exported"
    (export / "saved_model").mkdir(parents=True)
    assert source_category_ids(export / "saved_model", None) is None
    (export / "category_ids.json").write_text(json.dumps({"category_ids": {"1": 3, "2": 90}}))
    mapping = source_category_ids(export / "saved_model", None)
    results = [{"image_id": 1, "category_id": 2, "score": 0.9},
               {"image_id": 1, "category_id": 1, "score": 0.5}]
    assert [r["category_id"] for r in with_source_ids(results, mapping)] == [90, 3]
    with pytest.raises(InferError, match="predicted class 7, which category_ids.json"):
        with_source_ids([{"image_id": 1, "category_id": 7, "score": 0.1}], mapping)
    given = tmp_path / "elsewhere"
    given.mkdir()
    assert source_category_ids(export / "saved_model", str(given / "label_map.pbtxt")) is None


@pytest.mark.slow
def test_a_gap_id_data_set_trains_evaluates_exports_and_infers_with_the_source_ids(tmp_path):
    """COCO ids 2, 5, 6, 9 kept as label-map ids: num_classes 9 (the largest id), ids 1, 3,
    4, 7, 8 never occur. Then a category_ids.json beside the training label map (what
    --contiguous_ids writes) goes into the export and turns infer's results into the
    source's ids: the same detections score the same mAP against the same ground truth
    written with those ids."""
    from data_prep.synthetic.__main__ import write_split
    from tests.conftest import run_command
    from tests.training_helpers import model_main, tiny_config

    records, gt = tmp_path / "records", {}
    for split, count in (("train", 8), ("val", 4)):
        paths = write_split(tmp_path / "shapes", split, count, seed=5, height=64, width=64,
                            min_objects=1, max_objects=3)
        gt[split] = with_ids(paths["coco"], GAP_IDS, tmp_path / f"{split}.json")
        convert(gt[split], tmp_path / "shapes/images" / split, records, "--no_tfds_metadata",
                split=split)
    assert [item.id for item in read_label_map(records / "label_map.pbtxt")] == [2, 5, 6, 9]
    config = tiny_config(records, tmp_path / "pipeline.config", num_steps=1,
                         extra=("model { faster_rcnn { num_classes: 9 } }",))
    model_dir = tmp_path / "model"
    model_main(f"--pipeline_config_path={config}", f"--model_dir={model_dir}")
    model_main(f"--pipeline_config_path={config}", f"--model_dir={model_dir}",
               f"--checkpoint_dir={model_dir}", "--eval_timeout=1")
    metrics = json.loads((model_dir / "eval/metrics.json").read_text())["1"]
    assert -1 <= metrics["DetectionMasks_Precision/mAP"] <= 1

    shifted = {label: label * 10 for label in range(1, 10)}  # every class the model has
    (records / "category_ids.json").write_text(json.dumps({"category_ids": {
        str(k): v for k, v in shifted.items()}}))
    exported = tmp_path / "exported"
    run_command("exporter_main_v2.py", f"--pipeline_config_path={config}",
                f"--trained_checkpoint_dir={model_dir}", f"--output_directory={exported}",
                check=True)
    assert read_category_ids(exported / "label_map.pbtxt") == shifted
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "label_map.pbtxt").write_bytes((records / "label_map.pbtxt").read_bytes())
    gt_shifted = with_ids(gt["val"], shifted, tmp_path / "val_shifted.json")
    runs = {}
    for name, truth, extra in (("source", gt["val"], ["--label_map",
                                                      str(plain / "label_map.pbtxt")]),
                               ("mapped", gt_shifted, [])):
        out = tmp_path / f"predictions_{name}"
        run_command("-m", "models.tools.infer", "--no_progress", "--saved_model",
                    str(exported / "saved_model"), "--images",
                    str(tmp_path / "shapes/images/val"), "--output_dir", str(out),
                    "--score_threshold", "0.0", "--annotations", str(truth), *extra,
                    check=True)
        runs[name] = (json.loads((out / "detections.json").read_text()),
                      json.loads((out / "metrics.json").read_text()))
    (source, source_metrics), (mapped, mapped_metrics) = runs["source"], runs["mapped"]
    assert source and {d["category_id"] for d in source} <= set(range(1, 10))
    assert [shifted[d["category_id"]] for d in source] == [d["category_id"] for d in mapped]
    for key in ("DetectionBoxes_Precision/mAP", "DetectionMasks_Precision/mAP"):
        assert mapped_metrics[key] == pytest.approx(source_metrics[key])
