"""EXIF orientation: which way a camera's JPEG is shown, and masks drawn on the shown image.

Records store an image's pixels as they are in the file, and training decodes them that way
(TensorFlow ignores the EXIF orientation tag). Annotation tools differ: some draw on the
stored pixels, others (most browsers, Labelme, CVAT) on the image turned upright by its
orientation tag. `--exif_orientation stored` (the default) takes annotations to be on the
stored pixels; `--exif_orientation display` takes them to be on the turned image and turns
each mask back onto the stored pixels, so it lies on its object either way. Every image
whose tag is not 1 is counted and reported with the convention used.
"""
from __future__ import annotations

import numpy as np

CONVENTIONS = ("stored", "display")
DESCRIPTIONS = {
    2: "mirrored left-right", 3: "rotated 180 degrees", 4: "mirrored top-bottom",
    5: "mirrored and rotated 90 degrees", 6: "rotated 90 degrees clockwise",
    7: "mirrored and rotated 90 degrees", 8: "rotated 90 degrees counter-clockwise",
}


def stored_to_display(pixels: np.ndarray, orientation: int) -> np.ndarray:
    """The array as a viewer applying the EXIF orientation shows it (Pillow's
    ImageOps.exif_transpose does the same to images)."""
    if orientation == 2:
        return pixels[:, ::-1]
    if orientation == 3:
        return pixels[::-1, ::-1]
    if orientation == 4:
        return pixels[::-1]
    if orientation == 5:
        return pixels.swapaxes(0, 1)
    if orientation == 6:
        return np.rot90(pixels, -1)
    if orientation == 7:
        return pixels[::-1, ::-1].swapaxes(0, 1)
    if orientation == 8:
        return np.rot90(pixels, 1)
    return pixels


def display_to_stored(pixels: np.ndarray, orientation: int) -> np.ndarray:
    """The inverse of stored_to_display: a mask drawn on the shown image, on the stored
    pixels."""
    if orientation == 6:
        return np.ascontiguousarray(np.rot90(pixels, 1))
    if orientation == 8:
        return np.ascontiguousarray(np.rot90(pixels, -1))
    return np.ascontiguousarray(stored_to_display(pixels, orientation))  # self-inverse


def orientation_note(orientation: int, convention: str) -> str:
    """The warning for an image whose orientation tag is not 1."""
    shown = DESCRIPTIONS.get(orientation, f"orientation {orientation}")
    if convention == "display":
        return (f"EXIF orientation {orientation}: viewers show the image {shown}; its "
                "annotations were taken as drawn on the shown image (--exif_orientation "
                "display) and turned onto the stored pixels")
    return (f"EXIF orientation {orientation}: viewers show the image {shown}; its annotations "
            "were taken as drawn on the stored pixels (--exif_orientation stored). If the "
            "annotation tool showed it turned, pass --exif_orientation display")
