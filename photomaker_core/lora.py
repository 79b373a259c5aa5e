"""PhotoMaker's UNet LoRA: accept its known spellings, emit the one ComfyUI maps for SDXL.

PhotoMaker (V1 and V2) ships a rank-64 LoRA on to_q/to_k/to_v/to_out.0 of attn1 and attn2 in all
70 SDXL transformer blocks, spelled in the old diffusers attention-processor form. Re-packs in the
wild use other spellings of the same modules. `normalize_lora` maps all of them to kohya keys on
diffusers module paths::

    lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q.lora_down.weight
    lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q.lora_up.weight
    lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q.alpha

Why this spelling: `comfy.lora.model_lora_keys_unet` derives `lora_unet_<diffusers path>` from
`comfy.utils.unet_to_diffusers(unet_config)` for every UNet model, identically on ComfyUI 0.3.52
and 0.3.75, and `.lora_up/.lora_down` is the first form its LoRA adapter looks for. An explicit
`.alpha` equal to the rank pins ComfyUI's scale (alpha / rank) to 1.0, the strength the reference
fuses at, instead of relying on the loader's "no alpha means 1.0" default.
"""
from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Optional

import torch
from torch import Tensor

from .errors import PhotoMakerFileError

logger = logging.getLogger(__name__)

# Prefix of the LoRA half inside flat PhotoMaker files (`{"lora_weights": sd}` flattened).
FILE_PREFIX = "lora_weights."

# Cross-attention to_k/to_v read the text context: 2048 wide in SDXL (768 in SD1.x, 1024 in SD2.x).
SDXL_CONTEXT_DIM = 2048

# Suffix -> which tensor of a LoRA module it holds (none of these ends another, so order is free).
_SUFFIXES: tuple[tuple[str, str], ...] = (
    (".lora_linear_layer.down.weight", "down"),  # diffusers LoRALinearLayer
    (".lora_linear_layer.up.weight", "up"),
    (".lora_layer.down.weight", "down"),  # diffusers LoRACompatibleLinear.lora_layer
    (".lora_layer.up.weight", "up"),
    (".lora_A.default.weight", "down"),  # PEFT model.state_dict() (adapter name kept)
    (".lora_B.default.weight", "up"),
    (".lora_down.weight", "down"),  # kohya
    (".lora_up.weight", "up"),
    ("_lora.down.weight", "down"),  # old diffusers attention processor (the V1/V2 file)
    ("_lora.up.weight", "up"),
    (".lora.down.weight", "down"),  # diffusers save_lora_weights after LoRACompatibleLinear
    (".lora.up.weight", "up"),
    (".lora_A.weight", "down"),  # PEFT get_peft_model_state_dict
    (".lora_B.weight", "up"),
    (".alpha", "alpha"),
)

# Wrappers around a dotted diffusers UNet path (PEFT, diffusers pipelines), in any combination.
_UNET_WRAPPERS = ("base_model.model.", "unet.")

# Separators are `[._]` so one pattern reads both dotted paths and kohya's underscored ones.
_S = r"[._]"
_DIFFUSERS_ATTN = re.compile(
    rf"^(?P<block>down_blocks{_S}(?P<down>\d+)|mid_block|up_blocks{_S}(?P<up>\d+))"
    rf"{_S}attentions{_S}(?P<attn>\d+){_S}transformer_blocks{_S}(?P<tb>\d+)"
    rf"{_S}attn(?P<which>[12]){_S}(?:processor{_S})?to_(?P<proj>q|k|v|out)(?:{_S}0)?$"
)
# ComfyUI/ldm (SGM) naming, as written by kohya sd-scripts for SDXL and ComfyUI's generic format.
_LDM_ATTN = re.compile(
    rf"^(?:input_blocks{_S}(?P<inp>\d+)|middle_block|output_blocks{_S}(?P<out>\d+)){_S}1"
    rf"{_S}transformer_blocks{_S}(?P<tb>\d+)"
    rf"{_S}attn(?P<which>[12]){_S}to_(?P<proj>q|k|v|out)(?:{_S}0)?$"
)
_TE_MODULE = re.compile(
    rf"^text_model{_S}encoder{_S}layers{_S}(?P<layer>\d+)"
    rf"{_S}(?P<module>self_attn{_S}(?:q|k|v|out)_proj|mlp{_S}fc[12])$"
)

# SDXL's transformer layout: diffusers block -> (attention modules, transformer blocks in each).
_SDXL_ATTENTIONS: dict[str, tuple[int, int]] = {
    "down_blocks_1": (2, 2),
    "down_blocks_2": (2, 10),
    "mid_block": (1, 10),
    "up_blocks_0": (3, 10),
    "up_blocks_1": (3, 2),
}
# ldm input/output block index -> (diffusers block, attention index) for SDXL (2 res blocks/level).
_LDM_INPUT = {4: ("down_blocks_1", 0), 5: ("down_blocks_1", 1),
              7: ("down_blocks_2", 0), 8: ("down_blocks_2", 1)}
_LDM_OUTPUT = {i: ("up_blocks_0", i) for i in range(3)} | {
    3 + i: ("up_blocks_1", i) for i in range(3)}

_EXPECTED = (
    "expected PhotoMaker's SDXL UNet attention LoRA: keys like "
    "'unet.down_blocks.1.attentions.0.transformer_blocks.0.attn1.processor.to_q_lora.down.weight' "
    "(or the same module as '.lora.down.weight', PEFT '.lora_A.weight'/'.lora_B.weight', or kohya "
    "'lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q.lora_down.weight'), "
    "on to_q/to_k/to_v/to_out of attn1/attn2 in SDXL transformer blocks"
)
_MAX_EXAMPLES = 5


class LoraFormatError(PhotoMakerFileError):
    """The state dict is not a PhotoMaker LoRA in any accepted spelling (message says why)."""


@dataclass(frozen=True)
class _Slot:
    """Where one input key goes: a canonical kohya module name and the tensor role in it."""

    module: str
    role: str  # "down" | "up" | "alpha"


@dataclass
class _Module:
    """The tensors gathered for one canonical module, with the input key each came from."""

    tensors: dict[str, Tensor] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)


def _split_suffix(key: str) -> Optional[tuple[str, str]]:
    """(module path, role) for a key ending in a known LoRA suffix, else None."""
    for suffix, role in _SUFFIXES:
        if key.endswith(suffix) and len(key) > len(suffix):
            return key[: -len(suffix)], role
    return None


def _strip_unet_wrappers(path: str) -> str:
    """Drop `base_model.model.` / `unet.` wrappers in any order (PEFT on a diffusers pipeline)."""
    stripped = True
    while stripped:
        stripped = False
        for wrapper in _UNET_WRAPPERS:
            if path.startswith(wrapper):
                path = path[len(wrapper):]
                stripped = True
    return path


def _sdxl_unet_module(block: str, attn: int, tb: int, which: str, proj: str) -> Optional[str]:
    """Canonical kohya module name, or None where SDXL has no such transformer block."""
    layout = _SDXL_ATTENTIONS.get(block)
    if layout is None or attn >= layout[0] or tb >= layout[1]:
        return None
    proj = "out_0" if proj == "out" else proj
    return f"lora_unet_{block}_attentions_{attn}_transformer_blocks_{tb}_attn{which}_to_{proj}"


def _parse_diffusers_path(path: str) -> Optional[str]:
    """Canonical module for a diffusers-named attention projection (dotted or underscored)."""
    m = _DIFFUSERS_ATTN.match(path)
    if m is None:
        return None
    if m["down"] is not None:
        block = f"down_blocks_{m['down']}"
    elif m["up"] is not None:
        block = f"up_blocks_{m['up']}"
    else:
        block = "mid_block"
    return _sdxl_unet_module(block, int(m["attn"]), int(m["tb"]), m["which"], m["proj"])


def _parse_ldm_path(path: str) -> Optional[str]:
    """Canonical module for an ldm-named (input_blocks/middle_block/output_blocks) projection."""
    m = _LDM_ATTN.match(path)
    if m is None:
        return None
    if m["inp"] is not None:
        place = _LDM_INPUT.get(int(m["inp"]))
    elif m["out"] is not None:
        place = _LDM_OUTPUT.get(int(m["out"]))
    else:
        place = ("mid_block", 0)
    if place is None:
        return None
    return _sdxl_unet_module(place[0], place[1], int(m["tb"]), m["which"], m["proj"])


def _parse_unet_path(path: str) -> Optional[str]:
    """Canonical module for any accepted UNet spelling of an attention projection path."""
    if path.startswith("lora_unet_"):
        body = path[len("lora_unet_"):]
        return _parse_diffusers_path(body) or _parse_ldm_path(body)
    if path.startswith("diffusion_model."):
        return _parse_ldm_path(path[len("diffusion_model."):])
    path = _strip_unet_wrappers(path)
    return _parse_diffusers_path(path) or _parse_ldm_path(path)


def _parse_text_encoder_path(path: str) -> Optional[str]:
    """Canonical kohya module for an SDXL text-encoder projection; None if not one ComfyUI maps.

    ComfyUI maps `lora_te1_` (CLIP-L) and `lora_te2_` (CLIP-G) for SDXL, on the self-attention
    and MLP projections only (comfy.lora.LORA_CLIP_MAP)."""
    for prefix, index in (("lora_te1_", 1), ("lora_te2_", 2),
                          ("text_encoder_2.", 2), ("text_encoder.", 1)):
        if path.startswith(prefix):
            m = _TE_MODULE.match(path[len(prefix):])
            if m is None:
                return None
            module = re.sub(_S, "_", m["module"])
            return f"lora_te{index}_text_model_encoder_layers_{m['layer']}_{module}"
    return None


def _is_text_encoder_path(path: str) -> bool:
    """True for any text-encoder LoRA prefix (SDXL's two encoders or SD1.x's single one)."""
    return path.startswith(("lora_te_", "lora_te1_", "lora_te2_", "text_encoder.",
                            "text_encoder_2."))


def _strip_file_prefix(key: str) -> str:
    return key[len(FILE_PREFIX):] if key.startswith(FILE_PREFIX) else key


def _unet_slot(key: str) -> Optional[_Slot]:
    """The canonical slot of a PhotoMaker UNet LoRA key in any accepted spelling, else None."""
    split = _split_suffix(_strip_file_prefix(key))
    if split is None:
        return None
    module = _parse_unet_path(split[0])
    return None if module is None else _Slot(module, split[1])


def is_photomaker_lora_key(key: str) -> bool:
    """True if `key` is a tensor of PhotoMaker's UNet attention LoRA, in any accepted spelling.

    Covers the down/up weights and `.alpha` of to_q/to_k/to_v/to_out in SDXL's attn1/attn2,
    with or without the `lora_weights.` file prefix. Text-encoder LoRA keys are not PhotoMaker's
    (its LoRA is UNet only) and return False, as do ID-encoder keys."""
    return _unet_slot(key) is not None


def _classify(sd: Mapping[str, Tensor]) -> tuple[dict[str, _Module], list[str], list[str]]:
    """Group keys by canonical module: (modules, unknown keys, dropped text-encoder keys)."""
    modules: dict[str, _Module] = {}
    unknown: list[str] = []
    dropped: list[str] = []
    for key, tensor in sd.items():
        if not isinstance(tensor, Tensor):
            raise LoraFormatError(
                f"LoRA value for key {key!r} is a {type(tensor).__name__}, expected a tensor "
                "(pass the flat LoRA state dict, e.g. file['lora_weights'], not the whole file)")
        slot = _unet_slot(key)
        if slot is None:
            slot, is_te = _text_encoder_slot(key)
            if slot is None:
                (dropped if is_te else unknown).append(key)
                continue
        entry = modules.setdefault(slot.module, _Module())
        if slot.role in entry.sources:
            raise LoraFormatError(
                f"LoRA keys {entry.sources[slot.role]!r} and {key!r} both give the {slot.role} "
                f"tensor of {slot.module}; expected each module once, in one spelling")
        entry.tensors[slot.role] = tensor
        entry.sources[slot.role] = key
    return modules, unknown, dropped


def _text_encoder_slot(key: str) -> tuple[Optional[_Slot], bool]:
    """(slot, is text-encoder key) for a key that is not a UNet attention LoRA key."""
    split = _split_suffix(_strip_file_prefix(key))
    path = split[0] if split else _strip_file_prefix(key)
    if not _is_text_encoder_path(path):
        return None, False
    module = _parse_text_encoder_path(path) if split else None
    return (None if module is None else _Slot(module, split[1])), True


def _format_examples(keys: list[str]) -> str:
    shown = ", ".join(repr(k) for k in keys[:_MAX_EXAMPLES])
    more = len(keys) - _MAX_EXAMPLES
    return shown + (f" and {more} more" if more > 0 else "")


def _diagnose(unknown: list[str]) -> str:
    """A hint for the usual ways a wrong file ends up here."""
    joined = "\n".join(unknown)
    if re.search(rf"down_blocks{_S}0{_S}attentions|up_blocks{_S}3{_S}attentions|lora_te_", joined):
        return (" This looks like an SD1.x/SD2.x LoRA (attention blocks SDXL does not have);"
                " PhotoMaker needs its own SDXL LoRA.")
    if any(k.startswith(("id_encoder.", "pmid.")) for k in unknown):
        return (" ID-encoder keys are present: split the PhotoMaker file and pass only its"
                " 'lora_weights' part.")
    return ""


def _check_module(name: str, entry: _Module) -> int:
    """Validate one module's tensors; returns its rank."""
    missing = [role for role in ("down", "up") if role not in entry.tensors]
    if missing:
        have = ", ".join(repr(k) for k in entry.sources.values())
        raise LoraFormatError(
            f"LoRA module {name} has no {' or '.join(missing)} weight (found only {have}); "
            "expected a down and an up matrix for every module")
    down, up = entry.tensors["down"], entry.tensors["up"]
    if down.ndim != 2 or up.ndim != 2 or down.shape[0] != up.shape[1]:
        raise LoraFormatError(
            f"LoRA module {name} has down {tuple(down.shape)} and up {tuple(up.shape)}; expected "
            "down [rank, in] and up [out, rank] with the same rank")
    if name.endswith(("attn2_to_k", "attn2_to_v")) and down.shape[1] != SDXL_CONTEXT_DIM:
        raise LoraFormatError(
            f"LoRA module {name} reads a {down.shape[1]}-wide text context; SDXL's is "
            f"{SDXL_CONTEXT_DIM} (768 is SD1.x, 1024 SD2.x): PhotoMaker needs its SDXL LoRA")
    return int(down.shape[0])


def _alpha_for(entry: _Module, rank: int) -> Tensor:
    """The input's own alpha if it has one, else alpha = rank so ComfyUI's scale is 1.0."""
    alpha = entry.tensors.get("alpha")
    return alpha if alpha is not None else torch.tensor(float(rank))


def normalize_lora(sd: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """PhotoMaker's LoRA in ComfyUI's kohya spelling (see module docstring), tensors not copied.

    Accepts the old diffusers attention-processor form of the V1/V2 files, the `.lora.{down,up}`,
    `.lora_layer`/`.lora_linear_layer` and PEFT `lora_A`/`lora_B` forms (optionally wrapped in
    `unet.` / `base_model.model.`), and kohya `lora_unet_*` keys on diffusers or ldm module paths,
    all optionally prefixed `lora_weights.`. Text-encoder LoRA keys ComfyUI maps for SDXL are kept
    as `lora_te1_`/`lora_te2_`; other text-encoder keys are dropped with a warning. The input
    mapping is not modified.

    Raises LoraFormatError for an empty dict, unknown keys, incomplete or inconsistent modules."""
    if not sd:
        raise LoraFormatError(f"LoRA state dict is empty; {_EXPECTED}")
    modules, unknown, dropped = _classify(sd)
    if unknown:
        raise LoraFormatError(
            f"{len(unknown)} of {len(sd)} LoRA keys are not PhotoMaker UNet LoRA keys: "
            f"{_format_examples(unknown)}; {_EXPECTED}.{_diagnose(unknown)}")
    if dropped:
        logger.warning("PhotoMaker LoRA: dropped %d text-encoder keys ComfyUI does not map for "
                       "SDXL (PhotoMaker's LoRA is UNet only): %s", len(dropped),
                       _format_examples(dropped))
    if not any(name.startswith("lora_unet_") for name in modules):
        raise LoraFormatError(f"LoRA has no UNet attention keys (only text-encoder keys); "
                              f"{_EXPECTED}")
    out: dict[str, Tensor] = {}
    for name, entry in modules.items():
        rank = _check_module(name, entry)
        out[f"{name}.lora_down.weight"] = entry.tensors["down"]
        out[f"{name}.lora_up.weight"] = entry.tensors["up"]
        out[f"{name}.alpha"] = _alpha_for(entry, rank)
    logger.debug("PhotoMaker LoRA: normalized %d keys into %d modules", len(sd), len(modules))
    return out

