"""Checks of `faster_rcnn { ... }` that Model Garden would otherwise fail on deep in a graph.

Model Garden samples second-stage RoIs and mask targets with tf.nn.top_k: asking for more
than there are candidates ends in a TopKV2 traceback naming no field, minutes into a run.
The candidates can be counted from the config alone (proposals, ground-truth boxes, anchors
of the input size), so these checks name the fields and the numbers before any graph is
built. Shared names with other meanings in the OD API get errors that say what to write.
"""
from __future__ import annotations

import math

from pipelines.errors import Problems
from pipelines.od_api_model import od_auto_mask_depth
from pipelines.protos import faster_rcnn_pb2, post_processing_pb2

FIELD = "model.faster_rcnn"
PREDICTOR = "second_stage_box_predictor.mask_rcnn_box_predictor"

# (field, lowest allowed) of the counts Model Garden needs positive
_AT_LEAST = (("first_stage_minibatch_size", 1), ("first_stage_max_proposals", 1),
             ("first_stage_box_predictor_depth", 1), ("first_stage_box_predictor_num_convs", 0),
             ("initial_crop_size", 1), ("second_stage_batch_size", 1),
             ("max_num_instances", 1))
_FRACTIONS = ("first_stage_positive_balance_fraction", "second_stage_balance_fraction",
              "first_stage_nms_iou_threshold", "first_stage_positive_iou_threshold",
              "first_stage_negative_iou_threshold", "second_stage_foreground_iou_threshold",
              "second_stage_background_iou_high_threshold",
              "second_stage_background_iou_low_threshold")


def check_values(faster_rcnn: faster_rcnn_pb2.FasterRcnn, include_mask: bool,
                 problems: Problems) -> None:
    """Counts, fractions and the fields whose OD API meaning is not this engine's."""
    for name, lowest in _AT_LEAST:
        if getattr(faster_rcnn, name) < lowest:
            problems.add(f"must be at least {lowest}, got {getattr(faster_rcnn, name)}",
                         f"{FIELD}.{name}")
    if faster_rcnn.HasField("first_stage_max_proposals_eval") and \
            faster_rcnn.first_stage_max_proposals_eval < 1:
        problems.add("must be at least 1", f"{FIELD}.first_stage_max_proposals_eval")
    for name in _FRACTIONS:
        if not 0.0 <= getattr(faster_rcnn, name) <= 1.0:
            problems.add(f"must be between 0 and 1, got {getattr(faster_rcnn, name):g}",
                         f"{FIELD}.{name}")
    nms = faster_rcnn.second_stage_post_processing.batch_non_max_suppression
    for name in ("max_detections_per_class", "max_total_detections"):
        if getattr(nms, name) < 1:
            problems.add("must be at least 1", f"{FIELD}.second_stage_post_processing."
                         f"batch_non_max_suppression.{name}")
    processing = faster_rcnn.second_stage_post_processing
    if processing.score_converter == post_processing_pb2.PostProcessing.IDENTITY:
        problems.add("IDENTITY (raw logits as scores) is not available: write SOFTMAX, or "
                     "SIGMOID with second_stage_classification_loss { weighted_sigmoid {} }",
                     f"{FIELD}.second_stage_post_processing.score_converter")
    loss = faster_rcnn.second_stage_classification_loss.WhichOneof("classification_loss")
    if loss not in (None, "weighted_softmax", "weighted_sigmoid"):
        problems.add(f"{loss} is not available: weighted_softmax or weighted_sigmoid",
                     f"{FIELD}.second_stage_classification_loss")
    predictors = faster_rcnn.second_stage_box_predictor.WhichOneof("box_predictor_oneof")
    if predictors not in (None, "mask_rcnn_box_predictor"):
        problems.add(f"{predictors} is not a Mask R-CNN head: write mask_rcnn_box_predictor",
                     f"{FIELD}.second_stage_box_predictor")
    predictor = faster_rcnn.second_stage_box_predictor.mask_rcnn_box_predictor
    for name in ("box_head_num_convs", "box_head_num_fcs"):
        if getattr(predictor, name) < 0:
            problems.add("must be at least 0", f"{FIELD}.{PREDICTOR}.{name}")
    for name in ("box_head_conv_depth", "box_head_fc_dims"):
        if getattr(predictor, name) < 1:
            problems.add("must be at least 1", f"{FIELD}.{PREDICTOR}.{name}")
    if include_mask:
        _check_mask_head(faster_rcnn, problems)


def _check_mask_head(faster_rcnn: faster_rcnn_pb2.FasterRcnn, problems: Problems) -> None:
    predictor = faster_rcnn.second_stage_box_predictor.mask_rcnn_box_predictor
    height, width = predictor.mask_height, predictor.mask_width
    if height < 2 or height != width or height % 2:
        size = max(2, height, width)
        size += size % 2
        problems.add(f"{height}x{width} masks: Model Garden's mask head predicts square masks "
                     "twice the size of its RoI crop, so write mask_height: "
                     f"{size} mask_width: {size} (a {size // 2}x{size // 2} crop)",
                     f"{FIELD}.{PREDICTOR}.mask_height")
    if predictor.mask_prediction_num_conv_layers < 0:
        problems.add("must be at least 0", f"{FIELD}.{PREDICTOR}.mask_prediction_num_conv_layers")
    if predictor.mask_prediction_conv_depth < 1:
        depth = od_auto_mask_depth(faster_rcnn.fpn.num_filters, faster_rcnn.num_classes)
        problems.add(f"{predictor.mask_prediction_conv_depth} filters: 0 means 'automatic' only "
                     f"in an OD API config; write mask_prediction_conv_depth: {depth} (what the "
                     f"OD API's rule gives for {faster_rcnn.fpn.num_filters} FPN channels and "
                     f"{faster_rcnn.num_classes} classes) or another depth",
                     f"{FIELD}.{PREDICTOR}.mask_prediction_conv_depth")
    if faster_rcnn.second_stage_num_sampled_masks < 1:
        problems.add("must be at least 1", f"{FIELD}.second_stage_num_sampled_masks")


def proposals_available(padded_size: list[int], min_level: int, max_level: int,
                        anchors_per_location: int, num_proposals: int) -> int:
    """How many proposals Model Garden's RoI generator returns an image: per level at most
    the level's anchors, in all at most num_proposals."""
    per_level = [math.ceil(padded_size[0] / 2 ** level) * math.ceil(padded_size[1] / 2 ** level)
                 * anchors_per_location for level in range(min_level, max_level + 1)]
    return min(sum(min(count, num_proposals) for count in per_level), num_proposals)


def check_sampling(faster_rcnn: faster_rcnn_pb2.FasterRcnn, include_mask: bool,
                   padded_size: list[int], min_level: int, max_level: int,
                   anchors_per_location: int, problems: Problems) -> None:
    """Sampled RoIs at most the candidates, sampled masks at most the sampled RoIs."""
    proposals = faster_rcnn.first_stage_max_proposals
    available = proposals_available(padded_size, min_level, max_level, anchors_per_location,
                                    proposals)
    candidates = available + faster_rcnn.max_num_instances
    rois = faster_rcnn.second_stage_batch_size
    if rois > candidates:
        why = (f"first_stage_max_proposals {proposals}" if available == proposals else
               f"{available} proposals, all the anchors of a {padded_size[0]}x{padded_size[1]} "
               f"input on levels {min_level}-{max_level}")
        problems.add(f"{rois} RoIs an image cannot be sampled from {candidates} candidates "
                     f"({why}, plus max_num_instances {faster_rcnn.max_num_instances} "
                     f"ground-truth boxes): write second_stage_batch_size: {candidates} or less"
                     + (", or raise first_stage_max_proposals" if available == proposals
                        else ""), f"{FIELD}.second_stage_batch_size")
    masks = faster_rcnn.second_stage_num_sampled_masks
    if include_mask and masks > min(rois, candidates):
        positives = math.ceil(rois * faster_rcnn.second_stage_balance_fraction)
        problems.add(f"{masks} masks an image cannot be sampled from second_stage_batch_size "
                     f"{rois} RoIs: write second_stage_num_sampled_masks: {positives} (the "
                     f"most positive RoIs a fraction of {faster_rcnn.second_stage_balance_fraction:g}"
                     f" leaves) or at most {min(rois, candidates)}",
                     f"{FIELD}.second_stage_num_sampled_masks")
