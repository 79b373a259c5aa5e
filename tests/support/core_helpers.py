"""Helpers the tests need around photomaker_core objects, kept out of the library (nothing in the
pack uses them): face box area and unit embedding, image -> uint8 RGB, a LoRA's rank, the class
token an expansion copied."""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch

from photomaker_core.faces import Face, rgb_to_uint8
from photomaker_core.lora import LoraFormatError, normalize_lora
from photomaker_core.preprocess import to_rgb
from photomaker_core.tokens import ExpandedPrompt


def face_area(face: Face) -> float:
    """Box area in pixels."""
    x1, y1, x2, y2 = face.bbox[:4]
    return np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)


def normed_embedding(face: Face) -> np.ndarray:
    """Unit-length embedding (PhotoMaker itself uses the raw one)."""
    norm = float(np.linalg.norm(face.embedding))
    return face.embedding / norm if norm > 0 else face.embedding


def _as_numpy_hwc(image: torch.Tensor | np.ndarray) -> np.ndarray:
    """float32 [H,W,C] numpy view of a ComfyUI IMAGE item ([H,W,C], [1,H,W,C] or [H,W])."""
    if isinstance(image, torch.Tensor):
        arr = image.detach().to(device="cpu", dtype=torch.float32).numpy()
    else:
        arr = np.asarray(image, dtype=np.float32)
    if arr.ndim == 4 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4) or 0 in arr.shape:
        raise ValueError(f"expected one image [H,W,C] with C in 1, 3, 4; got shape "
                         f"{tuple(arr.shape)}")
    return arr


def to_uint8_rgb(image: torch.Tensor | np.ndarray) -> np.ndarray:
    """ComfyUI IMAGE [H,W,C] float 0..1 -> contiguous uint8 RGB [H,W,3], what
    `FaceAnalyzer.detect` takes.

    The channel and NaN rules are `preprocess.to_rgb`'s (grayscale repeated, alpha dropped, NaN 0,
    clamped)."""
    return rgb_to_uint8(to_rgb(torch.from_numpy(np.ascontiguousarray(_as_numpy_hwc(image)))[None])[0])


def lora_rank(sd: Mapping[str, torch.Tensor]) -> int:
    """The rank shared by every module of the LoRA (64 for PhotoMaker V1/V2), any spelling.

    Raises LoraFormatError if the LoRA is malformed or its modules have different ranks."""
    normalized = normalize_lora(sd)
    ranks = {int(t.shape[0]) for k, t in normalized.items() if k.endswith(".lora_down.weight")}
    if len(ranks) != 1:
        raise LoraFormatError(f"LoRA modules have different ranks {sorted(ranks)}; expected one")
    return ranks.pop()


def class_tokens(result: ExpandedPrompt) -> dict[str, Any]:
    """Per trigger, the token its class-token copies carry: the token at its first position in the
    concatenated chunks (positions are flat row indices)."""
    rows = [slot for chunk in result.chunks for slot in chunk]
    return {name: rows[found[0]][0] for name, found in result.positions.items() if found}
