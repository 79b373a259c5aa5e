"""Regional conditioning on ComfyUI-style conditioning lists (a list of [tensor, dict] pairs).

A region is a conditioning plus a mask. `set_mask` writes exactly the keys ComfyUI's
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

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from .errors import PhotoMakerError


class MaskError(PhotoMakerError, ValueError):
    """A mask that cannot be used as a region; `index` is the region it belongs to."""

    def __init__(self, index: int, message: str):
        super().__init__(message)
        self.index = index


def as_mask_batch(mask: torch.Tensor) -> torch.Tensor:
    """A MASK as [B, H, W] (ComfyUI masks are [H, W] or [B, H, W])."""
    return mask.unsqueeze(0) if mask.ndim < 3 else mask


def set_mask(conditioning: list, mask: torch.Tensor, strength: float = 1.0,
             set_area_to_bounds: bool = False) -> list:
    """What ConditioningSetMask(conditioning, mask, strength, set_cond_area) returns."""
    mask = as_mask_batch(mask)
    return [[t, {**d, "mask": mask, "set_area_to_bounds": bool(set_area_to_bounds), "mask_strength": strength}]
            for t, d in conditioning]


def check_mask(mask: torch.Tensor, index: int) -> torch.Tensor:
    """The mask as [B, H, W] float, or MaskError saying what is wrong with it."""
    if not isinstance(mask, torch.Tensor) or mask.ndim not in (2, 3) or mask.shape[-1] == 0 or mask.shape[-2] == 0:
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
    return F.interpolate(mask.unsqueeze(1).float(), size=size, mode="bilinear", align_corners=False).squeeze(1)


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
    for (cond, _), mask in zip(regions, masks):
        out += set_mask(cond, mask)
    if bool((rest > 0).any()):
        out += set_mask(base, rest)
    return out
