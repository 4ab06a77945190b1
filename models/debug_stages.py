r"""Pictures of each stage of Mask R-CNN on an image, to see where a detection goes wrong.

    python -m models.debug_stages --pipeline_config_path EXPORT_DIR/pipeline.config \
        --checkpoint_dir EXPORT_DIR/checkpoint --images 'images/*.jpg' --output_dir stages/

(or `python -m models.infer ... --debug_stages`). Per image, four PNGs:
  <name>_1_anchors.png    the anchors the RPN scores highest (objectness), unrefined
  <name>_2_proposals.png  the proposals: those anchors refined by the RPN and kept by its NMS
  <name>_3_boxes.png      the second stage's classified, refined boxes after NMS (>= threshold)
  <name>_4_masks.png      the final masks of those detections

The SavedModel returns only the final detections, so the stages come from the Keras model
restored from the checkpoint with the pipeline config (the export directory holds both):
Model Garden's MaskRCNNModel returns rpn_scores / rpn_boxes per level next to the
detections, and its own roi_generator layer turns them into the proposals exactly as inside
the model. Preprocessing is the serving signature's (models.export_signatures).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import tensorflow as tf
from official.vision.ops import anchor

from models.export_signatures import boxes_to_original_pixels, paste_masks, preprocess_image

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
    from models.builders.experiment_builder import load_and_build
    from models.export import restore_model
    from models.infer import picture_name, read_image, render, write_png

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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m models.debug_stages", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pipeline_config_path", required=True)
    parser.add_argument("--checkpoint_dir", required=True, help="directory or ckpt prefix")
    parser.add_argument("--images", required=True, help="glob (quoted) or directory")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--label_map", help="class names (default: ids)")
    parser.add_argument("--score_threshold", type=float, default=0.5)
    parser.add_argument("--top_k", type=int, default=10, help="anchors and proposals drawn")
    args = parser.parse_args(argv)
    from models.export import ExportError, staged_directory
    from models.infer import InferError, class_names, find_images
    from pipelines.config_util import PipelineConfigError
    from records.label_map import LabelMapError, read_label_map

    try:
        paths = find_images(args.images)
        name_of = class_names(read_label_map(args.label_map) if args.label_map else None)
        with staged_directory(args.output_dir, INDEX_FILE) as staging:
            write_debug_stages(args.pipeline_config_path, args.checkpoint_dir, paths, staging,
                               name_of, args.score_threshold, args.top_k)
    except (InferError, ExportError, PipelineConfigError, LabelMapError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"{len(paths)} image(s) x {len(STAGES)} stages -> {args.output_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
