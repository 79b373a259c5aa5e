"""Fixtures shared by the integration tests (registered in tests/conftest.py's pytest_plugins): tiny
PhotoMaker files in a model folder, the fake InsightFace pack and input photos (pm_env), FaceAnalyzer
on the fake pack, and the encoders, identities and tokenizer the reliability and stress suites share.
Graph builders are in support/graphs.py."""
from __future__ import annotations

import os

import pytest
import torch

from support.graphs import call, node
from support.reliability import encode, face
from support.tiny_models import write_tiny_models


@pytest.fixture(scope="session")
def pm_env(comfy_host, tmp_path_factory):
    """Model folders registered with the host: photomaker/ (tiny V1 .bin, tiny V2 .safetensors),
    insightface/models/buffalo_l (fake), photomaker_identities/, and input images."""
    import folder_paths
    from synthetic import fake_insightface, pm_weights

    comfy_host.load_tiny_pack()
    root = tmp_path_factory.mktemp("models")
    written = write_tiny_models(root)
    pm_dir, lora = written["pm_dir"], written["lora"]
    pm_weights.write_lora_only(pm_dir / "lora-only.safetensors", lora, prefix="lora_weights.")
    folder_paths.add_model_folder_path("photomaker", str(pm_dir), is_default=True)
    folder_paths.add_model_folder_path("insightface", str(root / "insightface"), is_default=True)
    ident_dir = root / "photomaker_identities"
    ident_dir.mkdir()
    folder_paths.add_model_folder_path("photomaker_identities", str(ident_dir), is_default=True)

    inp = folder_paths.get_input_directory()
    os.makedirs(inp, exist_ok=True)
    images = {
        "face_red.png": fake_insightface.synthetic_face(color=fake_insightface.RED),
        "face_red2.png": fake_insightface.synthetic_face(box=(120, 80, 312, 272), color=fake_insightface.RED),
        "face_green.png": fake_insightface.synthetic_face(color=fake_insightface.GREEN),
        "noface.png": fake_insightface.blank_image(),
    }
    for name, img in images.items():
        fake_insightface.save_png(img, os.path.join(inp, name))
    return {"root": root, "pm_dir": pm_dir, "identities": ident_dir, "enc": written["enc"],
            "lora": lora, "images": images}


# The tiny SDXL, the V1 encoder patched onto it and the fake InsightFace pack, module-scoped: the
# node tests share them (a module that defines its own `tiny`/`v1`/`faces` uses that one).
@pytest.fixture(scope="module")
def tiny(pm_env):
    return node("TinySDXLLoader")().load(0)


@pytest.fixture(scope="module")
def v1(pm_env, tiny):
    """(encoder, patched model)."""
    return call("StackedIDLoader", photomaker_file="tiny-v1.bin", model=tiny[0], lora_strength=1.0)


@pytest.fixture(scope="module")
def faces(pm_env):
    return call("StackedIDFaceAnalysisLoader", model_pack="buffalo_l", provider="CPU", det_size=640)[0]


@pytest.fixture(scope="module")
def fake_analyzer(tmp_path_factory):
    """photomaker_core's FaceAnalyzer (the real insightface code) on the fake model pack."""
    pytest.importorskip("insightface")
    from synthetic import fake_insightface

    from photomaker_core.faces import FaceAnalyzer

    path = tmp_path_factory.mktemp("insightface") / "buffalo_l"
    fake_insightface.write_pack(path)
    return FaceAnalyzer(str(path), ["CPUExecutionProvider"])


# ---- shared by tests/test_reliability.py and tests/test_stress.py

@pytest.fixture(scope="module")
def encoders(pm_env):
    v1 = call("StackedIDLoader", photomaker_file="tiny-v1.bin")[0]
    v2 = call("StackedIDLoader", photomaker_file="tiny-v2.safetensors")[0]
    faces = call("StackedIDFaceAnalysisLoader", model_pack="buffalo_l", provider="CPU", det_size=640)[0]
    return {"v1": v1, "v2": v2, "faces": faces}


@pytest.fixture(scope="module")
def fuzz_env(encoders):
    from synthetic import fake_insightface as fi

    v1_one = encode(encoders, "v1", face().unsqueeze(0))[0]
    v1_three = encode(encoders, "v1", torch.stack([face(), face(color=fi.GREEN), face(color=fi.BLUE)]))[0]
    v2_one = encode(encoders, "v2", face().unsqueeze(0))[0]
    v2_two = encode(encoders, "v2", torch.stack([face(), face(color=fi.GREEN)]))[0]
    return {"v1": [v1_one, v1_three], "v2": [v2_one, v2_two]}


@pytest.fixture(scope="module")
def fuzz_tokenizer(comfy_host, tmp_path_factory):
    """The real SDXL tokenizer with two textual-inversion embeddings: pmface (1 vector per CLIP)
    and pmface3 (3 vectors)."""
    import comfy.sdxl_clip
    import safetensors.torch

    from photomaker_core.tokens import spec_from_vocab

    folder = tmp_path_factory.mktemp("embeddings")
    for name, n in (("pmface", 1), ("pmface3", 3)):
        safetensors.torch.save_file({"clip_l": torch.randn(n, 768), "clip_g": torch.randn(n, 1280)},
                                    str(folder / f"{name}.safetensors"))
    tok = comfy.sdxl_clip.SDXLTokenizer(embedding_directory=str(folder))
    specs = {k: spec_from_vocab(t.start_token, t.end_token, t.pad_token, t.max_length,
                                t.tokenizer.convert_ids_to_tokens)
             for k, t in (("l", tok.clip_l), ("g", tok.clip_g))}
    return tok, specs
