"""Checks of what is connected to a node's inputs (SDXL MODEL and CLIP, IMAGE batches); each
failure names the node, the input and the fix."""
from __future__ import annotations

import torch

from .errors import NodeInputError


def require_sdxl_model(model, node: str, input_name: str = "model") -> None:
    import comfy.model_base

    base = getattr(model, "model", None)
    if not isinstance(base, comfy.model_base.SDXL):
        kind = type(base).__name__ if base is not None else type(model).__name__
        raise NodeInputError(node, input_name,
                             f"PhotoMaker works with SDXL models only, this MODEL is '{kind}'. Load an "
                             f"SDXL checkpoint (SDXL base, RealVisXL, Juggernaut XL, Pony...) instead.")


def require_sdxl_clip(clip, node: str, input_name: str = "clip"):
    tok = getattr(clip, "tokenizer", None)
    if tok is None or not hasattr(tok, "clip_l") or not hasattr(tok, "clip_g"):
        kind = type(tok).__name__ if tok is not None else type(clip).__name__
        raise NodeInputError(node, input_name,
                             f"PhotoMaker needs the SDXL CLIP (CLIP-L + CLIP-G), got '{kind}'. Connect the "
                             f"CLIP output of an SDXL checkpoint loader.")
    return tok


def require_images(node: str, input_name: str, images) -> None:
    """A non-empty IMAGE batch [B, H, W, C] with at least one pixel and 1, 3 or 4 channels."""
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[0] == 0:
        raise NodeInputError(node, input_name, "expected a non-empty IMAGE batch")
    if images.shape[1] == 0 or images.shape[2] == 0 or images.shape[3] not in (1, 3, 4):
        raise NodeInputError(node, input_name,
                             f"got an IMAGE of shape {list(images.shape)}: images need a height and width "
                             f"of at least 1 pixel and 1, 3 or 4 channels. Connect a photo (Load Image).")
