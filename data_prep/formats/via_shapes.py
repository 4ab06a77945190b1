"""VIA region shapes -> one polygon in COCO pixel coordinates, ready for pycocotools.

VIA stores coordinates as its canvas sees them: continuous, with (0, 0) at the top-left
corner of the top-left pixel, exactly COCO's convention, so points are used as they are.
Curved shapes become polygons with enough vertices that no point of the true outline is more
than `CURVE_TOLERANCE` pixels from the polygon, well inside the 1 px promised for masks.
"""
from __future__ import annotations

import math
from typing import Any

from core.errors import UserError
from data_prep.field_checks import MAX_COORDINATE, FieldError, coordinate

CURVE_TOLERANCE = 0.05  # pixels between a circle/ellipse and its polygon, at most
MIN_CURVE_VERTICES = 16
MAX_CURVE_VERTICES = 8192

Polygon = tuple[float, ...]  # flat x0, y0, x1, y1, ...


class UnusableShape(UserError, ValueError):
    """A region that yields no polygon: an error (malformed) or a warning (point, too small).

    `reason` is the summary code; warnings skip the region without failing the run.
    """

    def __init__(self, reason: str, message: str, is_error: bool):
        super().__init__(message)
        self.reason = reason
        self.is_error = is_error


def _bad(message: str) -> UnusableShape:
    return UnusableShape("bad_shape", message, is_error=True)


def _as_float(value: Any) -> float | None:
    """A finite number within +-MAX_COORDINATE, or None; numbers quoted as strings (hand
    edits, other tools) count."""
    try:
        return coordinate(value, "value", allow_string=True)
    except FieldError:
        return None


def _number(shape: dict, key: str) -> float:
    value = _as_float(shape.get(key))
    if value is None:
        found = "missing" if key not in shape else repr(shape[key])[:60]
        raise _bad(f"{shape.get('name')} shape needs a number '{key}' (finite, within "
                   f"+-{MAX_COORDINATE:g} pixels), found {found}")
    return value


def _point_list(shape: dict) -> list[tuple[float, float]]:
    xs, ys = shape.get("all_points_x"), shape.get("all_points_y")
    if not isinstance(xs, list) or not isinstance(ys, list):
        raise _bad(f"{shape.get('name')} shape needs lists 'all_points_x' and 'all_points_y'")
    if len(xs) != len(ys):
        raise _bad(f"{shape.get('name')} shape has {len(xs)} x but {len(ys)} y coordinates")
    points = []
    for index, (x, y) in enumerate(zip(xs, ys)):
        fx, fy = _as_float(x), _as_float(y)
        if fx is None or fy is None:
            raise _bad(f"{shape.get('name')} point {index} ({x!r}, {y!r}) is not a pair of "
                       "numbers")
        points.append((fx, fy))
    return points


def spans_area(points: list[tuple[float, float]]) -> bool:
    """False when the points all lie on one line, so nothing can be rasterized (also used by
    the Labelme reader)."""
    x0, y0 = points[0]
    # hypot, not a sum of squares: squares of tiny offsets (1e-200) underflow to 0.
    far = max(points, key=lambda p: math.hypot(p[0] - x0, p[1] - y0))
    dx, dy = far[0] - x0, far[1] - y0
    length = math.hypot(dx, dy)
    return length > 0 and any(abs(dx * (y - y0) - dy * (x - x0)) / length >= 1e-6
                              for x, y in points)


def _outline_polygon(shape: dict) -> Polygon:
    """Polygon or polyline: the points as drawn; a polyline is closed into a polygon."""
    points = _point_list(shape)
    distinct = len(set(points))
    if distinct < 3:
        raise UnusableShape("too_few_points", f"{shape['name']} has {distinct} distinct "
                            "point(s); at least 3 are needed for an area", is_error=False)
    if not spans_area(points):
        raise UnusableShape("zero_area_shape", f"{shape['name']} points all lie on one line "
                            "(zero area)", is_error=False)
    return tuple(v for point in points for v in point)


def _rect_polygon(shape: dict) -> Polygon:
    x, y = _number(shape, "x"), _number(shape, "y")
    width, height = _number(shape, "width"), _number(shape, "height")
    if width == 0 or height == 0:
        raise UnusableShape("zero_area_shape", f"rect is {width:g}x{height:g} (zero area)",
                            is_error=False)
    if width < 0:  # drawn right to left by a tool that does not normalize
        x, width = x + width, -width
    if height < 0:
        y, height = y + height, -height
    return (x, y, x + width, y, x + width, y + height, x, y + height)


def curve_vertex_count(radius: float, tolerance: float = CURVE_TOLERANCE) -> int:
    """Vertices of a regular polygon inscribed in a circle of `radius` whose sagitta (the
    largest gap between an edge and the arc) is at most `tolerance`.

    An ellipse is the affine image of a circle, so sampling it at these many equal parameter
    steps with `radius` = its larger semi-axis keeps every gap below `tolerance` too.
    """
    if radius <= tolerance:
        return MIN_CURVE_VERTICES
    count = math.ceil(math.pi / math.acos(1.0 - tolerance / radius))
    return int(min(max(count, MIN_CURVE_VERTICES), MAX_CURVE_VERTICES))


def ellipse_polygon(cx: float, cy: float, rx: float, ry: float, theta: float = 0.0
                    ) -> Polygon:
    """Ellipse rotated by `theta` radians as the HTML canvas (and so VIA) draws it: with y
    pointing down, a positive angle turns clockwise on screen."""
    count = curve_vertex_count(max(rx, ry))
    cos_theta, sin_theta = math.cos(theta), math.sin(theta)
    flat: list[float] = []
    for step in range(count):
        t = 2.0 * math.pi * step / count
        ex, ey = rx * math.cos(t), ry * math.sin(t)
        flat.append(cx + ex * cos_theta - ey * sin_theta)
        flat.append(cy + ex * sin_theta + ey * cos_theta)
    return tuple(flat)


def _circle_polygon(shape: dict) -> Polygon:
    cx, cy, r = _number(shape, "cx"), _number(shape, "cy"), _number(shape, "r")
    if r <= 0:
        raise UnusableShape("zero_area_shape", f"circle has radius {r:g} (zero area)",
                            is_error=False)
    return ellipse_polygon(cx, cy, r, r)


def _ellipse_polygon(shape: dict) -> Polygon:
    cx, cy = _number(shape, "cx"), _number(shape, "cy")
    rx, ry = _number(shape, "rx"), _number(shape, "ry")
    theta = _number(shape, "theta") if shape.get("theta") is not None else 0.0  # 1.x: none
    if rx <= 0 or ry <= 0:
        raise UnusableShape("zero_area_shape", f"ellipse has radii {rx:g} and {ry:g} (zero "
                            "area)", is_error=False)
    return ellipse_polygon(cx, cy, rx, ry, theta)


def _point(shape: dict) -> Polygon:
    raise UnusableShape("point_shape", "point regions have no area; skipped (instance masks "
                        "need a polygon, rect, circle or ellipse)", is_error=False)


_CONVERTERS = {
    "polygon": _outline_polygon,
    "polyline": _outline_polygon,
    "rect": _rect_polygon,
    "circle": _circle_polygon,
    "ellipse": _ellipse_polygon,
    "point": _point,
}


def shape_polygon(shape: Any) -> Polygon:
    """The polygon of one VIA `shape_attributes` object; raises UnusableShape otherwise."""
    if not isinstance(shape, dict):
        raise _bad(f"shape_attributes is {type(shape).__name__}, expected an object")
    name = shape.get("name")
    if not name:
        raise _bad("shape_attributes has no 'name' (polygon, rect, circle, ellipse, ...)")
    converter = _CONVERTERS.get(name)
    if converter is None:
        raise UnusableShape("unknown_shape", f"unknown shape {name!r}; VIA shapes are "
                            f"{', '.join(_CONVERTERS)}", is_error=True)
    return converter(shape)
