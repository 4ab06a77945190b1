"""The serving signature: Model Garden's DetectionModule with our resizer and the OD API's
outputs.

Model Garden's module resizes every image to one fixed size and returns boxes in pixels of
the resized input; the Object Detection API's exported models return boxes normalized to the
original image and 1-based classes as float32. This module keeps Model Garden's batching,
decoding, anchors and model call, and changes only what must match our training and
evaluation: preprocessing goes through models/ops/resize.py (the OD API resizers, as the
eval parser does), and the outputs are mapped back to the original image.

Inputs: `input_tensor`, [B, H, W, 3] images of any size (uint8, or float32 0..255 for
float_image_tensor), or [B] strings (encoded images, or tf.Examples with image/encoded). B is
1 as in the OD API's exports (a static batch is ~3% faster on CPU), or any number of
same-size images when exported with batch_size None.

Outputs of `serving_default` (N = max_total_detections):
  detection_boxes       float32 [B, N, 4]  ymin, xmin, ymax, xmax normalized to the original
                                           image, clipped to [0, 1]
  detection_scores      float32 [B, N]
  detection_classes     float32 [B, N]     label-map ids 1..num_classes
  num_detections        float32 [B]
  detection_masks       float32 [B, N, M, M]  box-relative probabilities (M = mask_height)
  detection_masks_image uint8   [B, N, H, W]  0/1 masks of the original image size (only
                                           with full_image_masks), probability > 0.5
Entries at and beyond num_detections are zeros (class 0, score 0, empty box and masks).
"""
from __future__ import annotations

import tensorflow as tf
from official.vision.serving import detection

from models.builders.model_builder import ResizeSpec
from models.ops.paste_masks import paste_masks
from models.ops.resize import boxes_to_original_pixels, preprocess_image

INPUT_NAME = "input_tensor"  # the OD API's name for every input type
MASKS_IMAGE_KEY = "detection_masks_image"
# OD API input types -> Model Garden's function keys (float_image_tensor is ours).
INPUT_TYPES = {
    "image_tensor": "image_tensor",
    "encoded_image_string_tensor": "image_bytes",
    "tf_example": "tf_example",
    "float_image_tensor": "float_image_tensor",
}


class ServingModule(detection.DetectionModule):
    """Model Garden's DetectionModule, preprocessing with our resizer, OD API outputs."""

    def __init__(self, experiment, model, resize: ResizeSpec, input_type: str = "image_tensor",
                 full_image_masks: bool = True, batch_size: int | None = 1):
        if input_type not in INPUT_TYPES:
            raise ValueError(f"unknown input_type {input_type!r}; choose from "
                             f"{', '.join(INPUT_TYPES)}")
        self._resize = resize
        self._full_image_masks = full_image_masks
        self._max_level = experiment.task.model.max_level
        super().__init__(experiment, batch_size=batch_size,
                         input_image_size=[resize.height, resize.width],
                         input_type=INPUT_TYPES[input_type], model=model,
                         input_name=INPUT_NAME)

    @property
    def _padded_size(self) -> list[int]:
        return self._resize.padded_size(self._max_level)

    def _build_inputs(self, image: tf.Tensor):
        resized, image_info = preprocess_image(image, self._resize, self._padded_size)
        return resized, self._build_anchor_boxes(), image_info

    def serve(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
        raw = super().serve(images)
        return self.postprocess(raw, tf.shape(images)[1], tf.shape(images)[2])

    def postprocess(self, raw: dict[str, tf.Tensor], height: tf.Tensor, width: tf.Tensor
                    ) -> dict[str, tf.Tensor]:
        """Model Garden's raw detections -> the OD API's outputs (see the module doc)."""
        boxes_pixels = boxes_to_original_pixels(raw["detection_boxes"], raw["image_info"])
        original = tf.tile(raw["image_info"][:, 0:1, :], [1, 1, 2])
        boxes = tf.clip_by_value(boxes_pixels / original, 0.0, 1.0)
        count = tf.cast(raw["num_detections"], tf.int32)
        valid = tf.sequence_mask(count, tf.shape(raw["detection_scores"])[1])
        outputs = {
            "detection_boxes": tf.where(valid[..., tf.newaxis], boxes, 0.0),
            "detection_scores": tf.where(valid, raw["detection_scores"], 0.0),
            "detection_classes": tf.where(
                valid, tf.cast(raw["detection_classes"], tf.float32), 0.0),
            "num_detections": tf.cast(count, tf.float32),
        }
        if "detection_masks" not in raw:
            return outputs
        masks = tf.where(valid[..., tf.newaxis, tf.newaxis], raw["detection_masks"], 0.0)
        outputs["detection_masks"] = masks
        if self._full_image_masks:
            outputs[MASKS_IMAGE_KEY] = self._image_masks(masks, boxes_pixels, count, height,
                                                         width)
        return outputs

    @staticmethod
    def _image_masks(masks: tf.Tensor, boxes_pixels: tf.Tensor, count: tf.Tensor,
                     height: tf.Tensor, width: tf.Tensor) -> tf.Tensor:
        """Pastes only the first max(num_detections) masks: the rest are zeros anyway."""
        batch, slots = tf.shape(masks)[0], tf.shape(masks)[1]
        used = tf.reduce_max(tf.concat([count, [0]], axis=0))
        size = tf.shape(masks)[2]
        pasted = paste_masks(tf.reshape(masks[:, :used], [-1, size, size]),
                             tf.reshape(boxes_pixels[:, :used], [-1, 4]), height, width)
        pasted = tf.reshape(pasted, [batch, used, height, width])
        valid = tf.sequence_mask(count, used)[:, :, tf.newaxis, tf.newaxis]
        pasted = tf.where(valid, pasted, tf.zeros_like(pasted))
        pasted = tf.pad(pasted, [[0, 0], [0, slots - used], [0, 0], [0, 0]])
        return tf.ensure_shape(pasted, [None, masks.shape[1], None, None])

    @tf.function
    def inference_from_float_images(self, inputs: tf.Tensor) -> dict[str, tf.Tensor]:
        return self.serve(inputs)

    def get_inference_signatures(self, function_keys: dict[str, str]):
        signatures = {}
        for key, name in function_keys.items():
            if key == "float_image_tensor":
                spec = tf.TensorSpec([self._batch_size, None, None, 3], tf.float32,
                                     name=INPUT_NAME)
                signatures[name] = self.inference_from_float_images.get_concrete_function(spec)
            else:
                signatures.update(super().get_inference_signatures({key: name}))
        return signatures
