"""Where a checkpoint's mask mAP is lost: in its boxes or in its masks.

Each held-out object is matched to the best-overlapping detection of its class (box IoU above
0.5, score above 0.3). For every match three IoUs are compared: of the boxes, of the predicted
mask, and of a perfect mask inside the predicted box (the ground truth resampled onto the
model's 28x28 grid in that box, pasted back as the evaluator pastes). When the perfect mask
scores far above the predicted one, the boxes are good enough and the mask head is the limit.
Objects no detection matches are sorted by why: a confident detection of another class
(wrong class), one of their class below the score threshold (low score), one of their class
overlapping 0.3 to 0.5 (poor box), or none of these (not detected).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks.mask_ceiling import annotations_by_image, instances, model_mask_targets
from models.inference.hierarchical_ensemble import mask_iou_matrix


@dataclass
class Match:
    box_iou: float
    mask_iou: float
    perfect_mask_iou: float
    area: int  # the object's visible pixels


@dataclass
class Miss:
    reason: str  # one of MISS_REASONS
    area: int


MISS_REASONS = ("wrong class", "low score", "poor box", "not detected")


def _box_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two (ymin, xmin, ymax, xmax) boxes."""
    height = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    width = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = height * width
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def _paste(masks: np.ndarray, boxes: np.ndarray, height: int, width: int) -> np.ndarray:
    """As Model Garden's COCO evaluator pastes box masks into the image."""
    from official.vision.ops import box_ops, mask_ops

    return mask_ops.paste_instance_masks(masks, box_ops.yxyx_to_xywh(boxes), height, width) > 0


def match_image(gt_masks: np.ndarray, gt_boxes: np.ndarray, gt_classes: np.ndarray,
                boxes: np.ndarray, masks: np.ndarray, classes: np.ndarray, scores: np.ndarray,
                min_box_iou: float = 0.5, min_score: float = 0.3) -> list[Match | Miss]:
    """One image: ground truth [K, H, W] masks, [K, 4] pixel boxes, [K] classes; detections
    [N, 4] pixel boxes, [N, M, M] box masks, [N] classes and scores. One entry per object,
    a Miss where no detection matches it."""
    height, width = gt_masks.shape[1:]
    used: set[int] = set()
    found: list[Match | Miss] = []
    for gt_mask, gt_box, gt_class in zip(gt_masks, gt_boxes, gt_classes):
        area = int(gt_mask.sum())
        ious = np.array([_box_iou(gt_box, box) for box in boxes])
        free = np.array([k not in used for k in range(len(boxes))], bool)
        same_class = free & (classes == gt_class)
        confident = scores >= min_score
        candidates = np.where(same_class & confident & (ious > min_box_iou))[0]
        if not len(candidates):
            found.append(Miss(_miss_reason(ious, free, same_class, confident, min_box_iou),
                              area))
            continue
        best = int(candidates[np.argmax(ious[candidates])])
        best_iou = float(ious[best])
        used.add(best)
        box = boxes[best:best + 1]
        perfect = model_mask_targets(gt_mask[None].astype(np.float32), gt_box[None], box,
                                     mask_size=masks.shape[-1])
        pasted = _paste(np.concatenate([masks[best:best + 1], perfect]), np.repeat(box, 2, 0),
                        height, width)
        predicted_iou, perfect_iou = mask_iou_matrix(pasted, gt_mask[None])[:, 0]
        found.append(Match(best_iou, float(predicted_iou), float(perfect_iou), area))
    return found


def _miss_reason(ious: np.ndarray, free: np.ndarray, same_class: np.ndarray,
                 confident: np.ndarray, min_box_iou: float) -> str:
    overlapping = ious > min_box_iou
    if np.any(free & ~same_class & confident & overlapping):
        return "wrong class"
    if np.any(same_class & ~confident & overlapping):
        return "low score"
    if np.any(same_class & confident & (ious > 0.3)):
        return "poor box"
    return "not detected"


def summarize(found: list[Match | Miss]) -> str:
    matched = [m for m in found if isinstance(m, Match)]
    missed = [m for m in found if isinstance(m, Miss)]
    misses = _summarize_misses(missed, matched)
    if not matched:
        return f"no detection matched any of {len(found)} objects; {misses}"
    box, mask, perfect = (np.array([getattr(m, f) for m in matched])
                          for f in ("box_iou", "mask_iou", "perfect_mask_iou"))
    text = (f"{len(matched)} of {len(found)} objects matched; median IoU of the boxes "
            f"{np.median(box):.3f}, of the predicted masks {np.median(mask):.3f}, of perfect "
            f"masks in the predicted boxes {np.median(perfect):.3f}; IoU >= 0.85: "
            f"{np.mean(mask >= 0.85):.0%} of predicted masks, {np.mean(perfect >= 0.85):.0%} "
            f"of perfect ones")
    return f"{text}; {misses}" if missed else text


def _summarize_misses(missed: list[Miss], matched: list[Match]) -> str:
    if not missed:
        return "none missed"
    counts = ", ".join(f"{n} {reason}" for reason in MISS_REASONS
                       if (n := sum(m.reason == reason for m in missed)))
    sizes = f"median {np.median([m.area for m in missed]):.0f} px"
    if matched:
        sizes += f" against {np.median([m.area for m in matched]):.0f} px matched"
    return f"not matched: {counts} ({sizes})"


def checkpoint_mask_gap(checkpoint: str, config, config_overrides: list[str],
                        groundtruth_file: str) -> list[Match | Miss]:
    """match_image over the config's eval split, with the model of `checkpoint`; ground truth
    from the COCO file the evaluation writes (its ids are the records' source ids)."""
    import json

    from models.builders.experiment_builder import load_and_build
    from models.modeling.checkpoints import restore_weights
    from models.tasks.maskrcnn_task import MaskRCNNTask

    built = load_and_build(config, config_overrides, checkpoint_every_n=1)
    task = MaskRCNNTask(built)
    model = task.build_model()
    restore_weights(model, checkpoint, built.pipeline.train_config.optimizer.use_moving_average)
    coco = json.loads(Path(groundtruth_file).read_text(encoding="utf-8"))
    objects = annotations_by_image(coco)
    found: list[Match | Miss] = []
    for images, labels in task.build_inputs(built.task.validation_data):
        outputs = model(images, anchor_boxes=labels["anchor_boxes"],
                        image_shape=labels["image_info"][:, 1, :], training=False)
        # Boxes come in the resized input's pixels; the ground truth is in the original's.
        scales = labels["image_info"][:, 2, :].numpy()
        offsets = labels["image_info"][:, 3, :].numpy()
        for b, source_id in enumerate(labels["groundtruths"]["source_id"].numpy()):
            annotations = objects.get(int(source_id), [])
            if not annotations:
                continue
            count = int(outputs["num_detections"][b])
            boxes = ((outputs["detection_boxes"][b, :count].numpy() + np.tile(offsets[b], 2))
                     / np.tile(scales[b], 2))
            height, width = labels["image_info"][b, 0, :].numpy().astype(int)
            found += match_image(*instances(annotations, height, width),
                                 boxes, outputs["detection_masks"][b, :count].numpy(),
                                 outputs["detection_classes"][b, :count].numpy(),
                                 outputs["detection_scores"][b, :count].numpy())
    return found
