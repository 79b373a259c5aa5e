"""photomaker_core.faces through the real insightface code, on a tiny fake model pack.

The fake detector finds saturated red/green/blue blocks (colour as seen by the network, i.e. after
insightface's own BGR->RGB swap) and the fake recognizer's embedding depends on the colour, so the
colour is the identity. See scripts/synthetic/fake_insightface.py.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from photomaker_core import faces
from photomaker_core.faces import FaceAnalysisError, FaceAnalyzer, InsightFaceMissing
from photomaker_core.similarity import cosine
from support.core_helpers import face_area, normed_embedding, to_uint8_rgb
from synthetic import fake_insightface as fi

insightface = pytest.importorskip("insightface")

CPU = ["CPUExecutionProvider"]
FACE_BOX = (200, 120, 328, 248)


@pytest.fixture(scope="module")
def pack_dir(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("insightface") / "models" / "buffalo_l"
    fi.write_pack(path)
    return str(path)


@pytest.fixture(scope="module")
def analyzer(pack_dir) -> FaceAnalyzer:
    return FaceAnalyzer(pack_dir, CPU)


@pytest.fixture(scope="module")
def reference_app(pack_dir):
    """insightface's own FaceAnalysis, used the reference's way (BGR input, faces[0])."""
    from insightface.app import FaceAnalysis

    app = FaceAnalysis(name=pack_dir, root=os.path.dirname(pack_dir),
                       allowed_modules=["detection", "recognition"], providers=CPU)
    app.prepare(ctx_id=0, det_size=(640, 640))
    return app


def rgb_u8(image: torch.Tensor) -> np.ndarray:
    return to_uint8_rgb(image)


def bgr_u8(image: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(rgb_u8(image)[:, :, ::-1])


def reference_embedding(app, color) -> np.ndarray:
    """Embedding insightface gives a `color` face fed in correct BGR order."""
    found = app.get(bgr_u8(fi.synthetic_face(color=color)))
    assert len(found) == 1
    return found[0].embedding


# ---- detection ----------------------------------------------------------------------------------

def test_detects_face_with_right_box(analyzer):
    face = analyzer.detect(rgb_u8(fi.synthetic_face(box=FACE_BOX)))
    assert face is not None
    np.testing.assert_allclose(face.bbox, FACE_BOX, atol=1.5)
    assert face.bbox.shape == (4,) and face.kps.shape == (5, 2)
    x1, y1, x2, y2 = FACE_BOX
    assert np.all((face.kps[:, 0] > x1) & (face.kps[:, 0] < x2))
    assert np.all((face.kps[:, 1] > y1) & (face.kps[:, 1] < y2))
    assert 0.9 < face.det_score <= 1.0 and isinstance(face.det_score, float)
    assert face.det_size == 640
    assert face_area(face) == pytest.approx(128 * 128, rel=0.03)


def test_embedding_is_raw_512(analyzer):
    face = analyzer.detect(rgb_u8(fi.synthetic_face()))
    assert face.embedding.shape == (512,) and face.embedding.dtype == np.float32
    assert np.linalg.norm(face.embedding) > 5.0  # raw ArcFace output, not unit length
    assert np.linalg.norm(normed_embedding(face)) == pytest.approx(1.0, abs=1e-5)


def test_matches_insightface_reference_path(analyzer, reference_app):
    """select="score" gives exactly FaceAnalysis.get(bgr)[0]: box, score and raw embedding."""
    image = fi.synthetic_face(box=(40, 40, 200, 200), color=fi.RED)  # red: the swap matters
    fi.add_face(image, (300, 200, 380, 280), fi.GREEN)
    ref = reference_app.get(bgr_u8(image))
    assert len(ref) == 2
    face = analyzer.detect(rgb_u8(image), select="score")
    np.testing.assert_allclose(face.bbox, ref[0].bbox, atol=1e-4)
    assert face.det_score == pytest.approx(float(ref[0].det_score))
    np.testing.assert_allclose(face.embedding, ref[0].embedding, rtol=1e-5, atol=1e-5)


def test_rgb_is_converted_to_bgr(analyzer, reference_app):
    """A red face given in RGB must come out as the red identity. Without the RGB->BGR swap the
    network would see a blue face: same box, but the blue embedding."""
    red_ref = reference_embedding(reference_app, fi.RED)
    blue_ref = reference_embedding(reference_app, fi.BLUE)
    assert cosine(red_ref, blue_ref) < 0.5  # the identities are distinct

    face = analyzer.detect(rgb_u8(fi.synthetic_face(color=fi.RED)))
    assert cosine(face.embedding, red_ref) > 0.999
    assert cosine(face.embedding, blue_ref) < 0.5


def test_detector_receives_bgr_pixels(analyzer, monkeypatch):
    seen = []
    real_detect = analyzer._det.detect

    def spy(img, *args, **kwargs):
        seen.append(img.copy())
        return real_detect(img, *args, **kwargs)

    monkeypatch.setattr(analyzer._det, "detect", spy)
    analyzer.detect(rgb_u8(fi.synthetic_face(box=FACE_BOX, color=fi.RED)))
    assert seen[0][130, 210].tolist() == [0, 0, 255]  # red in OpenCV's B, G, R order


def test_only_the_selected_face_is_embedded(analyzer, monkeypatch):
    calls = []
    real_get_feat = analyzer._rec.get_feat

    def spy(imgs):
        calls.append(1 if not isinstance(imgs, list) else len(imgs))
        return real_get_feat(imgs)

    monkeypatch.setattr(analyzer._rec, "get_feat", spy)
    image = fi.synthetic_face(color=fi.RED)
    fi.add_face(image, (420, 300, 500, 380), fi.GREEN)
    fi.add_face(image, (20, 20, 100, 100), fi.BLUE)
    assert analyzer.detect(rgb_u8(image)) is not None
    assert calls == [1]


def test_score_and_largest_selection_differ(analyzer, reference_app):
    """The fake score grows with w + h, the area with w * h: a long thin red face (300x20) outscores
    a larger square blue one (150x150), so the two selection modes must disagree."""
    image = fi.blank_image()
    fi.add_face(image, (20, 20, 320, 40), fi.RED)
    fi.add_face(image, (400, 200, 550, 350), fi.BLUE)
    dets, _ = analyzer._det.detect(bgr_u8(image), input_size=(640, 640))
    assert len(dets) == 2  # precondition of the construction

    by_score = analyzer.detect(rgb_u8(image), select="score")
    largest = analyzer.detect(rgb_u8(image), select="largest")
    np.testing.assert_allclose(by_score.bbox, (20, 20, 320, 40), atol=1.5)
    np.testing.assert_allclose(largest.bbox, (400, 200, 550, 350), atol=1.5)
    assert by_score.det_score > largest.det_score and face_area(largest) > face_area(by_score)
    # each selected face is embedded from its own crop
    blue_ref = reference_embedding(reference_app, fi.BLUE)
    assert cosine(largest.embedding, blue_ref) > 0.99
    assert cosine(by_score.embedding, blue_ref) < 0.9


def test_no_face_returns_none_after_all_sizes(analyzer, monkeypatch):
    sizes = []
    real_detect = analyzer._det.detect

    def spy(img, input_size=None, **kwargs):
        sizes.append(input_size)
        return real_detect(img, input_size=input_size, **kwargs)

    monkeypatch.setattr(analyzer._det, "detect", spy)
    assert analyzer.detect(rgb_u8(fi.blank_image())) is None
    assert sizes == [(s, s) for s in faces.DET_SIZE_FALLBACKS]
    assert len(sizes) == 7


def test_face_found_only_at_a_smaller_det_size(analyzer):
    """A 6 px face between two stride-8 anchor centres (x, y in [9, 15)) is missed at 640; at 576
    the resize moves it onto the anchor at 8, so the fallback finds it."""
    image = fi.add_face(fi.blank_image(640, 640), (9, 9, 15, 15), fi.RED)
    dets, _ = analyzer._det.detect(bgr_u8(image), input_size=(640, 640))
    assert len(dets) == 0  # precondition: the first size really misses it

    face = analyzer.detect(rgb_u8(image))
    assert face is not None and face.det_size == 576
    np.testing.assert_allclose(face.bbox, (9, 9, 15, 15), atol=1.5)  # original image coords


def test_det_size_controls_the_fallback_list(pack_dir):
    assert FaceAnalyzer(pack_dir, CPU, det_size=512).det_sizes == [512, 448, 384, 320, 256]
    assert FaceAnalyzer(pack_dir, CPU, det_size=1024).det_sizes[:2] == [1024, 640]
    with pytest.raises(FaceAnalysisError, match="multiple of 32"):
        FaceAnalyzer(pack_dir, CPU, det_size=500)


def test_detect_rejects_bad_arguments(analyzer):
    with pytest.raises(ValueError, match="select"):
        analyzer.detect(rgb_u8(fi.synthetic_face()), select="first")
    with pytest.raises(ValueError, match="uint8"):
        analyzer.detect(fi.synthetic_face().numpy())


def test_active_providers(analyzer):
    assert analyzer.active_providers == CPU


# ---- image helpers ------------------------------------------------------------------------------

def test_to_uint8_rgb_rgb_roundtrip_is_exact():
    u8 = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    out = to_uint8_rgb(torch.from_numpy(u8.astype(np.float32) / 255.0))
    assert out.dtype == np.uint8 and out.flags.c_contiguous
    np.testing.assert_array_equal(out, u8)


def test_to_uint8_rgb_rgba_drops_alpha():
    rgba = torch.tensor([[[1.0, 0.5, 0.0, 0.0]]])  # [1,1,4], transparent
    assert to_uint8_rgb(rgba).tolist() == [[[255, 128, 0]]]


@pytest.mark.parametrize("shape", [(4, 6, 1), (4, 6)])
def test_to_uint8_rgb_grayscale_to_rgb(shape):
    gray = torch.linspace(0, 1, 24).reshape(shape)
    out = to_uint8_rgb(gray)
    assert out.shape == (4, 6, 3)
    assert np.array_equal(out[..., 0], out[..., 1]) and np.array_equal(out[..., 1], out[..., 2])
    assert out[0, 0, 0] == 0 and out[-1, -1, 0] == 255


def test_to_uint8_rgb_one_pixel_nan_and_clamp():
    assert to_uint8_rgb(torch.tensor([[[0.2, 0.4, 0.6]]])).tolist() == [[[51, 102, 153]]]
    weird = np.array([[[np.nan, 2.0, -1.0], [np.inf, -np.inf, 0.5]]], dtype=np.float32)
    assert to_uint8_rgb(weird).tolist() == [[[0, 255, 0], [255, 0, 128]]]


def test_to_uint8_rgb_accepts_batch_of_one_and_half_precision():
    image = fi.synthetic_face(h=32, w=48, box=(8, 8, 24, 24))
    expected = to_uint8_rgb(image)
    np.testing.assert_array_equal(to_uint8_rgb(image[None]), expected)
    assert to_uint8_rgb(image.to(torch.bfloat16)).shape == (32, 48, 3)


@pytest.mark.parametrize("shape", [(2, 4, 4, 3), (4, 4, 2), (0, 4, 3), (4,)])
def test_to_uint8_rgb_rejects_bad_shapes(shape):
    with pytest.raises(ValueError, match="shape"):
        to_uint8_rgb(torch.zeros(shape))


def test_draw_box_returns_new_tensor_and_keeps_input():
    image = fi.synthetic_face(h=64, w=64, box=(16, 16, 48, 48), color=fi.RED)
    before = image.clone()
    out = faces.draw_box(image, (10, 12, 50, 40), color=(0.0, 1.0, 0.0), width=2)
    assert torch.equal(image, before)
    assert out.data_ptr() != image.data_ptr() and out.shape == image.shape
    assert out[12, 30].tolist() == [0.0, 1.0, 0.0]  # top edge
    assert out[39, 30].tolist() == [0.0, 1.0, 0.0]  # bottom edge
    assert out[25, 10].tolist() == [0.0, 1.0, 0.0] and out[25, 49].tolist() == [0.0, 1.0, 0.0]
    assert torch.equal(out[20:36, 20:44], image[20:36, 20:44])  # inside untouched
    assert torch.equal(out[45:, :], image[45:, :])  # outside untouched


def test_draw_box_clips_batches_and_inference_tensors():
    with torch.inference_mode():  # how ComfyUI runs nodes
        batch = torch.zeros(2, 20, 30, 4)
        out = faces.draw_box(batch, np.array([-5.0, -5.0, 100.0, 100.0]), color=(1, 0, 0))
    assert torch.count_nonzero(batch) == 0
    assert out[1, 0, 0].tolist() == [1.0, 0.0, 0.0, 1.0]  # clipped to the image, alpha opaque
    assert out[1, 19, 29].tolist() == [1.0, 0.0, 0.0, 1.0]
    assert out[0, 10, 15].tolist() == [0.0] * 4
    empty = faces.draw_box(torch.zeros(8, 8, 3), (50, 50, 60, 60))  # fully outside: unchanged
    assert torch.count_nonzero(empty) == 0


def test_cosine_similarity():
    a = np.array([1.0, 2.0, 3.0])
    assert cosine(a, a * 4) == pytest.approx(1.0)
    assert cosine(a, -a) == pytest.approx(-1.0)
    assert cosine(torch.tensor([1.0, 0.0]), [0.0, 1.0]) == pytest.approx(0.0)
    assert cosine(np.zeros(3), a) == 0.0
    with pytest.raises(ValueError):
        cosine(a, a[:2])


# ---- model pack checks --------------------------------------------------------------------------

def test_check_model_pack_ok(pack_dir):
    files = faces.check_model_pack(pack_dir)
    assert [os.path.basename(f) for f in files] == sorted([fi.DET_NAME, fi.REC_NAME])


def test_check_model_pack_missing_folder(tmp_path):
    missing = str(tmp_path / "models" / "buffalo_l")
    with pytest.raises(FaceAnalysisError) as err:
        faces.check_model_pack(missing)
    assert missing in str(err.value) and "not found" in str(err.value)
    assert faces.BUFFALO_L_URL in str(err.value)
    # FaceAnalyzer reports the same instead of letting insightface try to download
    with pytest.raises(FaceAnalysisError, match="not found"):
        FaceAnalyzer(missing, CPU)
    assert not os.path.exists(missing)


def test_check_model_pack_empty_folder(tmp_path):
    empty = tmp_path / "buffalo_l"
    empty.mkdir()
    with pytest.raises(FaceAnalysisError) as err:
        faces.check_model_pack(str(empty))
    assert str(empty) in str(err.value) and "empty" in str(err.value)
    assert "failed automatic download" in str(err.value)


def test_check_model_pack_nested_folder(tmp_path):
    outer = tmp_path / "buffalo_l"
    inner = outer / "buffalo_l"
    fi.write_pack(inner)
    with pytest.raises(FaceAnalysisError) as err:
        faces.check_model_pack(str(outer))
    msg = str(err.value)
    assert "nested" in msg and f"from {inner} up into {outer}" in msg


def test_check_model_pack_no_onnx_files(tmp_path):
    folder = tmp_path / "buffalo_l"
    folder.mkdir()
    (folder / "buffalo_l.zip").write_bytes(b"PK")
    with pytest.raises(FaceAnalysisError, match="No .onnx model files") as err:
        faces.check_model_pack(str(folder))
    assert str(folder) in str(err.value)


@pytest.mark.parametrize("remove, missing_role", [(fi.REC_NAME, "recognizer"),
                                                  (fi.DET_NAME, "detector")])
def test_check_model_pack_missing_model(tmp_path, remove, missing_role):
    folder = tmp_path / "buffalo_l"
    fi.write_pack(folder)
    os.remove(folder / remove)
    with pytest.raises(FaceAnalysisError) as err:
        faces.check_model_pack(str(folder))
    msg = str(err.value)
    assert f"No face {missing_role}" in msg and str(folder) in msg


def test_check_model_pack_damaged_file(tmp_path):
    folder = tmp_path / "buffalo_l"
    fi.write_pack(folder)
    (folder / fi.REC_NAME).write_bytes(b"\x08\x07truncated")
    with pytest.raises(FaceAnalysisError, match="damaged or incomplete") as err:
        faces.check_model_pack(str(folder))
    assert str(folder / fi.REC_NAME) in str(err.value)


# ---- providers ----------------------------------------------------------------------------------

def test_resolve_providers_on_this_install():
    assert "CPUExecutionProvider" in faces.available_providers()
    assert faces.resolve_providers("CPU") == CPU
    assert faces.resolve_providers("auto")[-1] == "CPUExecutionProvider"


@pytest.mark.parametrize("available, expected", [
    (["CPUExecutionProvider"], ["CPUExecutionProvider"]),
    (["AzureExecutionProvider", "CPUExecutionProvider"], ["CPUExecutionProvider"]),
    (["CPUExecutionProvider", "CUDAExecutionProvider"],
     ["CUDAExecutionProvider", "CPUExecutionProvider"]),
    (["OpenVINOExecutionProvider", "DmlExecutionProvider", "CPUExecutionProvider"],
     ["DmlExecutionProvider", "CPUExecutionProvider"]),
    (["CoreMLExecutionProvider", "ROCMExecutionProvider", "CPUExecutionProvider"],
     ["ROCMExecutionProvider", "CPUExecutionProvider"]),
])
def test_resolve_providers_auto_priority(monkeypatch, available, expected):
    monkeypatch.setattr(faces, "available_providers", lambda: list(available))
    assert faces.resolve_providers("auto") == expected


def test_resolve_providers_explicit_choice(monkeypatch):
    monkeypatch.setattr(faces, "available_providers",
                        lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert faces.resolve_providers("CUDA") == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert faces.resolve_providers("cuda") == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert faces.resolve_providers("CUDAExecutionProvider")[0] == "CUDAExecutionProvider"
    assert faces.resolve_providers("CPU") == ["CPUExecutionProvider"]


def test_resolve_providers_unavailable_choice_lists_what_is(monkeypatch):
    monkeypatch.setattr(faces, "available_providers",
                        lambda: ["AzureExecutionProvider", "CPUExecutionProvider"])
    with pytest.raises(FaceAnalysisError) as err:
        faces.resolve_providers("CUDA")
    msg = str(err.value)
    assert "not available" in msg and "CPUExecutionProvider" in msg and "onnxruntime-gpu" in msg
    with pytest.raises(FaceAnalysisError, match="auto, CPU, CUDA"):
        faces.resolve_providers("TPU")


# ---- optional dependency ------------------------------------------------------------------------

def test_import_without_insightface_and_error_on_use(pack_dir):
    """The module imports without insightface/onnxruntime; only using them raises
    InsightFaceMissing, with the install command."""
    repo_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {repo_root!r})
        import photomaker_core.faces as faces
        loaded = [m for m in ("insightface", "onnxruntime") if m in sys.modules]
        assert not loaded, loaded
        sys.modules["insightface"] = None  # blocks `import insightface`
        sys.modules["onnxruntime"] = None
        try:
            faces.FaceAnalyzer({pack_dir!r}, ["CPUExecutionProvider"])
        except faces.InsightFaceMissing as exc:
            msg = str(exc)
            assert "-m pip install insightface" in msg and "V1" in msg, msg
        else:
            raise AssertionError("no InsightFaceMissing")
        try:
            faces.available_providers()
        except faces.InsightFaceMissing as exc:
            assert "onnxruntime" in str(exc)
        else:
            raise AssertionError("no InsightFaceMissing from available_providers")
        print("OK")
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "OK"
    assert issubclass(InsightFaceMissing, FaceAnalysisError)
