"""What this engine does with each field that only the Object Detection API honours.

Every field of the OD API's Faster R-CNN / Mask R-CNN, train, eval and input-reader schema
parses (pipelines/protos/). The fields that mean the same with Model Garden are read by the
builders like any other. The rest are listed here, keyed by (message, field):

- NO_EFFECT: Model Garden has nothing that does what the field asks. Each has the reason
  shown to the user and, where some values ask for exactly what this engine does anyway
  (`use_dropout: false`, `score_converter`-free `logit_scale: 1.0`), a test of those values:
  they are honoured silently, every other value is listed in the loader's warning.
- TRANSLATED: the meaning exists but is written differently (pipelines/od_api.py rewrites
  it: grid anchors, the crop and max pool, `*_hyperparams` regularizers, ...).

A file that sets any of these fields is an OD API config: it is read with the OD API's
meanings and the OD API's defaults (OD_DEFAULTS) for the fields it leaves unset.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

Honoured = Callable[[Any, Any], bool]  # (value, parent message) -> does what we do anyway


@dataclasses.dataclass(frozen=True)
class NoEffect:
    reason: str
    honoured: Honoured | None = None


def _equals(expected) -> Honoured:
    return lambda value, parent: value == expected


def _all_zero(value, parent) -> bool:
    return not any(value)


_IMPLEMENTATION = ("an implementation switch of the OD API (static shapes, TPU-friendly ops); "
                   "Model Garden chooses its own ops")
_TF1_LOOP = "a setting of the OD API's TF1 training loop; model_main_tf2.py's flags choose " \
            "the strategy and replicas"
_INPUT_TUNING = "input-pipeline tuning; Model Garden's tf.data pipeline tunes itself"
_OTHER_DATA = "this engine's records and model have boxes, classes and masks only"
_EVAL_LOOP = "evaluation scores every record of eval_input_reader for each new checkpoint " \
             "(sample_1_of_n_examples evaluates a subset)"
_PICTURES = "evaluation pictures (predictions beside the ground truth) go to TensorBoard"
_AUGMENTATION = "this engine has no such augmentation, so it is not applied (its " \
                "augmentations: random_horizontal_flip, random_vertical_flip, " \
                "random_crop_image, random_adjust_brightness, random_adjust_contrast, " \
                "random_scale_crop_and_pad_to_square and docs/small_data.md's own)"

NO_EFFECT: dict[tuple[str, str], NoEffect] = {
    # --- model --------------------------------------------------------------------------
    ("FasterRcnn", "first_stage_atrous_rate"): NoEffect(
        "dilated convolutions belong to the OD API's single-stride backbones; the ResNet-FPN "
        "keeps its strides", _equals(1)),
    ("FasterRcnn", "first_stage_box_predictor_kernel_size"): NoEffect(
        "Model Garden's RPN convolutions are 3x3", _equals(3)),
    ("FasterRcnn", "hard_example_miner"): NoEffect(
        "RoIs are sampled (second_stage_batch_size, second_stage_balance_fraction), not mined"),
    ("FasterRcnn", "inplace_batchnorm_update"): NoEffect(_IMPLEMENTATION, _equals(False)),
    ("FasterRcnn", "use_matmul_crop_and_resize"): NoEffect(_IMPLEMENTATION, _equals(False)),
    ("FasterRcnn", "clip_anchors_to_image"): NoEffect(
        "anchors crossing the image border are kept as they are", _equals(False)),
    ("FasterRcnn", "use_matmul_gather_in_matcher"): NoEffect(_IMPLEMENTATION, _equals(False)),
    ("FasterRcnn", "use_static_balanced_label_sampler"): NoEffect(_IMPLEMENTATION,
                                                                   _equals(False)),
    ("FasterRcnn", "use_static_shapes"): NoEffect(_IMPLEMENTATION, _equals(False)),
    ("FasterRcnn", "use_static_shapes_for_eval"): NoEffect(_IMPLEMENTATION, _equals(False)),
    ("FasterRcnn", "use_partitioned_nms_in_first_stage"): NoEffect(_IMPLEMENTATION),
    ("FasterRcnn", "use_combined_nms_in_first_stage"): NoEffect(_IMPLEMENTATION,
                                                                 _equals(False)),
    ("FasterRcnn", "resize_masks"): NoEffect(
        "ground-truth masks are always resized with their image", _equals(True)),
    ("FasterRcnn", "return_raw_detections_during_predict"): NoEffect(
        "export with exporter_main_v2.py --od_api_outputs for raw_detection_boxes and "
        "raw_detection_scores", _equals(False)),
    ("FasterRcnn", "output_final_box_features"): NoEffect(
        "the SavedModel has no box-feature outputs", _equals(False)),
    ("FasterRcnn", "output_final_box_rpn_features"): NoEffect(
        "the SavedModel has no box-feature outputs", _equals(False)),
    ("FasterRcnn", "context_config"): NoEffect(
        "Context R-CNN's attention over context features is not part of Model Garden's "
        "Mask R-CNN: the model trains without it"),
    ("FasterRcnnFeatureExtractor", "first_stage_features_stride"): NoEffect(
        "the ResNet-FPN has features at strides 4 to 2^max_level, not at one stride"),
    ("FasterRcnnFeatureExtractor", "batch_norm_trainable"): NoEffect(
        "batch normalization trains with the layers it belongs to (freeze layers with "
        "trainable_layers or freeze_variables)", _equals(True)),
    ("FasterRcnnFeatureExtractor", "override_base_feature_extractor_hyperparams"): NoEffect(
        "the backbone keeps Model Garden's layer settings", _equals(False)),
    ("FasterRcnnFeatureExtractor", "pad_to_multiple"): NoEffect(
        "inputs are padded to a multiple of 2^max_level"),
    ("MaskRCNNBoxPredictor", "use_dropout"): NoEffect(
        "Model Garden's box head has no dropout", _equals(False)),
    ("MaskRCNNBoxPredictor", "dropout_keep_probability"): NoEffect(
        "Model Garden's box head has no dropout", lambda value, parent: not parent.use_dropout),
    ("MaskRCNNBoxPredictor", "box_code_size"): NoEffect("boxes are encoded with 4 numbers",
                                                        _equals(4)),
    ("MaskRCNNBoxPredictor", "predict_keypoints"): NoEffect("there is no keypoint head",
                                                            _equals(False)),
    ("MaskRCNNBoxPredictor", "convolve_then_upsample_masks"): NoEffect(
        "Model Garden's mask head always convolves at the crop's size, then upsamples 2x "
        "(the OD API's convolve_then_upsample_masks: true)", _equals(True)),
    ("MultiscaleAnchorGenerator", "normalize_coordinates"): NoEffect(
        "anchors are in pixels here", _equals(True)),
    ("AnchorGenerator", "ssd_anchor_generator"): NoEffect(
        "SSD anchors do not fit an FPN; the default FPN anchors are used (levels 2-6, "
        "anchor_scale 8, aspect ratios 0.5, 1, 2)"),
    ("AnchorGenerator", "flexible_grid_anchor_generator"): NoEffect(
        "Model Garden derives anchors from the FPN levels; the default FPN anchors are used "
        "(levels 2-6, anchor_scale 8, aspect ratios 0.5, 1, 2)"),
    ("KeepAspectRatioResizer", "resize_method"): NoEffect("images are resized bilinearly",
                                                          _equals(0)),
    ("KeepAspectRatioResizer", "convert_to_grayscale"): NoEffect("images stay RGB",
                                                                 _equals(False)),
    ("KeepAspectRatioResizer", "per_channel_pad_value"): NoEffect("padding is zeros",
                                                                  _all_zero),
    ("FixedShapeResizer", "resize_method"): NoEffect("images are resized bilinearly",
                                                     _equals(0)),
    ("FixedShapeResizer", "convert_to_grayscale"): NoEffect("images stay RGB", _equals(False)),
    ("BatchNonMaxSuppression", "use_static_shapes"): NoEffect(_IMPLEMENTATION, _equals(False)),
    ("BatchNonMaxSuppression", "use_partitioned_nms"): NoEffect(_IMPLEMENTATION,
                                                                _equals(False)),
    ("BatchNonMaxSuppression", "use_combined_nms"): NoEffect(_IMPLEMENTATION, _equals(False)),
    ("BatchNonMaxSuppression", "use_hard_nms"): NoEffect(_IMPLEMENTATION, _equals(False)),
    ("BatchNonMaxSuppression", "use_class_agnostic_nms"): NoEffect(
        "non-max suppression runs class by class", _equals(False)),
    ("BatchNonMaxSuppression", "max_classes_per_detection"): NoEffect(
        "each detection has one class", _equals(1)),
    ("BatchNonMaxSuppression", "change_coordinate_frame"): NoEffect(
        "boxes are always relative to the whole image", _equals(True)),
    ("PostProcessing", "logit_scale"): NoEffect("logits are not rescaled", _equals(1.0)),
    ("PostProcessing", "calibration_config"): NoEffect("scores are not calibrated"),
    ("WeightedSoftmaxClassificationLoss", "logit_scale"): NoEffect(
        "logits are not rescaled", _equals(1.0)),
    ("WeightedSoftmaxClassificationLoss", "anchorwise_output"): NoEffect(
        "deprecated in the OD API", _equals(False)),
    ("WeightedSigmoidClassificationLoss", "anchorwise_output"): NoEffect(
        "deprecated in the OD API", _equals(False)),
    # --- training -----------------------------------------------------------------------
    ("TrainConfig", "sync_replicas"): NoEffect(_TF1_LOOP),
    ("TrainConfig", "keep_checkpoint_every_n_hours"): NoEffect(
        "checkpoints are kept by number (checkpoint_max_to_keep)"),
    ("TrainConfig", "startup_delay_steps"): NoEffect(_TF1_LOOP),
    ("TrainConfig", "replicas_to_aggregate"): NoEffect(_TF1_LOOP),
    ("TrainConfig", "batch_queue_capacity"): NoEffect(_TF1_LOOP),
    ("TrainConfig", "num_batch_queue_threads"): NoEffect(_TF1_LOOP),
    ("TrainConfig", "prefetch_queue_capacity"): NoEffect(_TF1_LOOP),
    ("TrainConfig", "fine_tune_checkpoint_version"): NoEffect(
        "only TF2 checkpoints load (a TF1 checkpoint's variables are not Model Garden's)",
        _equals(2)),
    ("TrainConfig", "load_all_detection_checkpoint_vars"): NoEffect(
        "fine_tune_checkpoint_type decides what loads ('detection': everything but the "
        "class-sized layers)", _equals(False)),
    ("TrainConfig", "run_fine_tune_checkpoint_dummy_computation"): NoEffect(
        "the model is always built before a checkpoint is read", _equals(True)),
    ("TrainConfig", "bias_grad_multiplier"): NoEffect(
        "gradients are not rescaled per variable", _equals(0.0)),
    ("TrainConfig", "merge_multiple_label_boxes"): NoEffect(
        "each instance keeps its own box and class", _equals(False)),
    ("TrainConfig", "use_multiclass_scores"): NoEffect(
        "the records' classes are the targets", _equals(False)),
    ("TrainConfig", "unpad_groundtruth_tensors"): NoEffect(_IMPLEMENTATION),
    ("TrainConfig", "retain_original_images"): NoEffect(_PICTURES),
    ("TrainConfig", "summarize_gradients"): NoEffect(
        "TensorBoard gets the losses, the learning rate and pictures", _equals(False)),
    ("RandomHorizontalFlip", "keypoint_flip_permutation"): NoEffect("there are no keypoints"),
    ("RandomVerticalFlip", "keypoint_flip_permutation"): NoEffect("there are no keypoints"),
    ("RandomCropImage", "min_object_covered"): NoEffect(
        "crops are drawn by area and aspect ratio alone; an instance whose mask leaves the "
        "crop is dropped"),
    ("RandomCropImage", "overlap_thresh"): NoEffect(
        "an instance is kept while any of its mask is inside the crop"),
    ("RandomCropImage", "clip_boxes"): NoEffect("boxes follow the cropped masks",
                                                _equals(True)),
    ("RandomScaleCropAndPadToSquare", "output_size"): NoEffect(
        "the output has the image resizer's size"),
    # --- inputs -------------------------------------------------------------------------
    **{("InputReader", name): NoEffect(_INPUT_TUNING) for name in (
        "filenames_shuffle_buffer_size", "num_readers", "num_parallel_batches",
        "num_prefetch_batches", "queue_capacity", "min_after_dequeue", "read_block_length",
        "prefetch_size", "num_parallel_map_calls")},
    ("InputReader", "num_additional_channels"): NoEffect("images are RGB", _equals(0)),
    ("InputReader", "num_keypoints"): NoEffect(_OTHER_DATA, _equals(0)),
    ("InputReader", "keypoint_type_weight"): NoEffect(_OTHER_DATA),
    **{("InputReader", name): NoEffect(_OTHER_DATA, _equals(False)) for name in (
        "load_multiclass_scores", "load_context_features", "load_context_image_ids",
        "load_dense_pose", "load_track_id", "load_keypoint_depth_features")},
    ("InputReader", "use_display_name"): NoEffect(
        "classes are read as label-map ids (image/object/class/label)", _equals(False)),
    ("InputReader", "include_source_id"): NoEffect(
        "evaluation identifies images by their position in the records"),
    ("InputReader", "input_type"): NoEffect("records hold tf.Examples",
                                            lambda value, parent: value in (0, 1)),
    ("InputReader", "frame_index"): NoEffect(_OTHER_DATA, _equals(-1)),
    ("InputReader", "expand_labels_hierarchy"): NoEffect(
        "expand an Open Images hierarchy when converting (create_tfrecords.py "
        "--expand_hierarchy)", _equals(False)),
    # --- evaluation ---------------------------------------------------------------------
    ("EvalConfig", "num_examples"): NoEffect(_EVAL_LOOP),
    ("EvalConfig", "eval_interval_secs"): NoEffect(
        "evaluation starts as soon as a new checkpoint appears (--eval_timeout bounds the "
        "wait)"),
    ("EvalConfig", "max_evals"): NoEffect(
        "evaluation stops after the last checkpoint or --eval_timeout"),
    ("EvalConfig", "save_graph"): NoEffect("the graph is not saved", _equals(False)),
    ("EvalConfig", "visualization_export_dir"): NoEffect(_PICTURES, _equals("")),
    ("EvalConfig", "eval_master"): NoEffect(_TF1_LOOP, _equals("")),
    ("EvalConfig", "parameterized_metric"): NoEffect(_OTHER_DATA),
    ("EvalConfig", "export_path"): NoEffect(
        "python -m models.tools.infer writes COCO results (detections.json)", _equals("")),
    ("EvalConfig", "ignore_groundtruth"): NoEffect(
        "evaluation needs the ground truth; models.tools.infer predicts without it",
        _equals(False)),
    ("EvalConfig", "skip_scores"): NoEffect(_PICTURES, _equals(False)),
    ("EvalConfig", "skip_labels"): NoEffect(_PICTURES, _equals(False)),
    ("EvalConfig", "visualize_groundtruth_boxes"): NoEffect(_PICTURES, _equals(True)),
    ("EvalConfig", "groundtruth_box_visualization_color"): NoEffect(_PICTURES),
    ("EvalConfig", "keep_image_id_for_visualization_export"): NoEffect(_PICTURES),
    ("EvalConfig", "retain_original_images"): NoEffect(_PICTURES),
    ("EvalConfig", "all_metrics_per_category"): NoEffect(
        "include_metrics_per_category gives the per-class AP", _equals(False)),
    ("EvalConfig", "recall_lower_bound"): NoEffect("COCO AP over all recalls", _equals(0.0)),
    ("EvalConfig", "recall_upper_bound"): NoEffect("COCO AP over all recalls", _equals(1.0)),
    ("EvalConfig", "retain_original_image_additional_channels"): NoEffect(
        "images are RGB", _equals(False)),
    ("EvalConfig", "force_no_resize"): NoEffect("evaluation resizes as training does",
                                                _equals(False)),
    ("EvalConfig", "use_dummy_loss_in_eval"): NoEffect(_IMPLEMENTATION, _equals(False)),
    ("EvalConfig", "keypoint_edge"): NoEffect(_OTHER_DATA),
    ("EvalConfig", "skip_predictions_for_unlabeled_class"): NoEffect(
        "every class of the label map is scored", _equals(False)),
    ("EvalConfig", "super_categories"): NoEffect("COCO metrics per class, not per group"),
    ("TrainEvalPipelineConfig", "graph_rewriter"): NoEffect(
        "no quantization-aware training; the SavedModel computes in float32"),
}

# PreprocessingStep members this engine applies; every other member is an OD API step that
# is reported and left out.
AUGMENTATIONS = ("random_horizontal_flip", "random_vertical_flip", "random_crop_image",
                 "random_adjust_brightness", "random_adjust_contrast",
                 "random_scale_crop_and_pad_to_square", "random_multiply_brightness",
                 "random_gaussian_blur", "random_affine")
AUGMENTATION_REASON = _AUGMENTATION

# Fields pipelines/od_api.py rewrites into this engine's fields (or refuses by name).
TRANSLATED = {
    ("FasterRcnn", "maxpool_kernel_size"), ("FasterRcnn", "maxpool_stride"),
    ("FasterRcnn", "first_stage_box_predictor_conv_hyperparams"),
    ("FasterRcnnFeatureExtractor", "conv_hyperparams"), ("FasterRcnnFeatureExtractor", "fpn"),
    ("MaskRCNNBoxPredictor", "fc_hyperparams"), ("MaskRCNNBoxPredictor", "conv_hyperparams"),
    ("AnchorGenerator", "grid_anchor_generator"),
    ("BoxPredictor", "convolutional_box_predictor"), ("BoxPredictor", "rfcn_box_predictor"),
    ("BoxPredictor", "weight_shared_convolutional_box_predictor"),
    ("TrainConfig", "from_detection_checkpoint"), ("TrainConfig", "add_regularization_loss"),
    ("TrainConfig", "max_number_of_boxes"),
    ("InputReader", "num_epochs"), ("InputReader", "max_number_of_boxes"),
    ("EvalConfig", "use_moving_averages"), ("EvalConfig", "eval_instance_masks"),
}

# The OD API's defaults where they differ from this engine's, for an OD API config's unset
# fields: (message, field) -> value. (number_of_stages, predict_instance_masks, the mask
# sizes and layers, pad_to_max_dimension, score_converter and fine_tune_checkpoint_type are
# translated with their OD API defaults in pipelines/od_api.py.)
OD_DEFAULTS: dict[tuple[str, str], Any] = {
    ("FasterRcnn", "first_stage_box_predictor_depth"): 512,
    ("FasterRcnn", "first_stage_max_proposals"): 300,
    ("FasterRcnn", "second_stage_batch_size"): 64,
    ("MultiscaleAnchorGenerator", "min_level"): 3,
    ("MultiscaleAnchorGenerator", "max_level"): 7,
    ("MultiscaleAnchorGenerator", "anchor_scale"): 4.0,
    ("MultiscaleAnchorGenerator", "scales_per_octave"): 2,
    ("BatchNonMaxSuppression", "score_threshold"): 0.0,
    ("BatchNonMaxSuppression", "iou_threshold"): 0.6,
    ("BatchNonMaxSuppression", "max_detections_per_class"): 100,
    ("Optimizer", "use_moving_average"): True,
    ("AdamOptimizer", "epsilon"): 1e-8,
}
# ... and those translated in od_api.py, for the documentation's table.
OD_MASK_DEFAULTS = {"number_of_stages": 2, "predict_instance_masks": False,
                    "mask_height": 15, "mask_width": 15, "mask_prediction_num_conv_layers": 2}

# Feature extractors: the OD API's ResNets are the ResNet-FPN of the same depth here.
RESNET_TYPES = {f"faster_rcnn_resnet{depth}{suffix}": depth
                for depth in (50, 101, 152) for suffix in ("", "_keras", "_fpn_keras")}
# The others have no counterpart; the ResNet nearest in ImageNet top-1 accuracy stands in
# (ResNet-18 69.8%, -34 73.3%, -50 76.1%, -101 77.4%, -152 78.3%).
SUBSTITUTES: dict[str, tuple[int, str]] = {
    "faster_rcnn_inception_resnet_v2": (152, "Inception-ResNet-v2 (80.4% ImageNet top-1, "
                                        "56M parameters) is nearest to ResNet-152 (78.3%, "
                                        "60M), the deepest ResNet here"),
    "faster_rcnn_inception_v2": (34, "Inception-v2 (BN-Inception, 73.9% ImageNet top-1) is "
                                 "nearest to ResNet-34 (73.3%), at about twice its 2 GFLOPs"),
    "faster_rcnn_nas": (152, "NASNet-A Large (82.7% ImageNet top-1) is nearest to ResNet-152 "
                        "(78.3%), the deepest ResNet here"),
    "faster_rcnn_pnas": (152, "PNASNet-5 Large (82.9% ImageNet top-1) is nearest to "
                         "ResNet-152 (78.3%), the deepest ResNet here"),
}
SUBSTITUTES["faster_rcnn_inception_resnet_v2_keras"] = \
    SUBSTITUTES["faster_rcnn_inception_resnet_v2"]
