"""Checked values from annotation files: every number, id and name a reader takes is checked
here, where it enters, so nothing downstream sees a NaN, a boolean taken as 1, a list where
an id belongs, or a coordinate no image could have.

Python's json module accepts NaN and Infinity, booleans are ints to Python, and annotation
tools write numbers as strings; a wrong value is a `FieldError` naming the field, which the
readers turn into a per-record problem (skippable with --skip_errors).
"""
from __future__ import annotations

import math
from typing import Any

from core.errors import UserError

# No image is wider or taller than this; a coordinate beyond it is absurd, whatever the
# image (the pixel cap of the converter, --max_image_pixels, bounds sizes much lower).
MAX_COORDINATE = 1e6


class FieldError(UserError, ValueError):
    """A field of an annotation has a value of the wrong type or out of range."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field} {message}")
        self.field = field


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def finite_number(value: Any, field: str, allow_string: bool = False) -> float:
    """A finite int or float (not a bool); numeric strings only with allow_string."""
    if allow_string and isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise FieldError(field, f"is {_shown(value)}, not a number") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise FieldError(field, f"is {_shown(value)}, not a number")
    if not math.isfinite(value):
        raise FieldError(field, f"is {value}, not a finite number")
    return float(value)


def coordinate(value: Any, field: str, allow_string: bool = False) -> float:
    """A pixel coordinate or length: finite and within +-MAX_COORDINATE."""
    number = finite_number(value, field, allow_string)
    if abs(number) > MAX_COORDINATE:
        raise FieldError(field, f"is {number:g}, far beyond any image (at most "
                         f"{MAX_COORDINATE:g} pixels)")
    return number


def coordinates(values: Any, field: str) -> tuple[float, ...]:
    """A list of coordinates (a flat polygon part, a box)."""
    if not isinstance(values, (list, tuple)):
        raise FieldError(field, f"is {_shown(values)}, not a list of numbers")
    return tuple(coordinate(v, f"{field}[{i}]") for i, v in enumerate(values))


def integer(value: Any, field: str, minimum: int | None = None) -> int:
    """An int (or a float with an integral value, as some JSON writers emit), not a bool."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise FieldError(field, f"is {_shown(value)}, not an integer")
    if minimum is not None and value < minimum:
        raise FieldError(field, f"is {value}, below {minimum}")
    return value


def identifier(value: Any, field: str) -> int | str:
    """An id: an int (not a bool) or a non-empty string; lists, dicts and null are not ids."""
    if isinstance(value, str) and value:
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise FieldError(field, f"is {_shown(value)}, not an id (an integer or a string)")


def file_name(value: Any, field: str) -> str:
    """A non-empty string usable as a path: no NUL byte."""
    if not isinstance(value, str) or not value.strip():
        raise FieldError(field, f"is {_shown(value)}, not a file name")
    if "\x00" in value:
        raise FieldError(field, f"{_shown(value)} holds a NUL byte, which no file name can")
    return value


def flag(value: Any, field: str) -> bool:
    """0/1 or true/false (iscrowd, difficult)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    raise FieldError(field, f"is {_shown(value)}, not 0 or 1")
