"""Peak memory (RSS) of loading the ID encoder and encoding N images, one side per subprocess.

Each side runs in a fresh Python process (peak RSS is per process, so sides can't share one): boot
the host, record the baseline, load the encoder through that side's own path, encode N images,
record again. Reported per side (MiB):

* host:       resident set after boot (ComfyUI + this pack imported, nothing loaded)
* load.*:     the same figures right after loading (the weight-copy check), then after + encode
* peak:       getrusage ru_maxrss at the end (the process' peak resident set, all pages)
* peak_anon:  peak of RssAnon sampled every 2 ms over load + encode: memory the process allocated
              itself. The difference to `peak` is mostly file pages of the memory-mapped weight file
              (clean page cache the kernel can drop at any time; not a copy the process holds)
* after:      rss / anon / file after the encode, weights file handles dropped
* encoder:    bytes of the loaded encoder's own tensors (its "own size")
* growth_x:   (peak_anon - host anon) / encoder bytes: 1.0 = the encoder and nothing else; >= 2 means
              a second full copy existed at some point. rss_growth_x: the same with all pages.

Sides: ours (StackedIDLoader node + ManagedEncoder.encode_identity), core (PhotoMakerLoader +
its module), hf (torch.load like the reference + transformers model, fp32).

Usage: python tests/benchmarks/bench_memory.py --version v1 --images 4 [--sides ours,core,hf]
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common as C  # noqa: E402


def _module_bytes(module) -> int:
    seen, total = set(), 0
    for t in list(module.parameters()) + list(module.buffers()):
        if t.data_ptr() in seen:
            continue
        seen.add(t.data_ptr())
        total += t.numel() * t.element_size()
    return total


def child(side: str, version: str, images: int) -> dict:
    import torch

    C.boot()
    path = C.photomaker_file(version)  # generated before the children start (see main)
    import folder_paths

    folder_paths.add_model_folder_path("photomaker", str(path.parent), is_default=True)
    photos = C.synthetic_photos(images)
    arc = torch.randn(images, 512) * 25 if version == "v2" else None
    model = None
    if side == "ours":  # our loader also patches the file's LoRA onto a MODEL (tiny UNet here)
        from synthetic import tiny_sdxl

        model = tiny_sdxl.make_model()
    gc.collect()
    host = C.rss_mib()
    with torch.inference_mode():
        with C.AnonPeak() as load_peak:
            if side == "ours":
                import nodes

                loader = nodes.NODE_CLASS_MAPPINGS["StackedIDLoader"]
                enc, patched = loader.execute(photomaker_file=path.name, model=model,
                                              lora_strength=1.0).result
                pre = C.pack_module("photomaker_core.preprocess")
                module = enc.model
                run = lambda: enc.encode_identity(pre.clip_preprocess(photos), arc)  # noqa: E731
            elif side == "core":
                import comfy.clip_vision
                import nodes

                loader = nodes.NODE_CLASS_MAPPINGS["PhotoMakerLoader"]
                (module,) = loader.execute(photomaker_model_name=path.name).result
                mask = torch.zeros(1, 77, dtype=torch.bool)
                mask[0, 5] = True
                run = lambda: module(  # noqa: E731
                    id_pixel_values=comfy.clip_vision.clip_preprocess(photos).float().unsqueeze(0),
                    prompt_embeds=torch.zeros(1, 77, 2048), class_tokens_mask=mask)
            elif side == "hf":
                import reference_hf as R

                sd = torch.load(path, map_location="cpu", weights_only=True)["id_encoder"]  # as the reference
                module = R.HFReferenceEncoder.from_state_dict(sd, version)
                del sd
                proc = R.processor()
                run = lambda: module.encode_identity(  # noqa: E731
                    proc(images=R.to_pil(photos), return_tensors="pt").pixel_values, arc)
            else:
                raise SystemExit(f"unknown side {side}")
            gc.collect()
        after_load = C.rss_mib()
        peak_after_load = C.peak_rss_mib()
        with C.AnonPeak() as enc_peak:
            run()
    gc.collect()
    after = C.rss_mib()
    enc_bytes = _module_bytes(module) / 2**20
    peak_rss = C.peak_rss_mib()
    return {"side": side, "version": version, "images": images, "host": host, "encoder": enc_bytes,
            "load": {"peak": peak_after_load, "peak_anon": load_peak.peak, "after": after_load,
                     "growth_x": (load_peak.peak - host["anon"]) / enc_bytes,
                     "rss_growth_x": (peak_after_load - host["rss"]) / enc_bytes},
            "peak": peak_rss, "peak_anon": max(load_peak.peak, enc_peak.peak), "after": after,
            "growth_x": (max(load_peak.peak, enc_peak.peak) - host["anon"]) / enc_bytes,
            "rss_growth_x": (peak_rss - host["rss"]) / enc_bytes}


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--version", default="v1", choices=["v1", "v2"])
    ap.add_argument("--images", type=int, default=4)
    ap.add_argument("--sides", default="ours,core,hf")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child:
        print("MEM_RESULT " + json.dumps(child(a.child, a.version, a.images)), flush=True)
        return
    C.photomaker_file(a.version)  # generate once, outside the measured processes
    results = {}
    for side in a.sides.split(","):
        if side == "core" and a.version != "v1":
            continue
        proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", side,
                               "--version", a.version, "--images", str(a.images)],
                              capture_output=True, text=True)
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("MEM_RESULT ")]
        if proc.returncode != 0 or not lines:
            C.log(f"memory side {side} failed (rc {proc.returncode}):\n{proc.stderr[-3000:]}")
            results[side] = {"error": proc.stderr[-500:]}
            continue
        r = json.loads(lines[-1][len("MEM_RESULT "):])
        results[side] = r
        C.log(f"memory {a.version} {side}: host {r['host']['rss']:.0f} MiB (anon {r['host']['anon']:.0f}), "
              f"encoder {r['encoder']:.0f} MiB; load: peak {r['load']['peak']:.0f}, peak anon "
              f"{r['load']['peak_anon']:.0f} -> {r['load']['growth_x']:.2f}x anon, "
              f"{r['load']['rss_growth_x']:.2f}x rss; +encode {a.images}: peak {r['peak']:.0f}, "
              f"peak anon {r['peak_anon']:.0f} -> {r['growth_x']:.2f}x anon, {r['rss_growth_x']:.2f}x rss; "
              f"after: rss {r['after']['rss']:.0f} anon {r['after']['anon']:.0f} "
              f"file {r['after']['file']:.0f}")
    C.emit({"bench": "memory", "version": a.version, "images": a.images, "results": results,
            "load": C.load_note()})


if __name__ == "__main__":
    main()
