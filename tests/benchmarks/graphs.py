"""Graphs for the engine benchmarks (bench_prompt_edit.py, bench_overhead.py), run through the real
PromptExecutor with its cache, one executor per side (an executor's cache keeps one graph's outputs).

Two benchmark-only nodes are registered with the host: `PMBenchSDXL` (tiny SDXL UNet/VAE, real-size
CLIP-L + CLIP-G text encoders, seeded; `instance` gives separate but identical UNets so a LoRA-patched
graph and a plain one don't re-patch each other's weights) and `PMBenchPhotos` (N synthetic photos).
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common as C  # noqa: E402

_CACHE: dict = {}


class PMBenchSDXL:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"instance": ("INT", {"default": 0, "min": 0, "max": 9}),
                             "clip_size": (["full", "tiny"],)}}

    RETURN_TYPES = ("MODEL", "CLIP", "VAE")
    FUNCTION = "load"
    CATEGORY = "testing"

    def load(self, instance, clip_size):
        import torch
        from synthetic import tiny_sdxl

        with torch.inference_mode(False):
            if ("clip", clip_size) not in _CACHE:
                _CACHE["clip", clip_size] = tiny_sdxl.make_clip(seed=1, tiny=clip_size == "tiny")
            if ("vae",) not in _CACHE:
                _CACHE["vae",] = tiny_sdxl.make_vae(seed=2)
            if ("model", instance) not in _CACHE:
                _CACHE["model", instance] = tiny_sdxl.make_model(seed=0)
        return _CACHE["model", instance], _CACHE["clip", clip_size], _CACHE["vae",]


class PMBenchPhotos:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"count": ("INT", {"default": 1, "min": 1, "max": 64}),
                             "size": ("INT", {"default": 512, "min": 64, "max": 2048})}}

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "load"
    CATEGORY = "testing"

    def load(self, count, size):
        return (C.synthetic_photos(count, size),)


def setup(photomaker_path):
    """Boot, register the bench nodes and the folder holding the PhotoMaker file."""
    host = C.boot()
    import folder_paths
    import nodes

    nodes.NODE_CLASS_MAPPINGS.setdefault("PMBenchSDXL", PMBenchSDXL)
    nodes.NODE_CLASS_MAPPINGS.setdefault("PMBenchPhotos", PMBenchPhotos)
    folder_paths.add_model_folder_path("photomaker", str(photomaker_path.parent), is_default=True)
    return host


def _tail(g: dict, model, positive, negative_text: str, seed: int, steps: int, size: int, instance_node="1"):
    g.update({
        "7": {"class_type": "CLIPTextEncode", "inputs": {"clip": [instance_node, 1], "text": negative_text}},
        "8": {"class_type": "EmptyLatentImage", "inputs": {"width": size, "height": size, "batch_size": 1}},
        "9": {"class_type": "KSampler",
              "inputs": {"model": model, "positive": positive, "negative": ["7", 0], "latent_image": ["8", 0],
                         "seed": seed, "steps": steps, "cfg": 5.0, "sampler_name": "euler",
                         "scheduler": "normal", "denoise": 1.0}},
        "10": {"class_type": "VAEDecode", "inputs": {"samples": ["9", 0], "vae": [instance_node, 2]}},
        "11": {"class_type": "PreviewImage", "inputs": {"images": ["10", 0]}},
    })
    return g


NEGATIVE = "blurry, lowres"


def ours_graph(file_name, text, images=1, instance=0, clip_size="full", seed=1, steps=4, size=64):
    """This pack: loader (encoder + LoRA'd MODEL) -> encode identity -> apply -> sampler."""
    g = {
        "1": {"class_type": "PMBenchSDXL", "inputs": {"instance": instance, "clip_size": clip_size}},
        "2": {"class_type": "StackedIDLoader", "inputs": {"photomaker_file": file_name, "model": ["1", 0],
                                                          "lora_strength": 1.0}},
        "3": {"class_type": "PMBenchPhotos", "inputs": {"count": images, "size": 512}},
        "5": {"class_type": "StackedIDEncode", "inputs": {"encoder": ["2", 0], "images": ["3", 0],
                                                          "no_face": "error", "face_select": "best score",
                                                          "crop_to_face": False}},
        "6": {"class_type": "StackedIDApply", "inputs": {"clip": ["1", 1], "encoder": ["2", 0],
                                                         "identity": ["5", 0], "text": text,
                                                         "trigger_word": "img", "style_strength": 0.2,
                                                         "identity_strength": 1.0}},
    }
    return _tail(g, ["2", 1], ["6", 0], NEGATIVE, seed, steps, size)


def core_graph(file_name, text, images=1, instance=1, clip_size="full", seed=1, steps=4, size=64):
    """ComfyUI core: PhotoMakerLoader -> PhotoMakerEncode (tower + text encode each run) -> sampler."""
    g = {
        "1": {"class_type": "PMBenchSDXL", "inputs": {"instance": instance, "clip_size": clip_size}},
        "2": {"class_type": "PhotoMakerLoader", "inputs": {"photomaker_model_name": file_name}},
        "3": {"class_type": "PMBenchPhotos", "inputs": {"count": images, "size": 512}},
        "6": {"class_type": "PhotoMakerEncode", "inputs": {"photomaker": ["2", 0], "image": ["3", 0],
                                                           "clip": ["1", 1], "text": text}},
    }
    return _tail(g, ["1", 0], ["6", 0], NEGATIVE, seed, steps, size)


def plain_graph(text, instance=2, clip_size="full", seed=1, steps=4, size=64):
    """The same SDXL graph without any PhotoMaker node."""
    g = {
        "1": {"class_type": "PMBenchSDXL", "inputs": {"instance": instance, "clip_size": clip_size}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": text}},
    }
    return _tail(g, ["1", 0], ["6", 0], NEGATIVE, seed, steps, size)


def runner(host, prompt_prefix: str):
    """A callable that runs a graph on its own executor (own cache), with unique prompt ids."""
    executor = host.make_executor()
    counter = [0]

    def run(graph):
        counter[0] += 1
        host.run_graph(graph, executor=executor, prompt_id=f"{prompt_prefix}-{counter[0]}")
    return run
