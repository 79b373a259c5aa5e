"""Reading PhotoMaker weight files (untrusted input) into canonical state dicts.

Accepted containers (all seen in the wild):
  * the released `.bin` pickles: {"id_encoder": state_dict, "lora_weights": state_dict}
  * flat safetensors with `id_encoder.` / `lora_weights.` prefixes
  * encoder-only files (canonical keys, no prefix), `pmid.`-prefixed conversions (stable-diffusion.cpp)
  * LoRA-only re-packs

Pickles are only ever read with `torch.load(weights_only=True)`: a file that needs code to unpickle
is refused. Canonical encoder keys are exactly the reference's module names (see shared key lists).
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Mapping

import torch

from .errors import PhotoMakerFileError

log = logging.getLogger(__name__)

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")
SAFETENSORS_SUFFIXES = (".safetensors", ".sft")

ENCODER_ROOTS = ("vision_model.", "visual_projection.", "visual_projection_2.", "fuse_module.",
                 "qformer_perceiver.")
V2_MARKER = "qformer_perceiver.token_norm.weight"  # the key the community uses to tell V2 apart
REQUIRED_ENCODER_KEYS = ("vision_model.embeddings.class_embedding",
                         "vision_model.embeddings.patch_embedding.weight",
                         "fuse_module.mlp1.fc1.weight", "fuse_module.layer_norm.weight")
ENCODER_PREFIXES = ("id_encoder.", "pmid.")


@dataclass
class PhotoMakerWeights:
    """A split PhotoMaker file: encoder tensors (canonical keys), LoRA tensors, detected version."""

    encoder: dict[str, torch.Tensor] | None
    lora: dict[str, torch.Tensor] | None
    version: str | None  # "v1", "v2", or None for a LoRA-only file

    @property
    def has_encoder(self) -> bool:
        return bool(self.encoder)


def _name(path) -> str:
    return os.path.basename(os.fspath(path))


def read_state_dict(path) -> dict:
    """Read a tensor container without executing code. Raises PhotoMakerFileError on failure."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise PhotoMakerFileError(f"weight file not found: {path}")
    if os.path.getsize(path) == 0:
        raise PhotoMakerFileError(
            f"'{_name(path)}' is empty (0 bytes): the download was interrupted. Download it again.")
    lower = path.lower()
    if lower.endswith(SAFETENSORS_SUFFIXES):
        return _read_safetensors(path)
    if lower.endswith(PICKLE_SUFFIXES):
        return _read_pickle(path)
    raise PhotoMakerFileError(
        f"'{_name(path)}': unsupported file type. Use a .safetensors or .bin PhotoMaker file.")


def _read_safetensors(path: str) -> dict:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(path, device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise PhotoMakerFileError(
            f"'{_name(path)}' is not a valid safetensors file ({e}). It is corrupt, truncated or "
            f"mislabelled: download it again.") from e


def _read_pickle(path: str) -> dict:
    try:
        # weights_only: the file is untrusted; nothing in it may run code.
        data = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:  # torch raises many types (UnpicklingError, RuntimeError, EOFError...)
        if "weights_only" in str(e) or "Unsupported global" in str(e):
            raise PhotoMakerFileError(
                f"'{_name(path)}' refused: it contains Python objects that would run code when "
                f"loaded, which a PhotoMaker file never needs. Use the official file or a "
                f".safetensors conversion.") from e
        try:  # legacy (non-zip) pickles can't be memory-mapped; retry without mmap
            data = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e2:
            raise PhotoMakerFileError(
                f"'{_name(path)}' could not be read as a PyTorch weight file ({type(e2).__name__}: "
                f"{str(e2)[:200]}). It is corrupt or truncated: download it again.") from e2
    if not isinstance(data, Mapping):
        raise PhotoMakerFileError(f"'{_name(path)}' holds a {type(data).__name__}, not a state dict.")
    return dict(data)


def detect_version(encoder_sd: Mapping[str, object]) -> str:
    return "v2" if V2_MARKER in encoder_sd else "v1"


def _strip(sd: Mapping, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}


def _is_tensor_dict(obj) -> bool:
    return isinstance(obj, Mapping) and all(isinstance(v, torch.Tensor) for v in obj.values())


def split_photomaker_state_dict(sd: Mapping, source: str = "state dict") -> PhotoMakerWeights:
    """Recognise the container layout and return canonical encoder/LoRA dicts."""
    if "id_encoder" in sd or "lora_weights" in sd:  # the released nested pickles
        encoder = sd.get("id_encoder")
        lora = sd.get("lora_weights")
        for part, name in ((encoder, "id_encoder"), (lora, "lora_weights")):
            if part is not None and not _is_tensor_dict(part):
                raise PhotoMakerFileError(f"{source}: '{name}' is not a dict of tensors.")
    else:
        if not _is_tensor_dict(sd):
            raise PhotoMakerFileError(f"{source}: not a flat dict of tensors; cannot read it.")
        encoder, lora = _split_flat(sd)
    encoder = dict(encoder) if encoder else None
    lora = dict(lora) if lora else None
    if encoder is None and lora is None:
        raise PhotoMakerFileError(describe_foreign(sd, source))
    if encoder is not None:
        missing = [k for k in REQUIRED_ENCODER_KEYS if k not in encoder]
        if missing:
            raise PhotoMakerFileError(
                f"{source}: incomplete PhotoMaker ID encoder, missing {missing[:3]}. "
                f"{describe_foreign(encoder, source, brief=True)}")
    if lora is not None:
        from .lora import is_photomaker_lora_key

        if not any(is_photomaker_lora_key(k) for k in lora):
            raise PhotoMakerFileError(describe_foreign(lora, source))
    for part in (encoder, lora):
        if part is not None:
            check_finite(part, source)
    version = detect_version(encoder) if encoder is not None else None
    return PhotoMakerWeights(encoder=encoder, lora=lora, version=version)


def check_finite(sd: Mapping[str, torch.Tensor], source: str = "state dict") -> None:
    """Refuse NaN/inf weights: they would silently turn every conditioning into NaN. One aminmax
    per tensor (NaN propagates, +-inf shows in max/min; never overflows, unlike a sum in fp16):
    about 0.3 s for a full-size V2 encoder + LoRA on one CPU thread (tests/test_stress.py)."""
    for key, t in sd.items():
        if not (t.is_floating_point() and t.numel()):
            continue
        lo, hi = torch.aminmax(t.detach())
        if not (torch.isfinite(lo) and torch.isfinite(hi)):
            raise PhotoMakerFileError(
                f"{source}: tensor '{key}' holds NaN or infinite values, so every image made with "
                f"it would be NaN. The file is corrupt (a broken conversion or download): download "
                f"the official file again.")


def _split_flat(sd: Mapping) -> tuple[dict, dict]:
    encoder: dict = {}
    for prefix in ENCODER_PREFIXES:
        encoder.update(_strip(sd, prefix))
    if not encoder and any(k.startswith(ENCODER_ROOTS) for k in sd) and "fuse_module.layer_norm.weight" in sd:
        encoder = {k: v for k, v in sd.items() if k.startswith(ENCODER_ROOTS)}
    lora = _strip(sd, "lora_weights.")
    if not lora and not encoder:
        from .lora import is_photomaker_lora_key

        candidates = {k: v for k, v in sd.items() if is_photomaker_lora_key(k)}
        if candidates and len(candidates) == len(sd):
            lora = candidates
    return encoder, lora


def describe_foreign(sd: Mapping, source: str, brief: bool = False) -> str:
    """Name what a non-PhotoMaker state dict most likely is, so the user knows which folder it
    belongs in."""
    keys = list(sd.keys())
    sample = ", ".join(repr(k) for k in keys[:3])
    guess = _guess_kind(keys)
    head = "" if brief else f"{source} is not a PhotoMaker file: "
    what = f"this looks like {guess}" if guess else f"found {len(keys)} unknown keys (e.g. {sample})"
    return (f"{head}{what}. Expected a PhotoMaker V1/V2 file (photomaker-v1.bin / photomaker-v2.bin, "
            f"keys 'id_encoder'/'lora_weights' or 'vision_model.*' + 'fuse_module.*') in "
            f"models/photomaker.")


def _guess_kind(keys: list[str]) -> str | None:
    def any_start(*prefixes):
        return any(k.startswith(prefixes) for k in keys)

    if any_start("model.diffusion_model.", "first_stage_model.", "conditioner.", "cond_stage_model."):
        return "a Stable Diffusion checkpoint (put it in models/checkpoints)"
    if any("lora" in k.lower() for k in keys[:200]):
        return "an SDXL/SD LoRA, not a PhotoMaker file (put it in models/loras)"
    if any_start("vision_model.") and not any_start("fuse_module."):
        return "a CLIP vision model without PhotoMaker's fuse module (put it in models/clip_vision)"
    if any_start("input_blocks.", "down_blocks.", "double_blocks."):
        return "a diffusion model (UNet) file"
    return None


def read_photomaker_file(path) -> PhotoMakerWeights:
    """Read and split a PhotoMaker file of any accepted container layout."""
    return split_photomaker_state_dict(read_state_dict(path), source=f"'{_name(path)}'")
