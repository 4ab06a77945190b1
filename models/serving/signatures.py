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

With od_api_outputs (exporter_main_v2.py --od_api_outputs) the signature also returns what
the OD API's exported Faster R-CNN / Mask R-CNN models return, so its client code runs as it
is (P = the proposals kept, C = num_classes):
  raw_detection_boxes          float32 [B, P, 4]  each proposal's refined box for its best
                                                  class, normalized to the original image
  raw_detection_scores         float32 [B, P, C + 1]  each proposal's class scores, the
                                                  background first
  detection_multiclass_scores  float32 [B, N, C + 1]  the scores of the proposal each
                                                  detection came from
  detection_anchor_indices     float32 [B, N]     that proposal's index into the raw outputs
and pads detection_classes with 1.0 after num_detections, as the OD API's exports do (their
padded class ids are 0 + the label offset 1).
"""
from __future__ import annotations

import tensorflow as tf
from official.vision.modeling.layers import detection_generator
from official.vision.serving import detection

from models.builders.model_builder import ResizeSpec
from models.ops.paste_masks import paste_masks
from models.ops.resize import boxes_to_original_pixels, preprocess_image

INPUT_NAME = "input_tensor"  # the OD API's name for every input type
RAW_KEYS = ("detection_boxes", "detection_scores", "detection_classes", "num_detections",
            "detection_masks")
# Model Garden's box-regression weights of its (first) detection head.
REGRESSION_WEIGHTS = [10.0, 10.0, 5.0, 5.0]
OD_API_KEYS = ("raw_detection_boxes", "raw_detection_scores", "detection_multiclass_scores",
               "detection_anchor_indices")
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
                 full_image_masks: bool = True, batch_size: int | None = 1,
                 od_api_outputs: bool = False):
        if input_type not in INPUT_TYPES:
            raise ValueError(f"unknown input_type {input_type!r}; choose from "
                             f"{', '.join(INPUT_TYPES)}")
        self._resize = resize
        self._full_image_masks = full_image_masks
        self._od_api_outputs = od_api_outputs
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
        """Model Garden's DetectionModule.serve (preprocess, then the model's call), keeping
        the model's outputs for the OD API's extra outputs."""
        inputs, anchor_boxes, image_info = self.preprocess(images)
        outputs = self.model.call(images=inputs, image_shape=image_info[:, 1, :],
                                  anchor_boxes=anchor_boxes, training=False)
        raw = {key: outputs[key] for key in RAW_KEYS if key in outputs}
        raw["image_info"] = image_info
        served = self.postprocess(raw, tf.shape(images)[1], tf.shape(images)[2])
        if self._od_api_outputs:
            served.update(self._od_api_extras(outputs, anchor_boxes, image_info, served))
        return served

    def _od_api_extras(self, outputs: dict, anchor_boxes: dict, image_info: tf.Tensor,
                       served: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        """The OD API's raw and per-detection outputs (see the module doc).

        The proposals are computed again (the RoI generator is deterministic) and decoded as
        the model's detection generator decodes them, without NMS; each detection is the
        decoded box and score of one proposal for its class, which finds its index."""
        image_shape = image_info[:, 1, :]
        rois, _ = self.model.roi_generator(outputs["rpn_boxes"], outputs["rpn_scores"],
                                           anchor_boxes, image_shape, training=False)
        generator = self.model.detection_generator.get_config()
        decode = detection_generator.DetectionGenerator(
            apply_nms=False, use_sigmoid_probability=generator["use_sigmoid_probability"])
        class_agnostic = self.params.task.model.detection_head.class_agnostic_bbox_pred
        decoded = decode(outputs["box_outputs"], outputs["cls_outputs"], rois, image_shape,
                         REGRESSION_WEIGHTS, bbox_per_class=not class_agnostic)
        boxes = tf.cast(decoded["decoded_boxes"], tf.float32)  # [B, P, C or 1, 4], pixels
        class_scores = tf.cast(decoded["decoded_box_scores"], tf.float32)  # [B, P, C]
        logits = tf.cast(outputs["cls_outputs"], tf.float32)
        scores = (tf.math.sigmoid(logits) if generator["use_sigmoid_probability"]
                  else tf.nn.softmax(logits, axis=-1))  # [B, P, C + 1], background first
        best = tf.argmax(class_scores, axis=-1, output_type=tf.int32)
        raw_boxes = tf.gather(boxes, best if not class_agnostic else tf.zeros_like(best),
                              axis=2, batch_dims=2)
        classes = tf.cast(tf.maximum(outputs["detection_classes"], 1), tf.int32) - 1  # [B, N]
        by_class = tf.transpose(boxes, [0, 2, 1, 3])  # [B, C or 1, P, 4]
        candidates = tf.gather(by_class, classes if not class_agnostic else
                               tf.zeros_like(classes), batch_dims=1)  # [B, N, P, 4]
        candidate_scores = tf.gather(tf.transpose(class_scores, [0, 2, 1]), classes,
                                     batch_dims=1)  # [B, N, P]
        distance = tf.reduce_sum(tf.abs(candidates - tf.cast(
            outputs["detection_boxes"], tf.float32)[:, :, tf.newaxis, :]), axis=-1) + tf.abs(
            candidate_scores - tf.cast(outputs["detection_scores"],
                                       tf.float32)[:, :, tf.newaxis])
        indices = tf.argmin(distance, axis=-1, output_type=tf.int32)  # [B, N]
        count = tf.cast(served["num_detections"], tf.int32)
        valid = tf.sequence_mask(count, tf.shape(indices)[1])
        original = tf.tile(image_info[:, 0:1, :], [1, 1, 2])
        return {
            "raw_detection_boxes": tf.clip_by_value(
                boxes_to_original_pixels(raw_boxes, image_info) / original, 0.0, 1.0),
            "raw_detection_scores": scores,
            "detection_multiclass_scores": tf.where(
                valid[..., tf.newaxis], tf.gather(scores, indices, batch_dims=1), 0.0),
            "detection_anchor_indices": tf.where(valid, tf.cast(indices, tf.float32), 0.0),
            # the OD API's exports add its label offset 1 to the padding's class 0
            "detection_classes": tf.where(valid, served["detection_classes"], 1.0),
        }

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
