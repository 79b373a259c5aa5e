"""Tiny stand-ins for everything the example workflows (workflows/*.json) name: models, a saved
identity and input photos. Shared by the engine test (test_workflows.py, in-process host) and the
browser test (test_ui.py, a real server in its own process).

* The models are the demo's synthetic set (scripts/demo.py `build_synthetic_models`: a tiny SDXL
  checkpoint, PhotoMaker V1/V2 files in the released container layout, the fake InsightFace pack)
  plus a tiny SDXL ControlNet (`build_tiny_controlnet`) and T2I-Adapter (`build_tiny_t2i_adapter`),
  built once into the git-ignored .cache/synthetic-models.
* `install_models` links them into a ComfyUI models/ folder under the names the workflows use
  (`sd_xl_base_1.0.safetensors`, `photomaker-v2.bin`, `buffalo_l`, ...), so a workflow loads in the
  frontend with every combo value valid and runs unchanged. A server needs PM_TINY_CHECKPOINTS=1
  (tests/support/tiny_pack) for CheckpointLoaderSimple to detect the tiny checkpoint as SDXL.
* Photos: the fake detector's "face" is a saturated colour block and the colour is the identity;
  ControlNet hint images (POSES) are a stick figure on black.
* The tiny ControlNet is ComfyUI's own `comfy.cldm.cldm.ControlNet` built from the tiny SDXL UNet
  config (same widths, so its residuals fit the tiny UNet), saved in the original (non-diffusers)
  key layout. `comfy.controlnet.load_controlnet` detects that layout from the state dict at any
  width (`model_config_from_unet(..., use_base_if_no_match=True)`), so no registration is needed.
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
# ControlNet workflow: the model (models/controlnet) and its hint image (a LoadImage name).
CONTROLNET_NAME = "OpenPoseXL2.safetensors"
CONTROLNET_SYNTHETIC = "synthetic-tiny-controlnet-sdxl.safetensors"
POSES = {"photomaker_pose.png"}
# The pose T2I-Adapter workflow's adapter (loaded by ControlNetLoader) and the keypoints workflow's
# InstantID-style ControlNet; the latter is the same tiny ControlNet under another name.
T2I_ADAPTER_NAME = "t2i-adapter-openpose-sdxl-1.0.safetensors"
T2I_ADAPTER_SYNTHETIC = "synthetic-tiny-t2i-adapter-sdxl.safetensors"
INSTANTID_CONTROLNET_NAME = "instantid-controlnet.safetensors"
# models/controlnet name the workflows use -> synthetic file standing in for it
CONTROL_MODELS = {CONTROLNET_NAME: CONTROLNET_SYNTHETIC, T2I_ADAPTER_NAME: T2I_ADAPTER_SYNTHETIC,
                  INSTANTID_CONTROLNET_NAME: CONTROLNET_SYNTHETIC}


def small_widgets(latent: int, steps: int) -> dict:
    """(node type, input) -> value that makes every workflow run at the tiny size: image size,
    steps, and the img2img/inpaint/detailer inputs (scaled pictures, face crops, minimum face)."""
    return {("EmptyLatentImage", "width"): latent, ("EmptyLatentImage", "height"): latent,
            ("KSampler", "steps"): steps,
            ("ImageScale", "width"): latent, ("ImageScale", "height"): latent,
            ("StackedIDFaceDetailer", "working_size"): latent, ("StackedIDFaceDetailer", "steps"): steps,
            ("StackedIDFaceDetailer", "min_face_size"): 8}


# Where each control model the workflows name comes from (the frontend offers these downloads).
CONTROL_DOWNLOADS = {
    CONTROLNET_NAME: "https://huggingface.co/thibaud/controlnet-openpose-sdxl-1.0/resolve/main/"
                     "OpenPoseXL2.safetensors",
    T2I_ADAPTER_NAME: "https://huggingface.co/TencentARC/t2i-adapter-openpose-sdxl-1.0/resolve/main/"
                      "diffusion_pytorch_model.safetensors",
    INSTANTID_CONTROLNET_NAME: "https://huggingface.co/InstantX/InstantID/resolve/main/ControlNetModel/"
                               "diffusion_pytorch_model.safetensors",
}


def model_downloads() -> dict[str, dict]:
    """Every public model file a workflow names -> the frontend's model metadata for it
    ({name, url, directory}; directory = the ComfyUI model folder): the demo's downloads
    (checkpoint, PhotoMaker files) and the control models. InsightFace's pack is a zip to unpack
    by hand, not a file the frontend can fetch, so it is not here."""
    out = {name: {"name": name, "url": dl.url, "directory": folder}
           for (folder, name), dl in demo_module().DOWNLOADS.items() if not dl.archive}
    out.update({name: {"name": name, "url": url, "directory": "controlnet"}
                for name, url in CONTROL_DOWNLOADS.items()})
    return out


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

    from synthetic import fake_insightface

    os.makedirs(input_dir, exist_ok=True)
    names = photo_names(workflow_paths)
    for name in names:
        if name in POSES:
            pose_image().save(os.path.join(input_dir, name))
            continue
        colour, box = PHOTOS.get(name, DEFAULT_PHOTO)
        img = fake_insightface.synthetic_face(box=box, color=getattr(fake_insightface, colour))
        fake_insightface.save_png(img, os.path.join(input_dir, name))
    return names


def pose_image(size: int = 512):
    """An OpenPose-like hint: a coloured stick figure on black (PIL image)."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (size, size))
    d = ImageDraw.Draw(img)
    u = size / 16
    joints = {"head": (8, 3), "neck": (8, 5), "hip": (8, 10), "l_hand": (4, 8), "r_hand": (12, 8),
              "l_foot": (6, 15), "r_foot": (10, 15)}
    limbs = [("head", "neck", (255, 0, 0)), ("neck", "hip", (0, 255, 0)), ("neck", "l_hand", (255, 170, 0)),
             ("neck", "r_hand", (0, 170, 255)), ("hip", "l_foot", (170, 0, 255)),
             ("hip", "r_foot", (255, 0, 170))]
    for a, b, colour in limbs:
        (xa, ya), (xb, yb) = joints[a], joints[b]
        d.line([(xa * u, ya * u), (xb * u, yb * u)], fill=colour, width=max(2, int(u / 2)))
    for x, y in joints.values():
        d.ellipse([x * u - u / 3, y * u - u / 3, x * u + u / 3, y * u + u / 3], fill=(255, 255, 255))
    return img


def _save_weights(net, path, what: str) -> Path:
    """net's state dict as a safetensors file at path (written to a temporary name, then renamed)."""
    import safetensors.torch

    sd = {k: v.detach().contiguous() for k, v in net.state_dict().items()}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    safetensors.torch.save_file(sd, str(tmp), metadata={"photomaker_tests": what})
    tmp.replace(path)
    return path


def build_tiny_controlnet(path, seed: int = 5) -> Path:
    """A tiny SDXL ControlNet file (original key layout) matching tiny_sdxl's UNet; needs a booted
    ComfyUI (comfy.* importable)."""
    import torch

    import comfy.cldm.cldm
    import comfy.ops

    from synthetic import tiny_sdxl

    config = {k: v for k, v in tiny_sdxl.TINY_UNET_CONFIG.items()
              if k not in ("out_channels", "transformer_depth_output")}
    config.update(hint_channels=3, num_heads=-1, num_head_channels=32,
                  operations=comfy.ops.disable_weight_init)
    with torch.inference_mode(False):
        net = comfy.cldm.cldm.ControlNet(**config)
        tiny_sdxl.init_weights_(net, seed=seed)
        # random zero convs (a trained ControlNet starts them at zero): the control changes the image
        return _save_weights(net, path, "tiny SDXL ControlNet, random weights")


def build_tiny_t2i_adapter(path, seed: int = 6) -> Path:
    """A tiny SDXL T2I-Adapter file (original key layout, as ComfyUI's load_t2i_adapter reads it)
    whose features fit tiny_sdxl's UNet: the SDXL adapter layout with widths scaled like the UNet's
    (32, 64, 128, 128 for 320, 640, 1280, 1280). Needs a booted ComfyUI."""
    import torch

    import comfy.t2i_adapter.adapter

    from synthetic import tiny_sdxl

    width = tiny_sdxl.TINY_UNET_CONFIG["model_channels"]
    with torch.inference_mode(False):
        # cin 768 = 3 colours x 16 x 16 (pixel unshuffle 16): what makes the host detect an SDXL adapter
        net = comfy.t2i_adapter.adapter.Adapter(cin=768, channels=[width, width * 2, width * 4, width * 4],
                                                nums_rb=2, ksize=1, sk=True, use_conv=False, xl=True)
        tiny_sdxl.init_weights_(net, seed=seed)
        return _save_weights(net, path, "tiny SDXL T2I-Adapter, random weights")


def build_control_models(folder) -> None:
    """The synthetic ControlNet and T2I-Adapter files in `folder`, those missing only."""
    builders = {CONTROLNET_SYNTHETIC: build_tiny_controlnet, T2I_ADAPTER_SYNTHETIC: build_tiny_t2i_adapter}
    for name, build in builders.items():
        if not (Path(folder) / name).exists():
            build(Path(folder) / name)


def install_tiny_controlnet(folder_paths, root) -> Path:
    """For an in-process host: the tiny ControlNet and T2I-Adapter under the workflows' names in
    root/controlnet, registered as a controlnet folder."""
    synthetic = Path(root) / "controlnet-synthetic"
    build_control_models(synthetic)
    folder = Path(root) / "controlnet"
    folder.mkdir(parents=True, exist_ok=True)
    for name, source in CONTROL_MODELS.items():
        if not (folder / name).exists():
            (folder / name).symlink_to((synthetic / source).resolve())
    folder_paths.add_model_folder_path("controlnet", str(folder), is_default=True)
    return folder / CONTROLNET_NAME


def synthetic_models_ready(cache: Path) -> bool:
    demo = demo_module()
    files = [cache / "checkpoints" / demo.SYNTHETIC_NAMES["sd_xl_base_1.0.safetensors"],
             cache / "photomaker" / demo.SYNTHETIC_NAMES["photomaker-v2.bin"],
             cache / "photomaker" / demo.SYNTHETIC_NAMES["photomaker-v1.bin"],
             cache / "insightface" / "models" / demo.SYNTHETIC_NAMES["buffalo_l"]]
    files += [cache / "controlnet" / name for name in set(CONTROL_MODELS.values())]
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
            "demo.build_synthetic_models(Path(sys.argv[2])); sys.path.append(sys.argv[3]); "
            "from support import workflow_env as w; w.build_control_models(Path(sys.argv[2]) / 'controlnet')")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    res = subprocess.run([sys.executable, "-c", code, str(REPO / "scripts"), str(cache), str(REPO / "tests")],
                         cwd=REPO, env=env,
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
    for name, source in CONTROL_MODELS.items():
        dest = models_dir / "controlnet" / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        if not dest.exists():
            dest.symlink_to((cache / "controlnet" / source).resolve())
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
