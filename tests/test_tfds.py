"""TensorFlow Datasets both ways: our records load with tfds (metadata written without
TensorFlow), and a TFDS data set with instance masks converts into our records."""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from data_prep.annotations import AnnotationFileError
from records import keys, tfds_metadata
from records.example_codec import decode_mask_png
from records.label_map import LabelMap, LabelMapItem, read_label_map
from records.reader import read_examples
from records.tfrecord_io import ShardedWriter, shard_glob
from tests.coco_helpers import convert
from tests.conftest import run_command

# --- our records -> tfds ------------------------------------------------------------------


@pytest.fixture(scope="module")
def records_dir(shapes_dir, tmp_path_factory) -> Path:
    """Synthetic train (2 shards) and val (1 shard), converted in two separate runs."""
    out = tmp_path_factory.mktemp("tfds_records")
    for split, shards in (("train", "2"), ("val", "1")):
        convert(shapes_dir / f"annotations/instances_{split}.json",
                shapes_dir / "images" / split, out, "--num_shards", shards, split=split)
    return out


@pytest.fixture(scope="module")
def builder(records_dir):
    tfds = pytest.importorskip("tensorflow_datasets")
    return tfds.builder_from_directory(str(records_dir))


def _by_source_id(builder, split: str, decoders: dict | None = None) -> dict[str, dict]:
    import tensorflow_datasets as tfds

    dataset = builder.as_dataset(split=split, shuffle_files=False, decoders=decoders)
    return {ex[keys.IMAGE_SOURCE_ID].decode(): ex for ex in tfds.as_numpy(dataset)}


def _tf_decode(encoded: bytes) -> np.ndarray:
    """The pixels every TensorFlow reader (tfds, Model Garden) gets: tf.io.decode_image.
    PIL's libjpeg decodes 4:2:0 JPEGs up to a few levels differently."""
    import tensorflow as tf

    return tf.io.decode_image(encoded, channels=3).numpy()


def _assert_same_image(decoded: np.ndarray, encoded: bytes, pil_decoded: np.ndarray) -> None:
    np.testing.assert_array_equal(decoded, _tf_decode(encoded))
    assert np.abs(decoded.astype(int) - pil_decoded).max() <= 8


def test_metadata_files_are_what_tfds_itself_would_write(records_dir, builder):
    from google.protobuf import json_format
    from tensorflow_datasets.core import dataset_info
    from tensorflow_datasets.core.features import feature as feature_lib

    written = json.loads((records_dir / tfds_metadata.FEATURES_FILE).read_text())
    rebuilt = feature_lib.FeatureConnector.from_config(str(records_dir))
    assert json_format.MessageToDict(rebuilt.to_proto()) == written
    info = json.loads((records_dir / tfds_metadata.DATASET_INFO_FILE).read_text())
    parsed = dataset_info.read_from_json(records_dir / tfds_metadata.DATASET_INFO_FILE)
    assert json_format.MessageToDict(parsed) == info  # no field tfds does not know
    assert {s.filepath_template for s in parsed.splits} == {tfds_metadata.FILEPATH_TEMPLATE}
    assert tfds_metadata.FILEPATH_TEMPLATE == "{SPLIT}-{SHARD_X_OF_Y}.{FILEFORMAT}"


def test_two_splits_converted_in_separate_runs_both_load(records_dir, builder):
    splits = builder.info.splits
    assert sorted(splits) == ["train", "val"]
    assert (splits["train"].num_examples, splits["train"].num_shards) == (24, 2)
    assert (splits["val"].num_examples, splits["val"].num_shards) == (6, 1)
    assert splits["train"].shard_lengths == [12, 12]
    assert len(_by_source_id(builder, "val")) == 6


def test_class_label_names_are_the_label_map_with_background_at_zero(records_dir, builder):
    label_map = read_label_map(records_dir / "label_map.pbtxt")
    names = builder.info.features[keys.OBJECT_CLASS_LABEL].names
    assert names == ["background"] + label_map.names
    assert builder.info.features[keys.OBJECT_CLASS_LABEL].num_classes == label_map.max_id + 1


@pytest.mark.parametrize("split", ["train", "val"])
def test_tfds_examples_equal_our_reader_example_by_example(records_dir, builder, split):
    label_names = builder.info.features[keys.OBJECT_CLASS_LABEL].names
    import tensorflow_datasets as tfds

    loaded = _by_source_id(builder, split)
    raw = _by_source_id(builder, split, {keys.IMAGE_ENCODED: tfds.decode.SkipDecoding()})
    ours = read_examples(shard_glob(records_dir, split))
    assert sorted(loaded) == sorted(e.source_id for e in ours)
    for example in ours:
        ex = loaded[example.source_id]
        assert raw[example.source_id][keys.IMAGE_ENCODED] == example.encoded_image
        _assert_same_image(ex[keys.IMAGE_ENCODED], example.encoded_image, example.decode_image())
        boxes = np.stack([ex[k] for k in keys.BBOX_KEYS], axis=-1)
        np.testing.assert_array_equal(boxes, example.boxes)
        np.testing.assert_array_equal(ex[keys.OBJECT_CLASS_LABEL], example.labels)
        assert [label_names[i] for i in ex[keys.OBJECT_CLASS_LABEL]] == example.texts
        masks = ex[keys.OBJECT_MASK]
        assert masks.shape == (example.num_instances, example.height, example.width, 1)
        np.testing.assert_array_equal(masks[..., 0], example.decode_masks())
        np.testing.assert_array_equal(ex[keys.OBJECT_IS_CROWD], example.is_crowd)
        np.testing.assert_array_equal(ex[keys.OBJECT_AREA], example.areas)
        assert ex[keys.IMAGE_FILENAME].decode() == example.filename


def test_as_dataframe_and_show_examples_work(builder):
    import matplotlib
    import tensorflow_datasets as tfds

    matplotlib.use("Agg")
    df = tfds.as_dataframe(builder.as_dataset(split="val").take(2), builder.info)
    assert len(df) == 2
    assert {keys.IMAGE_ENCODED, keys.OBJECT_MASK, keys.OBJECT_CLASS_LABEL} <= set(df.columns)
    assert df[keys.IMAGE_ENCODED].iloc[0].shape == (128, 128, 3)
    figure = tfds.visualization.show_examples(builder.as_dataset(split="val"), builder.info,
                                              rows=1, cols=2)
    assert len(figure.axes) == 2


def test_model_garden_decoder_and_our_reader_read_the_same_files(records_dir):
    tf = pytest.importorskip("tensorflow")
    from official.vision.dataloaders.tf_example_decoder import TfExampleDecoder

    files = sorted(tf.io.gfile.glob(shard_glob(records_dir, "val")))
    decoder = TfExampleDecoder(include_mask=True)
    decoded = list(tf.data.TFRecordDataset(files).map(decoder.decode).as_numpy_iterator())
    ours = read_examples(files)
    assert len(decoded) == len(ours) == 6
    for mg, example in zip(decoded, ours):
        assert mg["source_id"].decode() == example.source_id
        _assert_same_image(mg["image"], example.encoded_image, example.decode_image())
        np.testing.assert_array_equal(mg["groundtruth_boxes"], example.boxes)
        np.testing.assert_array_equal(mg["groundtruth_classes"], example.labels)
        np.testing.assert_array_equal(mg["groundtruth_instance_masks"],
                                      example.decode_masks().astype(np.float32))


def test_no_tfds_metadata_writes_none(shapes_dir, tmp_path):
    convert(shapes_dir / "annotations/instances_val.json", shapes_dir / "images/val",
            tmp_path, "--no_tfds_metadata", split="val")
    assert (tmp_path / "val-00000-of-00001.tfrecord").exists()
    assert not [n for n in tfds_metadata.METADATA_FILES if (tmp_path / n).exists()]


def test_metadata_and_tfds_reader_modules_do_not_import_tensorflow(records_dir):
    code = ("import sys\n"
            "import records.tfds_metadata as m, data_prep.formats.tfds_source, data_prep.create_tfrecords\n"
            f"m.write_tfds_metadata({str(records_dir)!r})\n"
            "loaded = sorted(n for n in sys.modules if n.split('.')[0] in "
            "('tensorflow', 'tensorflow_datasets', 'keras'))\n"
            "assert not loaded, loaded\n")
    result = run_command("-c", code)
    assert result.returncode == 0, result.stderr


# --- metadata details without TensorFlow ----------------------------------------------------


def test_class_label_names_fill_id_gaps_and_keep_background_unique():
    label_map = LabelMap([LabelMapItem(1, "background"), LabelMapItem(4, "cat")])
    names = tfds_metadata.class_label_names(label_map)
    assert names == ["_background", "background", "unused_2", "unused_3", "cat"]
    with pytest.raises(ValueError, match="labels file"):
        tfds_metadata.class_label_names(LabelMap([LabelMapItem(1, "cat ")]))


def test_find_splits_uses_complete_shard_sets_and_skips_the_rest(tmp_path):
    for name, count, records in (("train", 2, 5), ("a.b", 1, 1), ("val", 1, 3)):
        with ShardedWriter(tmp_path, name, count) as writer:
            for i in range(records):
                writer.write(b"x" * i)
    (tmp_path / "test-00001-of-00003.tfrecord").write_bytes(b"")  # shards 0 and 2 missing
    splits, skipped = tfds_metadata.find_splits(tmp_path)
    assert [(s.name, s.shard_lengths) for s in splits] == [("train", [3, 2]), ("val", [3])]
    assert any(reason.startswith("a.b:") for reason in skipped)
    assert any(reason.startswith("test:") and "incomplete" in reason for reason in skipped)


# --- a TFDS data set -> our records -----------------------------------------------------------

CLASS_NAMES = ["cat", "dog", "bird"]


def _tiny_tfds_dataset(data_dir: Path) -> list[dict]:
    """Writes a 3-example TFDS data set (LVIS layout) and returns what went in."""
    import tensorflow_datasets as tfds
    from tensorflow_datasets.core.dataset_builders.adhoc_builder import AdhocBuilder

    class TinyBuilder(AdhocBuilder, skip_registration=True):
        pass

    f = tfds.features
    features = f.FeaturesDict({
        "image": f.Image(),
        "image/filename": f.Text(),
        "image/id": np.int64,
        "objects": f.Sequence({"bbox": f.BBoxFeature(), "label": f.ClassLabel(names=CLASS_NAMES),
                               "mask": f.Image(shape=(None, None, 1))}),
    })
    rng = np.random.default_rng(0)
    examples = []
    for index, (fmt, count) in enumerate((("JPEG", 2), ("BMP", 3), ("JPEG", 0))):
        height, width = 24 + 4 * index, 32
        pixels = rng.integers(0, 255, (height, width, 3), np.uint8)
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, format=fmt)
        masks = np.zeros((count, height, width, 1), np.uint8)
        boxes = []
        for k in range(count):
            y0, x0 = 2 + 3 * k, 1 + 5 * k
            masks[k, y0:y0 + 6, x0:x0 + 9] = 1
            boxes.append(f.BBox(y0 / height, x0 / width, (y0 + 6) / height, (x0 + 9) / width))
        examples.append({"image": buf.getvalue(), "image/filename": f"img {index}.{fmt.lower()}",
                         "image/id": 100 + index,
                         "objects": {"bbox": boxes, "label": [k % 2 for k in range(count)],
                                     "mask": masks}})
    builder = TinyBuilder(name="tiny_instances", version="1.0.0", features=features,
                          split_datasets={"train": list(enumerate(examples))},
                          data_dir=str(data_dir))
    builder.download_and_prepare()
    return examples


@pytest.fixture(scope="module")
def tiny_tfds(tmp_path_factory) -> tuple[Path, list[dict]]:
    pytest.importorskip("tensorflow_datasets")
    data_dir = tmp_path_factory.mktemp("tfds_data")
    return data_dir, _tiny_tfds_dataset(data_dir)


def test_tfds_data_set_converts_to_records_with_equal_masks(tiny_tfds, tmp_path):
    data_dir, examples = tiny_tfds
    out = tmp_path / "records"
    run_command("data_prep/create_tfrecords.py", "--format", "tfds", "--tfds_name",
                "tiny_instances", "--tfds_data_dir", str(data_dir), "--tfds_split", "train",
                "--split", "train", "--output_dir", str(out), "--no_progress", check=True)
    assert read_label_map(out / "label_map.pbtxt").names == CLASS_NAMES
    assert not [p for p in out.iterdir() if p.name.startswith(".tfds-extract-")]  # cleaned
    records = {e.source_id: e for e in read_examples(shard_glob(out, "train"))}
    assert sorted(records) == ["100", "101", "102"]
    for index, source in enumerate(examples):
        record = records[str(100 + index)]
        assert record.filename == source["image/filename"]
        original = Image.open(io.BytesIO(source["image"]))
        if original.format == "JPEG":
            assert record.encoded_image == source["image"]  # stored bytes, not re-encoded
        else:
            assert record.image_format == "png"
            np.testing.assert_array_equal(record.decode_image(), np.asarray(original))
        objects = source["objects"]
        np.testing.assert_array_equal(record.decode_masks(), objects["mask"][..., 0])
        np.testing.assert_array_equal(record.labels, np.array(objects["label"]) + 1)
        assert record.texts == [CLASS_NAMES[k] for k in objects["label"]]
        expected_boxes = np.array([[b.ymin, b.xmin, b.ymax, b.xmax] for b in objects["bbox"]],
                                  np.float32).reshape(-1, 4)
        np.testing.assert_allclose(record.boxes, expected_boxes, atol=1e-6)


def test_tfds_reader_keeps_an_explicit_work_dir_and_writes_grayscale_pngs(tiny_tfds, tmp_path):
    import tensorflow_datasets as tfds

    from data_prep.formats.tfds_source import read_tfds

    data_dir, examples = tiny_tfds
    builder = tfds.builder("tiny_instances", data_dir=str(data_dir))
    annotations = read_tfds(builder, "train", tmp_path / "work")
    assert annotations.class_names == CLASS_NAMES and not annotations.problems
    masks = [Path(o.segmentation.path) for image in annotations.images for o in image.objects]
    assert len(masks) == 5 and all(p.is_relative_to(tmp_path / "work") for p in masks)
    with Image.open(masks[0]) as mask:
        assert mask.mode == "L"
    np.testing.assert_array_equal(decode_mask_png(masks[0].read_bytes()),
                                  examples[0]["objects"]["mask"][0, ..., 0])


def test_ambiguous_features_ask_for_the_option():
    tfds = pytest.importorskip("tensorflow_datasets")
    from data_prep.formats.tfds_source import FeatureKeys, detect_schema

    f = tfds.features
    features = f.FeaturesDict({
        "left": f.Image(), "right": f.Image(),
        "objects": f.Sequence({"label": f.ClassLabel(names=["a"]),
                               "mask": f.Image(shape=(None, None, 1))}),
    })
    with pytest.raises(AnnotationFileError, match="--tfds_image_key"):
        detect_schema(features, FeatureKeys())
    schema = detect_schema(features, FeatureKeys(image="left"))
    assert (schema.image_key, schema.objects_key, schema.mask_key, schema.label_key,
            schema.bbox_key, schema.class_names) == ("left", "objects", "mask", "label", None,
                                                     ["a"])
    with pytest.raises(AnnotationFileError, match="--tfds_mask_key 'masks'"):
        detect_schema(features, FeatureKeys(image="left", mask="masks"))
