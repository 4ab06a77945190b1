"""pipeline.config: parsing, line-numbered errors, overrides, and every mapping onto Model
Garden's experiment config."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
from google.protobuf import text_format

from models.builders import model_builder, optimizer_builder
from models.builders.experiment_builder import build_pipeline, load_and_build
from pipelines.config_util import (
    PipelineConfigError,
    apply_overrides,
    locate_field,
    parse_pipeline_config,
)
from pipelines.protos import faster_rcnn_pb2, optimizer_pb2

REPO = Path(__file__).resolve().parents[1]
SHAPES = REPO / "pipelines/shapes_resnet18_fpn.config"


def _faster_rcnn(text: str) -> faster_rcnn_pb2.FasterRcnn:
    base = ('num_classes: 4 image_resizer { keep_aspect_ratio_resizer { min_dimension: 100 '
            'max_dimension: 200 } } feature_extractor { type: "faster_rcnn_resnet50_fpn_keras" } ')
    return text_format.Merge(base + text, faster_rcnn_pb2.FasterRcnn())  # later fields win


def _optimizer(text: str) -> optimizer_pb2.Optimizer:
    return text_format.Parse(text, optimizer_pb2.Optimizer())


def test_unknown_field_names_line_message_and_valid_fields(tmp_path):
    config = tmp_path / "p.config"
    config.write_text("model {\n  faster_rcnn {\n    num_clases: 3\n  }\n}\n")
    with pytest.raises(PipelineConfigError) as info:
        load_and_build(config)
    message = str(info.value)
    # one error for the whole file: the typo with its line, and what its absence leaves out
    assert f"{config}:3: unknown field 'num_clases' in FasterRcnn" in message
    assert "did you mean 'num_classes'?" in message
    assert f"{config}:2: model.faster_rcnn.num_classes: must be at least 1" in message


def test_fields_of_neither_schema_are_errors_not_ignored():
    with pytest.raises(PipelineConfigError, match="unknown field 'sync_replica' in "
                       "TrainConfig .*did you mean 'sync_replicas'"):
        parse_pipeline_config("train_config { sync_replica: true }")


def test_semantic_errors_point_at_the_field_line(tmp_path):
    text = SHAPES.read_text().replace("faster_rcnn_resnet18_fpn_keras",
                                      "faster_rcnn_inception_v2")
    config = tmp_path / "p.config"
    config.write_text(text)
    expected_line = next(i for i, line in enumerate(text.splitlines(), 1)
                         if "faster_rcnn_inception_v2" in line)
    with pytest.raises(PipelineConfigError) as info:
        load_and_build(config)
    assert str(info.value).startswith(f"{config}:{expected_line}: "
                                      "model.faster_rcnn.feature_extractor.type: unsupported")
    assert "faster_rcnn_resnet101_fpn_keras" in str(info.value)


def test_locate_field_handles_comments_lists_and_colon_braces():
    text = ("# model { faster_rcnn {\nmodel {\n faster_rcnn: {\n  anchor: [1, 2]\n"
            "  num_classes: 3 # c\n }\n}\ntrain_config { batch_size: 2 }\n")
    assert locate_field(text, "model.faster_rcnn.num_classes") == 5
    assert locate_field(text, "model.faster_rcnn.image_resizer") == 3  # nearest ancestor
    assert locate_field(text, "train_config.batch_size") == 8


def test_overrides_replace_scalars_and_repeated_fields_and_switch_oneofs():
    config = parse_pipeline_config(SHAPES.read_text())
    apply_overrides(config, [
        'train_input_reader { tf_record_input_reader { input_path: "a" input_path: "b" } }',
        "train_config { batch_size: 8 optimizer { adam_optimizer { learning_rate { "
        "constant_learning_rate { learning_rate: 0.5 } } } } }"])
    assert list(config.train_input_reader.tf_record_input_reader.input_path) == ["a", "b"]
    assert config.train_config.batch_size == 8
    assert config.train_config.optimizer.WhichOneof("optimizer") == "adam_optimizer"
    assert config.train_config.num_steps == 3500  # untouched fields stay
    with pytest.raises(PipelineConfigError, match="--config_override #1"):
        apply_overrides(config, ["train_config { nope: 1 }"])


def test_model_fields_map_onto_model_garden():
    model = model_builder.build_model_config(_faster_rcnn(
        "first_stage_anchor_generator { multiscale_anchor_generator { min_level: 3 "
        "max_level: 7 anchor_scale: 4 aspect_ratios: [1.0, 2.0] scales_per_octave: 2 } } "
        "fpn { num_filters: 64 use_separable_conv: true } "
        "first_stage_box_predictor_depth: 96 first_stage_box_predictor_num_convs: 2 "
        "first_stage_nms_score_threshold: 0.1 first_stage_nms_iou_threshold: 0.6 "
        "first_stage_max_proposals: 300 first_stage_max_proposals_eval: 150 "
        "initial_crop_size: 9 second_stage_batch_size: 64 second_stage_balance_fraction: 0.3 "
        "second_stage_foreground_iou_threshold: 0.6 second_stage_num_sampled_masks: 16 "
        "second_stage_box_predictor { mask_rcnn_box_predictor { mask_height: 32 "
        "mask_width: 32 mask_prediction_num_conv_layers: 3 mask_prediction_conv_depth: 64 "
        "masks_are_class_agnostic: true box_head_num_convs: 1 box_head_conv_depth: 32 "
        "box_head_num_fcs: 2 box_head_fc_dims: 128 mask_prediction_use_separable_conv: true } } "
        "second_stage_post_processing { batch_non_max_suppression { score_threshold: 0.2 "
        "iou_threshold: 0.4 max_detections_per_class: 99 max_total_detections: 7 } } "
        "feature_extractor { use_sync_batch_norm: true batch_norm_momentum: 0.9 "
        "depth_multiplier: 0.5 }"))
    assert model.num_classes == 5  # plus the background
    assert model.input_size == [256, 256, 3]  # 200 padded to a multiple of 2^7
    assert (model.min_level, model.max_level) == (3, 7)
    assert model.anchor.as_dict() == {"num_scales": 2, "aspect_ratios": [1.0, 2.0],
                                      "anchor_size": 4.0}
    assert model.backbone.resnet.model_id == 50
    assert model.backbone.resnet.depth_multiplier == 0.5
    assert (model.decoder.fpn.num_filters, model.decoder.fpn.use_separable_conv) == (64, True)
    assert (model.rpn_head.num_filters, model.rpn_head.num_convs) == (96, 2)
    generator = model.roi_generator
    assert (generator.num_proposals, generator.test_num_proposals) == (300, 150)
    assert math.isclose(generator.pre_nms_score_threshold, 0.1, rel_tol=1e-6)
    assert math.isclose(generator.test_nms_iou_threshold, 0.6, rel_tol=1e-6)
    assert model.roi_aligner.crop_size == 9
    assert (model.roi_sampler.num_sampled_rois, model.mask_sampler.num_sampled_masks) == (64, 16)
    assert math.isclose(model.roi_sampler.foreground_fraction, 0.3, rel_tol=1e-6)
    assert math.isclose(model.roi_sampler.foreground_iou_threshold, 0.6, rel_tol=1e-6)
    assert model.mask_roi_aligner.crop_size == 16
    assert (model.mask_head.num_convs, model.mask_head.num_filters,
            model.mask_head.class_agnostic) == (3, 64, True)
    assert model.mask_head.use_separable_conv
    assert (model.detection_head.num_convs, model.detection_head.num_filters,
            model.detection_head.num_fcs, model.detection_head.fc_dims) == (1, 32, 2, 128)
    detection = model.detection_generator
    assert (detection.pre_nms_top_k, detection.max_num_detections) == (99, 7)
    assert math.isclose(detection.pre_nms_score_threshold, 0.2, rel_tol=1e-6)
    assert math.isclose(detection.nms_iou_threshold, 0.4, rel_tol=1e-6)
    assert model.norm_activation.use_sync_bn
    assert math.isclose(model.norm_activation.norm_momentum, 0.9, rel_tol=1e-6)


def test_boxes_only_and_resizers_and_losses():
    boxes_only = model_builder.build_model_config(_faster_rcnn("number_of_stages: 2"))
    assert not boxes_only.include_mask and boxes_only.mask_head is None
    fixed = _faster_rcnn("image_resizer { fixed_shape_resizer { height: 100 width: 300 } }")
    assert model_builder.build_resize_spec(fixed) == model_builder.ResizeSpec(
        "fixed_shape", 100, 300)
    assert model_builder.build_model_config(fixed).input_size == [128, 320, 3]
    keep = model_builder.build_resize_spec(_faster_rcnn(""))
    assert (keep.kind, keep.min_dimension, keep.height) == ("keep_aspect_ratio", 100, 200)
    losses = model_builder.build_losses_config(_faster_rcnn(
        "first_stage_localization_loss_weight: 2 first_stage_objectness_loss_weight: 3 "
        "second_stage_localization_loss_weight: 4 second_stage_classification_loss_weight: 5 "
        "second_stage_mask_prediction_loss_weight: 6"), weight_decay=1e-4)
    assert (losses.rpn_box_weight, losses.rpn_score_weight, losses.frcnn_box_weight,
            losses.frcnn_class_weight, losses.mask_weight) == (2, 3, 4, 5, 6)
    assert math.isclose(losses.l2_weight_decay, 1e-4)
    targets = model_builder.build_rpn_targets(_faster_rcnn(
        "first_stage_minibatch_size: 64 first_stage_positive_balance_fraction: 0.25 "
        "first_stage_positive_iou_threshold: 0.6 max_num_instances: 50"))
    assert (targets.minibatch_size, targets.max_num_instances) == (64, 50)
    assert math.isclose(targets.positive_fraction, 0.25) and math.isclose(
        targets.positive_iou, 0.6, rel_tol=1e-6)


@pytest.mark.parametrize("text, field", [
    ("num_classes: 0", "num_classes"),
    ("number_of_stages: 1", "number_of_stages"),
    ('feature_extractor { type: "faster_rcnn_resnet42_fpn_keras" }', "feature_extractor.type"),
    ("image_resizer { keep_aspect_ratio_resizer { pad_to_max_dimension: false } }",
     "pad_to_max_dimension"),
    ("second_stage_box_predictor { mask_rcnn_box_predictor { mask_height: 27 } }",
     "mask_height"),
    ("first_stage_anchor_generator { multiscale_anchor_generator { min_level: 1 } }",
     "multiscale_anchor_generator"),
    ("feature_extractor { depth_multiplier: 0 }", "depth_multiplier"),
])
def test_invalid_model_settings_name_their_field(text, field):
    with pytest.raises(PipelineConfigError) as info:
        model_builder.build_model_config(_faster_rcnn(text))
    assert field in info.value.field


def _lr(optimization, step: int) -> float:
    from official.modeling.optimization import OptimizerFactory

    factory = OptimizerFactory(optimization)
    rate = factory.build_learning_rate()
    return float(rate(step) if callable(rate) else rate)


def test_od_api_learning_rate_schedules_match_their_definitions():
    cosine = optimizer_builder.build_optimization_config(_optimizer(
        "momentum_optimizer { momentum_optimizer_value: 0.8 learning_rate { "
        "cosine_decay_learning_rate { learning_rate_base: 0.1 total_steps: 1100 "
        "warmup_learning_rate: 0.01 warmup_steps: 100 } } }"), gradient_clipping_by_norm=5.0)
    assert cosine.optimizer.type == "sgd" and math.isclose(cosine.optimizer.sgd.momentum, 0.8,
                                                           rel_tol=1e-6)
    assert cosine.optimizer.sgd.global_clipnorm == 5.0
    assert math.isclose(_lr(cosine, 0), 0.01, rel_tol=1e-5)
    assert math.isclose(_lr(cosine, 50), 0.055, rel_tol=1e-4)  # linear warm-up
    assert math.isclose(_lr(cosine, 100), 0.1, rel_tol=1e-5)
    # OD API: base * 0.5 * (1 + cos(pi * (step - warmup) / (total - warmup)))
    assert math.isclose(_lr(cosine, 600), 0.1 * 0.5 * (1 + math.cos(math.pi * 0.5)),
                        rel_tol=1e-4)
    assert _lr(cosine, 1100) < 1e-6
    manual = optimizer_builder.build_optimization_config(_optimizer(
        "momentum_optimizer { learning_rate { manual_step_learning_rate { "
        "initial_learning_rate: 0.01 schedule { step: 10 learning_rate: 0.1 } "
        "schedule { step: 20 learning_rate: 0.001 } warmup: true } } }"))
    assert math.isclose(_lr(manual, 0), 0.01, rel_tol=1e-5)
    assert math.isclose(_lr(manual, 5), 0.055, rel_tol=1e-4)
    assert math.isclose(_lr(manual, 15), 0.1, rel_tol=1e-5)
    assert math.isclose(_lr(manual, 25), 0.001, rel_tol=1e-5)
    adam = optimizer_builder.build_optimization_config(_optimizer(
        "adam_optimizer { learning_rate { exponential_decay_learning_rate { "
        "initial_learning_rate: 0.1 decay_steps: 10 decay_factor: 0.5 staircase: true } } } "
        "use_moving_average: true moving_average_decay: 0.99"))
    assert adam.optimizer.type == "adam" and math.isclose(adam.ema.average_decay, 0.99,
                                                          rel_tol=1e-6)
    assert math.isclose(_lr(adam, 25), 0.1 * 0.5 ** 2, rel_tol=1e-5)
    constant = optimizer_builder.build_optimization_config(_optimizer(
        "momentum_optimizer { learning_rate { constant_learning_rate { learning_rate: 0.3 } } }"))
    assert math.isclose(_lr(constant, 1000), 0.3, rel_tol=1e-6)


@pytest.mark.parametrize("text, field", [
    ("", "train_config.optimizer"),
    ("momentum_optimizer { }", "momentum_optimizer.learning_rate"),
    ("momentum_optimizer { learning_rate { cosine_decay_learning_rate { "
     "hold_base_rate_steps: 5 } } }", "hold_base_rate_steps"),
    ("momentum_optimizer { learning_rate { exponential_decay_learning_rate { "
     "burnin_steps: 5 } } }", "burnin_steps"),
    ("momentum_optimizer { learning_rate { manual_step_learning_rate { "
     "schedule { step: 20 } schedule { step: 10 } } } }", "schedule"),
])
def test_schedules_that_cannot_be_honoured_are_refused(text, field):
    with pytest.raises(PipelineConfigError) as info:
        optimizer_builder.build_optimization_config(_optimizer(text))
    assert field in info.value.field


def test_experiment_maps_inputs_trainer_and_eval(tmp_path):
    config = parse_pipeline_config(SHAPES.read_text())
    apply_overrides(config, ["eval_input_reader { sample_1_of_n_examples: 3 }"])
    built = build_pipeline(config, checkpoint_every_n=50)
    task = built.experiment.task
    assert task.train_data.input_path == ["demo_output/records/train-?????-of-00002.tfrecord"]
    assert task.train_data.global_batch_size == 2 and task.train_data.is_training
    assert task.validation_data.global_batch_size == 2 and not task.validation_data.is_training
    trainer = built.experiment.trainer
    assert (trainer.train_steps, trainer.checkpoint_interval, trainer.max_to_keep) == (3500,
                                                                                       50, 7)
    assert trainer.steps_per_loop == 50 and trainer.summary_interval == 50
    assert math.isclose(task.losses.l2_weight_decay, 1e-4, rel_tol=1e-6)
    assert built.sample_1_of_n_eval_examples == 3
    assert built.metrics_sets == ("coco_detection_metrics", "coco_mask_metrics")
    assert built.train_label_map_path == "demo_output/records/label_map.pbtxt"
    for bad, field in [("train_config { num_steps: 0 }", "train_config.num_steps"),
                       ('eval_config { metrics_set: "pascal_voc" }', "eval_config.metrics_set"),
                       ("train_input_reader { mask_type: NUMERICAL_MASKS }",
                        "train_input_reader.mask_type")]:
        broken = parse_pipeline_config(SHAPES.read_text())
        apply_overrides(broken, [bad])
        with pytest.raises(PipelineConfigError) as info:
            build_pipeline(broken)
        assert info.value.field.startswith(field)


def test_od_api_options_model_garden_has_map_onto_it():
    model = model_builder.build_model_config(_faster_rcnn(
        "second_stage_box_predictor { mask_rcnn_box_predictor { share_box_across_classes: true"
        " } } second_stage_post_processing { score_converter: SIGMOID "
        "batch_non_max_suppression { soft_nms_sigma: 0.5 use_cpu_nms: true } } "
        "second_stage_classification_loss { weighted_sigmoid {} }"))
    assert model.detection_head.class_agnostic_bbox_pred
    generator = model.detection_generator
    assert generator.use_sigmoid_probability and generator.use_cpu_nms
    assert (generator.nms_version, generator.soft_nms_sigma) == ("v1", 0.5)
    losses = model_builder.build_losses_config(_faster_rcnn(
        "second_stage_classification_loss { weighted_sigmoid {} }"), weight_decay=0.0)
    assert losses.frcnn_class_use_binary_cross_entropy
    rms = optimizer_builder.build_optimization_config(_optimizer(
        "rms_prop_optimizer { learning_rate { constant_learning_rate { learning_rate: 0.01 } } "
        "momentum_optimizer_value: 0.8 decay: 0.95 epsilon: 0.5 }"))
    assert rms.optimizer.type == "rmsprop"
    assert (round(rms.optimizer.rmsprop.rho, 6), round(rms.optimizer.rmsprop.momentum, 6),
            rms.optimizer.rmsprop.epsilon) == (0.95, 0.8, 0.5)
    # the zoo's schedules start with an entry at step 0: that rate from the first step on
    zoo = optimizer_builder.build_optimization_config(_optimizer(
        "momentum_optimizer { learning_rate { manual_step_learning_rate { "
        "initial_learning_rate: 0.5 schedule { step: 0 learning_rate: 0.0003 } "
        "schedule { step: 100 learning_rate: 0.00003 } } } }"))
    assert math.isclose(_lr(zoo, 0), 0.0003, rel_tol=1e-5)
    assert math.isclose(_lr(zoo, 150), 0.00003, rel_tol=1e-5)


@pytest.mark.parametrize("text, field, detail", [
    ("second_stage_post_processing { score_converter: IDENTITY }", "score_converter",
     "IDENTITY (raw logits as scores) is not available"),
    ("image_resizer { identity_resizer {} }", "image_resizer.identity_resizer",
     "is not available: Model Garden trains on one input size"),
    ("second_stage_box_predictor { rfcn_box_predictor {} }", "second_stage_box_predictor",
     "rfcn_box_predictor is not a Mask R-CNN head"),
    ("second_stage_batch_size: 0", "second_stage_batch_size", "must be at least 1"),
    ("second_stage_balance_fraction: 1.5", "second_stage_balance_fraction",
     "must be between 0 and 1"),
    # 64 px, levels 2-6, 3 anchors a place: 1023 anchors, fewer than the 2000 proposals
    ("image_resizer { keep_aspect_ratio_resizer { min_dimension: 64 max_dimension: 64 } } "
     "first_stage_max_proposals: 2000 second_stage_batch_size: 1200",
     "second_stage_batch_size", "1200 RoIs an image cannot be sampled from 1123 candidates "
     "(1023 proposals, all the anchors of a 64x64 input on levels 2-6"),
])
def test_values_model_garden_fails_on_are_config_errors(text, field, detail):
    faster_rcnn = _faster_rcnn("image_resizer { keep_aspect_ratio_resizer { min_dimension: 100 "
                               "max_dimension: 100 } } " + text)
    with pytest.raises(PipelineConfigError) as info:
        model_builder.build_model_config(faster_rcnn)
    assert any(field in p.field and detail in p.detail
               for p in info.value.problems or [info.value]), str(info.value)
