"""The record contract: the OD API's keys and encodings, read both ways."""
from __future__ import annotations

import hashlib
import io

import numpy as np
import pytest
from PIL import Image

from records import keys
from records.example_codec import (
    ImageExample,
    decode_example,
    decode_mask_png,
    encode_example,
    encode_mask_png,
)
from records.label_map import read_label_map
from records.protos import example_pb2
from records.reader import iter_examples, read_examples
from records.tfrecord_io import ShardedWriter


def _example() -> ImageExample:
    buf = io.BytesIO()
    Image.fromarray(np.full((6, 8, 3), 200, np.uint8)).save(buf, format="PNG")
    masks = [np.zeros((6, 8), np.uint8) for _ in range(2)]
    masks[0][1:3, 2:5] = 1
    masks[1][4:6, 0:8] = 1
    return ImageExample(
        encoded_image=buf.getvalue(), image_format="png", height=6, width=8,
        filename="a b.png", source_id="17",
        boxes=np.array([[1 / 6, 2 / 8, 3 / 6, 5 / 8], [4 / 6, 0, 1, 1]], np.float32),
        labels=np.array([1, 2]), texts=["circle", "étoile"], areas=np.array([6.0, 16.0]),
        is_crowd=np.array([0, 1]), masks_png=[encode_mask_png(m) for m in masks])


def test_every_contract_key_is_written_with_its_type():
    proto = example_pb2.Example.FromString(encode_example(_example()))
    kinds = {k: f.WhichOneof("kind") for k, f in proto.features.feature.items()}
    expected_bytes = [keys.IMAGE_ENCODED, keys.IMAGE_FORMAT, keys.IMAGE_FILENAME,
                      keys.IMAGE_SOURCE_ID, keys.IMAGE_KEY_SHA256, keys.OBJECT_CLASS_TEXT,
                      keys.OBJECT_MASK]
    expected_int = [keys.IMAGE_HEIGHT, keys.IMAGE_WIDTH, keys.OBJECT_CLASS_LABEL,
                    keys.OBJECT_IS_CROWD]
    expected_float = list(keys.BBOX_KEYS) + [keys.OBJECT_AREA]
    assert kinds == {**{k: "bytes_list" for k in expected_bytes},
                     **{k: "int64_list" for k in expected_int},
                     **{k: "float_list" for k in expected_float}}


def test_encode_decode_round_trip_keeps_image_bytes():
    original = _example()
    decoded = decode_example(encode_example(original))
    assert decoded.encoded_image == original.encoded_image  # passthrough, not re-encoded
    assert decoded.sha256 == hashlib.sha256(original.encoded_image).hexdigest()
    assert (decoded.filename, decoded.source_id, decoded.texts) == ("a b.png", "17",
                                                                    ["circle", "étoile"])
    np.testing.assert_allclose(decoded.boxes, original.boxes)
    np.testing.assert_array_equal(decoded.labels, [1, 2])
    np.testing.assert_array_equal(decoded.is_crowd, [0, 1])
    masks = decoded.decode_masks()
    assert masks.shape == (2, 6, 8) and masks.dtype == np.uint8
    assert masks[0].sum() == 6 and masks[1].sum() == 16 and set(np.unique(masks)) == {0, 1}
    assert decoded.decode_image().shape == (6, 8, 3)


def test_mask_png_is_single_channel_8_bit_with_values_0_and_1():
    mask = np.zeros((5, 7), np.uint8)
    mask[2, 3] = 1
    png = encode_mask_png(mask)
    with Image.open(io.BytesIO(png)) as img:
        assert img.mode == "L" and img.size == (7, 5)
        assert set(np.unique(np.asarray(img))) == {0, 1}
    np.testing.assert_array_equal(decode_mask_png(png), mask)


def test_mismatched_instance_fields_are_refused():
    example = _example()
    example.texts = ["circle"]
    with pytest.raises(ValueError, match="2 boxes but 1 texts"):
        encode_example(example)


def test_reads_records_written_by_the_object_detection_api(realdata):
    fixture = realdata / "datumaro_fixtures/tests/assets/tf_detection_api_dataset"
    examples = {e.filename: e for e in read_examples(
        [str(fixture / f"{s}.tfrecord") for s in ("train", "val", "test")])}
    assert sorted(examples) == ["1.jpg", "2.jpg", "3.jpg"]
    first = examples["1.jpg"]
    assert (first.height, first.width, first.image_format) == (16, 16, "jpeg")
    assert first.texts == ["label_2", "label_3", ""]
    np.testing.assert_array_equal(first.labels, [3, 4, 0])
    np.testing.assert_allclose(first.boxes[0], [0.25, 0.0, 0.75, 0.25])
    assert first.decode_image().shape == (16, 16, 3)
    assert first.decode_masks().shape == (0, 16, 16)  # the OD API wrote no masks here
    assert examples["3.jpg"].num_instances == 0


def test_label_map_fills_labels_of_records_that_carry_only_names(tmp_path, realdata):
    """The OD API's COCO tool writes class/text but no class/label."""
    label_map = read_label_map(
        realdata / "datumaro_fixtures/tests/assets/tf_detection_api_dataset/label_map.pbtxt")
    named = _example()
    named.texts = ["label_0", "label_9"]
    proto = example_pb2.Example.FromString(encode_example(named))
    del proto.features.feature[keys.OBJECT_CLASS_LABEL]
    with ShardedWriter(tmp_path, "named", 1) as writer:
        writer.write(proto.SerializeToString())
    [(_, _, example)] = list(iter_examples(str(writer.paths[0]), label_map))
    np.testing.assert_array_equal(example.labels, [1, 10])


def test_model_garden_decoder_reads_our_records(tmp_path):
    import tensorflow as tf
    from official.vision.dataloaders.tf_example_decoder import TfExampleDecoder

    original = _example()
    serialized = encode_example(original)
    decoded = TfExampleDecoder(include_mask=True).decode(tf.constant(serialized))
    assert decoded["source_id"].numpy() == b"17"
    assert tuple(decoded["image"].shape) == (6, 8, 3)
    np.testing.assert_allclose(decoded["groundtruth_boxes"].numpy(), original.boxes)
    np.testing.assert_array_equal(decoded["groundtruth_classes"].numpy(), [1, 2])
    np.testing.assert_array_equal(decoded["groundtruth_is_crowd"].numpy(), [False, True])
    np.testing.assert_array_equal(decoded["groundtruth_instance_masks"].numpy(),
                                  decode_example(serialized).decode_masks().astype(np.float32))
