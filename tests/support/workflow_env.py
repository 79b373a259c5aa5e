"""Tiny stand-ins for everything the example workflows (workflows/*.json) name: models, a saved
identity and input photos. Shared by the engine test (test_workflows.py, in-process host) and the
browser test (test_ui.py, a real server in its own process).

* The models are the demo's synthetic set (scripts/demo.py `build_synthetic_models`: a tiny SDXL
  checkpoint, PhotoMaker V1/V2 files in the released container layout, the fake InsightFace pack),
  built once into the git-ignored .cache/synthetic-models.
* `install_models` links them into a ComfyUI models/ folder under the names the workflows use
  (`sd_xl_base_1.0.safetensors`, `photomaker-v2.bin`, `buffalo_l`, ...), so a workflow loads in the
  frontend with every combo value valid and runs unchanged. A server needs PM_TINY_CHECKPOINTS=1
  (tests/support/tiny_pack) for CheckpointLoaderSimple to detect the tiny checkpoint as SDXL.
* Photos: the fake detector's "face" is a saturated colour block and the colour is the identity.
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# LoadImage name -> (colour, face box). Names not listed here get a red face.
PHOTOS = {"photomaker_face.png": ("RED", (200, 120, 328, 248)),
          "photomaker_face_2.png": ("RED", (120, 80, 312, 272)),
          "photomaker_face_3.png": ("RED", (300, 200, 420, 320)),
          "photomaker_person_a.png": ("RED", (200, 120, 328, 248)),
          "photomaker_person_b.png": ("GREEN", (200, 120, 328, 248)),
          "photomaker_person_c.png": ("BLUE", (200, 120, 328, 248))}
DEFAULT_PHOTO = ("RED", (160, 100, 352, 292))
PHOTO_NAME = "photomaker_face.png"  # the single-photo workflows' ID photo
# The saved identity the save-identity workflow's (muted) Load Identity node names.
IDENTITY_NAME = "my_identity.safetensors"


def demo_module():
    """scripts/demo.py as a module (cheap: no torch or ComfyUI import at module level)."""
    name = "_pm_script_demo"
    if name not in sys.modules:
        scripts = str(REPO / "scripts")
        if scripts not in sys.path:
            sys.path.insert(0, scripts)
        spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / "demo.py")
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        spec.loader.exec_module(mod)
    return sys.modules[name]


def photo_names(workflow_paths) -> list[str]:
    names = set(PHOTOS)
    for path in workflow_paths:
        nodes = json.loads(Path(path).read_text())["nodes"]
        names |= {n["widgets_values"][0] for n in nodes if n["type"] == "LoadImage"}
    return sorted(names)


def write_photos(input_dir, workflow_paths) -> list[str]:
    """A synthetic face photo under every LoadImage name the workflows use."""
    import numpy as np
    from PIL import Image

    from . import fake_insightface

    os.makedirs(input_dir, exist_ok=True)
    names = photo_names(workflow_paths)
    for name in names:
        colour, box = PHOTOS.get(name, DEFAULT_PHOTO)
        img = fake_insightface.synthetic_face(box=box, color=getattr(fake_insightface, colour))
        Image.fromarray((img.numpy() * 255).round().astype(np.uint8)).save(os.path.join(input_dir, name))
    return names


def synthetic_models_ready(cache: Path) -> bool:
    demo = demo_module()
    files = [cache / "checkpoints" / demo.SYNTHETIC_NAMES["sd_xl_base_1.0.safetensors"],
             cache / "photomaker" / demo.SYNTHETIC_NAMES["photomaker-v2.bin"],
             cache / "photomaker" / demo.SYNTHETIC_NAMES["photomaker-v1.bin"],
             cache / "insightface" / "models" / demo.SYNTHETIC_NAMES["buffalo_l"]]
    stamp = cache / "VERSION"
    return stamp.is_file() and stamp.read_text() == demo.SYNTHETIC_VERSION and all(f.exists() for f in files)


def ensure_synthetic_models(cache: Path | None = None, timeout: float = 300) -> Path:
    """The demo's synthetic model set, built in a child process (it needs a booted ComfyUI) unless
    the cache is current. For callers that do not host ComfyUI in-process."""
    demo = demo_module()
    cache = Path(cache or demo.SYNTHETIC_CACHE)
    if synthetic_models_ready(cache):
        return cache
    code = ("import sys; from pathlib import Path; sys.path.insert(0, sys.argv[1]); import demo; "
            "root = demo.find_host(); demo.prepare_folders(root, None); demo.boot_engine('cpu'); "
            "demo.build_synthetic_models(Path(sys.argv[2]))")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    res = subprocess.run([sys.executable, "-c", code, str(REPO / "scripts"), str(cache)], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=timeout)
    if res.returncode != 0 or not synthetic_models_ready(cache):
        raise RuntimeError(f"building the synthetic models failed ({res.returncode}):\n{res.stderr[-3000:]}")
    return cache


def install_models(models_dir, cache: Path) -> dict[str, Path]:
    """Symlink the synthetic models into `models_dir` under the names the workflows use. Returns
    {workflow name: installed path}."""
    demo = demo_module()
    models_dir = Path(models_dir)
    placed = {}
    for (folder, name), _ in demo.DOWNLOADS.items():
        src = cache / folder / demo.SYNTHETIC_NAMES[name]
        dest = models_dir / folder / name
        if folder == "insightface":
            src = cache / folder / "models" / demo.SYNTHETIC_NAMES[name]
            dest = models_dir / folder / "models" / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        if not dest.exists():
            dest.symlink_to(src.resolve(), target_is_directory=src.is_dir())
        placed[name] = dest
    return placed


def write_identity(path, version: str = "v2", seed: int = 0) -> Path:
    """A valid saved identity (seeded random ID tokens, in the pack's file format)."""
    import torch

    if str(REPO) not in sys.path:
        sys.path.append(str(REPO))  # appended: the host's `nodes` must win over this repo's nodes/
    from photomaker_core.identity import Identity, save_identity

    g = torch.Generator().manual_seed(seed)
    k = 2 if version == "v2" else 1
    ident = Identity(tokens=torch.randn(1, k, 2048, generator=g) * 0.02, weights=torch.ones(1),
                     version=version, arcface=torch.randn(1, 512, generator=g) if version == "v2" else None,
                     provenance={"encoder_file": "test fixture"})
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_identity(ident, str(path))
    return path
