"""TensorBoard images of evaluation: predictions (left) beside the ground truth (right).

`eval_config.num_visualizations` images per evaluation are written as
`eval_side_by_side_<i>` image summaries under model_dir/eval, as the Object Detection API
does, with masks, boxes, class names and scores (detections scoring at least
`min_score_threshold`, at most `max_num_boxes_to_visualize`). Model Garden's own eval images
draw no masks; these do.

The evaluation step hands over, per batch, the model input and its image_info, the
ground truth (boxes in original pixels, box-relative masks) and the detections (boxes in
input pixels, box-relative masks); everything is mapped back to the original image size
here, on the host, with the serving signature's own functions, so the pictures show what an
exported model would return.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np
import tensorflow as tf
from official.vision.ops import preprocess_ops

from models.ops.paste_masks import paste_masks
from models.ops.resize import boxes_to_original_pixels
from records.render import draw_enlarged

STEP_KEY = "eval_visuals"  # the validation step's log entry carrying these tensors
SUMMARY_PREFIX = "eval_side_by_side"
DISPLAY_MIN_SIDE = 256  # small images are shown enlarged so captions stay legible
GAP = 4  # pixels between the two halves


@dataclasses.dataclass(frozen=True)
class VisualsConfig:
    num_visualizations: int
    min_score_threshold: float = 0.5
    max_boxes: int = 20


def step_tensors(images: tf.Tensor, labels: dict, outputs: dict) -> dict[str, tf.Tensor]:
    """What one evaluation step passes on for drawing (inside the replica)."""
    truth = labels["groundtruths"]
    carried = {
        "images": images, "image_info": labels["image_info"],
        "gt_boxes": truth["boxes"], "gt_classes": truth["classes"],
        "gt_count": truth["num_detections"],
        "boxes": outputs["detection_boxes"], "classes": outputs["detection_classes"],
        "scores": outputs["detection_scores"], "count": outputs["num_detections"],
    }
    if "masks" in truth and "detection_masks" in outputs:
        carried["gt_masks"] = truth["masks"]
        carried["masks"] = outputs["detection_masks"]
    return carried


def _host_batch(step_values: dict) -> dict[str, np.ndarray]:
    """Per-replica results (tuples of tensors) -> one NumPy batch per key."""
    def join(value) -> np.ndarray:
        if isinstance(value, (tuple, list)):
            return np.concatenate([np.asarray(v) for v in value], axis=0)
        return np.asarray(value)
    return {key: join(value) for key, value in step_values.items()}


def original_image(image: np.ndarray, image_info: np.ndarray) -> np.ndarray:
    """The normalized, resized and padded model input -> uint8 RGB at the original size."""
    mean = np.asarray(preprocess_ops.MEAN_RGB, np.float32)
    stddev = np.asarray(preprocess_ops.STDDEV_RGB, np.float32)
    pixels = np.clip(image.astype(np.float32) * stddev + mean, 0, 255)
    scaled_h, scaled_w = (int(round(v)) for v in image_info[1])
    offset_y, offset_x = (int(round(v)) for v in image_info[3])
    crop = pixels[offset_y:offset_y + scaled_h, offset_x:offset_x + scaled_w]
    height, width = (int(round(v)) for v in image_info[0])
    resized = tf.image.resize(crop, [height, width], method="bilinear").numpy()
    return np.round(resized).astype(np.uint8)


class EvalVisuals:
    """Collects the first N evaluation images and writes them as image summaries."""

    def __init__(self, config: VisualsConfig, class_name: Callable[[int], str] = str):
        self._config = config
        self._class_name = class_name
        self._pictures: list[np.ndarray] = []

    @property
    def enabled(self) -> bool:
        return self._config.num_visualizations > 0

    def reset(self) -> None:
        self._pictures = []

    def collect(self, step_values: dict) -> None:
        """Draws the batch's images until num_visualizations are held."""
        if len(self._pictures) >= self._config.num_visualizations:
            return
        batch = _host_batch(step_values)
        for index in range(len(batch["images"])):
            if len(self._pictures) >= self._config.num_visualizations:
                break
            self._pictures.append(self.side_by_side(batch, index))

    def side_by_side(self, batch: dict[str, np.ndarray], index: int) -> np.ndarray:
        image_info = batch["image_info"][index]
        image = original_image(batch["images"][index], image_info)
        height, width = image.shape[:2]
        # predictions: boxes in model-input pixels -> original pixels
        count = int(batch["count"][index])
        scores = batch["scores"][index, :count]
        keep = np.flatnonzero(scores >= self._config.min_score_threshold)
        keep = keep[np.argsort(-scores[keep], kind="stable")][:self._config.max_boxes]
        boxes = boxes_to_original_pixels(
            tf.constant(batch["boxes"][index:index + 1, :count], tf.float32),
            tf.constant(image_info[np.newaxis], tf.float32))[0].numpy()[keep]
        boxes = np.clip(boxes, 0, [height, width, height, width])
        masks = None
        if "masks" in batch:
            masks = paste_masks(tf.constant(batch["masks"][index, keep], tf.float32),
                                tf.constant(boxes, tf.float32), height, width).numpy()
        left = self._draw(image, boxes, masks, batch["classes"][index, keep], scores[keep])
        # ground truth: boxes already in original pixels, masks box-relative
        gt_count = int(batch["gt_count"][index])
        gt_boxes = batch["gt_boxes"][index, :gt_count].astype(np.float32)
        gt_masks = None
        if "gt_masks" in batch:
            gt_masks = paste_masks(tf.constant(batch["gt_masks"][index, :gt_count], tf.float32),
                                   tf.constant(gt_boxes), height, width).numpy()
        right = self._draw(image, gt_boxes, gt_masks, batch["gt_classes"][index, :gt_count],
                           None)
        gap = np.full((left.shape[0], GAP, 3), 255, np.uint8)
        return np.concatenate([left, gap, right], axis=1)

    def _draw(self, image: np.ndarray, boxes: np.ndarray, masks: np.ndarray | None,
              classes: np.ndarray, scores: np.ndarray | None) -> np.ndarray:
        captions = [self._class_name(int(c)) for c in classes]
        return draw_enlarged(image, boxes, masks, captions, scores, DISPLAY_MIN_SIDE)

    def write_summaries(self, step: int | tf.Tensor) -> int:
        """Writes the held pictures to the default summary writer; returns how many."""
        written = len(self._pictures)
        for i, picture in enumerate(self._pictures):
            tf.summary.image(f"{SUMMARY_PREFIX}_{i}", picture[np.newaxis], step=step)
        self.reset()
        return written
