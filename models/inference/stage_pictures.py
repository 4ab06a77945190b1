"""Pictures of each stage of Mask R-CNN on an image, to see where a detection goes wrong.

`python -m models.tools.debug_stages` (or `python -m models.tools.infer ... --debug_stages`)
writes, per image, four PNGs:
  <name>_1_anchors.png    the anchors the RPN scores highest (objectness), unrefined
  <name>_2_proposals.png  the proposals: those anchors refined by the RPN and kept by its NMS
  <name>_3_boxes.png      the second stage's classified, refined boxes after NMS (>= threshold)
  <name>_4_masks.png      the final masks of those detections

The SavedModel returns only the final detections, so the stages come from the Keras model
restored from the checkpoint with the pipeline config (the export directory holds both):
Model Garden's MaskRCNNModel returns rpn_scores / rpn_boxes per level next to the
detections, and its own roi_generator layer turns them into the proposals exactly as inside
the model. Preprocessing is the serving signature's (models/ops/resize.py).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import tensorflow as tf
from official.vision.ops import anchor

from models.builders.experiment_builder import load_and_build
from models.inference.image_io import picture_name, read_image, render, write_png
from models.modeling.restore import restore_model
from models.ops.paste_masks import paste_masks
from models.ops.resize import boxes_to_original_pixels, preprocess_image

STAGES = ("anchors", "proposals", "boxes", "masks")
INDEX_FILE = "stages.json"


def _anchor_boxes(config, padded: list[int]) -> dict[str, tf.Tensor]:
    generator = anchor.build_anchor_generator(
        min_level=config.min_level, max_level=config.max_level,
        num_scales=config.anchor.num_scales, aspect_ratios=list(config.anchor.aspect_ratios),
        anchor_size=config.anchor.anchor_size)
    return {level: boxes[tf.newaxis] for level, boxes in generator(image_size=padded).items()}


def _top_anchors(rpn_scores: dict, anchors: dict, top_k: int) -> tuple[np.ndarray, np.ndarray,
                                                                         list[str]]:
    """The top_k anchors over all levels by objectness: boxes [K, 4], scores, level names."""
    boxes, scores, levels = [], [], []
    for level in sorted(rpn_scores, key=int):
        level_scores = tf.reshape(tf.sigmoid(rpn_scores[level][0]), [-1]).numpy()
        boxes.append(tf.reshape(anchors[level][0], [-1, 4]).numpy())
        scores.append(level_scores)
        levels += [f"P{level}"] * len(level_scores)
    boxes_all, scores_all = np.concatenate(boxes), np.concatenate(scores)
    best = np.argsort(-scores_all, kind="stable")[:top_k]
    return boxes_all[best], scores_all[best], [levels[i] for i in best]


def stage_outputs(model, built, image: np.ndarray, top_k: int = 10) -> dict[str, dict]:
    """Boxes (original pixels), scores, captions and masks of each stage for one image."""
    config = built.task.model
    padded = built.resize.padded_size(config.max_level)
    resized, image_info = preprocess_image(tf.constant(image), built.resize, padded)
    image_info = image_info[tf.newaxis]
    anchors = _anchor_boxes(config, padded)
    outputs = model(resized[tf.newaxis], image_shape=image_info[:, 1, :], anchor_boxes=anchors,
                    training=False)

    def original(boxes: np.ndarray) -> np.ndarray:
        return boxes_to_original_pixels(tf.constant(boxes[np.newaxis], tf.float32),
                                        image_info)[0].numpy()

    anchor_boxes, anchor_scores, levels = _top_anchors(outputs["rpn_scores"], anchors, top_k)
    proposals, proposal_scores = model.roi_generator(
        outputs["rpn_boxes"], outputs["rpn_scores"], anchors, image_info[:, 1, :],
        training=False)
    order = np.argsort(-proposal_scores[0].numpy(), kind="stable")[:top_k]
    count = int(outputs["num_detections"][0])
    boxes = original(outputs["detection_boxes"][0, :count].numpy())
    height, width = image.shape[:2]
    masks = None
    if "detection_masks" in outputs:
        masks = paste_masks(outputs["detection_masks"][0, :count], tf.constant(boxes),
                            height, width).numpy()
    return {
        "anchors": {"boxes": original(anchor_boxes), "scores": anchor_scores,
                    "captions": levels, "masks": None},
        "proposals": {"boxes": original(proposals[0].numpy()[order]),
                      "scores": proposal_scores[0].numpy()[order],
                      "captions": ["rpn"] * len(order), "masks": None},
        "boxes": {"boxes": boxes, "scores": outputs["detection_scores"][0, :count].numpy(),
                  "classes": outputs["detection_classes"][0, :count].numpy().astype(int),
                  "masks": None},
        "masks": {"boxes": boxes, "scores": outputs["detection_scores"][0, :count].numpy(),
                  "classes": outputs["detection_classes"][0, :count].numpy().astype(int),
                  "masks": masks},
    }


def write_debug_stages(pipeline_config_path: str | Path, checkpoint: str | Path,
                       image_paths: Sequence[Path], output_dir: str | Path,
                       name_of: Callable[[int], str] = str, score_threshold: float = 0.5,
                       top_k: int = 10) -> list[dict]:
    """Writes the four stage pictures of every image into output_dir; returns the index."""
    built = load_and_build(pipeline_config_path)
    model, _ = restore_model(built, checkpoint, str(pipeline_config_path))
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    index, taken = [], set()
    for path in image_paths:
        image = read_image(path)
        stem = picture_name(path, taken)[:-len(".png")]
        files = {}
        for number, (stage, found) in enumerate(stage_outputs(model, built, image,
                                                              top_k).items(), start=1):
            keep = np.arange(len(found["scores"]))
            if "classes" in found:
                keep = keep[found["scores"] >= score_threshold]
                captions = [name_of(c) for c in found["classes"][keep]]
            else:
                captions = [found["captions"][i] for i in keep]
            masks = found["masks"][keep] if found["masks"] is not None else None
            files[stage] = f"{stem}_{number}_{stage}.png"
            write_png(output_dir / files[stage], render(
                image, found["boxes"][keep], masks, captions, found["scores"][keep]))
        index.append({"image": str(path), **files})
    (output_dir / INDEX_FILE).write_text(json.dumps(index, indent=1) + "\n")
    return index
