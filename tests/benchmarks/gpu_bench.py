#!/usr/bin/env python3
"""GPU benchmark: full-size random-weight SDXL (fp16) + this pack, through ComfyUI's real engine.

Self-contained: needs only torch (CUDA), the host's Python dependencies and a ComfyUI tree
($COMFYUI_PATH, the ComfyUI around this checkout, or the pinned copy in .cache/comfyui/0.3.75).
torchsde and av, which the host imports but Euler sampling never uses, are stubbed when missing.
Nothing is downloaded: UNet, CLIP-L/G, VAE and the PhotoMaker file are generated from seeds.

Configurations (each with its own, identical UNet, so no configuration re-patches another's LoRA):
  without      SDXL text-to-image, no PhotoMaker node
  with_<N>     the same with PhotoMaker (loader + LoRA, encode N ID images, apply), N in --images
Phase 1, cold: for each configuration alone (every model unloaded first), the first image: model
loads, file read, identity encode, LoRA patch, prompt encode; peak VRAM and a per-node breakdown.
Phase 2, warm: the configurations alternate (A B C A B C ...), only the seed changes: what every
further image costs, with clock drift and background noise spread over all of them.
Printed: seconds per image (first, warm), PhotoMaker's share of a warm image and of the first image,
the identity encode alone (N images, CUDA-synchronised), peak VRAM per configuration as torch and
ComfyUI's memory manager report it.

  python tests/benchmarks/gpu_bench.py                      # 1024 px, Euler 50 steps, 1 and 10 images
  python tests/benchmarks/gpu_bench.py --steps 20 --size 768
  python tests/benchmarks/gpu_bench.py --dry-run            # CPU, tiny models: checks the script runs
Set up a Python on an offline GPU machine with tests/benchmarks/gpu_setup.sh.
"""
from __future__ import annotations

import argparse
import asyncio
import gc
import importlib
import json
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))  # support.host (the executor)
sys.path.insert(0, str(REPO / "scripts"))  # synthetic (model configs, file layout), host_stubs
from host_stubs.optional_modules import stub_missing  # noqa: E402  (after the sys.path line above)


# ------------------------------------------------------------------ host

def find_host() -> Path:
    def ok(p: Path) -> bool:
        return (p / "comfy" / "model_management.py").is_file()
    env = os.environ.get("COMFYUI_PATH")
    for cand in ([Path(env)] if env else []) + [REPO.parents[1], REPO / ".cache" / "comfyui" / "0.3.75"]:
        if ok(cand):
            return cand.resolve()
    raise SystemExit("no ComfyUI found: set COMFYUI_PATH or provide .cache/comfyui/0.3.75 (make setup)")


def boot(cpu: bool):
    root = find_host()
    sys.path.insert(0, str(root))
    stubbed = stub_missing()
    import comfy.options

    comfy.options.enable_args_parsing(False)
    from comfy.cli_args import args

    args.cpu = cpu  # before comfy.model_management is imported
    import utils.extra_config  # noqa: F401  (before `nodes`, which puts comfy/ first on sys.path)
    import folder_paths

    scratch = Path(tempfile.mkdtemp(prefix="pm-gpu-bench-"))
    for sub, setter in (("output", folder_paths.set_output_directory),
                        ("temp", folder_paths.set_temp_directory),
                        ("input", folder_paths.set_input_directory)):
        (scratch / sub).mkdir()
        setter(str(scratch / sub))
    import comfy.model_management  # noqa: F401
    import execution  # noqa: F401
    import nodes

    assert asyncio.run(nodes.load_custom_node(str(REPO))), "the host failed to load the pack"
    pack = sys.modules[str(REPO).replace(".", "_x_")]
    return root, scratch, pack, stubbed


# ------------------------------------------------------------------ weights (seeded, on the device)

@torch.no_grad()
def init_(module, seed: int):
    """Seeded in-place init on whatever device the module lives (ComfyUI's ops leave weights empty)."""
    for i, (name, p) in enumerate(module.named_parameters()):
        g = torch.Generator(device=p.device).manual_seed(seed * 100_003 + i)
        if p.ndim == 0:
            continue
        if p.ndim == 1:
            p.zero_()
        else:
            std = 0.02 if "embedding" in name else 1 / math.sqrt(p[0].numel())
            p.normal_(0.0, std, generator=g)
    for m in module.modules():
        if isinstance(m, (torch.nn.GroupNorm, torch.nn.LayerNorm)) and getattr(m, "weight", None) is not None:
            m.weight.fill_(1.0)


def build_unet(tiny: bool, seed: int = 0):
    import comfy.model_management as mm
    import comfy.model_patcher
    import comfy.supported_models
    from synthetic import tiny_sdxl

    dev = mm.get_torch_device()
    cfg = dict(tiny_sdxl.TINY_UNET_CONFIG if tiny else tiny_sdxl.FULL_UNET_CONFIG)
    model_config = (tiny_sdxl.TinySDXL if tiny else comfy.supported_models.SDXL)(cfg)
    dtype = torch.float32 if mm.is_device_cpu(dev) else torch.float16
    model_config.set_inference_dtype(
        dtype, mm.unet_manual_cast(dtype, dev, model_config.supported_inference_dtypes))
    base = model_config.get_model({}, "", device=dev)  # initialised on the device: seconds, not a CPU init
    init_(base.diffusion_model, seed)
    base.to(mm.unet_offload_device())  # where a checkpoint loader leaves it: the manager loads it
    return comfy.model_patcher.ModelPatcher(base, load_device=dev, offload_device=mm.unet_offload_device())


def build_models(tiny: bool):
    import comfy.model_management as mm
    import comfy.sd
    import comfy.sdxl_clip
    import comfy.supported_models_base
    from comfy.ldm.models.autoencoder import AutoencoderKL
    from synthetic import tiny_sdxl

    clip_cls = tiny_sdxl.TinySDXLClipModel if tiny else comfy.sdxl_clip.SDXLClipModel
    clip = comfy.sd.CLIP(comfy.supported_models_base.ClipTarget(comfy.sdxl_clip.SDXLTokenizer, clip_cls),
                         model_options={"initial_device": mm.text_encoder_device()})
    init_(clip.cond_stage_model, 1)

    ddconfig = dict(tiny_sdxl.TINY_VAE_DDCONFIG) if tiny else {
        "double_z": True, "z_channels": 4, "resolution": 256, "in_channels": 3, "out_ch": 3, "ch": 128,
        "ch_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_resolutions": [], "dropout": 0.0}
    params = {"embed_dim": 4, "ddconfig": ddconfig}
    tmp = AutoencoderKL(**params)
    init_(tmp, 2)
    vae = comfy.sd.VAE(sd=tmp.state_dict(), config={"params": params})
    del tmp
    return clip, vae


def write_photomaker_file(folder: Path, version: str, tiny: bool) -> Path:
    """A PhotoMaker file in the released layout (nested .bin: id_encoder + lora_weights)."""
    import torch

    import comfy.model_management as mm
    from synthetic import pm_weights

    dev = mm.get_torch_device()
    geometry = "tiny" if tiny else "full"
    layout = pm_weights.encoder_layout(version, geometry)
    lora_layout = pm_weights.lora_layout(geometry)
    g = torch.Generator(device=dev).manual_seed(5)

    def fill(rows):
        out = {}
        for key, shape, kind in rows:
            t = torch.empty(shape, device=dev)
            if kind == "ln_w":
                t.normal_(1.0, 0.05, generator=g)
            elif kind in ("ln_b", "bias", "embed"):
                t.normal_(0.0, 0.02, generator=g)
            elif kind == "lora_up":
                t.normal_(0.0, 0.1 / math.sqrt(shape[1]), generator=g)
            else:  # linear, conv, lora_down
                t.normal_(0.0, 1 / math.sqrt(math.prod(shape[1:])), generator=g)
            out[key] = t.to("cpu", torch.bfloat16 if len(out) % 2 else torch.float32)  # mixed, as released
        return out
    path = folder / f"bench-{version}-{geometry}.bin"
    torch.save({"id_encoder": fill(layout), "lora_weights": fill(lora_layout)}, str(path))
    return path


# ------------------------------------------------------------------ bench-only nodes

_MODELS: dict = {}


def register_nodes(pack, tiny: bool):
    import torch

    import nodes

    identity_mod = importlib.import_module(f"{pack.__name__}.photomaker_core.identity")
    preprocess = importlib.import_module(f"{pack.__name__}.photomaker_core.preprocess")

    class PMGpuModels:
        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"instance": ("INT", {"default": 0, "min": 0, "max": 16})}}
        RETURN_TYPES = ("MODEL", "CLIP", "VAE")
        FUNCTION = "load"
        CATEGORY = "testing"

        def load(self, instance):
            with torch.inference_mode(False):
                if "shared" not in _MODELS:
                    _MODELS["shared"] = build_models(tiny)
                if instance not in _MODELS:
                    _MODELS[instance] = build_unet(tiny)  # same seed: identical weights
            return (_MODELS[instance], *_MODELS["shared"])

    class PMGpuPhotos:
        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"count": ("INT", {"default": 1, "min": 1, "max": 64})}}
        RETURN_TYPES = ("IMAGE",)
        FUNCTION = "load"
        CATEGORY = "testing"

        def load(self, count):
            g = torch.Generator().manual_seed(count)
            return (torch.rand(count, 512, 512, 3, generator=g),)

    class PMGpuIdentityV2:
        """V2 identity without InsightFace: seeded ArcFace-like embeddings (norm ~25), the real
        encoder forward. Face detection is not part of this benchmark."""
        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"encoder": ("STACKEDID_ENCODER",), "images": ("IMAGE",)}}
        RETURN_TYPES = ("STACKEDID_IDENTITY",)
        FUNCTION = "encode"
        CATEGORY = "testing"

        def encode(self, encoder, images):
            n = images.shape[0]
            arc = torch.randn(n, 512, generator=torch.Generator().manual_seed(7)) * 25
            tokens = encoder.encode_identity(preprocess.clip_preprocess(images), arc)
            return (identity_mod.Identity(tokens=tokens.cpu(), weights=torch.ones(n), version=encoder.version,
                                          arcface=arc, provenance={"encoder_file": encoder.file_name,
                                                                   "encoder_fingerprint": encoder.fingerprint,
                                                                   "image_count": n,
                                                                   "source_indices": list(range(n))}),)

    class PMGpuSink:
        """Output node: the decoded image brought to host memory as uint8 (no PNG encoding)."""
        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"images": ("IMAGE",)}}
        RETURN_TYPES = ()
        FUNCTION = "sink"
        OUTPUT_NODE = True
        CATEGORY = "testing"

        def sink(self, images):
            (images.clamp(0, 1) * 255).to(torch.uint8).cpu().numpy()
            return {"ui": {}}

    for cls in (PMGpuModels, PMGpuPhotos, PMGpuIdentityV2, PMGpuSink):
        nodes.NODE_CLASS_MAPPINGS[cls.__name__] = cls


def graph(pm_file: str | None, version: str, images: int, seed: int, steps: int, size: int, instance: int = 0,
          text: str = "a photo of a man img, portrait, natural light, detailed"):
    g = {"1": {"class_type": "PMGpuModels", "inputs": {"instance": instance}},
         "7": {"class_type": "CLIPTextEncode",
               "inputs": {"clip": ["1", 1], "text": "blurry, lowres, bad anatomy"}},
         "8": {"class_type": "EmptyLatentImage", "inputs": {"width": size, "height": size, "batch_size": 1}},
         "10": {"class_type": "VAEDecode", "inputs": {"samples": ["9", 0], "vae": ["1", 2]}},
         "11": {"class_type": "PMGpuSink", "inputs": {"images": ["10", 0]}}}
    sampler = {"seed": seed, "steps": steps, "cfg": 5.0, "sampler_name": "euler", "scheduler": "normal",
               "denoise": 1.0, "negative": ["7", 0], "latent_image": ["8", 0]}
    if pm_file is None:
        g["6"] = {"class_type": "CLIPTextEncode",
                  "inputs": {"clip": ["1", 1], "text": text.replace(" img", "")}}
        g["9"] = {"class_type": "KSampler", "inputs": {**sampler, "model": ["1", 0], "positive": ["6", 0]}}
        return g
    g["2"] = {"class_type": "StackedIDLoader", "inputs": {"photomaker_file": pm_file, "model": ["1", 0],
                                                          "lora_strength": 1.0}}
    g["3"] = {"class_type": "PMGpuPhotos", "inputs": {"count": images}}
    if version == "v1":
        g["5"] = {"class_type": "StackedIDEncode", "inputs": {"encoder": ["2", 0], "images": ["3", 0],
                                                              "no_face": "error", "face_select": "best score",
                                                              "crop_to_face": False}}
    else:
        g["5"] = {"class_type": "PMGpuIdentityV2", "inputs": {"encoder": ["2", 0], "images": ["3", 0]}}
    g["6"] = {"class_type": "StackedIDApply",
              "inputs": {"clip": ["1", 1], "encoder": ["2", 0], "identity": ["5", 0],
                         "text": text, "trigger_word": "img", "style_strength": 0.2,
                         "identity_strength": 1.0}}
    g["9"] = {"class_type": "KSampler", "inputs": {**sampler, "model": ["2", 1], "positive": ["6", 0]}}
    return g


# ------------------------------------------------------------------ running

class _Server:
    """What PromptExecutor talks to; records when each node starts (for the per-node breakdown)."""

    def __init__(self):
        self.client_id = "gpu-bench"
        self.last_node_id = None
        self.sockets_metadata: dict = {}
        self.starts: list = []

    def send_sync(self, event, data, sid=None):
        if event == "executing" and isinstance(data, dict) and data.get("node") is not None:
            self.starts.append((time.perf_counter(), data["node"]))

    def queue_updated(self):
        pass


def make_runner():
    import execution
    from support.host import make_executor

    server = _Server()
    ex = make_executor(server)
    counter = [0]

    def run(prompt: dict, nodes_out: dict | None = None) -> float:
        """Seconds for one execution; `nodes_out` receives {"<id> <class>": seconds} (host clock between
        node starts: GPU work a node queued may be counted in the next one that synchronises)."""
        counter[0] += 1
        pid = f"gpu-{id(ex)}-{counter[0]}"
        ok, err, outputs, node_errors = asyncio.run(execution.validate_prompt(pid, prompt, None))[:4]
        if not ok:
            raise RuntimeError(f"invalid graph: {err} {node_errors}")
        sync()
        server.starts.clear()
        t0 = time.perf_counter()
        ex.execute(prompt, pid, {"client_id": server.client_id}, outputs)
        sync()
        t1 = time.perf_counter()
        dt = t1 - t0
        if nodes_out is not None:
            marks = server.starts + [(t1, None)]
            for (ta, node), (tb, _) in zip(marks, marks[1:], strict=False):
                nodes_out[f"{node} {prompt[node]['class_type']}"] = round(tb - ta, 3)
        if not ex.success:
            msgs = [m for m in ex.status_messages if m[0] == "execution_error"]
            raise RuntimeError(f"graph failed: {msgs[:1]}")
        return dt
    return run


def sync():
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def vram_reset():
    import torch

    import comfy.model_management as mm

    gc.collect()
    mm.soft_empty_cache()
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()


def vram_stats() -> dict:
    import torch

    import comfy.model_management as mm

    gib = 2 ** 30
    dev = mm.get_torch_device()
    out = {"manager_total_gib": mm.get_total_memory(dev) / gib,
           "manager_free_gib": mm.get_free_memory(dev) / gib,
           "manager_loaded_models_gib": sum(m.model_loaded_memory() for m in mm.current_loaded_models) / gib,
           "manager_loaded_models": [type(m.model.model).__name__ if m.model is not None else None
                                     for m in mm.current_loaded_models]}
    if torch.cuda.is_available():
        out.update(torch_max_allocated_gib=torch.cuda.max_memory_allocated() / gib,
                   torch_max_reserved_gib=torch.cuda.max_memory_reserved() / gib)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--images", default="1,10", help="ID image counts, comma separated")
    ap.add_argument("--repeats", type=int, default=2, help="warm images per configuration")
    ap.add_argument("--version", default="v1", choices=["v1", "v2"])
    ap.add_argument("--dry-run", action="store_true", help="CPU, tiny models, 64 px, 2 steps")
    ap.add_argument("--out", default=os.environ.get("OUT") or str(REPO / "test-artifacts" / "bench"),
                    help="folder for the JSON (default: $OUT if set, else test-artifacts/bench)")
    a = ap.parse_args(argv)
    if a.dry_run:
        a.steps, a.size, a.repeats = min(a.steps, 2), 64, 1
        a.images = ",".join(str(min(int(n), 2)) for n in a.images.split(","))
    t_start = time.perf_counter()
    import torch

    if not a.dry_run and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: use --dry-run for the CPU check")
    root, scratch, pack, stubbed = boot(cpu=a.dry_run)
    import comfy.model_management as mm
    import folder_paths

    register_nodes(pack, tiny=a.dry_run)
    pm_dir = scratch / "photomaker"
    pm_dir.mkdir()
    t0 = time.perf_counter()
    pm_path = write_photomaker_file(pm_dir, a.version, tiny=a.dry_run)
    folder_paths.add_model_folder_path("photomaker", str(pm_dir), is_default=True)
    info = {"device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
            "torch": torch.__version__, "host": str(root), "stubbed_modules": stubbed,
            "vram_state": mm.vram_state.name, "steps": a.steps, "size": a.size, "version": a.version,
            "pm_file_gen_s": round(time.perf_counter() - t0, 2)}
    print(f"[gpu-bench] {info}", flush=True)

    # Build the models and run one short graph first, so that no configuration's first image pays
    # for model construction or CUDA/cuBLAS/cuDNN initialisation.
    import nodes

    counts = [int(n) for n in a.images.split(",")]
    configs = [("without", None, 0)] + [(f"with_{n}", pm_path.name, n) for n in counts]
    t0 = time.perf_counter()
    for i in range(len(configs)):
        nodes.NODE_CLASS_MAPPINGS["PMGpuModels"]().load(i)
    info["models_build_s"] = round(time.perf_counter() - t0, 2)
    info["warmup_s"] = round(
        make_runner()(graph(None, a.version, 0, seed=0, steps=min(2, a.steps), size=a.size)), 2)
    print(f"[gpu-bench] models built in {info['models_build_s']} s, "
          f"warm-up graph {info['warmup_s']} s", flush=True)

    def build(i, seed):
        name, pm_file, n = configs[i]
        return graph(pm_file, a.version, n, seed=seed, steps=a.steps, size=a.size, instance=i)

    # Phase 1: first image of each configuration alone (everything unloaded before it).
    runners, results = {}, {}
    for i, (name, _pm_file, _n) in enumerate(configs):
        runners[name] = make_runner()
        mm.unload_all_models()
        vram_reset()
        per_node = {}
        cold = runners[name](build(i, 0), per_node)
        results[name] = {"cold_s": cold, "cold_nodes_s": per_node, "vram": vram_stats()}
        top = sorted(per_node.items(), key=lambda kv: -kv[1])[:4]
        print(f"[gpu-bench] {name}: first image {cold:.2f} s (slowest nodes: "
              f"{', '.join(f'{k} {v:.2f}s' for k, v in top)}), peak VRAM "
              f"{results[name]['vram'].get('torch_max_allocated_gib', 0):.2f} GiB", flush=True)

    # Phase 2: warm images, configurations alternating; one untimed round reloads every model.
    warm = {name: [] for name, _, _ in configs}
    for r in range(a.repeats + 1):
        for i, (name, _, _) in enumerate(configs):
            dt = runners[name](build(i, 1 + r))
            if r:
                warm[name].append(dt)
    for name in warm:
        results[name]["warm_s"] = warm[name]
        results[name]["warm_median_s"] = statistics.median(warm[name])
        print(f"[gpu-bench] {name}: warm {results[name]['warm_median_s']:.2f} s/image "
              f"({', '.join(f'{t:.2f}' for t in warm[name])})", flush=True)

    # The identity encode alone, on the encoder the graphs loaded (CUDA-synchronised).
    hostmod = importlib.import_module(f"{pack.__name__}.nodes.managed_encoder")
    encoders = list(hostmod._ENCODERS.values())
    encode = {}
    if encoders:
        enc = encoders[0]
        pre = importlib.import_module(f"{pack.__name__}.photomaker_core.preprocess")
        for n in counts:
            px = pre.clip_preprocess(torch.rand(n, 512, 512, 3))
            arc = torch.randn(n, 512) * 25 if a.version == "v2" else None
            enc.encode_identity(px, arc)
            ts = []
            for _ in range(3):
                sync()
                t0 = time.perf_counter()
                enc.encode_identity(px, arc)
                sync()
                ts.append(time.perf_counter() - t0)
            encode[str(n)] = statistics.median(ts)
        info["encoder"] = {"storage": str(enc.dtype),
                           "compute": str(hostmod.compute_dtype(enc.load_device, enc.dtype))}

    base = results["without"]["warm_median_s"]
    rows = []
    for name, r in results.items():
        w = r["warm_median_s"]
        r["pm_share_warm"] = 0.0 if name == "without" else (w - base) / w
        r["pm_share_first_image"] = (0.0 if name == "without"
                                     else (r["cold_s"] - results["without"]["cold_s"]) / r["cold_s"])
        rows.append((name, r["cold_s"], w, r["pm_share_warm"], r["pm_share_first_image"],
                     r["vram"].get("torch_max_allocated_gib", float("nan")),
                     r["vram"].get("torch_max_reserved_gib", float("nan")),
                     r["vram"]["manager_loaded_models_gib"]))
    total = time.perf_counter() - t_start
    out = {"info": info, "results": results, "identity_encode_s": encode, "total_s": total}
    Path(a.out).mkdir(parents=True, exist_ok=True)
    out_file = Path(a.out) / (f"gpu_dry_run_{a.version}.json" if a.dry_run else f"gpu_{a.version}.json")
    out_file.write_text(json.dumps(out, indent=1) + "\n")

    print(f"\nPhotoMaker {a.version.upper()} on {info['device']}, SDXL {a.size}x{a.size}, "
          f"Euler {a.steps} steps, "
          f"fp16 UNet; warm = seed change only")
    print(f"{'config':<10} {'first img s':>11} {'warm s/img':>10} {'PM share':>9} {'PM share 1st':>12} "
          f"{'max alloc GiB':>13} {'max resv GiB':>12} {'loaded GiB':>10}")
    for row in rows:
        print(f"{row[0]:<10} {row[1]:>11.2f} {row[2]:>10.2f} {100 * row[3]:>8.1f}% {100 * row[4]:>11.1f}% "
              f"{row[5]:>13.2f} {row[6]:>12.2f} {row[7]:>10.2f}")
    for name, r in results.items():
        pm = {k.split(" ", 1)[1]: v for k, v in r["cold_nodes_s"].items()
              if k.split(" ", 1)[1].startswith(("StackedID", "PMGpuIdentity"))}
        if pm:
            ks = next((v for k, v in r["cold_nodes_s"].items() if k.endswith(" KSampler")), float("nan"))
            print(f"first image, {name}: " + ", ".join(f"{k} {v:.2f} s" for k, v in pm.items()) +
                  f"; KSampler {ks:.2f} s (includes loading the MODEL and patching the LoRA)")
    if encode:
        print("identity encode alone: "
              + ", ".join(f"{n} image(s) {1000 * s:.0f} ms" for n, s in encode.items()))
    print(f"reference claim: < 10 s per image on an A100 with 10 ID images, ~11 GB. Total {total:.0f} s; "
          f"JSON: {out_file}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
