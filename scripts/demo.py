#!/usr/bin/env python3
"""PhotoMaker (Stacked ID) demo: one photo of a person in, a new portrait of that person out.

`make demo` runs this. It boots ComfyUI in-process (no server, no browser), loads this pack with
the host's own loader, converts workflows/01-photomaker-v2-basic.json (the same file you can open in
the ComfyUI frontend) to the API format, and runs it through ComfyUI's real engine (PromptExecutor).

    make demo                                    # the astronaut photo that ships with scikit-image
    make demo ARGS="--photo me.jpg --prompt 'portrait photo of a man img, film grain'"
    make demo ARGS="--checkpoint RealVisXL_V4.0.safetensors --steps 30"
    make demo ARGS=--synthetic                   # no downloads: tiny random weights, a plumbing check

Weights are looked up in the host's model folders (models/checkpoints, models/photomaker,
models/insightface/models/buffalo_l; extra_model_paths.yaml is honoured) and missing ones are
downloaded from their official pages (resumable; --no-download to only report them). The host is
the ComfyUI this checkout sits in (ComfyUI/custom_nodes/<pack>), else $COMFYUI_PATH, else the pinned
copy that `make setup` provisions (.cache/comfyui/<version>).

Development tooling: the pack never imports this.
"""
from __future__ import annotations

import argparse
import asyncio
import http.client
import importlib.util
import json
import logging
import os
import shutil
import sys
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
from host_compat import make_prompt_executor  # noqa: E402
from workflow_api import WorkflowError, model_references, substitute, ui_to_api  # noqa: E402

DEFAULT_WORKFLOW = REPO / "workflows" / "01-photomaker-v2-basic.json"
PHOTO_NAME = "photomaker_face.png"  # what the workflows' LoadImage nodes read
SYNTHETIC_CACHE = REPO / ".cache" / "synthetic-models"
SYNTHETIC_VERSION = "1"
EXIT_MISSING = 2

log = logging.getLogger("photomaker_demo")


@dataclass(frozen=True)
class Download:
    url: str
    what: str
    size: str
    archive: bool = False  # a zip to unpack into a folder of that name


# (model folder, file or pack name) -> official source
DOWNLOADS = {
    ("checkpoints", "sd_xl_base_1.0.safetensors"): Download(
        "https://huggingface.co/stabilityai/stable-diffusion-xl-base-1.0/resolve/main/sd_xl_base_1.0.safetensors",
        "SDXL base 1.0 checkpoint (stabilityai/stable-diffusion-xl-base-1.0)", "6.9 GB"),
    ("photomaker", "photomaker-v2.bin"): Download(
        "https://huggingface.co/TencentARC/PhotoMaker-V2/resolve/main/photomaker-v2.bin",
        "PhotoMaker V2 (TencentARC/PhotoMaker-V2)", "1.8 GB"),
    ("photomaker", "photomaker-v1.bin"): Download(
        "https://huggingface.co/TencentARC/PhotoMaker/resolve/main/photomaker-v1.bin",
        "PhotoMaker V1 (TencentARC/PhotoMaker)", "934 MB"),
    ("insightface", "buffalo_l"): Download(
        "https://github.com/deepinsight/insightface/releases/download/v0.7/buffalo_l.zip",
        "InsightFace buffalo_l model pack (deepinsight/insightface release v0.7), unzipped", "280 MB",
        archive=True),
}
# Which model folder each loader widget reads.
REFERENCE_FOLDERS = {"ckpt_name": "checkpoints", "photomaker_file": "photomaker", "model_pack": "insightface",
                     "identity_file": "photomaker_identities"}
# --synthetic: the names the workflows use -> the tiny random files that stand in for them.
SYNTHETIC_NAMES = {
    "sd_xl_base_1.0.safetensors": "synthetic-tiny-sdxl.safetensors",
    "photomaker-v2.bin": "synthetic-photomaker-v2.bin",
    "photomaker-v1.bin": "synthetic-photomaker-v1.bin",
    "buffalo_l": "synthetic_buffalo_l",
}
SYNTHETIC_SIZE, SYNTHETIC_STEPS = 256, 4
SYNTHETIC_BANNER = "SYNTHETIC RUN: tiny RANDOM weights - a plumbing check, the image is noise, not a portrait"


class DemoError(RuntimeError):
    pass


# --------------------------------------------------------------------------------------- host

def find_host() -> Path:
    spec = importlib.util.spec_from_file_location("_pm_provision", REPO / "scripts" / "provision_host.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.find_host(os.environ.get("PM_COMFY_VERSION") or None)


def prepare_folders(root: Path, base_directory: str | None):
    """Import the host's folder_paths (cheap: no torch yet) and register the model folders the
    pack uses, exactly as its loader will. Returns the folder_paths module."""
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    import comfy.options

    comfy.options.enable_args_parsing(False)
    from comfy.cli_args import args

    if base_directory:
        args.base_directory = os.path.abspath(base_directory)
    import utils.extra_config  # before `nodes` (which puts comfy/ first on sys.path)
    import folder_paths

    extra = root / "extra_model_paths.yaml"
    if extra.is_file() and not base_directory:
        utils.extra_config.load_extra_path_config(str(extra))
    for name in ("photomaker", "insightface", "photomaker_identities"):  # = nodes/folders.register_folders
        default = os.path.join(folder_paths.models_dir, name)
        if name in folder_paths.folder_names_and_paths:
            paths = folder_paths.folder_names_and_paths[name][0]
            if default not in paths:
                paths.append(default)
        else:
            exts = ({".safetensors"} if name == "photomaker_identities"
                    else set(folder_paths.supported_pt_extensions))
            folder_paths.folder_names_and_paths[name] = ([default], exts)
    return folder_paths


def boot_engine(device: str):
    """The heavy part: torch, comfy, the node registry (core + comfy_extras)."""
    from comfy.cli_args import args

    import torch

    kind = accelerator(torch, device)
    args.cpu = kind == "cpu"  # must precede comfy.model_management's import
    import comfy.model_management  # noqa: F401
    import execution  # noqa: F401
    import nodes

    asyncio.run(nodes.init_extra_nodes(init_custom_nodes=False, init_api_nodes=False))
    return device_label(torch, kind)


def load_pack() -> None:
    import nodes

    if not asyncio.run(nodes.load_custom_node(str(REPO))):
        raise DemoError("ComfyUI could not load the pack (see the log above)")


class ConsoleServer:
    """What PromptExecutor reports to (server.PromptServer's interface): prints node progress."""

    def __init__(self, prompt: dict):
        self.client_id = "demo"
        self.last_node_id = None
        self.sockets_metadata = {}
        self.prompt = prompt
        self.errors = []
        self._started = None

    def send_sync(self, event, data, sid=None):
        if event == "executing" and data.get("node") is not None:
            node = str(data["node"])
            entry = self.prompt.get(node, {})
            title = entry.get("_meta", {}).get("title") or entry.get("class_type", node)
            log.info("  running %s (node %s)", title, node)
        elif event == "execution_error":
            self.errors.append(data)

    def queue_updated(self):
        pass


def run_prompt(prompt: dict) -> dict:
    """Validate and execute an API prompt with the real engine; returns the history outputs."""

    import execution

    valid = asyncio.run(execution.validate_prompt("demo", prompt, None))
    ok, err, outputs, node_errors = valid[:4]
    if not ok:
        details = "; ".join(f"node {k} ({v.get('class_type')}): "
                            + ", ".join(e.get("details") or e.get("message", "")
                                        for e in v.get("errors", []))
                            for k, v in (node_errors or {}).items())
        raise DemoError(f"ComfyUI rejected the workflow: {err.get('message', err)} {details}")
    server = ConsoleServer(prompt)
    executor = make_prompt_executor(server)
    executor.execute(prompt, "demo", {"client_id": "demo"}, outputs)
    if not executor.success:
        errs = [m[1] for m in executor.status_messages if m[0] == "execution_error"]
        msg = errs[0].get("exception_message", "unknown error").strip() if errs else "unknown error"
        node = f" in {errs[0].get('node_type')} (node {errs[0].get('node_id')})" if errs else ""
        raise DemoError(f"the workflow failed{node}: {msg}")
    return executor.history_result.get("outputs", {})


# ---------------------------------------------------------------------------------- weights

def _pack_dir_ok(path: Path) -> bool:
    return path.is_dir() and len(list(path.glob("*.onnx"))) >= 2


def locate(folder_paths, folder: str, name: str) -> str | None:
    """Full path of a model file / InsightFace pack folder, or None."""
    if folder == "insightface":
        for root in folder_paths.get_folder_paths("insightface"):
            candidate = Path(root) / "models" / name
            if _pack_dir_ok(candidate):
                return str(candidate)
        return None
    return folder_paths.get_full_path(folder, name)


def target_path(folder_paths, folder: str, name: str) -> Path:
    """Where a missing file goes: the folder's first (default) location."""
    root = Path(folder_paths.get_folder_paths(folder)[0])
    return root / "models" / name if folder == "insightface" else root / name


def _content_total(resp, have: int) -> int | None:
    rng = resp.headers.get("Content-Range")  # bytes 100-999/1000
    if rng and "/" in rng and not rng.endswith("/*"):
        return int(rng.rsplit("/", 1)[1])
    length = resp.headers.get("Content-Length")
    if length is None:
        return None
    return int(length) + (have if resp.status == 206 else 0)


def download(url: str, dest: Path, timeout: float = 30.0, progress: bool = True) -> Path:
    """Download `url` to `dest` through `dest.part`: resumes a partial file with an HTTP Range
    request, checks the size against Content-Length / Content-Range, renames when complete."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": "photomaker-stackedid-demo/1"}
    if have:
        headers["Range"] = f"bytes={have}-"
    try:
        resp = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # nothing left to fetch: check the size with a HEAD request
            head = urllib.request.urlopen(urllib.request.Request(url, method="HEAD", headers={
                "User-Agent": headers["User-Agent"]}), timeout=timeout)
            total = head.headers.get("Content-Length")
            if total is not None and int(total) == have:
                part.replace(dest)
                return dest
            part.unlink()
            raise DemoError(f"{dest.name}: the partial download does not match the server's file; "
                            f"it was deleted, run again to start over") from e
        raise
    with resp:
        if have and resp.status != 206:  # the server ignored the Range: start over
            have = 0
        total = _content_total(resp, have)
        bar = None
        if progress:
            try:
                from tqdm import tqdm

                bar = tqdm(total=total, initial=have, unit="B", unit_scale=True, unit_divisor=1024,
                           desc=dest.name, file=sys.stderr)
            except ImportError:
                bar = None
        with open(part, "ab" if have else "wb") as fh:
            while True:
                chunk = resp.read(1 << 20)
                if not chunk:
                    break
                fh.write(chunk)
                if bar is not None:
                    bar.update(len(chunk))
        if bar is not None:
            bar.close()
    got = part.stat().st_size
    if total is not None and got != total:
        raise DemoError(f"{dest.name}: got {got} of {total} bytes (connection dropped?); run again to resume")
    part.replace(dest)
    return dest


def unpack_pack(archive: Path, pack_dir: Path) -> None:
    """Unzip an InsightFace pack into pack_dir (a zip with a single top folder is flattened)."""
    with zipfile.ZipFile(archive) as z:
        members = [m for m in z.infolist() if not m.is_dir()]
        tops = {m.filename.split("/", 1)[0] for m in members}
        strip = len(tops) == 1 and all("/" in m.filename for m in members)
        pack_dir.mkdir(parents=True, exist_ok=True)
        for m in members:
            rel = m.filename.split("/", 1)[1] if strip else m.filename
            target = (pack_dir / rel).resolve()
            if pack_dir.resolve() not in target.parents:
                raise DemoError(f"{archive.name}: unsafe path in archive: {m.filename}")
            target.parent.mkdir(parents=True, exist_ok=True)
            with z.open(m) as src, open(target, "wb") as out:
                shutil.copyfileobj(src, out)
    archive.unlink()


def required_models(workflow: dict, replacements: dict) -> list[tuple[str, str]]:
    """(model folder, name) of every model the (active part of the) workflow loads."""
    out = []
    for _ntype, widget, value in model_references(workflow):
        value = replacements.get(value, value)
        folder = REFERENCE_FOLDERS[widget]
        if (folder, value) not in out:
            out.append((folder, value))
    return out


def ensure_models(folder_paths, needed, allow_download: bool, mirror: str | None) -> list[dict]:
    """Find (and, if allowed, download) every needed model. Returns the still-missing ones."""
    missing = []
    for folder, name in needed:
        if locate(folder_paths, folder, name):
            log.info("found %s: %s", folder, locate(folder_paths, folder, name))
            continue
        src = DOWNLOADS.get((folder, name))
        dest = target_path(folder_paths, folder, name)
        entry = {"folder": folder, "name": name, "dest": dest, "source": src, "error": None}
        if src is not None and allow_download:
            url = (mirror.rstrip("/") + "/" + src.url.rsplit("/", 1)[1]) if mirror else src.url
            log.info("downloading %s (%s) from %s", name, src.size, url)
            try:
                if src.archive:
                    zip_path = download(url, dest.with_name(dest.name + ".zip"))
                    unpack_pack(zip_path, dest)
                else:
                    download(url, dest)
                if locate(folder_paths, folder, name):
                    log.info("saved %s", dest)
                    continue
                entry["error"] = "the download did not give a usable file"
            except (OSError, http.client.HTTPException, DemoError, zipfile.BadZipFile) as e:
                entry["error"] = str(getattr(e, "reason", None) or e)
                log.warning("download of %s failed: %s", name, entry["error"])
        missing.append(entry)
    return missing


def missing_report(missing: list[dict], downloads_tried: bool) -> str:
    lines = ["", f"The demo needs {len(missing)} model file(s) that are not in ComfyUI's model folders"
             + (" and could not be downloaded (no network, or the site is blocked):"
                if downloads_tried else ":"), ""]
    for m in missing:
        src = m["source"]
        lines.append(f"  {m['name']}" + (f"  -  {src.what}, {src.size}" if src else ""))
        if src:
            lines.append(f"      get it from: {src.url}")
        if src and src.archive:
            lines.append(f"      unzip it into: {m['dest']}{os.sep}  (the .onnx files directly inside)")
        else:
            lines.append(f"      put it in:   {m['dest'].parent}{os.sep}")
        if m["error"]:
            lines.append(f"      (download failed: {m['error']})")
    lines += ["",
              "Then run `make demo` again (downloads resume from their .part files). "
              "Already have another SDXL",
              "checkpoint? `make demo ARGS=\"--checkpoint NAME\"`; models elsewhere? `--base-directory DIR`",
              "(a ComfyUI folder with models/ inside).",
              "",
              "No network? `make demo ARGS=--synthetic` checks the whole pipeline "
              "(same workflow, same nodes,",
              "the real engine) with tiny random weights: it needs no download; its image is noise.", ""]
    return "\n".join(lines)


# -------------------------------------------------------------------------------- synthetic

def _synthetic():
    """scripts/synthetic (imported late: tiny_sdxl needs a booted ComfyUI)."""
    from synthetic import fake_insightface, pm_weights, tiny_sdxl

    return tiny_sdxl, pm_weights, fake_insightface


def build_synthetic_models(cache: Path) -> None:
    """Tiny random stand-ins for every model the workflows use, in the git-ignored cache: an SDXL-
    architecture checkpoint (tiny UNet, 3-layer CLIP-L/G with the real tokenizers, a TAESD-format
    VAE, which ComfyUI's VAE detection accepts at any width), PhotoMaker V1/V2 files in the released
    container layout, and a fake InsightFace pack that "detects" saturated colour blocks."""
    stamp = cache / "VERSION"
    files = [cache / "checkpoints" / SYNTHETIC_NAMES["sd_xl_base_1.0.safetensors"],
             cache / "photomaker" / SYNTHETIC_NAMES["photomaker-v2.bin"],
             cache / "photomaker" / SYNTHETIC_NAMES["photomaker-v1.bin"],
             cache / "insightface" / "models" / SYNTHETIC_NAMES["buffalo_l"]]
    if stamp.is_file() and stamp.read_text() == SYNTHETIC_VERSION and all(f.exists() for f in files):
        return
    t0 = time.time()
    import torch

    import comfy.sd
    import comfy.taesd.taesd

    tiny_sdxl, pm_weights, fake_insightface = _synthetic()
    for sub in ("checkpoints", "photomaker"):
        (cache / sub).mkdir(parents=True, exist_ok=True)
    with torch.inference_mode(False):
        model = tiny_sdxl.make_model(seed=0)
        clip = tiny_sdxl.make_clip(seed=1)
        taesd = comfy.taesd.taesd.TAESD(latent_channels=4)
        tiny_sdxl.init_weights_(taesd, seed=2)
        vae = comfy.sd.VAE(sd=taesd.state_dict())
        tmp = files[0].with_name(files[0].name + ".tmp")
        comfy.sd.save_checkpoint(str(tmp), model, clip, vae,
                                 metadata={"photomaker_demo": "synthetic tiny SDXL with random weights"})
        tmp.replace(files[0])
        lora = pm_weights.make_lora_state_dict("tiny", seed=22)
        for version, path, seed in (("v2", files[1], 21), ("v1", files[2], 23)):
            enc = pm_weights.make_encoder_state_dict(version, "tiny", seed=seed)
            pm_weights.write_nested_bin(path, enc, lora)
    fake_insightface.write_pack(files[3])
    stamp.write_text(SYNTHETIC_VERSION)
    log.info("built the synthetic models in %s (%.1f s)", cache, time.time() - t0)


def register_synthetic(folder_paths, cache: Path) -> None:
    for folder in ("checkpoints", "photomaker", "insightface"):
        folder_paths.add_model_folder_path(folder, str(cache / folder), is_default=True)


def write_synthetic_photo(dest: str) -> None:
    """A photo the fake detector sees: a saturated red block with eyes/nose on a grey background."""
    _, _, fake_insightface = _synthetic()
    fake_insightface.save_png(fake_insightface.synthetic_face(h=512, w=512, box=(160, 128, 352, 352)), dest)


# ------------------------------------------------------------------------------------ photo

def write_photo(input_dir: str, photo: str | None, synthetic: bool, name: str = PHOTO_NAME) -> str:
    from PIL import Image, ImageOps

    os.makedirs(input_dir, exist_ok=True)
    dest = os.path.join(input_dir, name)
    if synthetic:
        write_synthetic_photo(dest)
        return "a synthetic face (a red block the fake detector finds)"
    if photo:
        img = ImageOps.exif_transpose(Image.open(photo)).convert("RGB")
        img.save(dest)
        return photo
    try:
        import skimage.data
    except ImportError as e:
        raise DemoError("the default photo comes from scikit-image (skimage.data.astronaut); install "
                        "scikit-image or pass --photo PATH") from e
    Image.fromarray(skimage.data.astronaut()).save(dest)
    return "skimage.data.astronaut() (Eileen Collins, NASA, public domain)"


def label_synthetic(path: Path) -> None:
    """Stamp the synthetic result so it is never mistaken for a portrait."""
    from PIL import Image, ImageDraw, PngImagePlugin

    img = Image.open(path).convert("RGB")
    draw = ImageDraw.Draw(img)
    draw.rectangle([0, 0, img.width, 26], fill=(0, 0, 0))
    draw.text((4, 2), "SYNTHETIC: random weights", fill=(255, 255, 0))
    draw.text((4, 13), "plumbing check only", fill=(255, 255, 0))
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", SYNTHETIC_BANNER)
    img.save(path, pnginfo=info)


# ------------------------------------------------------------------------------------- main

def parse_size(text: str) -> tuple[int, int]:
    w, _, h = text.lower().partition("x")
    w, h = int(w), int(h or w)
    if w % 8 or h % 8 or min(w, h) < 64:
        raise argparse.ArgumentTypeError("size must be WIDTHxHEIGHT (or one number), multiples of 8, >= 64")
    return w, h


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--photo", help="photo of the person (default: skimage.data.astronaut())")
    ap.add_argument("--prompt", help="prompt with the class word + trigger word, e.g. "
                                     "'portrait photo of a man img, film grain' (default: the workflow's)")
    ap.add_argument("--out", type=Path, help="output PNG (default: output/photomaker_demo.png, "
                                             "output/photomaker_demo_synthetic.png with --synthetic)")
    ap.add_argument("--workflow", type=Path, default=DEFAULT_WORKFLOW,
                    help="UI-format workflow to run (default: workflows/01-photomaker-v2-basic.json)")
    ap.add_argument("--checkpoint", help="use this SDXL checkpoint from models/checkpoints instead of "
                                         "sd_xl_base_1.0.safetensors")
    ap.add_argument("--steps", type=int, help="sampling steps (default: the workflow's, 50)")
    ap.add_argument("--size", type=parse_size,
                    help="image size, e.g. 1024 or 1216x832 (default: the workflow's)")
    ap.add_argument("--seed", type=int, help="sampler seed (default: the workflow's)")
    ap.add_argument("--base-directory", help="a ComfyUI base folder whose models/ to use (as ComfyUI's "
                                             "--base-directory)")
    ap.add_argument("--download", action=argparse.BooleanOptionalAction, default=True,
                    help="download missing weights from their official pages (default: on)")
    ap.add_argument("--mirror", help="download the files by name from this base URL instead")
    ap.add_argument("--device", choices=["auto", "cpu"], default="auto",
                    help="auto: the GPU when torch sees one, else the CPU")
    ap.add_argument("--synthetic", action="store_true",
                    help=f"no downloads: tiny random weights through the same workflow and engine, "
                         f"{SYNTHETIC_SIZE}x{SYNTHETIC_SIZE}, {SYNTHETIC_STEPS} steps (a plumbing check; the "
                         f"image is noise)")
    ap.add_argument("-v", "--verbose", action="store_true", help="show ComfyUI's own log")
    return ap


def accelerator(torch, requested: str) -> str:
    """'cuda', 'mps' or 'cpu': what the demo runs ComfyUI on (`--device cpu` forces the CPU)."""
    if requested == "cpu":
        return "cpu"
    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    return "mps" if mps is not None and mps.is_available() else "cpu"


def device_label(torch, kind: str) -> str:
    if kind == "cuda":
        return f"GPU ({torch.cuda.get_device_name(0)}, CUDA)"
    return "GPU (Apple MPS)" if kind == "mps" else "CPU"


def log_runtime(device: str) -> None:
    """Which Python and torch the demo runs with, and on what: `make demo` picks the ComfyUI's own
    Python when there is one (scripts/pick_python.py), so this is the line to check."""
    import torch

    log.info("Python: %s (torch %s)", sys.executable, torch.__version__)
    log.info("engine: ComfyUI on %s", device)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if not args.verbose:  # ComfyUI logs missing optional extras as warnings: not the user's concern
        logging.getLogger().handlers[0].addFilter(
            lambda r: r.name.startswith("photomaker") or r.levelno >= logging.ERROR)
    t_start = time.time()
    out = args.out or REPO / "output" / ("photomaker_demo_synthetic.png" if args.synthetic
                                         else "photomaker_demo.png")
    if args.synthetic:
        log.info("=" * 100 + "\n" + SYNTHETIC_BANNER + "\n" + "=" * 100)
        if args.photo:
            log.info("--photo is ignored with --synthetic: the fake face detector only sees synthetic faces")
    try:
        workflow = json.loads(args.workflow.read_text())
    except (OSError, ValueError) as e:
        log.error("cannot read the workflow %s: %s", args.workflow, e)
        return 1

    replacements: dict = {}
    if args.checkpoint:
        replacements["sd_xl_base_1.0.safetensors"] = args.checkpoint
    root = find_host()
    folder_paths = prepare_folders(root, args.base_directory)
    log.info("ComfyUI host: %s", root)
    if not args.synthetic:
        missing = ensure_models(folder_paths, required_models(workflow, replacements), args.download,
                                args.mirror)
        if missing:
            print(missing_report(missing, args.download), file=sys.stderr)
            return EXIT_MISSING

    device = boot_engine(args.device)
    log_runtime(device)
    if args.synthetic:
        import torch

        # Tiny tensors: one thread is as fast, and immune to OpenMP stalls when other processes
        # share the cores (2 threads on a busy 2-core machine ran 15x slower).
        torch.set_num_threads(1)
        tiny_sdxl, _, _ = _synthetic()
        tiny_sdxl.register_tiny_model_config()  # so CheckpointLoaderSimple detects the tiny SDXL
        build_synthetic_models(SYNTHETIC_CACHE)
        register_synthetic(folder_paths, SYNTHETIC_CACHE)
        replacements.update(SYNTHETIC_NAMES)
    load_pack()

    scratch = Path(tempfile.mkdtemp(prefix="photomaker-demo-"))
    try:
        folder_paths.set_input_directory(str(scratch / "input"))
        folder_paths.set_output_directory(str(scratch / "output"))
        folder_paths.set_temp_directory(str(scratch / "temp"))
        source = write_photo(folder_paths.get_input_directory(), args.photo, args.synthetic)
        log.info("ID photo: %s", source)
        try:
            prompt = ui_to_api(workflow)
        except WorkflowError as e:
            log.error("cannot convert %s: %s", args.workflow, e)
            return 1
        size = (SYNTHETIC_SIZE, SYNTHETIC_SIZE) if args.synthetic else args.size
        steps = SYNTHETIC_STEPS if args.synthetic else args.steps
        if size:
            replacements[("EmptyLatentImage", "width")], replacements[("EmptyLatentImage", "height")] = size
        if steps:
            replacements[("KSampler", "steps")] = steps
        if args.seed is not None:
            replacements[("KSampler", "seed")] = args.seed
        if args.prompt:
            replacements[("StackedIDApply", "text")] = args.prompt
        prompt = substitute(prompt, replacements)
        ks = next((n["inputs"] for n in prompt.values() if n["class_type"] == "KSampler"), {})
        lat = next((n["inputs"] for n in prompt.values() if n["class_type"] == "EmptyLatentImage"), {})
        text = next((n["inputs"].get("text") for n in prompt.values()
                     if n["class_type"] == "StackedIDApply"), None)
        log.info("workflow: %s", args.workflow.name)
        if isinstance(text, str):
            log.info("prompt: %s", text)
        log.info("%sx%s, %s steps, %s/%s, cfg %s, seed %s", lat.get("width"), lat.get("height"),
                 ks.get("steps"), ks.get("sampler_name"), ks.get("scheduler"), ks.get("cfg"), ks.get("seed"))
        if device == "CPU" and not args.synthetic:
            log.info("note: SDXL on a CPU takes minutes per step at 1024x1024; for a quicker first look try "
                     "--steps 20 --size 768")
        t_run = time.time()
        outputs = run_prompt(prompt)
        saves = [k for k, n in prompt.items() if n["class_type"] == "SaveImage" and k in outputs]
        images = [img for k in saves for img in outputs[k].get("images", [])]
        if not images:
            raise DemoError("the workflow produced no saved image")
        out.parent.mkdir(parents=True, exist_ok=True)
        written = []
        for i, img in enumerate(images):
            src = Path(folder_paths.get_output_directory()) / img.get("subfolder", "") / img["filename"]
            dest = out if i == 0 else out.with_name(f"{out.stem}_{i + 1}{out.suffix}")
            shutil.copyfile(src, dest)
            if args.synthetic:
                label_synthetic(dest)
            written.append(dest)
        log.info("run: %.1f s (engine), %.1f s in all", time.time() - t_run, time.time() - t_start)
        for dest in written:
            log.info("wrote %s%s", dest,
                     "  <- SYNTHETIC random-weight image (plumbing check)" if args.synthetic else "")
        return 0
    except DemoError as e:
        log.error("demo failed: %s", e)
        return 1
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
