"""python -m models.tools.infer on an exported tiny model: pictures, a COCO results file that
pycocotools evaluates, mAP against ground truth, debug stages, and bad inputs (odd image
formats are converted; undecodable files and empty globs stop with a message and no
output). Image decoding is also tested on its own."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from tests.conftest import run_command
from tests.test_export import TinyExport, tiny_export


@pytest.fixture(scope="module")
def export(tmp_path_factory) -> TinyExport:
    return tiny_export(tmp_path_factory)


def infer(*flags: str, check: bool = False):
    return run_command("-m", "models.tools.infer", "--no_progress", *flags, check=check)


def write_odd_images(folder) -> dict[str, np.ndarray]:
    """Grayscale, RGBA, palette and 16-bit PNGs, with the RGB image each should read as."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    gray = rgb[..., 0]
    cv2.imwrite(str(folder / "gray.png"), gray)
    cv2.imwrite(str(folder / "rgba.png"), np.dstack([rgb[..., ::-1], np.full_like(gray, 7)]))
    cv2.imwrite(str(folder / "deep.png"), (rgb[..., ::-1].astype(np.uint16) * 257))
    Image.fromarray(rgb).convert("P").save(folder / "palette.png")
    palette = np.asarray(Image.open(folder / "palette.png").convert("RGB"))
    return {"gray.png": np.stack([gray] * 3, axis=-1), "rgba.png": rgb, "deep.png": rgb,
            "palette.png": palette}


# --- without a model ----------------------------------------------------------------------

def test_read_image_converts_grayscale_alpha_palette_and_16_bit(tmp_path):
    from models.inference.image_io import read_image

    for name, expected in write_odd_images(tmp_path).items():
        image = read_image(tmp_path / name)
        assert image.dtype == np.uint8 and image.shape == (20, 30, 3), name
        np.testing.assert_array_equal(image, expected, err_msg=name)


def test_undecodable_files_and_empty_globs_are_named(tmp_path):
    from models.inference.image_io import InferError, find_images, read_image

    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(InferError, match="broken.jpg: not an image"):
        read_image(tmp_path / "broken.jpg")
    with pytest.raises(InferError, match="no image files match"):
        find_images(str(tmp_path / "*.png"))
    (tmp_path / "notes.txt").write_text("x")
    assert [p.name for p in find_images(str(tmp_path))] == ["broken.jpg"]  # by extension


# --- with the exported tiny model ---------------------------------------------------------

@pytest.mark.slow
def test_infer_writes_pictures_coco_results_mAP_and_debug_stages(export, tmp_path):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    images = export.root / "shapes/images/val"
    annotations = export.root / "shapes/annotations/instances_val.json"
    out = tmp_path / "predictions"
    result = infer("--saved_model", str(export.saved_model), "--images", f"{images}/*.jpg",
                   "--output_dir", str(out), "--score_threshold", "0.05",
                   "--annotations", str(annotations), "--debug_stages", check=True)
    names = sorted(p.stem for p in images.glob("*.jpg"))
    assert sorted(p.stem for p in out.glob("*.png")) == names
    picture = cv2.imread(str(out / f"{names[0]}.png"))
    plain = cv2.imread(str(images / f"{names[0]}.jpg"))
    assert picture.shape == (512, 512, 3)  # 64 px images are drawn 8x larger
    assert np.abs(picture.astype(int) - np.kron(plain, np.ones((8, 8, 1))).astype(int)
                  ).max() > 60  # something was drawn on it
    metrics = json.loads((out / "metrics.json").read_text())
    box_map, mask_map = (metrics["DetectionBoxes_Precision/mAP"],
                         metrics["DetectionMasks_Precision/mAP"])
    assert f"COCO box mAP {box_map:.4f}" in result.stdout
    assert f"COCO mask mAP {mask_map:.4f}" in result.stdout
    ground_truth = COCO(str(annotations))
    detections = ground_truth.loadRes(str(out / "detections.json"))
    assert {a["category_id"] for a in detections.dataset["annotations"]} <= {1, 2, 3, 4}
    evaluation = COCOeval(ground_truth, detections, "segm")
    evaluation.evaluate()
    evaluation.accumulate()
    evaluation.summarize()
    assert evaluation.stats[0] == pytest.approx(mask_map)
    listed = json.loads((out / "images.json").read_text())
    assert {i["file_name"] for i in listed} == {f"{n}.jpg" for n in names}
    stages = json.loads((out / "debug_stages/stages.json").read_text())
    assert len(stages) == len(names)
    for stage in ("1_anchors", "2_proposals", "3_boxes", "4_masks"):
        files = list((out / "debug_stages").glob(f"*_{stage}.png"))
        assert len(files) == len(names), stage
        assert cv2.imread(str(files[0])).shape == (512, 512, 3)


@pytest.mark.slow
def test_bad_inputs_stop_with_a_message_and_no_output(export, tmp_path):
    folder = tmp_path / "images"
    write_odd_images(folder)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
    out = tmp_path / "out"
    result = infer("--saved_model", str(export.saved_model), "--images", str(folder),
                   "--output_dir", str(out))
    assert result.returncode == 1
    assert "broken.jpg: not an image" in result.stderr and "Traceback" not in result.stderr
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == ["images"]
    result = infer("--saved_model", str(export.saved_model), "--images", str(folder),
                   "--output_dir", str(out), "--skip_bad_images", check=True)
    assert "skipped" in result.stderr and "broken.jpg" in result.stderr
    assert sorted(p.name for p in out.glob("*.png")) == ["deep.png", "gray.png",
                                                         "palette.png", "rgba.png"]
    result = infer("--saved_model", str(export.saved_model), "--images",
                   str(tmp_path / "nothing/*.jpg"), "--output_dir", str(tmp_path / "none"))
    assert result.returncode == 1 and "no image files match" in result.stderr
    assert not (tmp_path / "none").exists()
