"""Resizing as the OD API's image resizers do, and mapping boxes back to the original image.

`desired_size` is the one definition of `keep_aspect_ratio_resizer` (scale by
min(min_dimension / short side, max_dimension / long side)) and `fixed_shape_resizer`
(stretch); the training parser, the serving signature, the evaluation pictures and the stage
pictures all resize through it, so an exported model sees images exactly as training did.
"""
from __future__ import annotations

import tensorflow as tf
from official.vision.ops import preprocess_ops

from models.builders.model_builder import ResizeSpec


def desired_size(image_size: tf.Tensor, spec: ResizeSpec) -> tf.Tensor:
    """[height, width] the image is resized to (before padding), int32 as Model Garden's
    resize slices with it when it jitters the scale."""
    if spec.kind == "fixed_shape":
        return tf.constant([spec.height, spec.width], tf.int32)
    scale = tf.minimum(spec.min_dimension / tf.reduce_min(image_size),
                       spec.height / tf.reduce_max(image_size))
    return tf.cast(tf.round(image_size * scale), tf.int32)


def preprocess_image(image: tf.Tensor, resize: ResizeSpec, padded_size: list[int]
                     ) -> tuple[tf.Tensor, tf.Tensor]:
    """One image [H, W, 3] -> (normalized, resized and padded image, image_info).

    Exactly the eval parser's steps (models.dataloaders.parser.Parser): uint8 images are normalized as
    the decoder's uint8 images are; float images are taken to hold 0..255 values.
    """
    if image.dtype.is_integer:
        normalized = preprocess_ops.normalize_image(tf.cast(image, tf.uint8))
    else:
        normalized = preprocess_ops.normalize_image(
            tf.cast(image, tf.float32), preprocess_ops.MEAN_RGB, preprocess_ops.STDDEV_RGB)
    image_size = tf.cast(tf.shape(image)[0:2], tf.float32)
    return preprocess_ops.resize_and_crop_image(
        normalized, desired_size(image_size, resize), padded_size=padded_size,
        aug_scale_min=1.0, aug_scale_max=1.0,
        keep_aspect_ratio=resize.kind == "keep_aspect_ratio")


def boxes_to_original_pixels(boxes: tf.Tensor, image_info: tf.Tensor) -> tf.Tensor:
    """[B, N, 4] boxes in pixels of the resized input -> pixels of the original image."""
    scale = tf.tile(image_info[:, 2:3, :], [1, 1, 2])
    offset = tf.tile(image_info[:, 3:4, :], [1, 1, 2])
    return (boxes + offset) / scale
