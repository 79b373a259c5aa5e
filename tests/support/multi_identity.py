"""Photos of several identities and the example workflows on tiny models, shared by the Face Similarity
(tests/test_face_similarity.py) and Apply per Batch Item (tests/test_apply_batch.py) tests."""
from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]


def with_extra_faces(pm_env):
    """pm_env plus a blue face (a third identity) and a blue+red image for the multi-face case (the
    photos are written into the host's input folder)."""
    import folder_paths
    from synthetic import fake_insightface as fi

    extra = {
        "ft_blue.png": fi.synthetic_face(color=fi.BLUE),
        # two faces: the red one is bigger (w + h larger) so it has the higher detection score
        "ft_red_big_blue_small.png": fi.add_face(fi.synthetic_face(box=(300, 100, 556, 356), color=fi.RED),
                                                 box=(40, 40, 104, 104), color=fi.BLUE),
    }
    for name, img in extra.items():
        fi.save_png(img, os.path.join(folder_paths.get_input_directory(), name))
    images = dict(pm_env["images"])
    images.update(extra)
    return {**pm_env, "images": images}


def batch(env, *names):
    return torch.stack([env["images"][n] for n in names])


def _workflow_api():
    name = "_pm_script_workflow_api"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / "workflow_api.py")
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        spec.loader.exec_module(mod)
    return sys.modules[name]


PHOTOS = {"photomaker_face.png": "face_red.png", "photomaker_person_a.png": "face_red.png",
          "photomaker_person_b.png": "face_green.png", "photomaker_person_c.png": "ft_blue.png",
          "photomaker_person_d.png": "face_red2.png"}


def tiny_api(path):
    """The workflow as API prompt, with tiny stand-ins: TinySDXLLoader for the checkpoint, the tiny
    PhotoMaker files, the fake buffalo_l, test photos, 64x64 latents and 2 steps."""
    wapi = _workflow_api()
    api = wapi.ui_to_api(json.loads(path.read_text()))
    repl = {"photomaker-v1.bin": "tiny-v1.bin", "photomaker-v2.bin": "tiny-v2.safetensors",
            ("EmptyLatentImage", "width"): 64, ("EmptyLatentImage", "height"): 64, ("KSampler", "steps"): 2,
            ("StackedIDFaceAnalysisLoader", "provider"): "CPU", **PHOTOS}
    api = wapi.substitute(api, repl)
    for entry in api.values():
        if entry["class_type"] == "CheckpointLoaderSimple":
            entry["class_type"], entry["inputs"] = "TinySDXLLoader", {"seed": 0}
    return api
