"""Running the example workflows (workflows/*.json) through the in-process engine with the tiny
models: the `wf_env` fixture (a pytest plugin, registered in conftest.py), the UI -> API conversion
with the tiny-size substitutions, and reading back the images a run wrote."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from . import workflow_env

REPO = Path(__file__).resolve().parents[2]
WORKFLOWS = sorted((REPO / "workflows").glob("*.json"))
LATENT, STEPS = 64, 2


def workflow_api_module():
    """scripts/workflow_api.py as a module."""
    from .host import _script_module

    return _script_module("workflow_api")


@pytest.fixture(scope="module")
def wf_env(comfy_host, tmp_path_factory):
    """Tiny random stand-ins for every model the workflows name (the demo's --synthetic set, written
    to a tmp folder registered with folder_paths), synthetic face photos under the LoadImage names,
    one executor for the module (the checkpoint loads once)."""
    import folder_paths
    import torch

    from synthetic import tiny_sdxl

    demo = workflow_env.demo_module()
    tiny_sdxl.register_tiny_model_config()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors; immune to OpenMP stalls on a shared 2-core machine
    root = tmp_path_factory.mktemp("wf-models")
    demo.build_synthetic_models(root)
    demo.register_synthetic(folder_paths, root)
    workflow_env.install_tiny_controlnet(folder_paths, root)
    identities = root / "photomaker_identities"
    identities.mkdir()
    folder_paths.add_model_folder_path("photomaker_identities", str(identities), is_default=True)
    workflow_env.write_photos(folder_paths.get_input_directory(), WORKFLOWS)
    replacements = dict(demo.SYNTHETIC_NAMES)
    replacements.update(workflow_env.small_widgets(LATENT, STEPS))
    yield {"replacements": replacements, "identities": identities, "executor": comfy_host.make_executor()}
    torch.set_num_threads(threads)


def tiny_api(path, env, workflow=None) -> dict:
    """The workflow file (or an edited copy of it) as an API prompt with the tiny models and sizes."""
    wapi = workflow_api_module()
    api = wapi.ui_to_api(workflow or json.loads(Path(path).read_text()))
    return wapi.substitute(api, env["replacements"])


def saved_images(outputs, api, class_types=("SaveImage",)) -> list[np.ndarray]:
    """The pictures the run's nodes of `class_types` wrote (output or temp folder), in node order
    of the API prompt, as uint8 HxWx3 arrays."""
    import folder_paths
    from PIL import Image

    out = []
    for nid, node in api.items():
        if node["class_type"] in class_types and nid in outputs:
            for f in outputs[nid]["images"]:
                folder = folder_paths.get_directory_by_type(f.get("type", "output"))
                p = os.path.join(folder, f.get("subfolder", ""), f["filename"])
                out.append(np.asarray(Image.open(p)))
    return out
