"""`model { faster_rcnn { ... } }` -> Model Garden's MaskRCNN model config.

Each OD API field maps onto the Model Garden field of the same meaning; the mapping is
spelled out here, field by field, and unit-tested. Errors name the field path so the
loader can point at its line.
"""
from __future__ import annotations

import dataclasses
import re

from official.vision.configs import backbones, common, decoders
from official.vision.configs import maskrcnn as mg

from models.builders import model_checks
from pipelines import od_api_fields
from pipelines.errors import PipelineConfigError, Problems
from pipelines.protos import faster_rcnn_pb2, post_processing_pb2

FIELD = "model.faster_rcnn"
SUPPORTED_DEPTHS = (18, 34, 50, 101, 152)
_EXTRACTOR = re.compile(r"^faster_rcnn_resnet(?P<depth>\d+)_fpn_keras$")


@dataclasses.dataclass(frozen=True)
class ResizeSpec:
    """How the input pipeline sizes images (see image_resizer.proto)."""

    kind: str  # "keep_aspect_ratio" or "fixed_shape"
    height: int  # fixed: target height; keep: max_dimension
    width: int  # fixed: target width; keep: max_dimension
    min_dimension: int = 0  # keep_aspect_ratio only

    def padded_size(self, max_level: int) -> list[int]:
        """Network input size: the target rounded up to a multiple of 2^max_level."""
        stride = 2 ** max_level
        return [-(-self.height // stride) * stride, -(-self.width // stride) * stride]


@dataclasses.dataclass(frozen=True)
class RpnTargets:
    """Parser settings of the first stage, which Model Garden keeps in its input config."""

    positive_iou: float
    negative_iou: float
    minibatch_size: int
    positive_fraction: float
    max_num_instances: int


def _error(field: str, detail: str) -> PipelineConfigError:
    return PipelineConfigError(detail, f"{FIELD}.{field}")


def backbone_depth(extractor: faster_rcnn_pb2.FasterRcnnFeatureExtractor) -> int:
    match = _EXTRACTOR.match(extractor.type)
    supported = ", ".join(f"faster_rcnn_resnet{d}_fpn_keras" for d in SUPPORTED_DEPTHS)
    if not extractor.type:
        raise _error("feature_extractor.type", f"is required; one of {supported}")
    if not match or int(match["depth"]) not in SUPPORTED_DEPTHS:
        hint = ""
        if extractor.type in od_api_fields.RESNET_TYPES:
            hint = (" (the OD API's ResNet is faster_rcnn_resnet"
                    f"{od_api_fields.RESNET_TYPES[extractor.type]}_fpn_keras here)")
        elif extractor.type in od_api_fields.SUBSTITUTES:
            depth, why = od_api_fields.SUBSTITUTES[extractor.type]
            hint = f" (nearest: faster_rcnn_resnet{depth}_fpn_keras; {why})"
        raise _error("feature_extractor.type", f"unsupported feature extractor "
                     f"{extractor.type!r}{hint}; supported: {supported}")
    return int(match["depth"])


def _depth_multiplier(extractor: faster_rcnn_pb2.FasterRcnnFeatureExtractor) -> float:
    if extractor.depth_multiplier <= 0:
        raise _error("feature_extractor.depth_multiplier",
                     f"must be positive, got {extractor.depth_multiplier:g}")
    return extractor.depth_multiplier


def build_resize_spec(faster_rcnn: faster_rcnn_pb2.FasterRcnn) -> ResizeSpec:
    resizer = faster_rcnn.image_resizer
    kind = resizer.WhichOneof("image_resizer_oneof")
    if kind == "fixed_shape_resizer":
        fixed = resizer.fixed_shape_resizer
        if fixed.height <= 0 or fixed.width <= 0:
            raise _error("image_resizer.fixed_shape_resizer", "height and width must be > 0")
        return ResizeSpec("fixed_shape", fixed.height, fixed.width)
    if kind == "keep_aspect_ratio_resizer":
        keep = resizer.keep_aspect_ratio_resizer
        if not keep.pad_to_max_dimension:
            raise _error("image_resizer.keep_aspect_ratio_resizer.pad_to_max_dimension",
                         "must be true: Model Garden's Mask R-CNN trains on fixed-size, "
                         "padded batches")
        if not 0 < keep.min_dimension <= keep.max_dimension:
            raise _error("image_resizer.keep_aspect_ratio_resizer", "needs 0 < "
                         "min_dimension <= max_dimension")
        return ResizeSpec("keep_aspect_ratio", keep.max_dimension, keep.max_dimension,
                          keep.min_dimension)
    if kind is not None:
        raise _error(f"image_resizer.{kind}", "is not available: Model Garden trains on one "
                     "input size; write keep_aspect_ratio_resizer or fixed_shape_resizer")
    raise _error("image_resizer", "is required: keep_aspect_ratio_resizer or "
                 "fixed_shape_resizer")


def _anchor_levels(faster_rcnn: faster_rcnn_pb2.FasterRcnn):
    generator = faster_rcnn.first_stage_anchor_generator.multiscale_anchor_generator
    if not 2 <= generator.min_level <= generator.max_level <= 7:
        raise _error("first_stage_anchor_generator.multiscale_anchor_generator",
                     f"levels {generator.min_level}..{generator.max_level} must satisfy "
                     "2 <= min_level <= max_level <= 7")
    ratios = list(generator.aspect_ratios) or [0.5, 1.0, 2.0]
    anchor = mg.Anchor(num_scales=generator.scales_per_octave, aspect_ratios=ratios,
                       anchor_size=generator.anchor_scale)
    return generator.min_level, generator.max_level, anchor


def build_model_config(faster_rcnn: faster_rcnn_pb2.FasterRcnn) -> mg.MaskRCNN:
    """The Model Garden model config for `faster_rcnn`; every problem found is reported at
    once (one PipelineConfigError)."""
    problems = Problems()
    if faster_rcnn.num_classes < 1:
        problems.add("must be at least 1 (label-map ids 1..num_classes)", f"{FIELD}.num_classes")
    if faster_rcnn.number_of_stages not in (2, 3):
        problems.add("must be 2 (boxes) or 3 (boxes and masks)", f"{FIELD}.number_of_stages")
    predictor = faster_rcnn.second_stage_box_predictor.mask_rcnn_box_predictor
    include_mask = faster_rcnn.number_of_stages == 3 and predictor.predict_instance_masks
    model_checks.check_values(faster_rcnn, include_mask, problems)
    min_level, max_level, anchor = problems.value(_anchor_levels, faster_rcnn,
                                                  default=(2, 6, mg.Anchor()))
    resize = problems.value(build_resize_spec, faster_rcnn, default=None)
    extractor = faster_rcnn.feature_extractor
    depth = problems.value(backbone_depth, extractor, default=50)
    multiplier = problems.value(_depth_multiplier, extractor, default=1.0)
    if resize is not None:
        model_checks.check_sampling(
            faster_rcnn, include_mask, resize.padded_size(max_level), min_level, max_level,
            len(anchor.aspect_ratios) * anchor.num_scales, problems)
    problems.raise_any()
    nms = faster_rcnn.second_stage_post_processing.batch_non_max_suppression
    proposals = faster_rcnn.first_stage_max_proposals
    eval_proposals = (faster_rcnn.first_stage_max_proposals_eval
                      if faster_rcnn.HasField("first_stage_max_proposals_eval") else proposals)
    sigmoid = (faster_rcnn.second_stage_post_processing.score_converter ==
               post_processing_pb2.PostProcessing.SIGMOID)
    return mg.MaskRCNN(
        num_classes=faster_rcnn.num_classes + 1,  # Model Garden counts the background
        input_size=resize.padded_size(max_level) + [3],
        min_level=min_level,
        max_level=max_level,
        anchor=anchor,
        include_mask=include_mask,
        backbone=backbones.Backbone(
            type="resnet", resnet=backbones.ResNet(model_id=depth, depth_multiplier=multiplier)),
        decoder=decoders.Decoder(type="fpn", fpn=decoders.FPN(
            num_filters=faster_rcnn.fpn.num_filters,
            use_separable_conv=faster_rcnn.fpn.use_separable_conv)),
        rpn_head=mg.RPNHead(num_convs=faster_rcnn.first_stage_box_predictor_num_convs,
                            num_filters=faster_rcnn.first_stage_box_predictor_depth),
        detection_head=mg.DetectionHead(
            num_convs=predictor.box_head_num_convs, num_filters=predictor.box_head_conv_depth,
            num_fcs=predictor.box_head_num_fcs, fc_dims=predictor.box_head_fc_dims,
            class_agnostic_bbox_pred=predictor.share_box_across_classes),
        roi_generator=mg.ROIGenerator(
            pre_nms_score_threshold=faster_rcnn.first_stage_nms_score_threshold,
            nms_iou_threshold=faster_rcnn.first_stage_nms_iou_threshold,
            num_proposals=proposals,
            pre_nms_top_k=max(2000, 2 * proposals),
            test_pre_nms_score_threshold=faster_rcnn.first_stage_nms_score_threshold,
            test_nms_iou_threshold=faster_rcnn.first_stage_nms_iou_threshold,
            test_num_proposals=eval_proposals,
            test_pre_nms_top_k=max(1000, eval_proposals)),
        roi_sampler=mg.ROISampler(
            num_sampled_rois=faster_rcnn.second_stage_batch_size,
            foreground_fraction=faster_rcnn.second_stage_balance_fraction,
            foreground_iou_threshold=faster_rcnn.second_stage_foreground_iou_threshold,
            background_iou_high_threshold=faster_rcnn.second_stage_background_iou_high_threshold,
            background_iou_low_threshold=faster_rcnn.second_stage_background_iou_low_threshold),
        roi_aligner=mg.ROIAligner(crop_size=faster_rcnn.initial_crop_size),
        detection_generator=mg.DetectionGenerator(
            pre_nms_score_threshold=nms.score_threshold,
            nms_iou_threshold=nms.iou_threshold,
            pre_nms_top_k=nms.max_detections_per_class,
            max_num_detections=nms.max_total_detections,
            use_cpu_nms=nms.use_cpu_nms,
            use_sigmoid_probability=sigmoid,
            **({"nms_version": "v1", "soft_nms_sigma": nms.soft_nms_sigma}
               if nms.soft_nms_sigma > 0 else {})),
        mask_head=mg.MaskHead(
            num_convs=predictor.mask_prediction_num_conv_layers,
            num_filters=predictor.mask_prediction_conv_depth,
            use_separable_conv=predictor.mask_prediction_use_separable_conv,
            class_agnostic=predictor.masks_are_class_agnostic) if include_mask else None,
        mask_sampler=mg.MaskSampler(
            num_sampled_masks=faster_rcnn.second_stage_num_sampled_masks
        ) if include_mask else None,
        mask_roi_aligner=mg.MaskROIAligner(
            crop_size=predictor.mask_height // 2) if include_mask else None,
        norm_activation=common.NormActivation(
            activation="relu", use_sync_bn=extractor.use_sync_batch_norm,
            norm_momentum=extractor.batch_norm_momentum,
            norm_epsilon=extractor.batch_norm_epsilon),
    )


def build_losses_config(faster_rcnn: faster_rcnn_pb2.FasterRcnn, weight_decay: float
                        ) -> mg.Losses:
    return mg.Losses(
        rpn_score_weight=faster_rcnn.first_stage_objectness_loss_weight,
        rpn_box_weight=faster_rcnn.first_stage_localization_loss_weight,
        frcnn_class_weight=faster_rcnn.second_stage_classification_loss_weight,
        frcnn_box_weight=faster_rcnn.second_stage_localization_loss_weight,
        mask_weight=faster_rcnn.second_stage_mask_prediction_loss_weight,
        frcnn_class_use_binary_cross_entropy=faster_rcnn.second_stage_classification_loss
        .HasField("weighted_sigmoid"),
        l2_weight_decay=weight_decay)


def build_rpn_targets(faster_rcnn: faster_rcnn_pb2.FasterRcnn) -> RpnTargets:
    return RpnTargets(
        positive_iou=faster_rcnn.first_stage_positive_iou_threshold,
        negative_iou=faster_rcnn.first_stage_negative_iou_threshold,
        minibatch_size=faster_rcnn.first_stage_minibatch_size,
        positive_fraction=faster_rcnn.first_stage_positive_balance_fraction,
        max_num_instances=faster_rcnn.max_num_instances)
