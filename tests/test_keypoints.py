"""Face Keypoints: the drawn points sit on the keypoints (pixel tests at odd sizes), in both styles;
through the node, on the keypoints the real insightface code path detects with the fake models;
batches, no face (black image, reported)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from photomaker_core import keypoints as kp

# five points far enough apart that the 10 px InstantID discs do not touch (left eye, right eye,
# nose, left and right mouth corner), at sub-pixel positions
KPS = np.array([[30.3, 28.6], [71.8, 27.2], [51.4, 52.5], [33.7, 79.1], [69.2, 80.4]])


def centroid(image: np.ndarray, color) -> np.ndarray:
    ys, xs = np.nonzero((image == np.asarray(color, np.uint8)).all(-1))
    assert xs.size, f"no pixel of colour {color}"
    return np.array([xs.mean(), ys.mean()])


def near(image, color, point, reach):
    """The pixels of `color` within `reach` of point: their centroid."""
    ys, xs = np.mgrid[: image.shape[0], : image.shape[1]]
    window = (np.abs(xs - point[0]) <= reach) & (np.abs(ys - point[1]) <= reach)
    return centroid(np.where(window[..., None], image, 0), color)


@pytest.mark.parametrize("h, w", [(101, 97), (117, 203), (99, 100)])
def test_instantid_points_sit_on_the_keypoints(h, w):
    img = kp.draw_keypoints([KPS], h, w, "instantid")
    assert img.shape == (h, w, 3) and img.dtype == np.uint8
    for point, color in zip(KPS, kp.INSTANTID_COLORS, strict=True):
        ix, iy = np.rint(point).astype(int)
        assert tuple(img[iy, ix]) == color
        np.testing.assert_allclose(centroid(img, color), point, atol=0.35)  # disc centred on the point
        r = np.sqrt((img == np.asarray(color, np.uint8)).all(-1).sum() / np.pi)
        assert abs(r - kp.INSTANTID_POINT_RADIUS) < 0.5
    # limbs: a dimmed line of the point's colour runs from each eye / mouth corner to the nose
    for a, b in kp.INSTANTID_LIMBS:
        mid = (KPS[a] + KPS[b]) / 2
        dim = tuple(int(c * 0.6) for c in kp.INSTANTID_COLORS[a])
        assert tuple(img[round(mid[1]), round(mid[0])]) == dim
    # black away from the face
    assert not img[h - 5:, :].any() and not img[:, 95:].any()


@pytest.mark.parametrize("h, w", [(131, 89), (512, 515)])
def test_openpose_face_dots_sit_on_the_keypoints(h, w):
    pts = KPS * (min(h, w) / 100.0)
    img = kp.draw_keypoints([pts], h, w, "openpose_face")
    r = kp.openpose_radius(h, w)
    assert set(map(tuple, img.reshape(-1, 3))) == {(0, 0, 0), (255, 255, 255)}
    for point in pts:
        np.testing.assert_allclose(near(img, (255, 255, 255), point, r + 1), point, atol=0.35)
    assert (img.all(-1).sum() / len(pts)) == pytest.approx(np.pi * r * r, rel=0.2)


def test_no_face_is_black_and_bad_points_are_refused():
    assert not kp.draw_keypoints([], 13, 7).any()
    with pytest.raises(ValueError, match="five finite"):
        kp.draw_keypoints([np.full((5, 2), np.nan)], 10, 10)
    with pytest.raises(ValueError, match="style"):
        kp.draw_keypoints([], 10, 10, "canny")
    # points partly outside the picture are clipped, not an error
    edge = kp.draw_keypoints([KPS - 40], 64, 64)
    assert edge.shape == (64, 64, 3) and tuple(edge[0, 0]) != (0, 0, 0)


# ---------------------------------------------------------------- node, with the fake InsightFace

@pytest.mark.host
@pytest.mark.parametrize("h, w, box", [(331, 517, (101, 77, 293, 269)), (480, 641, (300, 100, 460, 300))])
def test_node_draws_on_the_detected_keypoints(pm_env, faces, h, w, box):
    from synthetic import fake_insightface as fake
    from support.graphs import call

    from support.core_helpers import to_uint8_rgb

    photo = fake.synthetic_face(h=h, w=w, box=box, color=fake.GREEN)
    batch = torch.stack([photo, fake.blank_image(h, w)])
    before = batch.clone()
    out, report = call("StackedIDFaceKeypoints", face_analysis=faces, images=batch, style="instantid",
                       face_select="largest")
    assert out.shape == (2, h, w, 3) and out.dtype == torch.float32 and torch.equal(batch, before)
    detected = faces.detect(to_uint8_rgb(photo), select="largest").kps
    # the fake detector puts the points at the ArcFace template inside the face box
    x1, y1, x2, y2 = box
    template = np.array([x1, y1]) + fake.REL_KPS * np.array([x2 - x1, y2 - y1])
    np.testing.assert_allclose(detected, template, atol=3.0)
    img = (out[0].numpy() * 255).round().astype(np.uint8)
    for point, color in zip(detected, kp.INSTANTID_COLORS, strict=False):
        np.testing.assert_allclose(near(img, color, point, 12), point, atol=0.35)
    assert not out[1].any(), "no face: a black image"
    lines = report.splitlines()
    assert (lines[1] == "image 2: no face (black image)"
            and f"({detected[2][0]:.1f},{detected[2][1]:.1f})" in lines[0])

    (dots, _) = call("StackedIDFaceKeypoints", face_analysis=faces, images=photo[None], style="openpose_face",
                     face_select="score")
    dots = (dots[0].numpy() * 255).round().astype(np.uint8)
    for point in detected:
        np.testing.assert_allclose(near(dots, (255, 255, 255), point, kp.openpose_radius(h, w) + 1), point,
                                   atol=0.35)


@pytest.mark.host
def test_node_refuses_a_non_image(pm_env, faces):
    from support.graphs import call

    with pytest.raises(ValueError, match="input 'images'"):
        call("StackedIDFaceKeypoints", face_analysis=faces, images=torch.zeros(0, 8, 8, 3))
