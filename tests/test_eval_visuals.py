"""Eval pictures: the model input is mapped back to the original image, and predicted and
ground-truth masks land on the same pixels of their halves."""
from __future__ import annotations

import numpy as np

GRAY = 120


def normalized(image: np.ndarray) -> np.ndarray:
    from official.vision.ops import preprocess_ops

    return ((image.astype(np.float32) - np.asarray(preprocess_ops.MEAN_RGB, np.float32))
            / np.asarray(preprocess_ops.STDDEV_RGB, np.float32))


def batch_of_one(score: float) -> dict[str, np.ndarray]:
    """A 48 x 64 gray image, shown to the model at twice its size in a 128 x 160 input; one
    ground-truth instance (rows 10..29, columns 20..39) and one prediction on it."""
    original = np.full((48, 64, 3), GRAY, np.uint8)
    model_input = np.zeros((128, 160, 3), np.float32)
    model_input[:96, :128] = normalized(np.repeat(np.repeat(original, 2, 0), 2, 1))
    image_info = np.array([[48, 64], [96, 128], [2, 2], [0, 0]], np.float32)
    return {
        "images": model_input[np.newaxis], "image_info": image_info[np.newaxis],
        "gt_boxes": np.array([[[10, 20, 30, 40], [0, 0, 0, 0]]], np.float32),
        "gt_classes": np.array([[2, -1]]), "gt_count": np.array([1]),
        "gt_masks": np.ones((1, 2, 28, 28), np.float32),
        "boxes": np.array([[[20, 40, 60, 80], [0, 0, 8, 8]]], np.float32),  # input pixels
        "classes": np.array([[2, 1]]), "scores": np.array([[score, 0.1]], np.float32),
        "count": np.array([2]), "masks": np.ones((1, 2, 28, 28), np.float32),
    }


def test_original_image_undoes_normalization_resize_and_padding():
    from models.evaluation.eval_pictures import original_image

    batch = batch_of_one(0.9)
    image = original_image(batch["images"][0], batch["image_info"][0])
    assert image.shape == (48, 64, 3) and np.abs(image.astype(int) - GRAY).max() <= 1


def test_prediction_and_ground_truth_masks_cover_the_same_pixels():
    from models.evaluation.eval_pictures import GAP, EvalVisuals, VisualsConfig

    names = {1: "circle", 2: "square"}
    visuals = EvalVisuals(VisualsConfig(num_visualizations=1, min_score_threshold=0.5),
                          lambda i: names[i])
    picture = visuals.side_by_side(batch_of_one(0.9), 0)
    factor = 256 // 48  # enlarged for legibility
    height, width = 48 * factor, 64 * factor
    assert picture.shape == (height, 2 * width + GAP, 3)
    left, right = picture[:, :width], picture[:, width + GAP:]
    inside = (slice(15 * factor, 25 * factor), slice(25 * factor, 35 * factor))
    for half in (left, right):
        assert np.any(half[inside] != GRAY, axis=-1).all()  # the mask is coloured in
        assert (half[40 * factor:, :] == GRAY).all()  # below the object: untouched
    np.testing.assert_array_equal(left[inside], right[inside])
    # the 0.1 detection at the top left is under min_score_threshold: not drawn
    assert (left[:8 * factor, :8 * factor] == GRAY).all()


def test_collect_keeps_the_first_n_images_across_replicas_and_batches():
    from models.evaluation.eval_pictures import EvalVisuals, VisualsConfig

    visuals = EvalVisuals(VisualsConfig(num_visualizations=3))
    batch = batch_of_one(0.9)
    two_replicas = {key: (value, value) for key, value in batch.items()}
    visuals.collect(two_replicas)
    visuals.collect(two_replicas)
    assert len(visuals._pictures) == 3
    visuals.reset()
    assert not visuals._pictures
