"""Every example workflow (workflows/*.json) gives the same pictures as the stored references
(tests/data/workflow_outputs/<workflow stem>.png) through the real engine, with the tiny random
models, 64 px latents and the seeds stored in the files: a refactor that changes what a workflow
makes fails here.

Each reference is every picture the workflow's SaveImage and PreviewImage nodes wrote, side by side
in node order. CPU kernels may round differently between torch builds and ComfyUI versions, so the
comparison allows a difference of 2/255 on all but 0.1 % of pixels and a mean difference below
0.5/255; a changed strength, schedule or token layout moves far more than that.

The pictures alone are a coarse check: a tiny random UNet barely reacts to some changes of the
conditioning (an identity strength of 0.9 instead of 1.0, say). So the same run also records what
the UNet is given on every call (tests/support/unet_context.py: each context and pooled row as its
length and a fixed random projection, plus the sigma) and compares it with
tests/data/workflow_outputs/<workflow stem>.context.npz, row by row, to a relative 1e-3.
Each workflow runs on a fresh executor, so every node runs and the record does not depend on which
workflows ran before it.

PM_UPDATE_GOLDEN=1 writes the references from the current code instead of comparing (the test is
then skipped, so a run that writes them never passes as a check).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from support import unet_context
from support.workflow_env import small_widgets
from support.workflow_run import LATENT, WORKFLOWS, saved_images, tiny_api

REFERENCES = Path(__file__).resolve().parent / "data" / "workflow_outputs"
IMAGE_NODES = ("SaveImage", "PreviewImage")
PIXEL_TOLERANCE = 2  # of 255, per channel
OUTLIER_SHARE = 0.001  # pixels allowed beyond PIXEL_TOLERANCE
MEAN_TOLERANCE = 0.5  # of 255
# More sampling steps than the other workflow tests use: the schedule switches from text-only to
# identity at a fraction of the run, and with 2 steps style strengths 0.2 and 0.25 (say) switch at
# the same step; with GOLDEN_STEPS they do not, so the record sees the schedule move.
GOLDEN_STEPS = 10


def side_by_side(images: list[np.ndarray]) -> np.ndarray:
    """The pictures in one row, shorter ones padded with black at the bottom."""
    height = max(img.shape[0] for img in images)
    padded = [np.pad(img, ((0, height - img.shape[0]), (0, 0), (0, 0))) for img in images]
    return np.concatenate(padded, axis=1)


def differences(got: np.ndarray, want: np.ndarray) -> list[str]:
    """What makes `got` differ from `want` beyond the tolerance (empty when they match)."""
    if got.shape != want.shape:
        return [f"size {got.shape} != reference {want.shape}"]
    diff = np.abs(got.astype(np.int16) - want.astype(np.int16))
    outliers = float((diff.max(axis=-1) > PIXEL_TOLERANCE).mean())
    mean = float(diff.mean())
    problems = []
    if outliers > OUTLIER_SHARE:
        problems.append(f"{outliers:.2%} of pixels differ by more than {PIXEL_TOLERANCE}/255 "
                        f"(max {int(diff.max())}/255)")
    if mean >= MEAN_TOLERANCE:
        problems.append(f"mean difference {mean:.3f}/255")
    return problems


def test_differences_catch_a_shift_and_allow_rounding():
    rng = np.random.default_rng(0)
    ref = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    # one step of rounding on a fifth of the values, two steps on a few, one pixel far off
    step = rng.integers(-1, 2, ref.shape) * (rng.random(ref.shape) < 0.2)
    step[:4, 0] *= 2
    step[10, 10] = 90
    rounding = np.clip(ref.astype(np.int16) + step, 0, 255).astype(np.uint8)
    assert differences(rounding, ref) == []
    shifted = np.clip(ref.astype(np.int16) + 3, 0, 255).astype(np.uint8)
    assert differences(shifted, ref)
    assert differences(ref[:32], ref) == [f"size {ref[:32].shape} != reference {ref.shape}"]


def test_context_differences_catch_one_changed_row_and_allow_rounding():
    torch = pytest.importorskip("torch")
    gen = torch.Generator().manual_seed(0)
    ctx = torch.randn(2, 77, 2048, generator=gen)
    pooled = torch.randn(2, 2816, generator=gen)

    def record(context):
        return unet_context.to_arrays([{"context": unet_context.sketch(context),
                                        "y": unet_context.sketch(pooled), "sigma": 1.0}])

    want = record(ctx)
    assert unet_context.differences(record(ctx * (1 + 1e-6)), want) == []
    id_token = ctx.clone()
    id_token[0, 5] *= 0.99  # one token of 154, 1 % shorter
    problems = unet_context.differences(record(id_token), want)
    assert len(problems) == 1 and "context_0: 1 of 154 rows changed" in problems[0], problems
    assert unet_context.differences(record(ctx[:, :70]), want) == [
        "context_0: shape (2, 70, 32) != reference (2, 77, 32)"]
    assert unet_context.differences(unet_context.to_arrays([]), want) == [
        "0 UNet calls, reference has 1"]


def test_context_record_keeps_the_schedule():
    """Text-only for the first call, identity after: a switch one step later is a difference."""
    torch = pytest.importorskip("torch")
    text, ident = torch.ones(1, 4, 2048), torch.full((1, 4, 2048), 2.0)

    def record(*contexts):
        return unet_context.to_arrays([{"context": unet_context.sketch(c), "y": None,
                                        "sigma": float(i)} for i, c in enumerate(contexts)])

    want = record(text, ident, ident)
    assert want["context_used"].tolist() == [0, 1, 1] and "context_2" not in want
    assert unet_context.differences(record(text, ident, ident), want) == []
    assert unet_context.differences(record(text, text, ident), want) == [
        "context per call [0, 0, 1] != reference [0, 1, 1] (the schedule changed)"]


@pytest.mark.host
@pytest.mark.parametrize("path", WORKFLOWS, ids=[p.stem for p in WORKFLOWS])
def test_workflow_output_matches_reference(comfy_host, wf_env, path):
    from PIL import Image

    replacements = {**wf_env["replacements"], **small_widgets(LATENT, GOLDEN_STEPS)}
    api = tiny_api(path, {"replacements": replacements})
    with unet_context.recording_unet_calls() as calls:
        _, outputs = comfy_host.run_graph(api, executor=comfy_host.make_executor(),
                                          prompt_id=f"golden-{path.stem}")
    images = saved_images(outputs, api, IMAGE_NODES)
    assert images, f"{path.name} wrote no picture"
    got = side_by_side(images)
    got_context = unet_context.to_arrays(calls)
    reference = REFERENCES / f"{path.stem}.png"
    context_reference = REFERENCES / f"{path.stem}.context.npz"
    if os.environ.get("PM_UPDATE_GOLDEN") == "1":
        REFERENCES.mkdir(parents=True, exist_ok=True)
        Image.fromarray(got).save(reference)
        np.savez_compressed(context_reference, **got_context)
        pytest.skip(f"wrote {reference.name} and {context_reference.name}")
    for ref in (reference, context_reference):
        assert ref.is_file(), f"no reference {ref}: run with PM_UPDATE_GOLDEN=1 on unchanged code"
    want = np.asarray(Image.open(reference).convert("RGB"))
    with np.load(context_reference) as stored:
        want_context = dict(stored)
    problems = ([f"picture: {p}" for p in differences(got, want)]
                + [f"UNet input: {p}" for p in unet_context.differences(got_context, want_context)])
    assert not problems, f"{path.name}: " + "; ".join(problems)
