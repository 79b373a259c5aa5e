"""Fixtures shared by the integration tests: tiny PhotoMaker files in a model folder, the fake
InsightFace pack, input photos, and API-format graph builders."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch


@pytest.fixture(scope="session")
def pm_env(comfy_host, tmp_path_factory):
    """Model folders registered with the host: photomaker/ (tiny V1 .bin, tiny V2 .safetensors),
    insightface/models/buffalo_l (fake), photomaker_identities/, and input images."""
    import folder_paths
    from PIL import Image
    from synthetic import fake_insightface, pm_weights

    comfy_host.load_tiny_pack()
    root = tmp_path_factory.mktemp("models")
    pm_dir = root / "photomaker"
    pm_dir.mkdir()
    enc1 = pm_weights.make_encoder_state_dict("v1", "tiny", seed=11)
    enc2 = pm_weights.make_encoder_state_dict("v2", "tiny", seed=12)
    lora = pm_weights.make_lora_state_dict("tiny", seed=13)
    pm_weights.write_nested_bin(pm_dir / "tiny-v1.bin", enc1, lora)
    pm_weights.write_flat_safetensors(pm_dir / "tiny-v2.safetensors", enc2, lora)
    pm_weights.write_lora_only(pm_dir / "lora-only.safetensors", lora, prefix="lora_weights.")
    folder_paths.add_model_folder_path("photomaker", str(pm_dir), is_default=True)
    fake_insightface.write_pack(root / "insightface" / "models" / "buffalo_l")
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
        arr = (img.numpy() * 255).round().astype(np.uint8)
        Image.fromarray(arr).save(os.path.join(inp, name))
    return {"root": root, "pm_dir": pm_dir, "identities": ident_dir, "enc": {"v1": enc1, "v2": enc2},
            "lora": lora, "images": images}


@pytest.fixture(scope="module")
def fake_analyzer(tmp_path_factory):
    """photomaker_core's FaceAnalyzer (the real insightface code) on the fake model pack."""
    pytest.importorskip("insightface")
    from synthetic import fake_insightface

    from photomaker_core.faces import FaceAnalyzer

    path = tmp_path_factory.mktemp("insightface") / "buffalo_l"
    fake_insightface.write_pack(path)
    return FaceAnalyzer(str(path), ["CPUExecutionProvider"])


def graph(version="v1", text="a photo of a man img, smiling", image="face_red.png", steps=3,
          style_strength=0.2, extra=None, with_faces=None):
    """API-format graph: tiny SDXL -> PhotoMaker loader -> encode -> apply -> KSampler -> save."""
    with_faces = version == "v2" if with_faces is None else with_faces
    fname = "tiny-v1.bin" if version == "v1" else "tiny-v2.safetensors"
    g = {
        "1": {"class_type": "TinySDXLLoader", "inputs": {"seed": 0}},
        "2": {"class_type": "StackedIDLoader",
              "inputs": {"photomaker_file": fname, "model": ["1", 0], "lora_strength": 1.0}},
        "3": {"class_type": "LoadImage", "inputs": {"image": image}},
        "5": {"class_type": "StackedIDEncode",
              "inputs": {"encoder": ["2", 0], "images": ["3", 0], "no_face": "error",
                         "face_select": "best score", "crop_to_face": False}},
        "6": {"class_type": "StackedIDApply",
              "inputs": {"clip": ["1", 1], "encoder": ["2", 0], "identity": ["5", 0], "text": text,
                         "trigger_word": "img", "style_strength": style_strength, "identity_strength": 1.0}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": "blurry"}},
        "8": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "9": {"class_type": "KSampler",
              "inputs": {"model": ["2", 1], "positive": ["6", 0], "negative": ["7", 0],
                         "latent_image": ["8", 0], "seed": 1, "steps": steps, "cfg": 5.0,
                         "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0}},
        "10": {"class_type": "VAEDecode", "inputs": {"samples": ["9", 0], "vae": ["1", 2]}},
        "11": {"class_type": "SaveImage",
               "inputs": {"images": ["10", 0], "filename_prefix": f"pm_{version}"}},
    }
    if with_faces:
        g["4"] = {"class_type": "StackedIDFaceAnalysisLoader",
                  "inputs": {"model_pack": "buffalo_l", "provider": "CPU", "det_size": 640}}
        g["5"]["inputs"]["face_analysis"] = ["4", 0]
    for node_id, patch in (extra or {}).items():
        g.setdefault(node_id, {"inputs": {}})
        for k, v in patch.items():
            if k == "inputs":
                g[node_id]["inputs"].update(v)
            else:
                g[node_id][k] = v
    return g


def saved_images(outputs, node_id="11"):
    import folder_paths
    from PIL import Image

    files = outputs[node_id]["images"]
    return [np.asarray(Image.open(os.path.join(folder_paths.get_output_directory(), f.get("subfolder", ""),
                                               f["filename"]))) for f in files]


def as_image_batch(*tensors) -> torch.Tensor:
    return torch.stack(list(tensors))
