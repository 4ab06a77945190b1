"""Reading and checking image files for the records: passthrough where possible.

JPEG and PNG bytes go into the records unchanged (no generation loss, no time spent
re-encoding). Other formats, and JPEGs TensorFlow cannot decode (CMYK), are re-encoded
losslessly as PNG. Every image is decoded once at 1/8 scale, which reads the whole
compressed stream and so catches truncated or corrupt files for a fraction of a full decode.

Files are opened through data_prep/safe_files.py: regular files within the size and pixel
limits only.
"""
from __future__ import annotations

import dataclasses
import io

import cv2
import numpy as np
from PIL import Image

from data_prep.safe_files import FileLimits, ImageFileError, open_image, read_regular_file

PASSTHROUGH = {"JPEG": "jpeg", "PNG": "png"}
_EXIF_ORIENTATION = 0x0112
# EXIF orientations whose display size swaps width and height (rotated by 90 or 270)
TRANSPOSED_ORIENTATIONS = (5, 6, 7, 8)


@dataclasses.dataclass
class LoadedImage:
    encoded: bytes
    image_format: str  # "jpeg" or "png"
    width: int
    height: int
    reencoded: bool = False  # True when the source format could not be passed through
    orientation: int = 1  # the EXIF orientation tag: 1 is upright, 2-8 rotate or mirror

    @property
    def display_size(self) -> tuple[int, int]:
        """(width, height) as a viewer that applies the EXIF orientation shows the image."""
        if self.orientation in TRANSPOSED_ORIENTATIONS:
            return self.height, self.width
        return self.width, self.height


def exif_orientation(img: Image.Image) -> int:
    try:
        value = img.getexif().get(_EXIF_ORIENTATION, 1)
    except Exception:  # noqa: BLE001  a malformed EXIF block: treat the image as upright
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def load_image(path: str, limits: FileLimits = FileLimits()) -> LoadedImage:
    data = read_regular_file(path, limits)
    with open_image(data, path, limits) as img:
        fmt, mode, (width, height) = img.format, img.mode, img.size
        orientation = exif_orientation(img) if fmt == "JPEG" else 1
        if fmt not in PASSTHROUGH or (fmt == "JPEG" and mode == "CMYK"):
            try:
                return _reencode_png(img, fmt)
            except (OSError, ValueError) as err:
                raise ImageFileError("corrupt_image", f"image file {path} cannot be "
                                     f"decoded: truncated or corrupt ({err})") from None
    if cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_REDUCED_GRAYSCALE_8) is None:
        raise ImageFileError("corrupt_image", f"image file {path} cannot be decoded: "
                             "truncated or corrupt")
    return LoadedImage(data, PASSTHROUGH[fmt], width, height, orientation=orientation)


def _reencode_png(img: Image.Image, fmt: str | None) -> LoadedImage:
    img.load()
    rgb = img.convert("RGB")
    out = io.BytesIO()
    rgb.save(out, format="PNG")
    return LoadedImage(out.getvalue(), "png", rgb.width, rgb.height, reencoded=True)


def fill_boxes_gray(image: LoadedImage, boxes: list[tuple[float, float, float, float]]
                    ) -> LoadedImage:
    """Fills (x0, y0, x1, y1) pixel boxes with mid-gray and re-encodes the image.

    Used to hide unlabelled objects that must not be learned as background.
    """
    if not boxes:
        return image
    with Image.open(io.BytesIO(image.encoded)) as img:
        pixels = np.array(img.convert("RGB"))
    for x0, y0, x1, y1 in boxes:
        r0, c0 = max(int(np.floor(y0)), 0), max(int(np.floor(x0)), 0)
        r1, c1 = min(int(np.ceil(y1)), image.height), min(int(np.ceil(x1)), image.width)
        pixels[r0:r1, c0:c1] = 128
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="JPEG", quality=95)
    return dataclasses.replace(image, encoded=out.getvalue(), image_format="jpeg",
                               reencoded=True)

