"""PhotoMaker's LoRA onto an SDXL MODEL through ComfyUI's own LoRA patching."""
from __future__ import annotations

import logging

import comfy.lora

from ..photomaker_core.lora import normalize_lora
from .errors import NodeInputError, input_errors

log = logging.getLogger("photomaker_stackedid")


def apply_lora(model, lora_sd: dict, strength: float, node: str):
    """Return a clone of `model` with the LoRA patches added (the input MODEL is untouched).
    Every LoRA module must land on a UNet weight: a partial match means a wrong base model."""
    with input_errors(node, "photomaker_file"):
        normalized = normalize_lora(lora_sd)
    key_map = comfy.lora.model_lora_keys_unet(model.model, {})
    patches = comfy.lora.load_lora(normalized, key_map, log_missing=False)
    modules = {k.rsplit(".lora_", 1)[0] for k in normalized if ".lora_" in k}
    if len(patches) != len(modules):
        raise NodeInputError(node, "model",
                             f"PhotoMaker's LoRA matched {len(patches)} of {len(modules)} attention layers "
                             f"of this MODEL: it is not a standard SDXL UNet. Use an SDXL checkpoint.")
    _check_shapes(model, normalized, key_map, modules, node)
    out = model.clone()
    applied = out.add_patches(patches, strength)
    log.debug("PhotoMaker LoRA: %d weights patched at strength %.2f", len(applied), strength)
    return out


def _check_shapes(model, normalized: dict, key_map: dict, modules: set, node: str) -> None:
    """Every LoRA module must fit its UNet weight; the host would otherwise log an error at
    sampling time and silently skip that layer."""
    shapes = {k: tuple(v.shape) for k, v in model.model.state_dict().items()}
    bad = []
    for name in sorted(modules):
        want = shapes.get(key_map.get(name)) if isinstance(key_map.get(name), str) else None
        up, down = normalized.get(f"{name}.lora_up.weight"), normalized.get(f"{name}.lora_down.weight")
        if want is None or up is None or down is None or len(want) != 2:
            continue
        if up.ndim != 2 or down.ndim != 2 or (up.shape[0], down.shape[1]) != want:
            bad.append(f"{name}: LoRA {tuple(up.shape)} x {tuple(down.shape)} vs layer {want}")
    if bad:
        raise NodeInputError(node, "photomaker_file",
                             f"PhotoMaker's LoRA does not fit {len(bad)} layer(s) of this SDXL MODEL "
                             f"(e.g. {bad[0]}): the file is damaged. Download the official PhotoMaker "
                             f"file again.")
