"""Face keypoints (InsightFace's five: left eye, right eye, nose, left and right mouth corner) drawn
as a ControlNet / T2I-Adapter control image on black, in plain numpy.

Styles:
* "instantid": as InstantID draws its keypoint condition: a filled ellipse ("limb") from each eye
  and mouth corner to the nose, in that point's colour at 60 % brightness, 4 px half-width, then a
  filled 10 px-radius disc per point in full colour. Colours, in keypoint order: red, green, blue,
  yellow, magenta (RGB).
* "openpose_face": OpenPose's face-landmark look: a small white dot per point, no limbs (3 px
  radius at 512 px, scaled with the image's longer side).

Coordinates are insightface's: pixel (x, y) has its centre at integer (x, y). Shapes are
rasterised at pixel centres with sub-pixel centres (no rounding of the keypoints), so a drawn dot
is centred on the detected point at any image size.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

STYLES = ("instantid", "openpose_face")
INSTANTID_COLORS = ((255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (255, 0, 255))
INSTANTID_LIMBS = ((0, 2), (1, 2), (3, 2), (4, 2))  # each point to the nose, in the first point's colour
INSTANTID_LIMB_HALF_WIDTH = 4.0
INSTANTID_POINT_RADIUS = 10.0
INSTANTID_LIMB_BRIGHTNESS = 0.6
OPENPOSE_FACE_COLOR = (255, 255, 255)


def _window(canvas: np.ndarray, cx: float, cy: float, reach: float):
    """(ys, xs, view): integer pixel grids and the canvas slice within `reach` of (cx, cy)."""
    h, w = canvas.shape[:2]
    x0 = min(w, max(0, int(np.floor(cx - reach))))
    y0 = min(h, max(0, int(np.floor(cy - reach))))
    x1 = max(x0, min(w, int(np.ceil(cx + reach)) + 1))  # empty when the shape is off the canvas
    y1 = max(y0, min(h, int(np.ceil(cy + reach)) + 1))
    ys, xs = np.mgrid[y0:y1, x0:x1]
    return ys, xs, canvas[y0:y1, x0:x1]


def fill_disc(canvas: np.ndarray, center, radius: float, color) -> None:
    """Paint the pixels whose centres lie within `radius` of `center` (x, y), in place."""
    cx, cy = float(center[0]), float(center[1])
    ys, xs, view = _window(canvas, cx, cy, radius)
    view[(xs - cx) ** 2 + (ys - cy) ** 2 <= radius * radius] = color


def fill_ellipse_between(canvas: np.ndarray, p, q, half_width: float, color) -> None:
    """Paint the filled ellipse whose major axis runs from p to q (both (x, y)), in place."""
    p, q = np.asarray(p, np.float64), np.asarray(q, np.float64)
    center, axis = (p + q) / 2.0, q - p
    half_length = float(np.hypot(*axis)) / 2.0
    if half_length == 0.0:
        fill_disc(canvas, center, half_width, color)
        return
    ux, uy = axis / (2.0 * half_length)
    ys, xs, view = _window(canvas, center[0], center[1], max(half_length, half_width))
    dx, dy = xs - center[0], ys - center[1]
    along, across = dx * ux + dy * uy, -dx * uy + dy * ux
    view[(along / half_length) ** 2 + (across / half_width) ** 2 <= 1.0] = color


def openpose_radius(height: int, width: int) -> float:
    return max(1.0, 3.0 * max(height, width) / 512.0)


def draw_keypoints(faces: Sequence[np.ndarray], height: int, width: int,
                   style: str = "instantid") -> np.ndarray:
    """uint8 RGB [height, width, 3] control image: every face's five keypoints ([5, 2] arrays of
    (x, y) pixels) on black. No faces: an all-black image. Points outside the image are clipped."""
    if style not in STYLES:
        raise ValueError(f"style must be one of {STYLES}, got {style!r}")
    canvas = np.zeros((int(height), int(width), 3), dtype=np.uint8)
    for kps in faces:
        kps = np.asarray(kps, dtype=np.float64).reshape(-1, 2)
        if kps.shape[0] != 5 or not np.isfinite(kps).all():
            raise ValueError(f"expected five finite (x, y) keypoints per face, got {kps.shape[0]}")
        if style == "instantid":
            _draw_instantid(canvas, kps)
        else:
            for point in kps:
                fill_disc(canvas, point, openpose_radius(height, width), OPENPOSE_FACE_COLOR)
    return canvas


def _draw_instantid(canvas: np.ndarray, kps: np.ndarray) -> None:
    limbs = np.zeros_like(canvas)
    for a, b in INSTANTID_LIMBS:
        fill_ellipse_between(limbs, kps[a], kps[b], INSTANTID_LIMB_HALF_WIDTH, INSTANTID_COLORS[a])
    drawn = limbs.any(axis=-1)
    canvas[drawn] = (limbs[drawn] * INSTANTID_LIMB_BRIGHTNESS).astype(np.uint8)
    for point, color in zip(kps, INSTANTID_COLORS, strict=False):
        fill_disc(canvas, point, INSTANTID_POINT_RADIUS, color)
