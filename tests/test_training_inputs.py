"""Training stops before building anything on bad inputs, with a message saying what to do."""
from __future__ import annotations

from pathlib import Path

import pytest

from models.builders.experiment_builder import load_and_build
from models.dataloaders.input_checks import InputCheckError
from models.training.train_loop import check_training_inputs
from records import keys
from records.protos import example_pb2
from records.reader import read_records
from records.tfrecord_io import ShardedWriter
from tests.training_helpers import SHAPES_CONFIG, make_tiny_records, model_main, tiny_overrides


@pytest.fixture(scope="module")
def records(tmp_path_factory) -> Path:
    return make_tiny_records(tmp_path_factory.mktemp("inputs"), train_images=4, val_images=2)


def _check(records: Path, *extra: str):
    built = load_and_build(SHAPES_CONFIG, tiny_overrides(records) + list(extra))
    check_training_inputs(built)


def test_good_inputs_pass(records):
    _check(records)


def test_missing_record_path(records, tmp_path):
    with pytest.raises(InputCheckError, match=r"train_input_reader.tf_record_input_reader"
                                              r".input_path: no TFRecord files match"):
        _check(records, f'train_input_reader {{ tf_record_input_reader {{ input_path: '
                        f'"{tmp_path}/nothing-*.tfrecord" }} }}')


def test_empty_record_files(records, tmp_path):
    (tmp_path / "empty-00000-of-00001.tfrecord").write_bytes(b"")
    with pytest.raises(InputCheckError, match="hold no records"):
        _check(records, f'train_input_reader {{ tf_record_input_reader {{ input_path: '
                        f'"{tmp_path}/empty-*.tfrecord" }} }}')


def test_records_without_masks(records, tmp_path):
    with ShardedWriter(tmp_path, "nomask", 1) as writer:
        for serialized in read_records(records / "train-00000-of-00001.tfrecord"):
            example = example_pb2.Example.FromString(serialized)
            del example.features.feature[keys.OBJECT_MASK]
            writer.write(example.SerializeToString())
    with pytest.raises(InputCheckError, match="no instance masks") as info:
        _check(records, f'train_input_reader {{ tf_record_input_reader {{ input_path: '
                        f'"{writer.paths[0]}" }} }}')
    assert "number_of_stages: 2" in str(info.value)


def test_label_map_that_does_not_match_num_classes(records):
    with pytest.raises(InputCheckError, match=r"has 4 classes \(ids up to 4\) but .*num_classes is 3"):
        _check(records, "model { faster_rcnn { num_classes: 3 } }")


def test_command_line_exits_with_the_message(records, tmp_path):
    result = model_main("--pipeline_config_path=" + str(SHAPES_CONFIG),
                        f"--model_dir={tmp_path}",
                        "--config_override=" + tiny_overrides(records)[2],
                        "--config_override=model { faster_rcnn { num_classes: 7 } }",
                        check=False)
    assert result.returncode == 1
    assert "\nerror: train_input_reader.label_map_path" in "\n" + result.stderr
    assert "num_classes is 7" in result.stderr


def test_new_checkpoints_waits_for_each_and_stops_after_the_timeout(tmp_path):
    """The continuous-evaluation loop: every new checkpoint once, then a timeout."""
    import threading

    import tensorflow as tf

    from models.evaluation.continuous_eval import new_checkpoints

    step = tf.Variable(0)
    manager = tf.train.CheckpointManager(tf.train.Checkpoint(step=step), str(tmp_path), 5)
    manager.save(checkpoint_number=1)
    later = threading.Timer(1.5, lambda: manager.save(checkpoint_number=2))
    later.start()
    seen = [Path(p).name for p in new_checkpoints(str(tmp_path), timeout=4, poll_seconds=0.2)]
    later.join()
    assert seen == ["ckpt-1", "ckpt-2"]
