"""Regions per identity for Apply: each identity's rows only inside its mask, the text-only prompt
outside (the masking itself is photomaker_core.conditioning; this module encodes the prompts)."""
from __future__ import annotations

from ..photomaker_core import conditioning as regions
from .conditioning import Binding, encode_id_prompt, fuse_bindings, tokenize_prompt
from .errors import NodeInputError, input_errors


def mask_input(binding: Binding) -> str:
    """The mask socket that goes with an identity socket (identity -> mask, identity_2 -> mask_2)."""
    return binding.input_name.replace("identity", "mask")


def region_masks(node: str, bindings: list[Binding], mask, mask_2):
    """One mask per binding, or None when no mask is connected (the whole picture, as before)."""
    if mask_2 is not None and len(bindings) < 2:
        raise NodeInputError(node, "mask_2", "mask_2 is the region of identity_2, which is not connected: "
                                             "connect identity_2 or disconnect mask_2")
    masks = [mask, mask_2][:len(bindings)]
    if all(m is None for m in masks):
        return None
    for b, m in zip(bindings, masks, strict=False):
        if m is None:
            raise NodeInputError(node, mask_input(b),
                                 f"with regions, every identity needs its own mask: connect "
                                 f"{mask_input(b)} for {b.input_name} (or disconnect the "
                                 f"other mask to use the whole picture)")
    return masks


def build_regional_conditioning(node: str, clip, encoder, bindings: list[Binding], masks: list, text: str,
                                style_strength: float, identity_strength: float):
    """Returns (scheduled CONDITIONING, text-only CONDITIONING): text-only over [0, s] everywhere
    (composition), then over [s, 1] each identity's prompt (only its own rows fused, the other
    trigger removed as in the text-only prompt) inside its mask and the text-only prompt outside."""
    encoded, identity_conds = None, []
    for b in bindings:
        id_tokens, text_tokens, positions = tokenize_prompt(node, clip, encoder, bindings, text,
                                                            only=b.trigger)
        if encoded is None:
            encoded = clip.encode_from_tokens(text_tokens, return_pooled=True)
        id_cond, id_pooled = encode_id_prompt(clip, id_tokens, text_tokens, encoded)
        identity_conds.append((fuse_bindings(node, encoder, [b], id_cond, positions, identity_strength),
                               id_pooled))
    text_cond, text_pooled = encoded
    with input_errors(node, lambda err: mask_input(bindings[err.index]), catch=regions.MaskError):
        scheduled = regions.regional_schedule(text_cond, text_pooled, identity_conds, masks, style_strength)
    return scheduled, regions.plain(text_cond, text_pooled)
