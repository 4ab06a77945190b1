"""Image files: passthrough of JPEG/PNG, lossless re-encoding of the rest, corruption caught."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from data_prep.conversion.image_files import fill_boxes_gray, load_image
from data_prep.safe_files import ImageFileError


def _save(tmp_path, name, mode="RGB", fmt=None, size=(64, 48)):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    img = Image.fromarray(pixels).convert(mode)
    path = tmp_path / name
    img.save(path, format=fmt)
    return path


@pytest.mark.parametrize("name, mode, fmt", [("a.jpg", "RGB", "JPEG"), ("g.jpg", "L", "JPEG"),
                                             ("p.png", "RGBA", "PNG")])
def test_jpeg_and_png_bytes_pass_through(tmp_path, name, mode, fmt):
    path = _save(tmp_path, name, mode, fmt)
    loaded = load_image(str(path))
    assert loaded.encoded == path.read_bytes() and not loaded.reencoded
    assert (loaded.width, loaded.height) == (64, 48)


@pytest.mark.parametrize("name, mode, fmt", [("b.bmp", "RGB", "BMP"), ("c.jpg", "CMYK", "JPEG"),
                                             ("t.tif", "RGB", "TIFF")])
def test_other_formats_are_reencoded_as_png(tmp_path, name, mode, fmt):
    path = _save(tmp_path, name, mode, fmt)
    loaded = load_image(str(path))
    assert loaded.reencoded and loaded.image_format == "png"
    with Image.open(io.BytesIO(loaded.encoded)) as img:
        assert img.format == "PNG" and img.mode == "RGB" and img.size == (64, 48)


def test_truncation_inside_the_compressed_stream_is_caught(tmp_path):
    path = _save(tmp_path, "a.jpg", fmt="JPEG", size=(256, 256))
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * 0.7)])  # header intact, scan data cut
    with pytest.raises(ImageFileError, match="truncated or corrupt") as info:
        load_image(str(path))
    assert info.value.reason == "corrupt_image" and str(path) in str(info.value)


def test_gray_boxes_hide_regions(tmp_path):
    loaded = load_image(str(_save(tmp_path, "a.jpg", fmt="JPEG")))
    filled = fill_boxes_gray(loaded, [(10, 5, 30, 20)])
    with Image.open(io.BytesIO(filled.encoded)) as img:
        pixels = np.asarray(img.convert("RGB")).astype(int)
    assert np.abs(pixels[7:18, 12:28] - 128).mean() < 3  # JPEG ringing from the noise only
    assert np.abs(pixels[30:, 40:] - 128).mean() > 20
