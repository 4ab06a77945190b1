"""Object Detection API configs: recognised, read with the OD API's meanings and defaults,
every field without an effect reported with its line in one warning, every problem in one
error; ported by pipelines/port_od_config.py; the OD API's six Mask R-CNN configs
(../shared/realdata/odapi_configs) and two written by users for their own data port, and
the six train a step at 64 px."""
from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest

from models.builders.experiment_builder import load_and_build
from pipelines.config_util import (
    PipelineConfigError,
    format_pipeline_config,
    read_pipeline_config,
)
from pipelines.port_od_config import port_od_config
from tests.conftest import run_command
from tests.training_helpers import make_tiny_records, total_losses

SIX = ("mask_rcnn_inception_resnet_v2_1024x1024_coco17_gpu-8", "mask_rcnn_inception_resnet_v2_"
       "atrous_coco", "mask_rcnn_inception_v2_coco", "mask_rcnn_resnet101_atrous_coco",
       "mask_rcnn_resnet101_pets", "mask_rcnn_resnet50_atrous_coco")
# backbone each ports to (Model Garden has no Inception)
PORTED_BACKBONE = {SIX[0]: 152, SIX[1]: 152, SIX[2]: 34, SIX[3]: 101, SIX[4]: 101, SIX[5]: 50}

# A TF2-era user config: the zoo's Mask R-CNN recipe put on ResNet-50 FPN for 2 classes of
# their own, with the OD API's usual hyperparams blocks and augmentations.
USER_TF2 = """
model {
  faster_rcnn {
    num_classes: 2
    number_of_stages: 3
    image_resizer { keep_aspect_ratio_resizer { min_dimension: 512 max_dimension: 512
                                                pad_to_max_dimension: true } }
    feature_extractor {
      type: "faster_rcnn_resnet50_fpn_keras"
      batch_norm_trainable: true
      conv_hyperparams {
        activation: RELU_6
        regularizer { l2_regularizer { weight: 0.0004 } }
        initializer { truncated_normal_initializer { stddev: 0.03 mean: 0.0 } }
        batch_norm { scale: true decay: 0.997 epsilon: 0.001 }
      }
      override_base_feature_extractor_hyperparams: true
      fpn { min_level: 2 max_level: 6 additional_layer_depth: 128 }
    }
    first_stage_anchor_generator {
      multiscale_anchor_generator { min_level: 2 max_level: 6 anchor_scale: 4.0
                                    aspect_ratios: [1.0, 2.0, 0.5] scales_per_octave: 2 }
    }
    first_stage_box_predictor_conv_hyperparams {
      op: CONV
      regularizer { l2_regularizer { weight: 0.0004 } }
      initializer { truncated_normal_initializer { stddev: 0.01 } }
    }
    first_stage_nms_iou_threshold: 0.7
    first_stage_max_proposals: 200
    initial_crop_size: 14
    maxpool_kernel_size: 2
    maxpool_stride: 2
    second_stage_box_predictor {
      mask_rcnn_box_predictor {
        use_dropout: false
        fc_hyperparams { op: FC regularizer { l2_regularizer { weight: 0.0004 } }
                         initializer { variance_scaling_initializer { factor: 1.0 } } }
        mask_height: 33
        mask_width: 33
        mask_prediction_conv_depth: 0
        mask_prediction_num_conv_layers: 4
        conv_hyperparams { op: CONV regularizer { l2_regularizer { weight: 0.0004 } } }
        predict_instance_masks: true
      }
    }
    second_stage_post_processing {
      batch_non_max_suppression { score_threshold: 0.3 iou_threshold: 0.5
                                  max_detections_per_class: 50 max_total_detections: 50 }
      score_converter: SOFTMAX
    }
    second_stage_mask_prediction_loss_weight: 4.0
    use_static_shapes: true
  }
}
train_config {
  batch_size: 4
  num_steps: 8000
  sync_replicas: true
  replicas_to_aggregate: 4
  data_augmentation_options { random_horizontal_flip { } }
  data_augmentation_options { random_adjust_hue { max_delta: 0.05 } }
  data_augmentation_options { random_crop_image { min_object_covered: 0.5 min_area: 0.5 } }
  optimizer {
    adam_optimizer { learning_rate { cosine_decay_learning_rate {
        learning_rate_base: 0.0004 total_steps: 8000 warmup_learning_rate: 0.0001
        warmup_steps: 500 } } }
  }
  fine_tune_checkpoint: "pretrained/ckpt-0"
  fine_tune_checkpoint_type: "detection"
  fine_tune_checkpoint_version: V2
  max_number_of_boxes: 50
  use_bfloat16: false
}
train_input_reader {
  label_map_path: "data/label_map.pbtxt"
  tf_record_input_reader { input_path: "data/train.record-?????-of-00004" }
  load_instance_masks: true
  mask_type: PNG_MASKS
  num_readers: 4
}
eval_config {
  metrics_set: "coco_detection_metrics"
  metrics_set: "coco_mask_metrics"
  metrics_set: "pascal_voc_detection_metrics"
  use_moving_averages: false
  eval_instance_masks: true
  batch_size: 1
}
eval_input_reader {
  label_map_path: "data/label_map.pbtxt"
  shuffle: false
  num_epochs: 1
  tf_record_input_reader { input_path: "data/val.record-?????-of-00001" }
  load_instance_masks: true
  mask_type: PNG_MASKS
}
"""

# A TF1-era user config: the pets config adapted to 3 classes of microscope cells.
USER_TF1 = """
model {
  faster_rcnn {
    num_classes: 3
    image_resizer { keep_aspect_ratio_resizer { min_dimension: 400 max_dimension: 600 } }
    number_of_stages: 3
    feature_extractor { type: 'faster_rcnn_resnet50' first_stage_features_stride: 16 }
    first_stage_anchor_generator {
      grid_anchor_generator { scales: [0.125, 0.25, 0.5, 1.0] aspect_ratios: [0.5, 1.0, 2.0]
                              height_stride: 16 width_stride: 16 }
    }
    first_stage_box_predictor_conv_hyperparams {
      op: CONV
      regularizer { l2_regularizer { weight: 0.0 } }
      initializer { truncated_normal_initializer { stddev: 0.01 } }
    }
    first_stage_max_proposals: 100
    first_stage_localization_loss_weight: 2.0
    initial_crop_size: 14
    maxpool_kernel_size: 2
    maxpool_stride: 2
    second_stage_box_predictor {
      mask_rcnn_box_predictor {
        use_dropout: true
        dropout_keep_probability: 0.8
        predict_instance_masks: true
        fc_hyperparams { op: FC regularizer { l2_regularizer { weight: 0.0001 } } }
      }
    }
    second_stage_post_processing {
      batch_non_max_suppression { score_threshold: 0.0 iou_threshold: 0.6
                                  max_detections_per_class: 100 max_total_detections: 100 }
      score_converter: SOFTMAX
    }
    hard_example_miner { num_hard_examples: 32 }
  }
}
train_config: {
  batch_size: 1
  keep_checkpoint_every_n_hours: 1
  optimizer {
    rms_prop_optimizer: {
      learning_rate: { exponential_decay_learning_rate {
          initial_learning_rate: 0.001 decay_steps: 1000 decay_factor: 0.9 } }
      momentum_optimizer_value: 0.9
      decay: 0.9
      epsilon: 1.0
    }
  }
  gradient_clipping_by_norm: 10.0
  fine_tune_checkpoint: "models/faster_rcnn_resnet50_coco/model.ckpt"
  from_detection_checkpoint: true
  num_steps: 20000
  data_augmentation_options { random_horizontal_flip { } }
  data_augmentation_options { random_vertical_flip { } }
  data_augmentation_options { ssd_random_crop { } }
}
train_input_reader: {
  tf_record_input_reader { input_path: "cells/train.record" }
  label_map_path: "cells/label_map.pbtxt"
  load_instance_masks: true
  mask_type: PNG_MASKS
  num_epochs: 40
}
eval_config: {
  num_examples: 60
  visualization_export_dir: "cells/eval_pictures"
  max_evals: 1
}
eval_input_reader: {
  tf_record_input_reader { input_path: "cells/val.record" }
  label_map_path: "cells/label_map.pbtxt"
  load_instance_masks: true
  mask_type: PNG_MASKS
  shuffle: false
  num_readers: 1
}
"""


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _line(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


def _notes(loaded) -> dict[str, str]:
    reading = loaded.od_api
    return {n.field: str(n) for n in reading.changes + reading.no_effect}


# --- reading: recognition, meanings, defaults, the warning ---------------------------------

def test_a_user_tf2_config_is_read_with_od_api_meanings(tmp_path):
    path = _write(tmp_path, "user.config", USER_TF2)
    loaded = read_pipeline_config(path, quiet=True)
    assert loaded.problems == [] and loaded.od_api is not None
    frcnn = loaded.config.model.faster_rcnn
    predictor = frcnn.second_stage_box_predictor.mask_rcnn_box_predictor
    assert frcnn.initial_crop_size == 7  # 14 cropped, max-pooled 2x2 stride 2
    assert (predictor.mask_height, predictor.mask_width) == (34, 34)  # 33 -> the next even
    assert predictor.mask_prediction_num_conv_layers == 3  # 4 counting the output conv
    # 0 = auto: the OD API's rule on fpn.num_filters (128 from additional_layer_depth), 2 classes
    assert frcnn.fpn.num_filters == 128 and predictor.mask_prediction_conv_depth == 8
    assert frcnn.max_num_instances == 50  # train_config.max_number_of_boxes
    assert math.isclose(loaded.config.train_config.weight_decay, 0.0004, rel_tol=1e-6)
    # the OD API's defaults where the file is silent: its Adam epsilon and moving averages
    optimizer = loaded.config.train_config.optimizer
    assert optimizer.use_moving_average and math.isclose(optimizer.adam_optimizer.epsilon, 1e-8, rel_tol=1e-6)
    steps = [s.WhichOneof("preprocessing_step")
             for s in loaded.config.train_config.data_augmentation_options]
    assert steps == ["random_horizontal_flip", "random_crop_image"]  # the hue step is left out
    assert list(loaded.config.eval_config.metrics_set) == ["coco_detection_metrics",
                                                           "coco_mask_metrics"]
    notes = _notes(loaded)
    for field, needle in [
            ("model.faster_rcnn.feature_extractor.conv_hyperparams", "conv_hyperparams {"),
            ("model.faster_rcnn.feature_extractor.override_base_feature_extractor_hyperparams",
             "override_base"),
            ("model.faster_rcnn.use_static_shapes", "use_static_shapes"),
            ("train_config.sync_replicas", "sync_replicas"),
            ("train_config.replicas_to_aggregate", "replicas_to_aggregate"),
            ("train_config.data_augmentation_options[1].random_adjust_hue", "random_adjust_hue"),
            ("train_config.data_augmentation_options[2].random_crop_image.min_object_covered",
             "min_object_covered"),
            ("train_input_reader.num_readers", "num_readers"),
            ("eval_config.metrics_set[2]", "pascal_voc")]:
        assert field in notes, field
        assert notes[field].startswith(f"line {_line(USER_TF2, needle)}: "), field
    # training keeps averages (the OD API's default), so the eval_config's false is reported
    assert "eval_config.use_moving_averages" in notes
    # values that ask for what this engine does anyway are honoured without a word
    for quiet in ("use_dropout", "score_converter", "fine_tune_checkpoint_version",
                  "batch_norm_trainable", "eval_instance_masks"):
        assert not [f for f in notes if f.endswith(quiet)], quiet
    # the ported config means the same in this project's own schema
    assert "maxpool" not in format_pipeline_config(loaded.config)


def test_a_user_tf1_config_is_read_and_its_lost_fields_listed(tmp_path):
    path = _write(tmp_path, "cells.config", USER_TF1)
    loaded = read_pipeline_config(path, quiet=True)
    assert loaded.problems == []
    frcnn = loaded.config.model.faster_rcnn
    assert frcnn.feature_extractor.type == "faster_rcnn_resnet50_fpn_keras"
    anchors = frcnn.first_stage_anchor_generator.multiscale_anchor_generator
    # 256 px x [0.125 .. 1]: 32 to 256 px, one size a level of 8 * 2^level pixels
    assert (anchors.min_level, anchors.max_level, anchors.anchor_scale) == (2, 5, 8.0)
    assert frcnn.second_stage_batch_size == 64 and frcnn.first_stage_box_predictor_depth == 512
    assert frcnn.second_stage_num_sampled_masks == 16  # every positive of 64 x 0.25
    train = loaded.config.train_config
    assert train.fine_tune_checkpoint_type == "detection"  # from_detection_checkpoint
    assert train.optimizer.WhichOneof("optimizer") == "rms_prop_optimizer"
    assert train.optimizer.use_moving_average  # the OD API's default
    notes = _notes(loaded)
    for field in ("model.faster_rcnn.hard_example_miner",
                  "model.faster_rcnn.second_stage_box_predictor.mask_rcnn_box_predictor."
                  "use_dropout",
                  "model.faster_rcnn.second_stage_box_predictor.mask_rcnn_box_predictor."
                  "dropout_keep_probability",
                  "train_config.keep_checkpoint_every_n_hours",
                  "train_config.data_augmentation_options[2].ssd_random_crop",
                  "train_input_reader.num_epochs", "eval_config.num_examples",
                  "eval_config.visualization_export_dir", "eval_config.max_evals"):
        assert field in notes, field
    assert "0.0001 becomes train_config.weight_decay" in " ".join(notes.values())
    built = load_and_build(path)
    assert built.task.model.backbone.resnet.model_id == 50
    assert built.experiment.trainer.optimizer_config.optimizer.type == "rmsprop"


def test_the_warning_is_one_block_printed_by_the_command_runner(tmp_path):
    path = _write(tmp_path, "user.config", USER_TF2)
    code = ("import sys; from core.cli import run_main; "
            "from pipelines.config_util import load_pipeline_config; "
            f"sys.exit(run_main(lambda argv: load_pipeline_config({str(path)!r}) and 0))")
    result = run_command("-c", code, check=True)
    assert result.stderr.count("warning:") == 1
    block = result.stderr[result.stderr.index("warning:"):]
    assert block.startswith(f"warning: {path} is read as an Object Detection API config")
    assert "fields have no effect with this engine:" in block
    assert f"line {_line(USER_TF2, 'sync_replicas')}: train_config.sync_replicas: true:" in block
    assert "the OD API's defaults, for fields the file leaves unset:" in block


def test_native_configs_are_not_od_api_configs(tmp_path):
    for config in sorted((Path(__file__).resolve().parents[1] / "pipelines").glob("*.config")):
        assert read_pipeline_config(config, quiet=True).od_api is None, config.name


def test_every_problem_of_an_od_api_file_is_one_error_with_lines(tmp_path):
    text = USER_TF1.replace("num_hard_examples: 32", "num_hard_exampels: 32").replace(
        "'faster_rcnn_resnet50'", "'faster_rcnn_inception_v2'").replace(
        "first_stage_max_proposals: 100", "first_stage_max_proposals: 100\n"
        "    second_stage_batch_size: 512").replace("num_steps: 20000", "num_stepz: 20000")
    path = _write(tmp_path, "broken.config", text)
    with pytest.raises(PipelineConfigError) as info:
        load_and_build(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ") and " problems:\n" in message
    assert f"{path}:{_line(text, 'num_hard_exampels')}: unknown field 'num_hard_exampels'" \
        in message
    assert f"{path}:{_line(text, 'num_stepz')}: unknown field 'num_stepz'" in message
    assert (f"{path}:{_line(text, 'inception_v2')}: model.faster_rcnn.feature_extractor.type: "
            "'faster_rcnn_inception_v2' has no Model Garden counterpart; write type: "
            '"faster_rcnn_resnet34_fpn_keras"') in message
    # 512 sampled RoIs from 100 proposals + 100 boxes: named before any graph is built
    assert (f"{path}:{_line(text, 'second_stage_batch_size')}: model.faster_rcnn."
            "second_stage_batch_size: 512 RoIs an image cannot be sampled from 200 candidates "
            "(first_stage_max_proposals 100, plus max_num_instances 100") in message
    assert "Traceback" not in message


def test_native_meanings_differing_from_the_od_api_say_what_to_write(tmp_path):
    shapes = Path(__file__).resolve().parents[1] / "pipelines/shapes_resnet18_fpn.config"
    overrides = ["model { faster_rcnn { first_stage_max_proposals: 300 "
                 "second_stage_batch_size: 512 second_stage_box_predictor { "
                 "mask_rcnn_box_predictor { mask_height: 33 mask_width: 33 "
                 "mask_prediction_conv_depth: 0 } } } }"]
    with pytest.raises(PipelineConfigError) as info:
        load_and_build(shapes, overrides)
    message = str(info.value)
    assert "write mask_height: 34 mask_width: 34" in message
    # the OD API's rule for the config's 128 FPN channels and 4 classes
    assert "0 means 'automatic' only in an OD API config; write " \
           "mask_prediction_conv_depth: 16" in message
    assert "second_stage_batch_size: 512 RoIs an image cannot be sampled from 400 candidates" \
        in message
    with pytest.raises(PipelineConfigError, match="second_stage_num_sampled_masks: 200 masks "
                       "an image cannot be sampled from second_stage_batch_size 128"):
        load_and_build(shapes, ["model { faster_rcnn { second_stage_batch_size: 128 "
                                "second_stage_num_sampled_masks: 200 } }"])


# --- porting --------------------------------------------------------------------------------

def test_port_command_prints_every_change_and_writes_a_native_config(tmp_path):
    source = _write(tmp_path, "cells.config", USER_TF1)
    target = tmp_path / "ported.config"
    result = run_command("-m", "pipelines.port_od_config", str(source), str(target),
                         check=True)
    assert "warning:" not in result.stderr
    lines = result.stdout.splitlines()
    assert any(line.strip().startswith(f"changed   line {_line(USER_TF1, 'grid_anchor')}: "
                                       "model.faster_rcnn.first_stage_anchor_generator") for line in lines)
    assert any(line.strip().startswith("left out  line "
                                       f"{_line(USER_TF1, 'hard_example_miner')}:") for line in lines)
    assert any(line.strip().startswith("default   model.faster_rcnn.second_stage_batch_size: "
                                       "64") for line in lines)
    assert lines[-1].startswith(f"wrote {target}: ")
    ported = read_pipeline_config(target, quiet=True)
    assert ported.od_api is None and ported.problems == []
    assert target.read_text().startswith("# Ported from cells.config")
    original = load_and_build(source)
    assert load_and_build(target).experiment.task.model.as_dict() == \
        original.experiment.task.model.as_dict()
    same = run_command("-m", "pipelines.port_od_config", str(source), str(source))
    assert same.returncode == 1 and "error: " in same.stderr
    broken = _write(tmp_path, "typo.config", USER_TF1.replace("num_steps", "num_stepz"))
    failed = run_command("-m", "pipelines.port_od_config", str(broken),
                         str(tmp_path / "never.config"))
    assert failed.returncode == 1 and "unknown field 'num_stepz'" in failed.stderr
    assert not (tmp_path / "never.config").exists()


def test_both_user_configs_port_and_build(tmp_path):
    for name, text in (("tf2", USER_TF2), ("tf1", USER_TF1)):
        source = _write(tmp_path, f"{name}.config", text)
        result = port_od_config(source, tmp_path / f"{name}_ported.config")
        assert result.was_od_api and result.changes
        load_and_build(result.target)


@pytest.fixture(scope="module")
def six(realdata, tmp_path_factory) -> dict[str, Path]:
    """The OD API's six Mask R-CNN configs, ported."""
    root = tmp_path_factory.mktemp("six")
    ported = {}
    for name in SIX:
        source = realdata / "odapi_configs" / f"{name}.config"
        ported[name] = port_od_config(source, root / f"{name}.config").target
    return ported


@pytest.mark.realdata
def test_the_six_od_api_configs_load_and_port(realdata, six):
    for name in SIX:
        source = realdata / "odapi_configs" / f"{name}.config"
        loaded = read_pipeline_config(source, quiet=True)
        assert loaded.od_api is not None, name
        # nothing unknown: the only problem can be a backbone Model Garden lacks
        assert all("feature_extractor.type" in p.field and "no Model Garden counterpart" in
                   p.detail for p in loaded.problems), (name, loaded.problems)
        assert bool(loaded.problems) == ("inception" in name), name
        built = load_and_build(six[name])
        assert built.task.model.backbone.resnet.model_id == PORTED_BACKBONE[name], name
        assert read_pipeline_config(six[name], quiet=True).od_api is None
        mask = built.task.model.mask_roi_aligner.crop_size * 2
        assert mask == (16 if name in (SIX[2], SIX[4]) else 34), name  # 15 or 33, made even
        assert built.task.model.roi_aligner.crop_size == (17 if "resnet_v2" in name else 7)


# --- the six train a step ------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_records(tmp_path_factory) -> Path:
    return make_tiny_records(tmp_path_factory.mktemp("od_api_records"), train_images=4,
                             val_images=2)


def _tiny(records: Path) -> list[str]:
    """64 px, small heads and a thin ResNet-18 (each config's own crop, mask size, mask
    layers, anchors, losses and schedule are kept): one step costs seconds."""
    return [
        "model { faster_rcnn { num_classes: 4 image_resizer { keep_aspect_ratio_resizer { "
        "min_dimension: 64 max_dimension: 64 } } first_stage_max_proposals: 64 "
        "second_stage_batch_size: 32 second_stage_num_sampled_masks: 8 fpn { num_filters: 32 } "
        "first_stage_box_predictor_depth: 32 feature_extractor { type: "
        '"faster_rcnn_resnet18_fpn_keras" depth_multiplier: 0.25 } second_stage_box_predictor {'
        " mask_rcnn_box_predictor { mask_prediction_conv_depth: 16 box_head_num_convs: 1 "
        "box_head_conv_depth: 32 box_head_fc_dims: 64 } } } }",
        'train_config { batch_size: 1 num_steps: 1 fine_tune_checkpoint: "" use_bfloat16: false }',
        f'train_input_reader {{ label_map_path: "{records}/label_map.pbtxt" '
        f'tf_record_input_reader {{ input_path: "{records}/train-?????-of-00001.tfrecord" }} }}',
        f'eval_input_reader {{ label_map_path: "{records}/label_map.pbtxt" '
        f'tf_record_input_reader {{ input_path: "{records}/val-?????-of-00001.tfrecord" }} }}']


@pytest.mark.slow
@pytest.mark.realdata
@pytest.mark.parametrize("name", SIX)
def test_each_ported_config_trains_a_step(name, six, tiny_records, tmp_path):
    import tensorflow as tf

    from models.training.strategy import choose_placement
    from models.training.train_loop import train

    built = load_and_build(six[name], _tiny(tiny_records), checkpoint_every_n=1)
    # eagerly: a single step then costs no tracing (the Keras layers stay Model Garden's)
    built.experiment.trainer.train_tf_function = False
    built.experiment.trainer.train_tf_while_loop = False
    result = train(built, str(tmp_path / "model"), choose_placement(), checkpoint_every_n=1)
    assert result["step"] == 1 and Path(result["checkpoint"] + ".index").exists()
    losses = total_losses(tmp_path / "model" / "train")
    assert losses and all(math.isfinite(v) for v in losses)
    tf.keras.backend.clear_session()
    shutil.rmtree(tmp_path / "model")
