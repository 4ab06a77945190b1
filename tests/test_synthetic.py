"""The built-in synthetic data set: deterministic, occluded, and exact in its polygons."""
from __future__ import annotations

import json

import numpy as np
from pycocotools import mask as mask_utils

from data_prep.synthetic import CLASSES, generate_image
from data_prep.synthetic.mask_outline import is_simple_region, outline
from tests.conftest import run_command


def test_same_seed_same_scene_and_independent_of_the_count():
    a = generate_image(seed=3, split="train", index=5)
    b = generate_image(seed=3, split="train", index=5)
    c = generate_image(seed=4, split="train", index=5)
    assert np.array_equal(a.pixels, b.pixels)
    assert [o.polygon for o in a.objects] == [o.polygon for o in b.objects]
    assert not np.array_equal(a.pixels, c.pixels)


def test_polygons_rasterize_exactly_to_the_visible_masks():
    for index in range(20):
        image = generate_image(seed=0, split="t", index=index)
        for obj in image.objects:
            flat = [float(v) for p in obj.polygon for v in p]
            rle = mask_utils.frPyObjects([flat], image.height, image.width)
            np.testing.assert_array_equal(mask_utils.decode(mask_utils.merge(rle)), obj.mask)


def test_scenes_have_every_class_overlaps_and_occlusion():
    classes, occluded, counts = set(), 0, []
    for index in range(40):
        image = generate_image(seed=0, split="train", index=index)
        counts.append(len(image.objects))
        union = np.zeros((image.height, image.width), np.int32)
        for obj in image.objects:
            classes.add(obj.class_name)
            union += obj.mask
        assert union.max() <= 1  # visible masks never overlap
        occluded += sum(obj.mask.sum() < obj.full_area for obj in image.objects)
        assert all(obj.mask.sum() >= 0.5 * obj.full_area for obj in image.objects)
    assert classes == set(CLASSES)
    assert occluded >= 10 and min(counts) >= 2 and max(counts) <= 6


def test_outline_of_diagonally_touching_pixels_is_one_exact_polygon():
    mask = np.zeros((10, 10), np.uint8)
    mask[1:4, 1:4] = 1
    mask[4:7, 4:7] = 1
    assert is_simple_region(mask)
    flat = [float(v) for p in outline(mask) for v in p]
    decoded = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects([flat], 10, 10)))
    np.testing.assert_array_equal(decoded, mask)


def test_command_line_writes_images_and_coco(tmp_path):
    run_command("-m", "data_prep.synthetic", "--output_dir", str(tmp_path), "--split",
                "train:5", "--size", "96x64", "--objects", "1-3", "--image_format", "png",
                check=True)
    data = json.loads((tmp_path / "annotations/instances_train.json").read_text())
    assert len(data["images"]) == 5
    assert all((tmp_path / "images/train" / i["file_name"]).exists() for i in data["images"])
    assert {(i["width"], i["height"]) for i in data["images"]} == {(96, 64)}
    assert [c["name"] for c in data["categories"]] == list(CLASSES)
