"""Bad input reaches the user as the node's error, naming the node, the input and the fix;
odd images are accepted; the pack works without insightface (V1)."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch

from support.graphs import call

pytestmark = pytest.mark.host


@pytest.fixture(scope="module")
def v1_encoder(pm_env):
    return call("StackedIDLoader", photomaker_file="tiny-v1.bin")[0]


def _write(pm_env, name, data: bytes):
    path = pm_env["pm_dir"] / name
    path.write_bytes(data)
    return name


@pytest.mark.parametrize("name,data,expect", [
    ("empty.bin", b"", "empty (0 bytes)"),
    ("garbage.safetensors", os.urandom(4096), "not a valid safetensors"),
    ("garbage.bin", os.urandom(4096), "could not be read"),
])
def test_broken_files_name_the_node_input_and_fix(pm_env, name, data, expect):
    fname = _write(pm_env, name, data)
    with pytest.raises(ValueError) as e:
        call("StackedIDLoader", photomaker_file=fname)
    msg = str(e.value)
    assert msg.startswith("PhotoMaker Loader - input 'photomaker_file'") and expect in msg and fname in msg


def test_foreign_files_say_what_they_are(pm_env):
    from synthetic import pm_weights

    pm_weights.save_tensors(pm_env["pm_dir"] / "some-lora.safetensors", pm_weights.make_generic_sdxl_lora())
    pm_weights.save_tensors(pm_env["pm_dir"] / "clipvision.safetensors",
                            pm_weights.make_clip_vision_state_dict())
    with pytest.raises(ValueError, match="LoRA"):
        call("StackedIDLoader", photomaker_file="some-lora.safetensors")
    with pytest.raises(ValueError, match="CLIP vision"):
        call("StackedIDLoader", photomaker_file="clipvision.safetensors")


def test_malicious_pickle_refused_and_payload_not_run(pm_env, tmp_path):
    from synthetic import pm_weights

    marker = tmp_path / "pwned"
    pm_weights.write_malicious_pickle(pm_env["pm_dir"] / "evil.bin", marker)
    with pytest.raises(ValueError, match="refused|could not be read"):
        call("StackedIDLoader", photomaker_file="evil.bin")
    assert not marker.exists()


def test_insightface_folder_errors_name_the_exact_path(pm_env, tmp_path):
    import folder_paths

    root = tmp_path / "if_root"
    (root / "models" / "antelopev2").mkdir(parents=True)  # empty, as a failed download leaves it
    nested = root / "models" / "nested_pack" / "nested_pack"
    nested.mkdir(parents=True)
    from synthetic import fake_insightface

    fake_insightface.write_pack(nested)
    folder_paths.add_model_folder_path("insightface", str(root), is_default=True)
    try:
        with pytest.raises(ValueError) as e:
            call("StackedIDFaceAnalysisLoader", model_pack="antelopev2", provider="CPU", det_size=640)
        assert "input 'model_pack'" in str(e.value) and str(root / "models" / "antelopev2") in str(e.value)
        with pytest.raises(ValueError) as e:
            call("StackedIDFaceAnalysisLoader", model_pack="nested_pack", provider="CPU", det_size=640)
        assert "nested" in str(e.value).lower() or "move" in str(e.value).lower()
        with pytest.raises(ValueError) as e:
            call("StackedIDFaceAnalysisLoader", model_pack="no_such_pack", provider="CPU", det_size=640)
        assert "no_such_pack" in str(e.value)
    finally:
        folder_paths.folder_names_and_paths["insightface"][0].remove(str(root))


def _face_image(h, w, channels, box=None):
    from synthetic import fake_insightface

    img = fake_insightface.synthetic_face(h=h, w=w, box=box or (w // 4, h // 4, 3 * w // 4, 3 * h // 4))
    if channels == 4:
        img = torch.cat([img, torch.full((h, w, 1), 0.5)], dim=-1)
    if channels == 1:
        img = img.mean(-1, keepdim=True)
    return img.unsqueeze(0)


@pytest.mark.parametrize("h,w,c", [(480, 640, 4), (480, 640, 1), (1, 1, 3), (16, 2000, 3), (3000, 3000, 3)])
def test_odd_images_encode(v1_encoder, h, w, c):
    ident, preview = call("StackedIDEncode", encoder=v1_encoder, images=_face_image(h, w, c))
    assert ident.tokens.shape == (1, 1, 2048) and torch.isfinite(ident.tokens).all()
    assert preview.shape == (1, h, w, 3)


def test_rgba_face_is_detected_and_nan_pixels_are_harmless(pm_env, v1_encoder, faces):
    img = _face_image(480, 640, 4)
    ident, _ = call("StackedIDEncode", encoder=v1_encoder, images=img, face_analysis=faces)
    assert ident.arcface is not None and ident.arcface.shape == (1, 512)
    nan = _face_image(240, 320, 3)
    nan[0, :10, :10] = float("nan")
    ident, _ = call("StackedIDEncode", encoder=v1_encoder, images=nan)
    assert torch.isfinite(ident.tokens).all()


def test_gray_image_without_face_names_its_index(pm_env, v1_encoder, faces):
    imgs = torch.cat([_face_image(240, 320, 3), torch.full((1, 240, 320, 3), 0.3)])
    with pytest.raises(ValueError, match=r"no face found in image 2 of 2"):
        call("StackedIDEncode", encoder=v1_encoder, images=imgs, face_analysis=faces)


def test_interrupt_during_encode_then_next_prompt_succeeds(pm_env, v1_encoder):
    import comfy.model_management as mm

    mm.interrupt_current_processing(True)
    try:
        with pytest.raises(mm.InterruptProcessingException):
            call("StackedIDEncode", encoder=v1_encoder, images=_face_image(64, 64, 3).repeat(8, 1, 1, 1))
    finally:
        mm.interrupt_current_processing(False)
    ident, _ = call("StackedIDEncode", encoder=v1_encoder, images=_face_image(64, 64, 3))
    assert ident.count == 1


def test_pack_loads_and_v1_works_without_insightface(comfy_host, tmp_path):
    """A fresh process where `import insightface` fails: the pack loads, V1 runs, and the InsightFace
    loader explains how to install it."""
    script = textwrap.dedent(f"""
        import sys
        sys.modules["insightface"] = None   # import insightface -> ImportError
        sys.path.insert(0, {str(comfy_host.REPO_ROOT / 'tests')!r})
        sys.path.insert(0, {str(comfy_host.REPO_ROOT / 'scripts')!r})
        import torch
        from support import host
        host.boot(); host.load_pack(); host.load_tiny_pack()
        assert "StackedIDFaceAnalysisLoader" in host.pack_node_ids()
        import nodes
        from synthetic import pm_weights, fake_insightface
        import folder_paths
        d = {str(tmp_path)!r}
        pm_weights.write_nested_bin(d + "/v1.bin", pm_weights.make_encoder_state_dict("v1", "tiny"),
                                    pm_weights.make_lora_state_dict("tiny"))
        folder_paths.add_model_folder_path("photomaker", d, is_default=True)
        with torch.inference_mode():
            enc, model = nodes.NODE_CLASS_MAPPINGS["StackedIDLoader"].execute(
                photomaker_file="v1.bin", model=None).result
            ident, _ = nodes.NODE_CLASS_MAPPINGS["StackedIDEncode"].execute(
                encoder=enc, images=fake_insightface.synthetic_face().unsqueeze(0)).result
            assert ident.tokens.shape == (1, 1, 2048)
            try:
                nodes.NODE_CLASS_MAPPINGS["StackedIDFaceAnalysisLoader"].execute(
                    model_pack="buffalo_l", provider="CPU", det_size=640)
            except Exception as e:
                print("FACE-ERROR:", e)
        print("V1-OK")
    """)
    env = dict(os.environ, PM_COMFY_VERSION=comfy_host.host_version())
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, env=env)
    assert "V1-OK" in out.stdout, out.stdout[-2000:] + out.stderr[-3000:]
    assert "pip install" in out.stdout and "insightface" in out.stdout
