"""An OD API `faster_rcnn { ... }` rewritten into what the same words mean with Model Garden.

The OD API and Model Garden share field names whose meanings or defaults differ; in an OD API
config the OD API's meaning wins, written here in this engine's terms:

- masks follow predict_instance_masks (the OD API's default: none), number_of_stages 2 or 3;
- mask_height / mask_width: Model Garden's mask head doubles a RoI crop, so an odd size
  (the OD API's default 15, the zoo's 33) becomes the next even one;
- mask_prediction_num_conv_layers counts the output convolution in the OD API (one less
  here), and mask_prediction_conv_depth: 0 is the OD API's automatic depth;
- initial_crop_size is cropped then max-pooled (maxpool_kernel_size, maxpool_stride) in the
  OD API: the pooled size is the RoIAlign size here;
- grid_anchor_generator's single-stride anchors become FPN anchors of the same sizes, and
  feature_extractor.fpn's levels and depth those of the FPN;
- the OD API's ResNets become the ResNet-FPN of their depth; other backbones are refused, or
  replaced by the nearest ResNet when porting (pipelines/port_od_config.py).
"""
from __future__ import annotations

import math

from pipelines import od_api_fields
from pipelines.od_api_report import OdApiReading
from pipelines.protos import faster_rcnn_pb2, post_processing_pb2

FIELD = "model.faster_rcnn"
PREDICTOR = f"{FIELD}.second_stage_box_predictor.mask_rcnn_box_predictor"
_OTHER_PREDICTORS = {"rfcn_box_predictor": "R-FCN",
                     "convolutional_box_predictor": "SSD",
                     "weight_shared_convolutional_box_predictor": "RetinaNet (SSD FPN)"}
_GRID_SCALES = (0.5, 1.0, 2.0)  # the OD API's GridAnchorGenerator defaults
_RATIOS = (0.5, 1.0, 2.0)
_ANCHOR_SCALE = 8.0  # Model Garden's: an anchor of 8 strides on every level


def od_auto_mask_depth(feature_channels: int, num_classes: int) -> int:
    """The OD API's mask_prediction_conv_depth: 0: a weighted mean, in log2, of the feature
    channels (weight 2) and the classes (weight 3), rounded to a power of two."""
    mean = (2.0 * math.log2(feature_channels) + 3.0 * math.log2(max(num_classes, 1))) / 5.0
    return int(2 ** round(mean))


def translate_model(frcnn: faster_rcnn_pb2.FasterRcnn, reading: OdApiReading,
                    substitute_backbones: bool) -> bool:
    """Rewrites `frcnn` in place; returns whether it predicts masks."""
    _backbone(frcnn, reading, substitute_backbones)
    _resizer(frcnn, reading)
    _anchors(frcnn, reading)
    _crop(frcnn, reading)
    masks = _stages(frcnn, reading)
    _scores(frcnn, reading)
    _od_defaults(frcnn, FIELD, reading)
    if masks:
        _mask_head(frcnn, reading)
    nms = frcnn.second_stage_post_processing.batch_non_max_suppression
    nms.SetInParent()  # the OD API builds its NMS from the defaults when it is absent
    _od_defaults(nms, f"{FIELD}.second_stage_post_processing.batch_non_max_suppression",
                 reading)
    return masks


def _od_defaults(message, path: str, reading: OdApiReading) -> None:
    name = message.DESCRIPTOR.name
    for (owner, field), value in od_api_fields.OD_DEFAULTS.items():
        if owner == name and not message.HasField(field):
            setattr(message, field, value)
            reading.default(f"{path}.{field}", value)


def _backbone(frcnn, reading: OdApiReading, substitute: bool) -> None:
    extractor = frcnn.feature_extractor
    kind, field = extractor.type, f"{FIELD}.feature_extractor.type"
    if kind in od_api_fields.RESNET_TYPES:
        ours = f"faster_rcnn_resnet{od_api_fields.RESNET_TYPES[kind]}_fpn_keras"
        if ours != kind:
            extractor.type = ours
            reading.change(field, f"'{kind}' is trained as {ours}: Model Garden's Mask R-CNN "
                           "has ResNet-FPN backbones (the same ResNet, plus a feature pyramid)")
    elif kind in od_api_fields.SUBSTITUTES:
        depth, why = od_api_fields.SUBSTITUTES[kind]
        ours = f"faster_rcnn_resnet{depth}_fpn_keras"
        if substitute:
            extractor.type = ours
            reading.change(field, f"'{kind}' has no Model Garden counterpart: {ours} is used "
                           f"instead ({why})")
        else:
            reading.error(field, f"'{kind}' has no Model Garden counterpart; write type: "
                          f"\"{ours}\" ({why}), or port the file with `python -m "
                          "pipelines.port_od_config IN.config OUT.config`")
            extractor.type = ours  # the error above stands; the builders check the rest


def _resizer(frcnn, reading: OdApiReading) -> None:
    if frcnn.image_resizer.WhichOneof("image_resizer_oneof") != "keep_aspect_ratio_resizer":
        return
    keep = frcnn.image_resizer.keep_aspect_ratio_resizer
    if not keep.HasField("pad_to_max_dimension") or not keep.pad_to_max_dimension:
        given = "" if keep.HasField("pad_to_max_dimension") else " (the OD API's default)"
        reading.change(f"{FIELD}.image_resizer.keep_aspect_ratio_resizer.pad_to_max_dimension",
                       f"false{given}: images are zero-padded to max_dimension x max_dimension "
                       "(right and bottom) all the same, as Model Garden trains on batches of "
                       "one size; boxes and masks keep their pixels")
        keep.pad_to_max_dimension = True


def _anchors(frcnn, reading: OdApiReading) -> None:
    generator = frcnn.first_stage_anchor_generator
    extractor = frcnn.feature_extractor
    pyramid = extractor.fpn if extractor.HasField("fpn") else None
    path = f"{FIELD}.first_stage_anchor_generator"
    kind = generator.WhichOneof("anchor_generator_oneof")
    if kind == "grid_anchor_generator":
        _grid_to_multiscale(generator, reading, path)
    elif kind in ("ssd_anchor_generator", "flexible_grid_anchor_generator"):
        generator.ClearField(kind)  # reported as having no effect: the default FPN anchors
    if pyramid is not None:
        multiscale = generator.multiscale_anchor_generator
        for level in ("min_level", "max_level"):
            ours, theirs = getattr(multiscale, level), getattr(pyramid, level)
            if not multiscale.HasField(level):
                setattr(multiscale, level, theirs)
            elif ours != theirs:
                reading.change(f"{FIELD}.feature_extractor.fpn.{level}",
                               f"{theirs}: the FPN's levels are the anchor generator's here "
                               f"({level} {ours})")
        if not frcnn.fpn.HasField("num_filters"):
            frcnn.fpn.num_filters = pyramid.additional_layer_depth
    if generator.HasField("multiscale_anchor_generator"):
        _od_defaults(generator.multiscale_anchor_generator, f"{path}.multiscale_anchor_generator",
                     reading)


def _grid_to_multiscale(generator, reading: OdApiReading, path: str) -> None:
    """Single-stride anchors of base * scale pixels -> one FPN anchor size a level, of the
    same sizes (level l has anchors of 8 * 2^l pixels) and aspect ratios."""
    grid = generator.grid_anchor_generator
    base = math.sqrt(grid.height * grid.width)
    sizes = sorted(base * s for s in (list(grid.scales) or _GRID_SCALES))
    levels = [math.log2(size / _ANCHOR_SCALE) for size in sizes]
    low = min(max(round(levels[0]), 2), 7)
    high = min(max(round(levels[-1]), low), 7)
    ratios = list(grid.aspect_ratios) or list(_RATIOS)
    exact = all(abs(level - round(level)) < 1e-6 for level in levels) and \
        [round(v) for v in levels] == list(range(low, high + 1))
    generator.multiscale_anchor_generator.CopyFrom(
        faster_rcnn_pb2.FasterRcnn().first_stage_anchor_generator.multiscale_anchor_generator)
    multiscale = generator.multiscale_anchor_generator
    multiscale.min_level, multiscale.max_level = low, high
    multiscale.anchor_scale, multiscale.scales_per_octave = _ANCHOR_SCALE, 1
    multiscale.aspect_ratios.extend(ratios)
    shown = ", ".join(f"{s:g}" for s in sizes)
    ours = ", ".join(f"{_ANCHOR_SCALE * 2 ** level:g}" for level in range(low, high + 1))
    reading.change(f"{path}.grid_anchor_generator",
                   f"anchors of {shown} px at a {grid.height_stride}x{grid.width_stride} stride "
                   f"become FPN anchors of {ours} px, one size on each of levels {low}-{high} "
                   f"(multiscale_anchor_generator {{ min_level: {low} max_level: {high} "
                   f"anchor_scale: {_ANCHOR_SCALE:g} }}, aspect ratios "
                   f"{', '.join(f'{r:g}' for r in ratios)})"
                   + ("" if exact else "; the sizes are the nearest powers of two"))


def _crop(frcnn, reading: OdApiReading) -> None:
    kernel, stride = frcnn.maxpool_kernel_size or 1, frcnn.maxpool_stride or 1
    if not frcnn.HasField("initial_crop_size"):
        if frcnn.HasField("maxpool_kernel_size") or frcnn.HasField("maxpool_stride"):
            reading.ignore(f"{FIELD}.maxpool_stride", "pools nothing without initial_crop_size "
                           f"(RoIAlign crops of {frcnn.initial_crop_size}x"
                           f"{frcnn.initial_crop_size})")
        return
    crop = frcnn.initial_crop_size
    pooled = (crop - kernel) // stride + 1
    if pooled < 1:
        reading.error(f"{FIELD}.initial_crop_size", f"{crop} is smaller than "
                      f"maxpool_kernel_size {kernel}: nothing is left to pool")
        return
    if pooled != crop:
        frcnn.initial_crop_size = pooled
        reading.change(f"{FIELD}.initial_crop_size",
                       f"{crop}, max-pooled {kernel}x{kernel} with stride {stride} in the OD "
                       f"API: RoIAlign crops of {pooled}x{pooled} here")


def _stages(frcnn, reading: OdApiReading) -> bool:
    predictors = frcnn.second_stage_box_predictor
    kind = predictors.WhichOneof("box_predictor_oneof")
    if kind in _OTHER_PREDICTORS:
        reading.error(f"{FIELD}.second_stage_box_predictor.{kind}",
                      f"builds {_OTHER_PREDICTORS[kind]}'s head, not Mask R-CNN's: write "
                      "second_stage_box_predictor { mask_rcnn_box_predictor { ... } }")
        predictors.ClearField(kind)
    predictor = predictors.mask_rcnn_box_predictor
    masks = predictor.predict_instance_masks if predictor.HasField(
        "predict_instance_masks") else od_api_fields.OD_MASK_DEFAULTS["predict_instance_masks"]
    if not predictor.HasField("predict_instance_masks"):
        reading.default(f"{PREDICTOR}.predict_instance_masks", masks)
    stages = frcnn.number_of_stages if frcnn.HasField("number_of_stages") else \
        od_api_fields.OD_MASK_DEFAULTS["number_of_stages"]
    if stages == 1:
        reading.error(f"{FIELD}.number_of_stages", "1 builds the region proposal network only; "
                      "write 3 (boxes and masks) or 2 (boxes)")
        return False
    if stages not in (2, 3):
        return masks  # the model builder names the field
    if stages == 2 and masks:
        reading.change(f"{FIELD}.number_of_stages", "2 with predict_instance_masks: masks are "
                       "predicted for the final detections, as the OD API's 3 does")
    elif stages == 3 and not masks:
        reading.change(f"{FIELD}.number_of_stages", "3 without predict_instance_masks: "
                       "boxes only")
    frcnn.number_of_stages = 3 if masks else 2
    predictor.predict_instance_masks = masks
    return masks


def _mask_head(frcnn, reading: OdApiReading) -> None:
    predictor = frcnn.second_stage_box_predictor.mask_rcnn_box_predictor
    defaults = od_api_fields.OD_MASK_DEFAULTS
    height = predictor.mask_height if predictor.HasField("mask_height") else \
        defaults["mask_height"]
    width = predictor.mask_width if predictor.HasField("mask_width") else defaults["mask_width"]
    if height != width:
        reading.error(f"{PREDICTOR}.mask_height", f"{height}x{width}: masks are square here; "
                      f"write mask_height: {max(height, width) + max(height, width) % 2} "
                      f"mask_width: {max(height, width) + max(height, width) % 2}")
    else:
        size = height + height % 2
        given = "" if predictor.HasField("mask_height") else " (the OD API's default)"
        if size != height:
            reading.change(f"{PREDICTOR}.mask_height",
                           f"{height}x{width}{given} masks are predicted at {size}x{size}: "
                           f"Model Garden's mask head doubles RoI crops of {size // 2}x"
                           f"{size // 2}, so sizes are even (exported detection_masks are "
                           f"{size}x{size})")
        predictor.mask_height = predictor.mask_width = size
    written = predictor.HasField("mask_prediction_num_conv_layers")
    layers = predictor.mask_prediction_num_conv_layers if written else \
        defaults["mask_prediction_num_conv_layers"]
    predictor.mask_prediction_num_conv_layers = max(layers - 1, 0)
    given = "" if written else " (the OD API's default)"
    reading.change(f"{PREDICTOR}.mask_prediction_num_conv_layers",
                   f"{layers}{given} counts the mask head's output convolution in the OD API: "
                   f"{max(layers - 1, 0)} convolution(s) here, then Model Garden's 2x "
                   "upsampling and output layers")
    if not frcnn.HasField("second_stage_num_sampled_masks"):
        positives = math.ceil(frcnn.second_stage_batch_size *
                              frcnn.second_stage_balance_fraction)
        frcnn.second_stage_num_sampled_masks = max(positives, 1)
        reading.change(f"{FIELD}.second_stage_num_sampled_masks",
                       f"{positives} (Model Garden's; unset): the most positive RoIs of "
                       f"second_stage_batch_size {frcnn.second_stage_batch_size} at a "
                       f"foreground fraction of {frcnn.second_stage_balance_fraction:g}, as the "
                       "OD API trains masks on every positive RoI")
    if predictor.HasField("mask_prediction_conv_depth") and \
            predictor.mask_prediction_conv_depth == 0:
        channels = frcnn.fpn.num_filters
        depth = od_auto_mask_depth(channels, frcnn.num_classes)
        predictor.mask_prediction_conv_depth = depth
        reading.change(f"{PREDICTOR}.mask_prediction_conv_depth",
                       f"0 (the OD API's automatic depth): {depth}, the OD API's rule for "
                       f"{channels} feature channels (fpn.num_filters) and {frcnn.num_classes} "
                       "classes")


def _scores(frcnn, reading: OdApiReading) -> None:
    processing = frcnn.second_stage_post_processing
    field = f"{FIELD}.second_stage_post_processing.score_converter"
    softmax = post_processing_pb2.PostProcessing.SOFTMAX
    if not processing.HasField("score_converter"):
        reading.change(field, "unset: the OD API's default IDENTITY (raw logits as scores) "
                       "does not exist here; scores are softmax probabilities")
        processing.score_converter = softmax
    elif processing.score_converter == post_processing_pb2.PostProcessing.IDENTITY:
        reading.change(field, "IDENTITY (raw logits as scores) does not exist here; scores "
                       "are softmax probabilities")
        processing.score_converter = softmax
    loss = frcnn.second_stage_classification_loss
    kind = loss.WhichOneof("classification_loss")
    if kind not in (None, "weighted_softmax", "weighted_sigmoid"):
        reading.ignore(f"{FIELD}.second_stage_classification_loss.{kind}",
                       "the box classifier trains with softmax cross-entropy (or sigmoid, with "
                       "weighted_sigmoid)")
        frcnn.ClearField("second_stage_classification_loss")
