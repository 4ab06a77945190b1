"""A client of our SavedModels' `serving_default`, whichever input type they were exported
with: one image in, its detections in original pixels out.

Inference on image files, the stage pictures and the hierarchical ensemble all call exports
through `Detector`, so every tool reads the signature (models/serving/signatures.py) the same
way, including exports made with --nofull_image_masks (masks are pasted here).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import tensorflow as tf

from core.errors import UserError
from models.ops.paste_masks import paste_masks
from models.serving.signatures import MASKS_IMAGE_KEY


class SavedModelError(UserError, ValueError):
    """The directory is not a SavedModel, or its signature is not one of ours."""


@dataclasses.dataclass
class Detections:
    """One image's detections in its own pixels (valid ones only, best first)."""

    boxes: np.ndarray  # [N, 4] ymin, xmin, ymax, xmax (pixel edges)
    scores: np.ndarray  # [N]
    classes: np.ndarray  # [N] label-map ids
    masks: np.ndarray | None  # [N, H, W] uint8 0/1

    def select(self, keep: np.ndarray) -> "Detections":
        return Detections(self.boxes[keep], self.scores[keep], self.classes[keep],
                          None if self.masks is None else self.masks[keep])


class Detector:
    """A SavedModel's serving_default, whichever input type it was exported with."""

    def __init__(self, saved_model_dir: str | Path):
        saved_model_dir = Path(saved_model_dir)
        if not (saved_model_dir / "saved_model.pb").exists():
            raise SavedModelError(f"{saved_model_dir} is not a SavedModel directory (no "
                                  "saved_model.pb); give EXPORT_DIR/saved_model")
        self._loaded = tf.saved_model.load(str(saved_model_dir))
        self._serve = self._loaded.signatures["serving_default"]
        (self._input_name, spec), = self._serve.structured_input_signature[1].items()
        self._dtype = spec.dtype
        self._as_example: bool | None = None  # string inputs: tf.Example or encoded image

    def raw(self, image: np.ndarray) -> dict[str, np.ndarray]:
        """The signature's outputs for one image (batch of 1)."""
        if self._dtype != tf.string:
            batch = tf.constant(image[np.newaxis].astype(self._dtype.as_numpy_dtype))
            return self._call(batch)
        png = tf.io.encode_png(image).numpy()
        example = tf.train.Example(features=tf.train.Features(feature={
            "image/encoded": tf.train.Feature(bytes_list=tf.train.BytesList(value=[png]))}))
        candidates = [(True, example.SerializeToString()), (False, png)]
        if self._as_example is not None:
            candidates = [c for c in candidates if c[0] == self._as_example]
        for as_example, value in candidates:
            try:
                outputs = self._call(tf.constant([value]))
            except tf.errors.InvalidArgumentError:
                if self._as_example is not None:
                    raise
                continue
            self._as_example = as_example
            return outputs
        raise SavedModelError("the SavedModel's string input takes neither tf.Examples nor "
                              "encoded images")

    def _call(self, batch: tf.Tensor) -> dict[str, np.ndarray]:
        return {k: v.numpy() for k, v in self._serve(**{self._input_name: batch}).items()}

    def __call__(self, image: np.ndarray) -> Detections:
        return to_detections(self.raw(image), image.shape[0], image.shape[1])


def to_detections(outputs: dict[str, np.ndarray], height: int, width: int) -> Detections:
    count = int(outputs["num_detections"][0])
    boxes = outputs["detection_boxes"][0, :count] * np.array([height, width, height, width])
    masks = None
    if MASKS_IMAGE_KEY in outputs:
        masks = outputs[MASKS_IMAGE_KEY][0, :count]
    elif "detection_masks" in outputs:  # exported with --nofull_image_masks: paste here
        masks = paste_masks(tf.constant(outputs["detection_masks"][0, :count]),
                            tf.constant(boxes, tf.float32), height, width).numpy()
    return Detections(boxes.astype(np.float32), outputs["detection_scores"][0, :count],
                      outputs["detection_classes"][0, :count].astype(np.int64), masks)
