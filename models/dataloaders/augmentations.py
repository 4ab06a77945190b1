"""Training augmentations (train_config.data_augmentation_options) on decoded examples.

Each step maps the decoder's dict (image uint8 [H, W, 3], groundtruth_boxes normalized
[N, 4], groundtruth_instance_masks float [N, H, W], classes, is_crowd, area) to a new one.
Photometric steps touch only the image. Geometric steps move the masks with the image and
recompute every box from its mask, so boxes stay tight whatever the warp; instances that
leave the image are dropped. Without masks (a boxes-only model) boxes are transformed.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import tensorflow as tf
from official.vision.ops import preprocess_ops

from pipelines.config_util import PipelineConfigError
from pipelines.protos import preprocessor_pb2

Example = dict
Step = Callable[[Example], Example]
MASKS = "groundtruth_instance_masks"
PER_INSTANCE = ("groundtruth_boxes", "groundtruth_classes", "groundtruth_is_crowd",
                "groundtruth_area", MASKS)


def _coin(probability: float) -> tf.Tensor:
    return tf.random.uniform([]) < probability


def _image_float(data: Example) -> tf.Tensor:
    return tf.cast(data["image"], tf.float32)


def _with_image(data: Example, image: tf.Tensor) -> Example:
    return {**data, "image": tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)}


def boxes_from_masks(masks: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Tight normalized [ymin, xmin, ymax, xmax] of each mask's pixels, and which are non-empty."""
    on = masks > 0.5
    rows, cols = tf.reduce_any(on, axis=2), tf.reduce_any(on, axis=1)
    height, width = tf.shape(masks)[1], tf.shape(masks)[2]

    def first(flags):
        return tf.argmax(tf.cast(flags, tf.int32), axis=1, output_type=tf.int32)

    def end(flags, size):
        return size - first(tf.reverse(flags, axis=[1]))

    h, w = tf.cast(height, tf.float32), tf.cast(width, tf.float32)
    boxes = tf.stack([tf.cast(first(rows), tf.float32) / h, tf.cast(first(cols), tf.float32) / w,
                      tf.cast(end(rows, height), tf.float32) / h,
                      tf.cast(end(cols, width), tf.float32) / w], axis=1)
    return boxes, tf.reduce_any(rows, axis=1)


def _keep(data: Example, keep: tf.Tensor) -> Example:
    index = tf.where(keep)[:, 0]
    return {**data, **{k: tf.gather(data[k], index) for k in PER_INSTANCE if k in data}}


def _refit_boxes(data: Example) -> Example:
    """Boxes from the moved masks; instances whose masks vanished are dropped."""
    masks = data[MASKS]
    boxes, present = boxes_from_masks(masks)
    area = tf.reduce_sum(tf.cast(masks > 0.5, tf.float32), axis=[1, 2])
    return _keep({**data, "groundtruth_boxes": boxes, "groundtruth_area": area}, present)


def _resized_dims(data: Example, image: tf.Tensor) -> Example:
    shape = tf.shape(image)
    return {**data, "image": image, "height": tf.cast(shape[0], data["height"].dtype),
            "width": tf.cast(shape[1], data["width"].dtype)}


# --- flips --------------------------------------------------------------------------------
def _flip(flip_op, probability: float) -> Step:
    """A step flipping image, boxes and masks together with Model Garden's `flip_op`."""
    def step(data):
        image, boxes, masks = flip_op(data["image"], data["groundtruth_boxes"],
                                      data.get(MASKS), prob=probability)
        out = {**data, "image": image, "groundtruth_boxes": boxes}
        if MASKS in data:
            out[MASKS] = masks
        return out
    return step


def horizontal_flip(probability: float) -> Step:
    return _flip(preprocess_ops.random_horizontal_flip, probability)


def vertical_flip(probability: float) -> Step:
    return _flip(preprocess_ops.random_vertical_flip, probability)


# --- photometric --------------------------------------------------------------------------
def adjust_brightness(max_delta: float) -> Step:
    def step(data):
        delta = tf.random.uniform([], -max_delta, max_delta) * 255.0
        return _with_image(data, _image_float(data) + delta)
    return step


def multiply_brightness(min_factor: float, max_factor: float) -> Step:
    def step(data):
        return _with_image(data, _image_float(data) * tf.random.uniform([], min_factor,
                                                                           max_factor))
    return step


def adjust_contrast(min_factor: float, max_factor: float) -> Step:
    def step(data):
        factor = tf.random.uniform([], min_factor, max_factor)
        return _with_image(data, tf.image.adjust_contrast(_image_float(data), factor))
    return step


def gaussian_blur(probability: float, min_sigma: float, max_sigma: float) -> Step:
    radius = max(1, math.ceil(3 * max_sigma))

    def blur(image):
        sigma = tf.maximum(tf.random.uniform([], min_sigma, max_sigma), 1e-3)
        x = tf.range(-radius, radius + 1, dtype=tf.float32)
        kernel = tf.exp(-0.5 * tf.square(x / sigma))
        kernel /= tf.reduce_sum(kernel)
        padded = tf.pad(image[tf.newaxis], [[0, 0], [radius, radius], [radius, radius], [0, 0]],
                        mode="SYMMETRIC")
        row = tf.tile(tf.reshape(kernel, [1, -1, 1, 1]), [1, 1, 3, 1])
        column = tf.tile(tf.reshape(kernel, [-1, 1, 1, 1]), [1, 1, 3, 1])
        out = tf.nn.depthwise_conv2d(padded, row, [1, 1, 1, 1], "VALID")
        return tf.nn.depthwise_conv2d(out, column, [1, 1, 1, 1], "VALID")[0]

    def step(data):
        image = _image_float(data)
        return _with_image(data, tf.cond(_coin(probability), lambda: blur(image),
                                         lambda: image))
    return step


# --- geometric ----------------------------------------------------------------------------
def crop_image(min_area: float, max_area: float, min_aspect: float, max_aspect: float,
               random_coef: float) -> Step:
    def crop(data):
        shape = tf.shape(data["image"])
        height, width = tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32)
        area = tf.random.uniform([], min_area, max_area)
        ratio = tf.random.uniform([], min_aspect, max_aspect)
        crop_h = tf.clip_by_value(tf.round(height * tf.sqrt(area / ratio)), 1.0, height)
        crop_w = tf.clip_by_value(tf.round(width * tf.sqrt(area * ratio)), 1.0, width)
        top = tf.cast(tf.floor(tf.random.uniform([]) * (height - crop_h + 1)), tf.int32)
        left = tf.cast(tf.floor(tf.random.uniform([]) * (width - crop_w + 1)), tf.int32)
        crop_h, crop_w = tf.cast(crop_h, tf.int32), tf.cast(crop_w, tf.int32)
        image = data["image"][top:top + crop_h, left:left + crop_w]
        out = _resized_dims(data, image)
        if MASKS in data:
            out[MASKS] = data[MASKS][:, top:top + crop_h, left:left + crop_w]
            return _refit_boxes(out)
        scale = tf.stack([height, width, height, width])
        offset = tf.cast(tf.stack([top, left, top, left]), tf.float32)
        size = tf.cast(tf.stack([crop_h, crop_w, crop_h, crop_w]), tf.float32)
        boxes = tf.clip_by_value((data["groundtruth_boxes"] * scale - offset) / size, 0.0, 1.0)
        out["groundtruth_boxes"] = boxes
        return _keep(out, (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1]))

    def step(data):
        return _switch(_coin(random_coef), data, lambda: data, lambda: crop(data))
    return step


def affine(probability: float, min_scale: float, max_scale: float, max_translate: float,
           max_rotation_degrees: float, max_shear_degrees: float) -> Step:
    def matrix(height, width):
        """Output pixel -> input pixel (what ImageProjectiveTransform wants)."""
        scale = tf.random.uniform([], min_scale, max_scale)
        angle = tf.random.uniform([], -max_rotation_degrees, max_rotation_degrees) * math.pi / 180
        shear = tf.random.uniform([], -max_shear_degrees, max_shear_degrees) * math.pi / 180
        tx = tf.random.uniform([], -max_translate, max_translate) * width
        ty = tf.random.uniform([], -max_translate, max_translate) * height
        cx, cy = width / 2.0, height / 2.0
        cos, sin = tf.cos(angle), tf.sin(angle)
        # forward: p' = c + t + S R Sh (p - c); with shear along x
        a = scale * cos
        b = scale * (cos * tf.tan(shear) - sin)
        c = scale * sin
        d = scale * (sin * tf.tan(shear) + cos)
        det = a * d - b * c
        ia, ib, ic, id_ = d / det, -b / det, -c / det, a / det
        ox, oy = cx + tx, cy + ty
        # p = c + A^-1 (p' - o)
        return tf.stack([ia, ib, cx - ia * ox - ib * oy, ic, id_, cy - ic * ox - id_ * oy,
                         0.0, 0.0])

    def warp(images, transform, interpolation):
        return tf.raw_ops.ImageProjectiveTransformV3(
            images=images, transforms=transform[tf.newaxis], output_shape=tf.shape(images)[1:3],
            interpolation=interpolation, fill_mode="CONSTANT", fill_value=0.0)

    def apply(data):
        shape = tf.shape(data["image"])
        height, width = tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32)
        transform = matrix(height, width)
        image = warp(_image_float(data)[tf.newaxis], transform, "BILINEAR")[0]
        out = _with_image(data, image)
        if MASKS in data:
            masks = warp(data[MASKS][..., tf.newaxis], transform, "NEAREST")[..., 0]
            return _refit_boxes({**out, MASKS: masks})
        return {**out, "groundtruth_boxes": _warp_boxes(data["groundtruth_boxes"], transform,
                                                        height, width)}

    def step(data):
        return _switch(_coin(probability), data, lambda: apply(data), lambda: data)
    return step


def _warp_boxes(boxes, inverse, height, width):
    """Boxes of the warped corners (boxes-only models); inverse maps output -> input."""
    ia, ib, itx, ic, id_, ity = (inverse[i] for i in range(6))
    det = ia * id_ - ib * ic
    a, b, c, d = id_ / det, -ib / det, -ic / det, ia / det
    ys = tf.stack([boxes[:, 0], boxes[:, 0], boxes[:, 2], boxes[:, 2]], axis=1) * height
    xs = tf.stack([boxes[:, 1], boxes[:, 3], boxes[:, 1], boxes[:, 3]], axis=1) * width
    new_x = a * (xs - itx) + b * (ys - ity)
    new_y = c * (xs - itx) + d * (ys - ity)
    return tf.clip_by_value(tf.stack([tf.reduce_min(new_y, 1) / height,
                                      tf.reduce_min(new_x, 1) / width,
                                      tf.reduce_max(new_y, 1) / height,
                                      tf.reduce_max(new_x, 1) / width], axis=1), 0.0, 1.0)


def _switch(condition, data, true_fn, false_fn):
    """tf.cond over example dicts whose instance count or image size may change."""
    keys = sorted(data)

    def branch(fn):
        out = fn()  # once: every key must come from the same random draw
        return [out[k] for k in keys]

    result = tf.cond(condition, lambda: branch(true_fn), lambda: branch(false_fn))
    return dict(zip(keys, result))


# --- from the config ----------------------------------------------------------------------
def build_augmentation(steps: Sequence[preprocessor_pb2.PreprocessingStep]
                       ) -> tuple[Step | None, tuple[float, float]]:
    """The composed augmentation, and the scale-jitter range the parser applies."""
    built: list[Step] = []
    scale_range = (1.0, 1.0)
    for index, option in enumerate(steps):
        kind = option.WhichOneof("preprocessing_step")
        field = f"train_config.data_augmentation_options[{index}].{kind}"
        value = getattr(option, kind) if kind else None

        def check(ok: bool, detail: str) -> None:
            if not ok:
                raise PipelineConfigError(detail, field)

        if kind == "random_horizontal_flip":
            built.append(horizontal_flip(value.probability))
        elif kind == "random_vertical_flip":
            built.append(vertical_flip(value.probability))
        elif kind == "random_crop_image":
            check(0 < value.min_area <= value.max_area <= 1, "needs 0 < min_area <= max_area <= 1")
            check(0 < value.min_aspect_ratio <= value.max_aspect_ratio,
                  "needs 0 < min_aspect_ratio <= max_aspect_ratio")
            built.append(crop_image(value.min_area, value.max_area, value.min_aspect_ratio,
                                    value.max_aspect_ratio, value.random_coef))
        elif kind == "random_adjust_brightness":
            built.append(adjust_brightness(value.max_delta))
        elif kind == "random_adjust_contrast":
            check(0 < value.min_delta <= value.max_delta, "needs 0 < min_delta <= max_delta")
            built.append(adjust_contrast(value.min_delta, value.max_delta))
        elif kind == "random_multiply_brightness":
            check(0 < value.min_factor <= value.max_factor, "needs 0 < min_factor <= max_factor")
            built.append(multiply_brightness(value.min_factor, value.max_factor))
        elif kind == "random_gaussian_blur":
            check(0 <= value.min_sigma <= value.max_sigma, "needs 0 <= min_sigma <= max_sigma")
            built.append(gaussian_blur(value.probability, value.min_sigma, value.max_sigma))
        elif kind == "random_affine":
            check(0 < value.min_scale <= value.max_scale, "needs 0 < min_scale <= max_scale")
            check(abs(value.max_shear_degrees) < 80, "max_shear_degrees must be below 80")
            built.append(affine(value.probability, value.min_scale, value.max_scale,
                                value.max_translate, value.max_rotation_degrees,
                                value.max_shear_degrees))
        elif kind == "random_scale_crop_and_pad_to_square":
            check(0 < value.scale_min <= value.scale_max, "needs 0 < scale_min <= scale_max")
            scale_range = (value.scale_min, value.scale_max)
        else:
            raise PipelineConfigError("is empty: choose an augmentation step", field)
    if not built:
        return None, scale_range

    def augmentation(data: Example) -> Example:
        for step in built:
            data = step(data)
        return data
    return augmentation, scale_range
