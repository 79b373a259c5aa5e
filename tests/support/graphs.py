"""Building and running API-format graphs in the tests: the tiny graph (tiny SDXL -> PhotoMaker
loader -> encode -> apply -> KSampler -> save), its saved images, direct node calls and the CLIP
encoding of an expanded prompt without fusion."""
from __future__ import annotations

import os

import numpy as np
import torch


def node(name):
    import nodes

    return nodes.NODE_CLASS_MAPPINGS[name]


def call(node_name, /, **kwargs):
    with torch.inference_mode():
        return node(node_name).execute(**kwargs).result


def images(pm_env, *names):
    return torch.stack([pm_env["images"][n] for n in names])


def expanded_encoding(clip, text, triggers):
    """CLIP encoding of the expanded prompt without fusion, via the library's token logic."""
    from photomaker_core.tokens import Trigger, expand_tokens, host_layout, spec_from_vocab

    tok = clip.tokenizer
    specs = {k: spec_from_vocab(t.start_token, t.end_token, t.pad_token, t.max_length,
                                t.tokenizer.convert_ids_to_tokens)
             for k, t in (("l", tok.clip_l), ("g", tok.clip_g))}
    trig = [Trigger(w, tuple(tok.clip_g.tokenizer(w)["input_ids"][1:-1]), k) for w, k in triggers]
    tokens, positions = expand_tokens(clip.tokenize(text, return_word_ids=True), specs, trig,
                                      host_layout(lambda t: clip.tokenize(t, return_word_ids=True)))
    with torch.inference_mode():
        cond, pooled = clip.encode_from_tokens(tokens, return_pooled=True)
    return cond, pooled, positions


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
