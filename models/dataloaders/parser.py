"""The Mask R-CNN input parser: Model Garden's, with the OD API's resizers and our
augmentation hook.

Model Garden's parser scales every image to fit one fixed output size. The OD API's
`keep_aspect_ratio_resizer` scales by min(min_dimension / short side, max_dimension / long
side) and `fixed_shape_resizer` stretches; both are computed per image here and handed to
Model Garden's own resize, crop, anchor and target-assignment ops. `image_info` keeps Model
Garden's layout ([original size, scaled size, per-axis scale, offset]), so its evaluator and
export map predictions back to original pixels whichever resizer was used.
"""
from __future__ import annotations

from typing import Callable, Optional

import tensorflow as tf
from official.vision.dataloaders import maskrcnn_input, utils
from official.vision.ops import anchor, box_ops, preprocess_ops

from models.builders.model_builder import ResizeSpec, RpnTargets
from models.ops.resize import desired_size

# decoded example dict -> decoded example dict, applied before resizing (training only)
Augmentation = Callable[[dict], dict]


class Parser(maskrcnn_input.Parser):
    """Model Garden's Mask R-CNN parser with per-image target sizes and augmentations."""

    def __init__(self, resize: ResizeSpec, rpn: RpnTargets, min_level: int, max_level: int,
                 num_scales: int, aspect_ratios: list[float], anchor_size: float,
                 include_mask: bool, augmentation: Optional[Augmentation] = None,
                 aug_scale_min: float = 1.0, aug_scale_max: float = 1.0,
                 dtype: str = "float32"):
        super().__init__(
            output_size=[resize.height, resize.width], min_level=min_level,
            max_level=max_level, num_scales=num_scales, aspect_ratios=aspect_ratios,
            anchor_size=anchor_size, rpn_match_threshold=rpn.positive_iou,
            rpn_unmatched_threshold=rpn.negative_iou,
            rpn_batch_size_per_im=rpn.minibatch_size, rpn_fg_fraction=rpn.positive_fraction,
            aug_scale_min=aug_scale_min, aug_scale_max=aug_scale_max,
            max_num_instances=rpn.max_num_instances, include_mask=include_mask, dtype=dtype)
        self._resize = resize
        self._padded_size = resize.padded_size(max_level)
        self._augmentation = augmentation

    def _resize_image(self, image: tf.Tensor, training: bool) -> tuple[tf.Tensor, tf.Tensor]:
        image_size = tf.cast(tf.shape(image)[0:2], tf.float32)
        return preprocess_ops.resize_and_crop_image(
            image, desired_size(image_size, self._resize), padded_size=self._padded_size,
            aug_scale_min=self._aug_scale_min if training else 1.0,
            aug_scale_max=self._aug_scale_max if training else 1.0,
            keep_aspect_ratio=self._resize.kind == "keep_aspect_ratio")

    def _anchor_boxes(self, height: int, width: int):
        generator = anchor.build_anchor_generator(
            min_level=self._min_level, max_level=self._max_level, num_scales=self._num_scales,
            aspect_ratios=self._aspect_ratios, anchor_size=self._anchor_size)
        return generator(image_size=(height, width))

    def _parse_train_data(self, data):
        if self._augmentation is not None:
            data = self._augmentation(dict(data))
        classes = data["groundtruth_classes"]
        boxes = data["groundtruth_boxes"]
        masks = data["groundtruth_instance_masks"] if self._include_mask else None
        if self._skip_crowd_during_training:
            keep = tf.where(tf.logical_not(tf.cast(data["groundtruth_is_crowd"], tf.bool)))[:, 0]
            classes, boxes = tf.gather(classes, keep), tf.gather(boxes, keep)
            masks = tf.gather(masks, keep) if masks is not None else None
        image = preprocess_ops.normalize_image(data["image"])
        image_shape = tf.shape(image)[0:2]
        boxes = box_ops.denormalize_boxes(boxes, image_shape)
        image, image_info = self._resize_image(image, training=True)
        image_height, image_width, _ = image.get_shape().as_list()
        image_scale, offset = image_info[2, :], image_info[3, :]
        boxes = preprocess_ops.resize_and_crop_boxes(boxes, image_scale, image_info[1, :], offset)
        keep = box_ops.get_non_empty_box_indices(boxes)
        boxes, classes = tf.gather(boxes, keep), tf.gather(classes, keep)
        labels = {"image_info": image_info}
        if self._include_mask:
            masks = tf.gather(masks, keep)
            # Crop each mask at its box, mapped back to the original image.
            crop_boxes = boxes + tf.tile(tf.expand_dims(offset, axis=0), [1, 2])
            crop_boxes /= tf.tile(tf.expand_dims(image_scale, axis=0), [1, 2])
            crop_boxes = box_ops.normalize_boxes(crop_boxes, image_shape)
            masks = tf.squeeze(tf.image.crop_and_resize(
                tf.expand_dims(masks, axis=-1), crop_boxes,
                box_indices=tf.range(tf.shape(masks)[0], dtype=tf.int32),
                crop_size=[self._mask_crop_size, self._mask_crop_size], method="bilinear"),
                axis=-1)
            labels["gt_masks"] = preprocess_ops.clip_or_pad_to_fixed_size(
                masks, self._max_num_instances, -1)
        anchor_boxes = self._anchor_boxes(image_height, image_width)
        labeler = anchor.RpnAnchorLabeler(self._rpn_match_threshold,
                                          self._rpn_unmatched_threshold,
                                          self._rpn_batch_size_per_im, self._rpn_fg_fraction)
        score_targets, box_targets = labeler.label_anchors(
            anchor_boxes, boxes, tf.cast(tf.expand_dims(classes, axis=-1), tf.float32))
        labels.update({
            "anchor_boxes": anchor_boxes,
            "rpn_score_targets": score_targets,
            "rpn_box_targets": box_targets,
            "gt_boxes": preprocess_ops.clip_or_pad_to_fixed_size(
                boxes, self._max_num_instances, -1),
            "gt_classes": preprocess_ops.clip_or_pad_to_fixed_size(
                classes, self._max_num_instances, -1),
        })
        return tf.cast(image, self._dtype), labels

    def _parse_eval_data(self, data):
        image = preprocess_ops.normalize_image(data["image"])
        image_shape = tf.shape(image)[0:2]
        image, image_info = self._resize_image(image, training=False)
        image_height, image_width, _ = image.get_shape().as_list()
        groundtruths = {
            "source_id": data["source_id"],
            "height": data["height"],
            "width": data["width"],
            "num_detections": tf.shape(data["groundtruth_classes"])[0],
            "boxes": box_ops.denormalize_boxes(data["groundtruth_boxes"], image_shape),
            "classes": data["groundtruth_classes"],
            "areas": data["groundtruth_area"],
            "is_crowds": tf.cast(data["groundtruth_is_crowd"], tf.int32),
        }
        groundtruths["source_id"] = utils.process_source_id(groundtruths["source_id"])
        groundtruths = utils.pad_groundtruths_to_fixed_size(
            groundtruths, self._max_num_instances)
        if self._include_mask:
            masks = data["groundtruth_instance_masks"]
            masks = tf.squeeze(tf.image.crop_and_resize(
                tf.expand_dims(masks, axis=-1), boxes=data["groundtruth_boxes"],
                box_indices=tf.range(tf.shape(masks)[0], dtype=tf.int32),
                crop_size=[self._mask_crop_size, self._mask_crop_size], method="bilinear"),
                axis=-1)
            groundtruths["masks"] = preprocess_ops.clip_or_pad_to_fixed_size(
                masks, self._max_num_instances, -1)
        labels = {
            "image_info": image_info,
            "anchor_boxes": self._anchor_boxes(image_height, image_width),
            "groundtruths": groundtruths,
        }
        return tf.cast(image, self._dtype), labels
