"""Every augmentation step on an image whose masks are known: boxes and masks move with it."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import text_format

from models.builders.model_builder import ResizeSpec
from models.dataloaders import augmentations as augment
from pipelines.config_util import PipelineConfigError
from pipelines.protos import train_pb2

HEIGHT, WIDTH = 60, 90
COLORS = np.array([[250, 40, 40], [40, 250, 40]], np.uint8)


def _scene() -> dict:
    """Two coloured objects (a square and an L shape) on black: masks, boxes known."""
    masks = np.zeros((2, HEIGHT, WIDTH), np.float32)
    masks[0, 10:30, 15:40] = 1
    masks[1, 35:55, 50:80] = 1
    masks[1, 35:45, 50:60] = 0  # not a rectangle: the box must come from the mask
    image = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    for mask, color in zip(masks, COLORS):
        image[mask > 0] = color
    boxes = np.array([[10 / HEIGHT, 15 / WIDTH, 30 / HEIGHT, 40 / WIDTH],
                      [35 / HEIGHT, 50 / WIDTH, 55 / HEIGHT, 80 / WIDTH]], np.float32)
    return {"image": tf.constant(image), "groundtruth_boxes": tf.constant(boxes),
            "groundtruth_instance_masks": tf.constant(masks),
            "groundtruth_classes": tf.constant([1, 2], tf.int64),
            "groundtruth_is_crowd": tf.constant([False, False]),
            "groundtruth_area": tf.constant(masks.sum(axis=(1, 2))),
            "height": tf.constant(HEIGHT, tf.int64), "width": tf.constant(WIDTH, tf.int64)}


def _steps(text: str):
    config = text_format.Parse(text, train_pb2.TrainConfig())
    return augment.build_augmentation(config.data_augmentation_options)


def _tight_boxes(masks: np.ndarray) -> np.ndarray:
    boxes = []
    for mask in masks:
        rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
        h, w = mask.shape
        boxes.append([rows[0] / h, cols[0] / w, (rows[-1] + 1) / h, (cols[-1] + 1) / w])
    return np.array(boxes, np.float32)


def _assert_masks_follow_image(out: dict, classes_kept=(1, 2)) -> None:
    image = out["image"].numpy().astype(int)
    masks = out["groundtruth_instance_masks"].numpy()
    classes = out["groundtruth_classes"].numpy().tolist()
    assert classes == list(classes_kept)
    np.testing.assert_allclose(out["groundtruth_boxes"].numpy(), _tight_boxes(masks), atol=1e-6)
    for mask, label in zip(masks, classes):
        color = COLORS[label - 1].astype(int)
        inside = np.argwhere(mask > 0.5)
        # Interior pixels (away from the bilinear edge) show the object's colour.
        eroded = (mask > 0.5) & np.roll(mask > 0.5, 1, 0) & np.roll(mask > 0.5, -1, 0) \
            & np.roll(mask > 0.5, 1, 1) & np.roll(mask > 0.5, -1, 1)
        assert eroded.sum() > 0.3 * len(inside)
        assert np.abs(image[eroded] - color).max() <= 3
    near = cv2.dilate((masks.max(axis=0) > 0.5).astype(np.uint8), np.ones((5, 5), np.uint8))
    assert image[near == 0].max() <= 3  # background stays black where no mask is near


@pytest.mark.parametrize("text", [
    "data_augmentation_options { random_horizontal_flip { probability: 1.0 } }",
    "data_augmentation_options { random_vertical_flip { probability: 1.0 } }",
    "data_augmentation_options { random_crop_image { min_area: 0.5 max_area: 0.6 "
    "min_aspect_ratio: 0.9 max_aspect_ratio: 1.1 } }",
    "data_augmentation_options { random_affine { min_scale: 0.8 max_scale: 0.8 "
    "max_translate: 0.05 max_rotation_degrees: 20 max_shear_degrees: 10 } }",
])
def test_geometric_steps_move_masks_and_boxes_with_the_image(text):
    tf.random.set_seed(3)
    step, _ = _steps(text)
    data = _scene()
    out = step(data)
    _assert_masks_follow_image(out)
    assert not np.array_equal(out["groundtruth_instance_masks"].numpy(),
                              data["groundtruth_instance_masks"].numpy())


def test_flip_mirrors_masks_exactly():
    step, _ = _steps("data_augmentation_options { random_horizontal_flip { probability: 1 } }")
    data = _scene()
    out = step(data)
    np.testing.assert_array_equal(out["groundtruth_instance_masks"].numpy(),
                                  data["groundtruth_instance_masks"].numpy()[:, :, ::-1])
    np.testing.assert_array_equal(out["image"].numpy(), data["image"].numpy()[:, ::-1])


def test_crop_drops_instances_that_leave_the_image():
    step = augment.crop_image(0.2, 0.2, 1.0, 1.0, 0.0)
    data = _scene()
    tf.random.set_seed(0)
    kept = set()
    for _ in range(20):
        out = step(data)
        classes = out["groundtruth_classes"].numpy().tolist()
        kept.add(tuple(classes))
        assert len(classes) == out["groundtruth_instance_masks"].shape[0] == \
            out["groundtruth_boxes"].shape[0] == out["groundtruth_area"].shape[0]
        assert out["image"].shape[0] < HEIGHT and out["height"].numpy() == out["image"].shape[0]
    assert any(len(c) < 2 for c in kept)  # small crops lose objects, consistently


@pytest.mark.parametrize("text", [
    "data_augmentation_options { random_adjust_brightness { max_delta: 0.2 } }",
    "data_augmentation_options { random_adjust_contrast { min_delta: 0.5 max_delta: 0.6 } }",
    "data_augmentation_options { random_multiply_brightness { min_factor: 0.7 "
    "max_factor: 0.8 } }",
    "data_augmentation_options { random_gaussian_blur { probability: 1 min_sigma: 1.5 "
    "max_sigma: 2 } }",
])
def test_photometric_steps_change_pixels_only(text):
    tf.random.set_seed(1)
    step, _ = _steps(text)
    data = _scene()
    out = step(data)
    for key in ("groundtruth_instance_masks", "groundtruth_boxes", "groundtruth_classes"):
        np.testing.assert_array_equal(out[key].numpy(), data[key].numpy())
    assert out["image"].dtype == tf.uint8 and out["image"].shape == data["image"].shape
    assert np.abs(out["image"].numpy().astype(int) - data["image"].numpy()).mean() > 1


def test_blur_spreads_an_edge():
    step = augment.gaussian_blur(1.0, 2.0, 2.0)
    out = step(_scene())["image"].numpy().astype(int)
    assert 20 < out[20, 41, 0] < 200  # just outside the red square: partly red now


def test_scale_jitter_is_handed_to_the_parser_and_boxes_only_models_work():
    step, scale = _steps("data_augmentation_options { random_scale_crop_and_pad_to_square { "
                         "scale_min: 0.5 scale_max: 1.5 } }")
    assert step is None and scale == (0.5, 1.5)
    data = _scene()
    del data["groundtruth_instance_masks"]
    affine = augment.affine(1.0, 1.0, 1.0, 0.0, 90.0, 0.0)
    tf.random.set_seed(0)
    out = affine(data)
    boxes = out["groundtruth_boxes"].numpy()
    assert boxes.shape == (2, 4) and (boxes[:, 2] > boxes[:, 0]).all()
    assert np.all((0 <= boxes) & (boxes <= 1))


@pytest.mark.parametrize("text, field", [
    ("data_augmentation_options { random_crop_image { min_area: 0.9 max_area: 0.5 } }",
     "random_crop_image"),
    ("data_augmentation_options { }", "data_augmentation_options[0]"),
    ("data_augmentation_options { random_affine { max_shear_degrees: 85 } }", "random_affine"),
])
def test_invalid_steps_are_config_errors(text, field):
    with pytest.raises(PipelineConfigError) as info:
        _steps(text)
    assert field in info.value.field


def test_larger_side_scaled_to_n_and_padded_to_a_square():
    """The tiny-VOC resizing: min_dimension == max_dimension == N."""
    from models.builders.model_builder import RpnTargets
    from models.dataloaders.parser import Parser

    spec = ResizeSpec("keep_aspect_ratio", 64, 64, min_dimension=64)
    parser = Parser(spec, RpnTargets(0.7, 0.3, 256, 0.5, 10), 2, 5, 1, [1.0], 4.0,
                    include_mask=True)
    data = _scene()
    data["source_id"] = tf.constant("1")
    image, labels = parser._parse_train_data(data)  # pylint: disable=protected-access
    assert image.shape == (64, 64, 3)
    info = labels["image_info"].numpy()
    np.testing.assert_allclose(info[1], [43, 64])  # 60x90 -> 43x64 (larger side 90 -> 64)
    scale = 64 / 90
    np.testing.assert_allclose(info[2], [43 / 60, scale], rtol=1e-5)
    assert np.all(image.numpy()[43:] == image.numpy()[43:][0, 0])  # zero padding below
    boxes = labels["gt_boxes"].numpy()[:2]
    np.testing.assert_allclose(boxes[0], [10 * 43 / 60, 15 * scale, 30 * 43 / 60, 40 * scale],
                               atol=1e-3)
