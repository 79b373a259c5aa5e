"""What the UNet is given on every call of a sampling run (the cross-attention context and the
pooled vector `y`), recorded compactly so a workflow's conditioning can be compared with a stored
reference far more finely than its tiny-model pictures allow.

The tiny SDXL's context is full width (2048 per token), so storing it raw would cost megabytes per
workflow. Each token row is stored as its length and a fixed random projection to PROJECTION_DIM
dimensions instead (a Johnson-Lindenstrauss sketch: a change to a row moves its projection by about
as much, relative to the row, as it moves the row). The comparison is per row and relative, so a
change to one ID token among 77 counts as much as a change to all of them.
"""
from __future__ import annotations

import contextlib

import numpy as np
import torch

PROJECTION_DIM = 32
ROW_TOLERANCE = 1e-3  # relative change allowed per token row (CPU rounding is ~1e-6)
_PROJECTIONS: dict[int, torch.Tensor] = {}


def projection(width: int) -> torch.Tensor:
    """A fixed [width, PROJECTION_DIM] Gaussian matrix, the same in every run and on every host."""
    if width not in _PROJECTIONS:
        gen = torch.Generator().manual_seed(width)
        _PROJECTIONS[width] = torch.randn(width, PROJECTION_DIM, generator=gen, dtype=torch.float64) / (
            PROJECTION_DIM ** 0.5)
    return _PROJECTIONS[width]


def sketch(rows: torch.Tensor) -> np.ndarray:
    """[..., width] -> [..., PROJECTION_DIM] float32 projection of every row."""
    flat = rows.detach().to("cpu", torch.float64)
    return (flat @ projection(flat.shape[-1])).to(torch.float32).numpy()


@contextlib.contextmanager
def recording_unet_calls():
    """Record what BaseModel._apply_model (the UNet call after every host and pack wrapper) receives:
    yields a list that gets, per call, {"context": sketch, "y": sketch or None, "sigma": float}."""
    import comfy.model_base

    calls: list[dict] = []
    original = comfy.model_base.BaseModel._apply_model

    def recording(self, x, t, c_concat=None, c_crossattn=None, control=None, transformer_options=None,
                  **kwargs):
        y = kwargs.get("y")
        calls.append({
            "context": None if c_crossattn is None else sketch(c_crossattn),
            "y": None if y is None else sketch(y),
            "sigma": float(t.detach().max()),  # one sigma per step; the batch repeats it
        })
        return original(self, x, t, c_concat, c_crossattn, control,
                        {} if transformer_options is None else transformer_options, **kwargs)

    comfy.model_base.BaseModel._apply_model = recording
    try:
        yield calls
    finally:
        comfy.model_base.BaseModel._apply_model = original


def to_arrays(calls: list[dict]) -> dict[str, np.ndarray]:
    """The calls as named arrays for np.savez_compressed. Steps of one schedule phase get the very
    same tensor, so each of context / y is stored once per distinct value (`context_0`, ...) with
    `context_used`, the value each call got: the schedule itself, call by call."""
    out = {"calls": np.array(len(calls)), "sigma": np.array([c["sigma"] for c in calls], np.float32)}
    for key in ("context", "y"):
        distinct: list[np.ndarray] = []
        used = []
        for call in calls:
            value = call[key]
            if value is None:
                used.append(-1)
                continue
            same = [i for i, d in enumerate(distinct) if d.shape == value.shape and np.array_equal(d, value)]
            if not same:
                distinct.append(value)
            used.append(same[0] if same else len(distinct) - 1)
        out[f"{key}_used"] = np.array(used, np.int64)
        out.update({f"{key}_{i}": d for i, d in enumerate(distinct)})
    return out


def row_changes(got: np.ndarray, want: np.ndarray) -> np.ndarray:
    """Per-row |got - want| / |want| over the last axis; rows of ~zero length use the median row
    length instead, so a padding row cannot make a tiny absolute change look large."""
    want_len = np.linalg.norm(want.astype(np.float64), axis=-1)
    floor = max(float(np.median(want_len)), 1e-12) * 1e-3
    return np.linalg.norm(got.astype(np.float64) - want, axis=-1) / np.maximum(want_len, floor)


def differences(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> list[str]:
    """Why the recorded calls `got` differ from the reference `want` (empty when they match)."""
    if int(got["calls"]) != int(want["calls"]):
        return [f"{int(got['calls'])} UNet calls, reference has {int(want['calls'])}"]
    problems = []
    if got["sigma"].shape != want["sigma"].shape or not np.allclose(got["sigma"], want["sigma"],
                                                                    rtol=1e-5, atol=1e-6):
        problems.append(f"sigmas {got['sigma'].tolist()} != reference {want['sigma'].tolist()}")
    for key in ("context", "y"):
        if got[f"{key}_used"].tolist() != want[f"{key}_used"].tolist():
            problems.append(f"{key} per call {got[f'{key}_used'].tolist()} != reference "
                            f"{want[f'{key}_used'].tolist()} (the schedule changed)")
    for name in sorted(n for n in set(got) | set(want) if n[-1].isdigit()):
        if name not in got or name not in want:
            problems.append(f"{name}: present in {'the reference' if name in want else 'this run'} only")
        elif got[name].shape != want[name].shape:
            problems.append(f"{name}: shape {got[name].shape} != reference {want[name].shape}")
        else:
            change = row_changes(got[name], want[name])
            if change.max() > ROW_TOLERANCE:
                worst = np.unravel_index(int(change.argmax()), change.shape)
                problems.append(f"{name}: {int((change > ROW_TOLERANCE).sum())} of {change.size} rows "
                                f"changed, worst {change.max():.2e} at {tuple(int(i) for i in worst)}")
    return problems
