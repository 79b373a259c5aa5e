"""Conditioning maths on ComfyUI-style conditioning lists (a list of [tensor, dict] pairs): the
text-to-identity schedule, the rows each trigger fuses, token alignment for batches, and regions.

Schedule: the reference switches from the text-only to the ID prompt after step
start_merge_step = int(style_strength * steps) (steps 0..start_merge_step inclusive are text-only).
Here the two conditionings carry start/end percents [0, s] and [s, 1], which every ComfyUI sampler
honours; with Euler/normal and 50 steps, s = 0.2 switches within one step of the reference.

Batches: identities with different image counts (or V1 vs V2 token counts) expand the class word a
different number of times, so one prompt can need more 77-token chunks for one identity than for
another. One batched tensor needs one length, so `align_tokens` repeats each item along the token
axis up to the least common multiple of the lengths. Repeating every key/value of cross-attention
the same number of times leaves softmax attention unchanged (numerator and denominator scale
alike); ComfyUI does the same when it concatenates conds of different lengths (CONDCrossAttn.concat).

Regions: a region is a conditioning plus a mask. `set_mask` writes exactly the keys ComfyUI's
ConditioningSetMask node writes (`mask` as [B, H, W], `set_area_to_bounds`, `mask_strength`), so
the host's samplers treat a region from this module like one made with the host's own nodes.

Composition (`regional`): each identity's conditioning is masked to its region and the text-only
conditioning is masked to what no region covers: 1 - clamp(sum of masks, 0, 1), the same mask the
host's MaskComposite (add) followed by InvertMask makes. ComfyUI averages overlapping
conditionings weighted by their masks; an unmasked text-only entry would therefore be averaged
50/50 with the identity inside each region and dilute the likeness, while the complement gives
every latent pixel a total weight of at least 1: the identity alone inside its region, the
text-only prompt alone outside. A complement that is zero everywhere (the regions cover the whole
picture) is left out: it would cost one model pass and add nothing to the result.

Plain library: no ComfyUI imports. Inputs are never modified (ComfyUI caches node outputs);
tensors are shared, dicts copied, as the host's own nodes do.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from .errors import PhotoMakerError

logger = logging.getLogger(__name__)
REPEAT_WARNING = 4  # align_tokens warns above this many repeats (the prompt costs that much more)


class MaskError(PhotoMakerError, ValueError):
    """A mask that cannot be used as a region; `index` is the region it belongs to."""

    def __init__(self, index: int, message: str):
        super().__init__(message)
        self.index = index


class NonFiniteError(PhotoMakerError, ValueError):
    """A conditioning tensor with NaN or infinite values (the message says what produced them)."""


def require_finite(tensor: torch.Tensor, message: str) -> None:
    """Raise NonFiniteError(message) when `tensor` holds a NaN or an infinity: such a conditioning
    would turn every later sampling step into NaN, far from the cause."""
    if not torch.isfinite(tensor).all():
        raise NonFiniteError(message)


def as_mask_batch(mask: torch.Tensor) -> torch.Tensor:
    """A MASK as [B, H, W] (ComfyUI masks are [H, W] or [B, H, W])."""
    return mask.unsqueeze(0) if mask.ndim < 3 else mask


def set_mask(conditioning: list, mask: torch.Tensor, strength: float = 1.0,
             set_area_to_bounds: bool = False) -> list:
    """What ConditioningSetMask(conditioning, mask, strength, set_cond_area) returns."""
    mask = as_mask_batch(mask)
    return [[t, {**d, "mask": mask, "set_area_to_bounds": bool(set_area_to_bounds),
                  "mask_strength": strength}]
            for t, d in conditioning]


def check_mask(mask: torch.Tensor, index: int) -> torch.Tensor:
    """The mask as [B, H, W] float, or MaskError saying what is wrong with it."""
    if (not isinstance(mask, torch.Tensor) or mask.ndim not in (2, 3)
            or mask.shape[-1] == 0 or mask.shape[-2] == 0):
        shape = tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise MaskError(index, f"expected a MASK of shape [H, W] or [B, H, W], got {shape}: connect a mask "
                               f"from Load Image, Solid Mask or Mask Composite")
    if not torch.isfinite(mask).all():
        raise MaskError(index, "the mask has NaN or infinite values: use a mask with values from 0 to 1")
    return as_mask_batch(mask)


def _resized(mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The mask at size (H, W): bilinear, as the samplers scale masks to the latent."""
    if tuple(mask.shape[-2:]) == tuple(size):
        return mask
    return F.interpolate(mask.unsqueeze(1).float(), size=size, mode="bilinear",
                         align_corners=False).squeeze(1)


def outside_mask(masks: Sequence[torch.Tensor]) -> torch.Tensor:
    """1 - clamp(sum of the masks, 0, 1) at the first mask's size (masks of another size are
    scaled to it; batches of 1 broadcast). MaskComposite(add) + InvertMask make the same."""
    batches = [check_mask(m, i) for i, m in enumerate(masks)]
    sizes = [m.shape[0] for m in batches]
    for i, n in enumerate(sizes):
        if n != 1 and any(k not in (1, n) for k in sizes[:i]):
            raise MaskError(i, f"this mask has a batch of {n}, an earlier one {sizes[:i]}: use one mask per "
                               f"region (batch 1) or the same batch size for all")
    size = tuple(batches[0].shape[-2:])
    total = sum(_resized(m, size).float() for m in batches)
    return 1.0 - total.clamp(0.0, 1.0)


def regional(base: list, regions: Sequence[tuple[list, torch.Tensor]]) -> list:
    """Each region's conditioning masked to its mask, then `base` masked to the outside of all
    regions, left out when that outside is empty (mask strength 1 and the default area throughout)."""
    masks = [check_mask(mask, i) for i, (_, mask) in enumerate(regions)]
    rest = outside_mask(masks)
    out = []
    for (cond, _), mask in zip(regions, masks, strict=True):
        out += set_mask(cond, mask)
    if bool((rest > 0).any()):
        out += set_mask(base, rest)
    return out


def clamp_strength(style_strength: float) -> float:
    """style_strength as the switch point s in [0, 1]."""
    return min(max(float(style_strength), 0.0), 1.0)


def timed(cond: torch.Tensor, pooled: torch.Tensor, start: float, end: float) -> list:
    """A one-entry conditioning active over [start, end] of the schedule."""
    return [[cond, {"pooled_output": pooled, "start_percent": start, "end_percent": end}]]


def plain(cond: torch.Tensor, pooled: torch.Tensor) -> list:
    """A one-entry conditioning over the whole schedule, as CLIPTextEncode returns."""
    return [[cond, {"pooled_output": pooled}]]


def schedule(text_cond, text_pooled, id_cond, id_pooled, style_strength: float) -> list:
    """Text-only over [0, s], identity over [s, 1]; a phase of zero length is left out."""
    s = clamp_strength(style_strength)
    entries = []
    if s > 0.0:
        entries += timed(text_cond, text_pooled, 0.0, s)
    if s < 1.0:
        entries += timed(id_cond, id_pooled, s, 1.0)
    return entries


def regional_schedule(text_cond, text_pooled, identity_conds: Sequence[tuple], masks: Sequence,
                      style_strength: float) -> list:
    """Text-only over [0, s] everywhere (composition), then over [s, 1] each (cond, pooled) of
    identity_conds inside its mask and the text-only prompt outside (`regional`)."""
    s = clamp_strength(style_strength)
    masked = regional(timed(text_cond, text_pooled, s, 1.0),
                      [(timed(c, p, s, 1.0), m) for (c, p), m in zip(identity_conds, masks, strict=True)])
    head = timed(text_cond, text_pooled, 0.0, s) if s > 0.0 else []
    return head + (masked if s < 1.0 else [])


def gather_rows(parts: Sequence[tuple[Sequence[int], torch.Tensor, torch.Tensor]], strength: float):
    """parts: per trigger (its rows in the prompt, its ID tokens [k, C], their weights [k]).
    Returns (all rows in order, the tokens stacked [sum k, C], the weights stacked and scaled by
    `strength`): row i of the prompt fuses with token i."""
    rows, tokens, weights = [], [], []
    for positions, toks, w in parts:
        rows += list(positions)
        tokens.append(toks)
        weights.append(w * float(strength))
    return rows, torch.cat(tokens), torch.cat(weights)


def align_tokens(conds: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """[1, T_i, C] tensors -> the same tensors repeated along T to lcm(T_i) (attention-invariant)."""
    common = math.lcm(*[int(c.shape[1]) for c in conds])
    out = []
    for c in conds:
        reps = common // int(c.shape[1])
        if reps > REPEAT_WARNING:
            logger.warning("PhotoMaker Apply per Batch Item: conditioning repeated %dx along the tokens to "
                           "align prompt lengths (%d tokens); shorten the prompt to save compute",
                           reps, common)
        out.append(c.repeat(1, reps, 1) if reps > 1 else c)
    return out


def batch_schedule(text_cond, text_pooled, fused: Sequence[torch.Tensor], pooled: Sequence[torch.Tensor],
                   style_strength: float) -> tuple[list, list]:
    """One conditioning per batch item stacked into one batch of len(fused): item i is the schedule
    of fused[i] / pooled[i], the text-only prompt (shared by every item) repeated to the batch.
    Returns (scheduled conditioning, text-only conditioning); inputs are not modified."""
    b = len(fused)
    id_cond = torch.cat(align_tokens(fused))
    id_pooled = torch.cat(list(pooled))
    text_b = text_cond.expand(b, -1, -1).clone()
    text_pooled_b = text_pooled.expand(b, -1).clone()
    return schedule(text_b, text_pooled_b, id_cond, id_pooled, style_strength), plain(text_b, text_pooled_b)
