"""Test-only ComfyUI custom node pack: a loader node that returns the seeded tiny SDXL
MODEL/CLIP/VAE (ComfyUI's own classes, real tokenizers), so test graphs run in seconds.
Loaded by the test harness and by the test server; never shipped with the pack."""
import importlib.util
import os
import sys

_here = os.path.dirname(os.path.abspath(__file__))
_spec = importlib.util.spec_from_file_location("_pm_tiny_sdxl", os.path.join(
    _here, "..", "..", "..", "scripts", "synthetic", "tiny_sdxl.py"))
tiny_sdxl = sys.modules.get("_pm_tiny_sdxl")
if tiny_sdxl is None:
    tiny_sdxl = importlib.util.module_from_spec(_spec)
    sys.modules["_pm_tiny_sdxl"] = tiny_sdxl
    _spec.loader.exec_module(tiny_sdxl)

# PM_TINY_CHECKPOINTS=1 (set by tests that start a server with tiny checkpoints, e.g. test_ui.py):
# register the tiny SDXL config inside the server process, so the real CheckpointLoaderSimple
# detects a tiny checkpoint as SDXL. Other servers are unaffected.
if os.environ.get("PM_TINY_CHECKPOINTS") == "1":
    tiny_sdxl.register_tiny_model_config()

_CACHE = {}


class TinySDXLLoader:
    """MODEL, CLIP, VAE of a tiny seeded SDXL (same interface shapes as the real one)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"seed": ("INT", {"default": 0, "min": 0, "max": 1000})}}

    RETURN_TYPES = ("MODEL", "CLIP", "VAE")
    FUNCTION = "load"
    CATEGORY = "testing"

    def load(self, seed):
        import torch

        if seed not in _CACHE:
            with torch.inference_mode(False):
                _CACHE[seed] = (tiny_sdxl.make_model(seed=seed), tiny_sdxl.make_clip(seed=seed + 1),
                                tiny_sdxl.make_vae(seed=seed + 2))
        return _CACHE[seed]


class TinySD15Loader:
    """A non-SDXL MODEL (SD1.5 architecture, tiny) for the wrong-base-model error path."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {}}

    RETURN_TYPES = ("MODEL",)
    FUNCTION = "load"
    CATEGORY = "testing"

    def load(self):
        import torch
        import comfy.model_management as mm
        import comfy.model_patcher
        import comfy.supported_models

        if "sd15" not in _CACHE:
            cfg = {"use_checkpoint": False, "image_size": 32, "out_channels": 4,
                   "use_spatial_transformer": True, "legacy": False, "adm_in_channels": None,
                   "in_channels": 4, "model_channels": 32,
                   "num_res_blocks": [1, 1], "transformer_depth": [1, 1], "channel_mult": [1, 2],
                   "transformer_depth_middle": 1, "use_linear_in_transformer": False, "context_dim": 768,
                   "num_heads": 8, "transformer_depth_output": [1, 1, 1, 1],
                   "use_temporal_attention": False, "use_temporal_resblock": False}
            mc = comfy.supported_models.SD15(cfg)
            mc.set_inference_dtype(torch.float32, None)
            with torch.inference_mode(False):
                model = mc.get_model({}, "", device="cpu")
                tiny_sdxl.init_weights_(model.diffusion_model)
            _CACHE["sd15"] = comfy.model_patcher.ModelPatcher(model, load_device=mm.get_torch_device(),
                                                              offload_device=mm.unet_offload_device())
        return (_CACHE["sd15"],)


NODE_CLASS_MAPPINGS = {"TinySDXLLoader": TinySDXLLoader, "TinySD15Loader": TinySD15Loader}
