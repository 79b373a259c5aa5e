"""photomaker_core.face_pipeline: the ID-photo pipeline (detect with a selection rule, crop,
preprocess, ArcFace rows, progress/Cancel) through the real insightface code on the fake pack."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from synthetic import fake_insightface as fi

from photomaker_core import clip_preprocess
from photomaker_core import face_pipeline as fp
from photomaker_core.faces import rgb_to_uint8
from photomaker_core.preprocess import to_rgb
from support.core_helpers import to_uint8_rgb

pytest.importorskip("insightface")


@pytest.fixture(scope="module")
def analyzer(fake_analyzer):
    return fake_analyzer


def two_faces() -> torch.Tensor:
    """Red face big (higher score and larger), blue face small."""
    return fi.add_face(fi.synthetic_face(box=(300, 100, 556, 356), color=fi.RED), box=(40, 40, 104, 104),
                       color=fi.BLUE)


def batch(*images) -> torch.Tensor:
    return torch.stack(list(images))


def test_detect_batch_selection_rules(analyzer):
    images = batch(two_faces(), fi.blank_image())
    every = fp.detect_batch(analyzer, images, "all")
    assert [len(f) for f in every] == [2, 0]
    red, blue = every[0]
    assert red.det_score > blue.det_score  # highest score first
    np.testing.assert_allclose(red.bbox, [300, 100, 556, 356], atol=1)
    np.testing.assert_allclose(blue.bbox, [40, 40, 104, 104], atol=1)
    best = fp.detect_batch(analyzer, images, "best score")
    assert len(best[0]) == 1 and np.allclose(best[0][0].bbox, red.bbox) and best[1] == []
    np.testing.assert_array_equal(best[0][0].embedding, red.embedding)  # each face embedded alone
    with pytest.raises(ValueError, match="select"):
        fp.detect_batch(analyzer, images, "first")


def test_detect_all_embeds_every_face_like_detect(analyzer):
    img = to_uint8_rgb(two_faces())
    faces = analyzer.detect_all(img)
    one = analyzer.detect(img, select="largest")
    np.testing.assert_array_equal(faces[0].embedding, one.embedding)
    assert analyzer.detect_all(to_uint8_rgb(fi.blank_image())) == []


def test_progress_reports_each_image_and_cancel_stops(analyzer):
    images = batch(fi.synthetic_face(), fi.synthetic_face(color=fi.GREEN), fi.blank_image())
    seen = []
    fp.detect_batch(analyzer, images, "best score", progress=lambda d, t: seen.append((d, t)))
    assert seen == [(0, 3), (1, 3), (2, 3), (3, 3)]

    class Cancelled(Exception):
        pass

    calls = []
    real = analyzer.detect

    def counting(*a, **k):
        calls.append(1)
        return real(*a, **k)

    def cancel_after_first(done, total):
        if done == 1:
            raise Cancelled

    analyzer.detect = counting
    try:
        with pytest.raises(Cancelled):
            fp.prepare_id_photos(images, analyzer, progress=cancel_after_first)
    finally:
        del analyzer.detect
    assert len(calls) == 1  # nothing detected after Cancel


def test_prepare_id_photos_rows_previews_and_skip(analyzer):
    images = batch(fi.synthetic_face(), fi.blank_image(), fi.synthetic_face(color=fi.GREEN))
    before = images.clone()
    with pytest.raises(fp.NoFaceError, match="image 2 of 3"):
        fp.prepare_id_photos(images, analyzer)
    photos = fp.prepare_id_photos(images, analyzer, no_face="skip")
    assert photos.kept == [0, 2] and photos.skipped == [1]
    expected = [analyzer.detect(to_uint8_rgb(images[i])).embedding for i in (0, 2)]
    np.testing.assert_array_equal(photos.arcface.numpy(), np.stack(expected))
    assert torch.equal(photos.pixels, clip_preprocess(images[[0, 2]]))
    assert photos.previews.shape == (2, 480, 640, 3) and not torch.equal(photos.previews[0], images[0])
    assert torch.equal(images, before)  # the caller's tensor is never written
    with pytest.raises(fp.NoFaceError, match="any of the 1 images"):
        fp.prepare_id_photos(batch(fi.blank_image()), analyzer, no_face="skip")


def test_prepare_id_photos_without_analyzer_keeps_all(analyzer):
    images = batch(fi.blank_image(), fi.synthetic_face())
    photos = fp.prepare_id_photos(images)
    assert photos.kept == [0, 1] and photos.arcface is None
    assert torch.equal(photos.previews, to_rgb(images))
    with pytest.raises(ValueError, match="crop_to_face"):
        fp.prepare_id_photos(images, crop_to_face=True)


def test_crop_to_face_feeds_the_crop(analyzer):
    image = fi.synthetic_face(box=(200, 120, 328, 248))
    photos = fp.prepare_id_photos(image[None], analyzer, crop_to_face=True)
    # side 128 * 2.2 = 281.6 around centre (264, 184): cut at the top border
    assert fp.clip_crop_box((200, 120, 328, 248), 480, 640) == (123, 43, 404, 324)
    assert torch.equal(photos.pixels, clip_preprocess(image[None, 43:324, 123:404]))


@pytest.mark.parametrize("bbox, expected", [
    ((0, 0, 10, 10), (0, 0, 16, 16)),  # corner: cut at 0
    ((90, 40, 100, 50), (84, 34, 100, 50)),  # right/bottom border: cut at the image size
    ((5, 5, 5, 5), (5, 5, 6, 6)),  # empty box: still one pixel
])
def test_clip_crop_box_cuts_at_borders(bbox, expected):
    assert fp.clip_crop_box(bbox, 50, 100) == expected


def test_reference_rows_and_missing(analyzer):
    images = batch(fi.synthetic_face(), fi.blank_image())
    rows, missing = fp.reference_rows(analyzer, images)
    assert rows.shape == (1, 512) and missing == [1]
    assert fp.reference_rows(analyzer, batch(fi.blank_image()))[0] is None


def test_uint8_conversion_is_shared():
    img = torch.rand(5, 7, 4) * 1.4 - 0.2
    np.testing.assert_array_equal(to_uint8_rgb(img), rgb_to_uint8(to_rgb(img)[0]))


def test_keypoint_report_counts_from_one_and_lists_faceless_images():
    kps = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0], [7.0, 8.0], [9.0, 10.25]])
    result = fp.KeypointImages(images=torch.zeros(3, 8, 8, 3), keypoints=[None, kps, None])
    assert result.missing == [0, 2]
    lines = result.report().split("\n")
    assert lines[0] == "image 1: no face (black image)" and lines[2].startswith("image 3: no face")
    assert lines[1] == "image 2: (1.0,2.0) (3.0,4.0) (5.0,6.0) (7.0,8.0) (9.0,10.2)"
    assert fp.image_numbers([0, 2]) == "1, 3" and fp.image_numbers([]) == ""
