r"""The best mask mAP any model can reach on an evaluation set under Model Garden's evaluator.

Every object is "detected" with its exact box and class, and its mask is the ground truth
itself, resampled the way Mask R-CNN is trained to predict it (cropped into the box, then to
the model's 28x28 grid) and pasted back into the image by the evaluator. For objects a few
dozen pixels across that round trip alone costs IoU, so this is how much of a mask mAP
target is within reach of a model at all. With `box_noise_px`, the boxes are off by that
much (normal noise on each edge) and the masks are still perfect within them: how precise
boxes must be for a target.

    .venv/bin/python -m benchmarks.mask_ceiling \
        --annotations MODEL_DIR/eval/coco_groundtruth.json --box_noise_px 1
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils

MODEL_MASK_SIZE = 28  # Model Garden's mask head output (mask_target_size)
PARSER_CROP_SIZE = 112  # Model Garden's parser crops ground-truth masks to this first


def model_mask_targets(masks: np.ndarray, boxes: np.ndarray, rois: np.ndarray | None = None,
                       mask_size: int = MODEL_MASK_SIZE, crop_size: int = PARSER_CROP_SIZE
                       ) -> np.ndarray:
    """[K, H, W] masks and their [K, 4] pixel boxes (ymin, xmin, ymax, xmax) -> the [K, M, M]
    targets Model Garden trains the mask head on for RoIs `rois` (default: the boxes)."""
    import tensorflow as tf
    from official.vision.ops import spatial_transform_ops

    height, width = masks.shape[1:]
    count = len(masks)
    crops = tf.image.crop_and_resize(
        tf.constant(masks[..., None], tf.float32),
        tf.constant(boxes / [height, width, height, width], tf.float32),
        tf.range(count), [crop_size, crop_size], method="bilinear")[..., 0]
    targets = spatial_transform_ops.crop_mask_in_target_box(
        crops[None], tf.constant(boxes[None], tf.float32),
        tf.constant((boxes if rois is None else rois)[None], tf.float32), mask_size,
        sample_offset=0.5)
    return targets[0].numpy()


def annotations_by_image(dataset: dict) -> dict[int, list[dict]]:
    """A COCO dataset's objects (crowd regions left out), by image id."""
    by_image: dict[int, list[dict]] = defaultdict(list)
    for annotation in dataset["annotations"]:
        if not annotation.get("iscrowd", 0):
            by_image[annotation["image_id"]].append(annotation)
    return by_image


def instances(annotations: list[dict], height: int, width: int
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """COCO objects of one image -> [K, H, W] float masks, [K, 4] pixel boxes (ymin, xmin,
    ymax, xmax) and [K] classes."""
    masks = np.stack([mask_utils.decode(a["segmentation"]) for a in annotations])
    boxes = np.array([[y, x, y + h, x + w] for x, y, w, h in (a["bbox"] for a in annotations)],
                     np.float32)
    classes = np.array([a["category_id"] for a in annotations], np.int32)
    return masks.reshape(-1, height, width).astype(np.float32), boxes, classes


def perfect_detection_metrics(annotation_file: str | Path, mask_size: int = MODEL_MASK_SIZE,
                              box_noise_px: float = 0.0, seed: int = 0) -> dict[str, float]:
    """COCO metrics of perfect detections (see the module docstring) on the ground truth in
    `annotation_file` (COCO JSON with RLE masks, as the evaluation driver writes it)."""
    import tensorflow as tf
    from official.vision.evaluation import coco_evaluator

    rng = np.random.default_rng(seed)
    dataset = json.loads(Path(annotation_file).read_text(encoding="utf-8"))
    by_image = annotations_by_image(dataset)
    evaluator = coco_evaluator.COCOEvaluator(annotation_file=str(annotation_file),
                                             include_mask=True)
    # The evaluator stacks its batches, so every image reports the same number of
    # detections; the rest are padding, as the model's own: class 0, score 0, no box.
    slots = max((len(found) for found in by_image.values()), default=0)
    for image in dataset["images"]:
        found = by_image.get(image["id"])
        if not found:
            continue  # nothing to detect, and a perfect detector reports nothing
        height, width = image["height"], image["width"]
        masks, boxes, classes = instances(found, height, width)
        detected = boxes + rng.normal(0.0, box_noise_px, boxes.shape).astype(np.float32)
        pad = slots - len(found)
        predictions = {
            "source_id": [image["id"]],
            "image_info": [[[height, width], [height, width], [1.0, 1.0], [0.0, 0.0]]],
            "num_detections": [len(found)],
            "detection_boxes": np.pad(detected, [(0, pad), (0, 0)])[None],
            "detection_classes": np.pad(classes, [(0, pad)])[None],
            "detection_scores": np.pad(np.ones(len(found), np.float32), [(0, pad)])[None],
            "detection_masks": np.pad(model_mask_targets(masks, boxes, detected, mask_size),
                                      [(0, pad), (0, 0), (0, 0)])[None],
        }
        evaluator.update_state(None, {k: tf.constant(v) for k, v in predictions.items()})
    return {name: float(value) for name, value in evaluator.result().items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--annotations", required=True,
                        help="COCO ground truth with RLE masks (model_main_tf2.py writes it as "
                        "MODEL_DIR/eval/coco_groundtruth.json when it evaluates)")
    parser.add_argument("--box_noise_px", type=float, default=0.0,
                        help="standard deviation of each box edge's error, in pixels")
    parser.add_argument("--mask_size", type=int, default=MODEL_MASK_SIZE)
    args = parser.parse_args(argv)
    metrics = perfect_detection_metrics(args.annotations, args.mask_size, args.box_noise_px)
    print(f"perfect detections, box edges off by {args.box_noise_px:g} px: box mAP "
          f"{metrics['AP']:.3f}, mask mAP {metrics['mask_AP']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
