"""The convergence benchmark's ceiling: perfect detections scored by Model Garden's evaluator."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils

from benchmarks.mask_ceiling import model_mask_targets, perfect_detection_metrics
from tests.coco_helpers import disc_mask


def _annotation_file(tmp_path: Path, masks_per_image: list[list[np.ndarray]]) -> Path:
    images, annotations = [], []
    for image_id, masks in enumerate(masks_per_image, start=1):
        height, width = masks[0].shape
        images.append({"id": image_id, "height": height, "width": width})
        for mask in masks:
            rows, cols = np.nonzero(mask)
            x, y = float(cols.min()), float(rows.min())
            rle = mask_utils.encode(np.asfortranarray(mask))
            annotations.append({
                "id": len(annotations) + 1, "image_id": image_id, "category_id": 1,
                "iscrowd": 0, "area": float(mask.sum()),
                "bbox": [x, y, cols.max() + 1.0 - x, rows.max() + 1.0 - y],
                "segmentation": {"size": rle["size"], "counts": rle["counts"].decode()}})
    path = tmp_path / "groundtruth.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations,
                                "categories": [{"id": 1, "name": "disc"}]}))
    return path


def test_targets_are_the_mask_on_the_model_grid():
    mask = np.zeros((1, 64, 64), np.float32)
    mask[0, 16:48, 16:32] = 1.0  # left half of the box [16, 16, 48, 48]
    targets = model_mask_targets(mask, np.array([[16, 16, 48, 48]], np.float32))
    assert targets.shape == (1, 28, 28)
    assert targets[0, :, :12].min() > 0.9 and targets[0, :, 16:].max() < 0.1


def test_large_objects_lose_nothing_small_ones_lose_iou(tmp_path):
    large = _annotation_file(tmp_path, [[disc_mask(128, 64, 64, 40)]])
    assert perfect_detection_metrics(large)["mask_AP"] > 0.99
    # 1, 2 and 3 objects: images with fewer are padded to the same number of detections
    small = [[disc_mask(128, 20 + 40 * i, 30 + 35 * j, 4.5 + i + j) for i in range(j + 1)]
             for j in range(3)]
    result = perfect_detection_metrics(_annotation_file(tmp_path, small))
    assert result["AP"] > 0.99  # the boxes are exact
    assert 0.3 < result["mask_AP"] < 0.95  # the 28x28 round trip and the paste cost IoU


def test_box_errors_lower_the_ceiling_and_the_command_prints_it(tmp_path, capsys):
    from benchmarks.mask_ceiling import main

    discs = [[disc_mask(128, 24 + 40 * i, 24 + 40 * j, 10.0) for i in range(3)] for j in range(3)]
    path = _annotation_file(tmp_path, discs)
    exact = perfect_detection_metrics(path)
    off = perfect_detection_metrics(path, box_noise_px=2.0)
    assert off["AP"] < exact["AP"] and off["mask_AP"] < exact["mask_AP"] - 0.05
    assert main(["--annotations", str(path), "--box_noise_px", "2"]) == 0
    assert f"mask mAP {off['mask_AP']:.3f}" in capsys.readouterr().out
