#!/usr/bin/env python3
"""GPU timing of PhotoMaker Face Detailer: seconds per face at the SDXL working size (1024 px),
full-size random-weight SDXL (fp16 on CUDA), through ComfyUI's real engine.

Reuses tests/benchmarks/gpu_bench.py (host boot, seeded UNet/CLIP/VAE, PhotoMaker file, the
bench-only loader and V2 identity nodes) and adds two stand-ins so that nothing is downloaded:
  PMGpuScene        a noise image of --image px with N face boxes of --face px laid out in a row
  PMGpuPlacedFaces  a face-analysis stand-in that "detects" exactly those boxes, each with the
                    identity's ArcFace row as embedding (so every face matches). Detection itself
                    (milliseconds of ONNX) is not what is timed here.
For each face count the graph runs once cold (models load) and --repeats times warm (only the
detailer's seed changes, so only the detailer runs). Printed: detailer seconds per run, per face,
and the marginal cost of one more face; peak VRAM. JSON into --out.

  python tests/benchmarks/gpu_detailer.py                    # CUDA: 1024 px crops, 20 steps, 1/2/4 faces
  python tests/benchmarks/gpu_detailer.py --cpu --tiny       # CPU smoke check with the tiny models
Set up a Python on an offline GPU machine with tests/benchmarks/gpu_setup.sh.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gpu_bench as gb  # boot, models, runner, VRAM helpers (after the sys.path line above)

REPO = gb.REPO


def face_boxes(count: int, image: int, face: int) -> list[tuple[int, int, int, int]]:
    """`count` square boxes of `face` px spread evenly along the image's middle row."""
    step = image / count
    return [(int(step * i + (step - face) / 2), (image - face) // 2,
             int(step * i + (step - face) / 2) + face, (image - face) // 2 + face) for i in range(count)]


def register_nodes(pack):
    import numpy as np
    import torch

    import nodes

    faces_mod = importlib.import_module(f"{pack.__name__}.photomaker_core.faces")

    class PMGpuScene:
        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"size": ("INT", {"default": 1024, "min": 64, "max": 8192})}}
        RETURN_TYPES = ("IMAGE",)
        FUNCTION = "load"
        CATEGORY = "testing"

        def load(self, size):
            return (torch.rand(1, size, size, 3, generator=torch.Generator().manual_seed(size)),)

    class PlacedFaces:
        """detect_all() answers the given boxes, each embedded as `embedding`."""

        def __init__(self, boxes, embedding):
            self.boxes, self.embedding = boxes, np.asarray(embedding, dtype=np.float32)

        def detect_all(self, image_rgb_uint8):
            return [faces_mod.Face(bbox=np.asarray(b, np.float32), kps=np.zeros((5, 2), np.float32),
                                   det_score=0.9, embedding=self.embedding, det_size=640)
                    for b in self.boxes]

    class PMGpuPlacedFaces:
        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"identity": ("STACKEDID_IDENTITY",),
                                 "count": ("INT", {"default": 1, "min": 1}),
                                 "image": ("INT", {"default": 1024}), "face": ("INT", {"default": 128})}}
        RETURN_TYPES = ("STACKEDID_FACE_ANALYSIS",)
        FUNCTION = "load"
        CATEGORY = "testing"

        def load(self, identity, count, image, face):
            return (PlacedFaces(face_boxes(count, image, face), identity.arcface[0].numpy()),)

    for cls in (PMGpuScene, PMGpuPlacedFaces):
        nodes.NODE_CLASS_MAPPINGS[cls.__name__] = cls


def graph(pm_file: str, faces: int, a, seed: int) -> dict:
    g = gb.graph(pm_file, "v2", 1, seed=0, steps=a.steps, size=64)
    for unused in ("8", "9", "10"):  # no text-to-image: the detailer works on the scene
        g.pop(unused)
    g["20"] = {"class_type": "PMGpuScene", "inputs": {"size": a.image}}
    g["21"] = {"class_type": "PMGpuPlacedFaces", "inputs": {"identity": ["5", 0], "count": faces,
                                                            "image": a.image, "face": a.face}}
    g["22"] = {"class_type": "StackedIDFaceDetailer", "inputs": {
        "images": ["20", 0], "model": ["2", 1], "vae": ["1", 2], "face_analysis": ["21", 0],
        "negative": ["7", 0],
        "positive_1": ["6", 0], "identity_1": ["5", 0], "seed": seed, "steps": a.steps, "cfg": 5.0,
        "sampler_name": "euler", "scheduler": "normal", "denoise": a.denoise, "crop_padding": 0.5,
        "working_size": a.size, "min_face_size": 8, "match_threshold": 0.3, "feather": 16}}
    g["11"]["inputs"]["images"] = ["22", 0]
    return g


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=1024, help="detailer working size (px)")
    ap.add_argument("--image", type=int, default=1536, help="scene size (px)")
    ap.add_argument("--face", type=int, default=128, help="face box size in the scene (px)")
    ap.add_argument("--faces", default="1,2,4", help="face counts, comma separated")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--denoise", type=float, default=0.45)
    ap.add_argument("--repeats", type=int, default=2, help="warm runs per face count")
    ap.add_argument("--cpu", action="store_true", help="run on the CPU")
    ap.add_argument("--tiny", action="store_true", help="tiny models, 64 px crops, 256 px scene, 2 steps")
    ap.add_argument("--out", default=os.environ.get("OUT") or str(REPO / "test-artifacts" / "bench"))
    a = ap.parse_args(argv)
    if a.tiny:
        a.size, a.image, a.face, a.steps, a.repeats = 64, 256, 48, min(a.steps, 2), 1
    t_start = time.perf_counter()
    import torch

    if not a.cpu and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: use --cpu (with --tiny for the smoke check)")
    root, scratch, pack, stubbed = gb.boot(cpu=a.cpu)
    import comfy.model_management as mm
    import folder_paths

    gb.register_nodes(pack, tiny=a.tiny)
    register_nodes(pack)
    pm_dir = scratch / "photomaker"
    pm_dir.mkdir()
    pm_path = gb.write_photomaker_file(pm_dir, "v2", tiny=a.tiny)
    folder_paths.add_model_folder_path("photomaker", str(pm_dir), is_default=True)
    info = {"device": torch.cuda.get_device_name() if torch.cuda.is_available() and not a.cpu else "cpu",
            "torch": torch.__version__, "host": str(root), "stubbed_modules": stubbed, "tiny": a.tiny,
            "working_size": a.size, "scene": a.image, "face": a.face, "steps": a.steps, "denoise": a.denoise}
    print(f"[gpu-detailer] {info}", flush=True)

    results = {}
    for faces in [int(n) for n in a.faces.split(",")]:
        run = gb.make_runner()
        mm.unload_all_models()
        gb.vram_reset()
        cold_nodes: dict = {}
        run(graph(pm_path.name, faces, a, seed=0), cold_nodes)
        cold = next(v for k, v in cold_nodes.items() if k.endswith("StackedIDFaceDetailer"))
        warm = []
        for r in range(a.repeats):
            per_node: dict = {}
            run(graph(pm_path.name, faces, a, seed=1 + r), per_node)
            warm.append(next(v for k, v in per_node.items() if k.endswith("StackedIDFaceDetailer")))
        med = statistics.median(warm)
        results[faces] = {"cold_s": cold, "warm_s": warm, "warm_median_s": med, "per_face_s": med / faces,
                          "vram": gb.vram_stats()}
        print(f"[gpu-detailer] {faces} face(s): first run {cold:.2f} s, warm {med:.2f} s "
              f"({med / faces:.2f} s/face)", flush=True)

    counts = sorted(results)
    marginal = None
    if len(counts) > 1:
        lo, hi = counts[0], counts[-1]
        marginal = (results[hi]["warm_median_s"] - results[lo]["warm_median_s"]) / (hi - lo)
    total = time.perf_counter() - t_start
    out = {"info": info, "results": results, "marginal_s_per_face": marginal, "total_s": total}
    Path(a.out).mkdir(parents=True, exist_ok=True)
    out_file = Path(a.out) / ("gpu_detailer_tiny.json" if a.tiny else "gpu_detailer.json")
    out_file.write_text(json.dumps(out, indent=1) + "\n")

    print(f"\nFace Detailer on {info['device']}: crops at {a.size}x{a.size}, Euler {a.steps} steps, denoise "
          f"{a.denoise}, scene {a.image} px with {a.face} px faces" + (" (TINY models: timings meaningless)"
                                                                       if a.tiny else ""))
    print(f"{'faces':>5} {'first s':>8} {'warm s':>7} {'s/face':>7} {'max alloc GiB':>13}")
    for n in counts:
        r = results[n]
        print(f"{n:>5} {r['cold_s']:>8.2f} {r['warm_median_s']:>7.2f} {r['per_face_s']:>7.2f} "
              f"{r['vram'].get('torch_max_allocated_gib', float('nan')):>13.2f}")
    if marginal is not None:
        print(f"one more face costs {marginal:.2f} s (warm)")
    print(f"Total {total:.0f} s; JSON: {out_file}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
