"""Identity encode at full size on the CPU: this pack vs ComfyUI core vs a transformers reference.

Sides, all loaded from the same generated full-size PhotoMaker file, timed alternately in this one
process (A B C A B C ...), preprocessing included on every side:

* ours:      photomaker_core.clip_preprocess + ManagedEncoder.encode_identity (what StackedIDEncode
             runs after face detection): one batched forward, storage in the host's text-encoder
             dtype (fp16 on CPU), fp32 compute.
* ours_bf16: the same under the host policy `--bf16-text-enc` (bf16 storage; on a CPU with AMX the
             encoder then computes in bf16). Reported separately: it changes numerics.
* core:      ComfyUI core's PhotoMakerLoader module and PhotoMakerEncode's image path
             (comfy.clip_vision.clip_preprocess + PhotoMakerIDEncoder forward). V1 only. Its node runs
             the tower over every image it is given but uses only the first.
* hf:        transformers CLIPVisionModelWithProjection + CLIPImageProcessor, fp32 (reference_hf.py).

Usage: python tests/benchmarks/bench_encode.py --version v1 --images 1,4,10 --repeats 3
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common as C  # noqa: E402


def build_sides(version: str, wanted: list[str], path):
    import torch

    import comfy.clip_vision
    from comfy.cli_args import args

    hostmod = C.pack_module("nodes.managed_encoder")
    loading = C.pack_module("photomaker_core.loading")
    pre = C.pack_module("photomaker_core.preprocess")
    import reference_hf as R

    weights = loading.read_photomaker_file(path)
    sides, info = {}, {}
    if "ours" in wanted:
        enc = hostmod.ManagedEncoder(weights.encoder, path.name, "bench")
        info["ours"] = {"storage": str(enc.dtype),
                        "compute": str(hostmod.compute_dtype(enc.load_device, enc.dtype))}

        def ours(images, arc):
            return enc.encode_identity(pre.clip_preprocess(images), arc)
        sides["ours"] = ours
    if "ours_bf16" in wanted:
        old = args.bf16_text_enc
        args.bf16_text_enc = True  # the host policy a user selects with --bf16-text-enc
        try:
            enc16 = hostmod.ManagedEncoder(weights.encoder, path.name, "bench")
        finally:
            args.bf16_text_enc = old
        info["ours_bf16"] = {"storage": str(enc16.dtype),
                             "compute": str(hostmod.compute_dtype(enc16.load_device, enc16.dtype))}

        def ours_bf16(images, arc):
            return enc16.encode_identity(pre.clip_preprocess(images), arc)
        sides["ours_bf16"] = ours_bf16
    if "core" in wanted and version == "v1":
        import nodes

        core_loader = nodes.NODE_CLASS_MAPPINGS["PhotoMakerLoader"]
        with torch.inference_mode():
            (core_model,) = core_loader.execute(photomaker_model_name=path.name).result
        info["core"] = {"storage": str(core_model.vision_model.embeddings.patch_embedding.weight.dtype),
                        "compute": "float32"}

        def core(images, arc):
            # PhotoMakerEncode.execute's image path; the prompt rows are a stand-in of the right shape
            # (the fuse of one row is negligible), the text encode is measured in bench_prompt_edit.
            px = comfy.clip_vision.clip_preprocess(images.to(core_model.load_device)).float()
            cond = torch.zeros(1, 77, 2048)
            mask = torch.zeros(1, 77, dtype=torch.bool)
            mask[0, 5] = True
            return core_model(id_pixel_values=px.unsqueeze(0), prompt_embeds=cond, class_tokens_mask=mask)
        sides["core"] = core
    if "hf" in wanted:
        ref = R.HFReferenceEncoder.from_state_dict(weights.encoder, version)
        proc = R.processor()
        info["hf"] = {"storage": "float32", "compute": "float32",
                      "attn_implementation": ref.clip.config._attn_implementation}

        def hf(images, arc):
            px = proc(images=R.to_pil(images), return_tensors="pt").pixel_values
            return ref.encode_identity(px, arc)
        sides["hf"] = hf
    weights.encoder = None
    return sides, info


def check_numerics(sides, images, arc) -> dict:
    """Relative difference of each side's ID tokens against the fp32 transformers reference."""
    import torch

    out = {}
    if "hf" not in sides:
        return out
    with torch.inference_mode():
        ref = sides["hf"](images, arc).float()
        for name in sides:
            if name in ("hf", "core"):
                continue
            got = sides[name](images, arc).float()
            out[name] = {"rel_l2_vs_hf": (torch.linalg.vector_norm(got - ref)
                                          / torch.linalg.vector_norm(ref)).item(),
                         "max_abs_vs_hf": (got - ref).abs().max().item()}
    return out


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--version", default="v1", choices=["v1", "v2"])
    ap.add_argument("--images", default="1,4,10")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--sides", default="ours,ours_bf16,core,hf")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    a = ap.parse_args(argv)
    import torch

    C.boot()
    if a.threads:
        torch.set_num_threads(a.threads)
    path = C.photomaker_file(a.version)
    import folder_paths

    folder_paths.add_model_folder_path("photomaker", str(path.parent), is_default=True)
    sides, info = build_sides(a.version, a.sides.split(","), path)
    counts = [int(n) for n in a.images.split(",")]
    photos = C.synthetic_photos(max(counts))
    # raw ArcFace norm ~25
    arcface = torch.randn(max(counts), 512, generator=torch.Generator().manual_seed(3)) * 25
    numerics = check_numerics(sides, photos[:2], arcface[:2] if a.version == "v2" else None)
    results = {}
    for i, n in enumerate(counts):
        imgs = photos[:n]
        arc = arcface[:n] if a.version == "v2" else None
        cpu = {}
        with torch.inference_mode():
            times = C.alternate({k: (lambda f=f, imgs=imgs, arc=arc: f(imgs, arc)) for k, f in sides.items()},
                                repeats=a.repeats, warmup=1 if i == 0 else 0, cpu=cpu)
        row = {k: {**C.summary(v), "per_image_s": C.summary(v)["median_s"] / n,
                   "cpu_median_s": C.summary(cpu[k])["median_s"]} for k, v in times.items()}
        for k in row:
            for base in ("hf", "core"):
                if base in row and k != base:
                    row[k][f"ratio_vs_{base}"] = C.ratio(row[k]["median_s"], row[base]["median_s"])
                    row[k][f"cpu_ratio_vs_{base}"] = C.ratio(row[k]["cpu_median_s"],
                                                             row[base]["cpu_median_s"])
        results[str(n)] = row
        C.log(f"encode {a.version} n={n}: " + ", ".join(
            f"{k} {v['median_s']:.2f}s ({v['per_image_s']:.2f}s/img, cpu {v['cpu_median_s']:.2f}s)"
            for k, v in row.items()))
    C.emit({"bench": "encode", "version": a.version, "sides": info, "numerics": numerics,
            "results": results, "repeats": a.repeats, "load": C.load_note()})


if __name__ == "__main__":
    main()
