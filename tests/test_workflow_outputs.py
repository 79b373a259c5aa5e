"""Every example workflow (workflows/*.json) gives the same pictures as the stored references
(tests/data/workflow_outputs/<workflow stem>.png) through the real engine, with the tiny random
models, 64 px latents and the seeds stored in the files: a refactor that changes what a workflow
makes fails here.

Each reference is every picture the workflow's SaveImage and PreviewImage nodes wrote, side by side
in node order. CPU kernels may round differently between torch builds and ComfyUI versions, so the
comparison allows a difference of 2/255 on all but 0.1 % of pixels and a mean difference below
0.5/255; a changed strength, schedule or token layout moves far more than that.

PM_UPDATE_GOLDEN=1 writes the references from the current code instead of comparing (the test is
then skipped, so a run that writes them never passes as a check).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from support.workflow_run import WORKFLOWS, saved_images, tiny_api

REFERENCES = Path(__file__).resolve().parent / "data" / "workflow_outputs"
IMAGE_NODES = ("SaveImage", "PreviewImage")
PIXEL_TOLERANCE = 2  # of 255, per channel
OUTLIER_SHARE = 0.001  # pixels allowed beyond PIXEL_TOLERANCE
MEAN_TOLERANCE = 0.5  # of 255


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


@pytest.mark.host
@pytest.mark.parametrize("path", WORKFLOWS, ids=[p.stem for p in WORKFLOWS])
def test_workflow_output_matches_reference(comfy_host, wf_env, path):
    from PIL import Image

    api = tiny_api(path, wf_env)
    _, outputs = comfy_host.run_graph(api, executor=wf_env["executor"], prompt_id=f"golden-{path.stem}")
    images = saved_images(outputs, api, IMAGE_NODES)
    assert images, f"{path.name} wrote no picture"
    got = side_by_side(images)
    reference = REFERENCES / f"{path.stem}.png"
    if os.environ.get("PM_UPDATE_GOLDEN") == "1":
        REFERENCES.mkdir(parents=True, exist_ok=True)
        Image.fromarray(got).save(reference)
        pytest.skip(f"wrote {reference.name}")
    assert reference.is_file(), f"no reference {reference}: run with PM_UPDATE_GOLDEN=1 on unchanged code"
    want = np.asarray(Image.open(reference).convert("RGB"))
    problems = differences(got, want)
    assert not problems, f"{path.name}: " + "; ".join(problems)
