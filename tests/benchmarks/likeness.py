#!/usr/bin/env python3
"""Likeness benchmark: Face Sim. (the PhotoMaker paper's metric, the pack's scorer) per person and
method, over the same prompts and seeds, through ComfyUI's real engine.

Methods, each on the same seeds:
  v1, v2                    plain PhotoMaker Apply -> KSampler -> VAE Decode
  v1+detailer, v2+detailer  the same image, then PhotoMaker Face Detailer (same prompt + identity)
  photos (leave-one-out)    each ID photo against the mean of the person's other photos: how alike
                            the person's own photos are (a ceiling for the rest; needs 2+ photos)
Face Sim. of an image: ArcFace cosine of its highest-score face against the mean of the person's
normalised photo embeddings (photomaker_core/similarity.py). Images without a face are counted
("no face") and left out of mean and spread.

Input: --people DIR with one sub-folder per person holding a few photos (jpg/png/webp), and a
prompt list (--prompts FILE, one prompt per line, the class word followed by the trigger word
"img", e.g. "a photo of a woman img in a park"; default: four built-in prompts with "person img").
Models by the names in your ComfyUI models folders (COMFYUI_PATH=/path/to/ComfyUI):
--checkpoint (SDXL), --v1 / --v2 (PhotoMaker files), --insightface (the buffalo_l pack name).
Output (--out): likeness.json (every score), likeness.html (summary table and a contact sheet with
the images embedded), and the table on stdout.

  COMFYUI_PATH=~/ComfyUI python tests/benchmarks/likeness.py --people ~/people --seeds 4
  python tests/benchmarks/likeness.py --tiny --cpu     # tiny random models: plumbing only
"""
from __future__ import annotations

import argparse
import base64
import html
import importlib
import io
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gpu_bench as gb  # host boot, runner (after the sys.path line above)

REPO = gb.REPO
DEFAULT_PROMPTS = ["a photo of a person img, portrait, natural light",
                   "a photo of a person img as an astronaut, full body, on the moon",
                   "a photo of a person img reading in a cafe, film grain",
                   "a watercolor painting of a person img, smiling"]
NEGATIVE = ("nsfw, lowres, bad anatomy, bad hands, text, error, missing fingers, extra digit, fewer digits, "
            "cropped, worst quality, low quality, normal quality, jpeg artifacts, signature, watermark, "
            "username, blurry")
PHOTO_EXTS = {".png", ".jpg", ".jpeg", ".webp"}
PHOTO_SIZE = 512  # ID photos are centre-cropped square and resized to this (the CLIP branch crops anyway)
LOO = "photos (leave-one-out)"
_CAPTURED: dict = {}


# ------------------------------------------------------------------ inputs

def read_people(folder: Path) -> dict[str, list[Path]]:
    people = {}
    for sub in sorted(p for p in Path(folder).iterdir() if p.is_dir()):
        photos = sorted(p for p in sub.iterdir() if p.suffix.lower() in PHOTO_EXTS)
        if photos:
            people[sub.name] = photos
    if not people:
        raise SystemExit(f"no people in {folder}: expected one sub-folder per person with .jpg/.png photos")
    return people


def read_prompts(path: str | None) -> list[str]:
    if not path:
        return list(DEFAULT_PROMPTS)
    prompts = [ln.strip() for ln in Path(path).read_text().splitlines()
               if ln.strip() and not ln.startswith("#")]
    bad = [p for p in prompts if " img" not in p]
    if bad:
        raise SystemExit("prompts need the trigger word after the class word "
                         f"(e.g. 'a woman img'): {bad[:3]}")
    return prompts


def load_photos(paths):
    """[N, S, S, 3] float in 0..1: each photo centre-cropped square, resized to PHOTO_SIZE."""
    import numpy as np
    import torch
    from PIL import Image, ImageOps

    out = []
    for p in paths:
        with Image.open(p) as im:
            im = ImageOps.exif_transpose(im).convert("RGB")
            side = min(im.size)
            left, top = (im.width - side) // 2, (im.height - side) // 2
            im = im.crop((left, top, left + side, top + side)).resize((PHOTO_SIZE, PHOTO_SIZE), Image.BICUBIC)
            out.append(torch.from_numpy(np.asarray(im, dtype=np.float32) / 255.0))
    return torch.stack(out)


def write_tiny_inputs(root: Path) -> tuple[Path, dict]:
    """Tiny stand-ins: two synthetic people (the fake detector's colour is the identity), tiny
    PhotoMaker V1/V2 files and the fake InsightFace pack, registered with the host's folders."""
    import folder_paths
    from support.tiny_models import write_tiny_models
    from synthetic import fake_insightface as fi

    people = root / "people"
    for name, colour in (("red", fi.RED), ("green", fi.GREEN)):
        (people / name).mkdir(parents=True)
        for k, box in enumerate(((200, 120, 328, 248), (150, 100, 342, 292))):
            fi.save_png(fi.synthetic_face(h=512, w=512, box=box, color=colour), people / name / f"{k}.png")
    pm_dir = write_tiny_models(root)["pm_dir"]
    folder_paths.add_model_folder_path("photomaker", str(pm_dir), is_default=True)
    folder_paths.add_model_folder_path("insightface", str(root / "insightface"), is_default=True)
    return people, {"v1": "tiny-v1.bin", "v2": "tiny-v2.safetensors", "insightface": "buffalo_l"}


# ------------------------------------------------------------------ graph

def register_nodes():
    import nodes

    class PMLikenessPhotos:
        """The person's photos as one IMAGE batch (a bench-only loader)."""
        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"person": ("STRING", {"default": ""})}}
        RETURN_TYPES = ("IMAGE",)
        FUNCTION = "load"
        CATEGORY = "testing"

        def load(self, person):
            return (_CAPTURED["photos"][person],)

    class PMLikenessSink:
        """Keeps the images under a tag (no PNG round trip)."""
        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"images": ("IMAGE",), "tag": ("STRING", {"default": ""})}}
        RETURN_TYPES = ()
        FUNCTION = "sink"
        OUTPUT_NODE = True
        CATEGORY = "testing"

        def sink(self, images, tag):
            _CAPTURED.setdefault("images", {})[tag] = images.detach().float().cpu().clone()
            return {"ui": {}}

    for cls in (PMLikenessPhotos, PMLikenessSink):
        nodes.NODE_CLASS_MAPPINGS[cls.__name__] = cls


def graph(a, models: dict, version: str, person: str, prompt: str, seed: int, tag: str) -> dict:
    """Checkpoint -> PhotoMaker (version) -> Apply -> KSampler -> decode -> sink "<tag>|plain";
    decode -> Face Detailer -> sink "<tag>|detailer"."""
    loader = ({"class_type": "TinySDXLLoader", "inputs": {"seed": 0}} if a.tiny else
              {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": a.checkpoint}})
    return {
        "1": loader,
        "2": {"class_type": "StackedIDLoader",
              "inputs": {"photomaker_file": models[version], "model": ["1", 0], "lora_strength": 1.0}},
        "3": {"class_type": "StackedIDFaceAnalysisLoader",
              "inputs": {"model_pack": models["insightface"], "provider": a.provider, "det_size": 640}},
        "4": {"class_type": "PMLikenessPhotos", "inputs": {"person": person}},
        "5": {"class_type": "StackedIDEncode",
              "inputs": {"encoder": ["2", 0], "images": ["4", 0],
                         "face_analysis": ["3", 0], "no_face": "skip",
                         "face_select": "best score", "crop_to_face": False}},
        "6": {"class_type": "StackedIDApply",
              "inputs": {"clip": ["1", 1], "encoder": ["2", 0], "identity": ["5", 0],
                         "text": prompt, "trigger_word": "img",
                         "style_strength": a.style_strength, "identity_strength": 1.0}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": NEGATIVE}},
        "8": {"class_type": "EmptyLatentImage",
              "inputs": {"width": a.size, "height": a.size, "batch_size": 1}},
        "9": {"class_type": "KSampler",
              "inputs": {"model": ["2", 1], "positive": ["6", 0], "negative": ["7", 0],
                         "latent_image": ["8", 0], "seed": seed, "steps": a.steps,
                         "cfg": 5.0, "sampler_name": "euler", "scheduler": "normal",
                         "denoise": 1.0}},
        "10": {"class_type": "VAEDecode", "inputs": {"samples": ["9", 0], "vae": ["1", 2]}},
        "11": {"class_type": "PMLikenessSink", "inputs": {"images": ["10", 0], "tag": f"{tag}|plain"}},
        "12": {"class_type": "StackedIDFaceDetailer", "inputs": {
            "images": ["10", 0], "model": ["2", 1], "vae": ["1", 2], "face_analysis": ["3", 0],
            "negative": ["7", 0], "positive_1": ["6", 0], "identity_1": ["5", 0], "seed": seed,
            "steps": a.detailer_steps, "cfg": 5.0,
            "sampler_name": "euler", "scheduler": "normal", "denoise": a.denoise, "crop_padding": 0.5,
            "working_size": a.working_size, "min_face_size": a.min_face, "match_threshold": a.threshold,
            "feather": 16}},
        "13": {"class_type": "PMLikenessSink", "inputs": {"images": ["12", 0], "tag": f"{tag}|detailer"}},
    }


# ------------------------------------------------------------------ scoring and reporting

def summarise(scores: dict) -> dict:
    """{person: {method: [score | None]}} -> {person: {method: stats}} plus "all" per method."""
    def stats(values):
        found = [v for v in values if v is not None]
        return {"n": len(values), "no_face": len(values) - len(found),
                "mean": statistics.fmean(found) if found else None,
                "std": statistics.stdev(found) if len(found) > 1 else (0.0 if found else None)}

    out = {p: {m: stats(v) for m, v in methods.items()} for p, methods in scores.items()}
    every: dict = {}
    for methods in scores.values():
        for m, v in methods.items():
            every.setdefault(m, []).extend(v)
    out["all"] = {m: stats(v) for m, v in every.items()}
    return out


def fmt(s: dict) -> str:
    if s["mean"] is None:
        return f"no face ({s['n']})"
    extra = f", {s['no_face']} no face" if s["no_face"] else ""
    return f"{s['mean']:.3f} ± {s['std']:.3f} (n={s['n'] - s['no_face']}{extra})"


def table(summary: dict, methods: list[str]) -> str:
    width = max(len(p) for p in summary) + 2
    lines = [f"{'person':<{width}}" + "".join(f"{m:>34}" for m in methods)]
    for person, row in summary.items():
        lines.append(f"{person:<{width}}"
                     + "".join(f"{fmt(row[m]) if m in row else '-':>34}" for m in methods))
    return "\n".join(lines)


def png_data_uri(image, size: int = 192) -> str:
    import numpy as np
    from PIL import Image

    arr = (image[..., :3].clamp(0, 1).numpy() * 255).round().astype(np.uint8)
    im = Image.fromarray(arr)
    im.thumbnail((size, size))
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def contact_sheet(summary: dict, methods: list[str], cells: list[dict], photos: dict, meta: dict) -> str:
    """A self-contained HTML page: the summary table, then per person the ID photos and one row per
    (prompt, seed) with each method's image and score."""
    def score(s):
        return "no face" if s is None else f"{s:.3f}"

    h = ["<!doctype html><meta charset='utf-8'><title>PhotoMaker likeness</title>",
         ("<style>body{font:14px sans-serif;background:#181818;color:#ddd}"
          "td,th{padding:4px;vertical-align:top}"
          "img{display:block}table{border-collapse:collapse}th{text-align:left}</style>"),
         "<h1>PhotoMaker likeness: Face Sim. per person and method</h1>"
         f"<p>{html.escape(json.dumps(meta))}</p>",
         "<table border=1><tr><th>person</th>"
         + "".join(f"<th>{html.escape(m)}</th>" for m in methods) + "</tr>"]
    for person, row in summary.items():
        h.append(f"<tr><td>{html.escape(person)}</td>" +
                 "".join(f"<td>{html.escape(fmt(row[m])) if m in row else '-'}</td>" for m in methods)
                 + "</tr>")
    h.append("</table>")
    gen_methods = [m for m in methods if m != LOO]
    for person, own in photos.items():
        h.append(f"<h2>{html.escape(person)}</h2><div style='display:flex;gap:4px'>" +
                 "".join(f"<img src='{png_data_uri(p, 128)}'>" for p in own) + "</div>")
        h.append("<table><tr><th>prompt / seed</th>"
                 + "".join(f"<th>{html.escape(m)}</th>" for m in gen_methods) + "</tr>")
        for c in (c for c in cells if c["person"] == person):
            h.append(f"<tr><td>{html.escape(c['prompt'])}<br>seed {c['seed']}</td>" + "".join(
                f"<td><img src='{png_data_uri(c['images'][m])}'>{score(c['scores'][m])}</td>"
                if m in c["images"] else "<td>-</td>" for m in gen_methods) + "</tr>")
        h.append("</table>")
    return "\n".join(h)


def leave_one_out(analyzer, photos, fp, similarity) -> list:
    """Each photo's best face against the mean of the other photos' faces."""
    rows = [f.embedding if f is not None else None for f in fp.best_faces(analyzer, photos)]
    out = []
    for i, row in enumerate(rows):
        others = [r for j, r in enumerate(rows) if j != i and r is not None]
        out.append(None if row is None or not others else
                   similarity.cosine(row, similarity.reference_embedding(others)))
    return out


# ------------------------------------------------------------------ main

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--people", help="folder with one sub-folder of photos per person")
    ap.add_argument("--prompts", help="text file, one prompt per line (default: built-in four)")
    ap.add_argument("--seeds", type=int, default=4, help="seeds 0..N-1 per prompt")
    ap.add_argument("--versions", default="v1,v2")
    ap.add_argument("--checkpoint", default="sd_xl_base_1.0.safetensors")
    ap.add_argument("--v1", default="photomaker-v1.bin")
    ap.add_argument("--v2", default="photomaker-v2.bin")
    ap.add_argument("--insightface", default="buffalo_l")
    ap.add_argument("--provider", default="auto")
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--style-strength", type=float, default=0.2)
    ap.add_argument("--detailer-steps", type=int, default=30)
    ap.add_argument("--denoise", type=float, default=0.45, help="detailer denoise")
    ap.add_argument("--working-size", type=int, default=1024, help="detailer working size")
    ap.add_argument("--min-face", type=int, default=32)
    ap.add_argument("--threshold", type=float, default=-1.0,
                    help="detailer match threshold (one person per image: -1, every face)")
    ap.add_argument("--cpu", action="store_true")
    ap.add_argument("--tiny", action="store_true", help="synthetic people, tiny random models: plumbing only")
    ap.add_argument("--out", default=os.environ.get("OUT") or str(REPO / "test-artifacts" / "likeness"))
    a = ap.parse_args(argv)
    if a.tiny:
        a.size, a.steps, a.detailer_steps, a.working_size, a.min_face = 64, 2, 2, 64, 8
        a.seeds = min(a.seeds, 2)
    t0 = time.perf_counter()
    _root, scratch, pack, _stubbed = gb.boot(cpu=a.cpu)
    import asyncio

    import torch

    import nodes

    if a.tiny:
        assert asyncio.run(nodes.load_custom_node(str(REPO / "tests" / "support" / "tiny_pack")))
        people_dir, models = write_tiny_inputs(scratch)
        a.provider = "CPU"
    else:
        if not a.people:
            raise SystemExit("--people DIR is required (or --tiny)")
        people_dir, models = Path(a.people), {"v1": a.v1, "v2": a.v2, "insightface": a.insightface}
    register_nodes()
    fp = importlib.import_module(f"{pack.__name__}.photomaker_core.face_pipeline")
    similarity = importlib.import_module(f"{pack.__name__}.photomaker_core.similarity")
    analyzer = nodes.NODE_CLASS_MAPPINGS["StackedIDFaceAnalysisLoader"].execute(
        model_pack=models["insightface"], provider=a.provider, det_size=640).result[0]

    people = read_people(people_dir)
    prompts = read_prompts(None if a.tiny else a.prompts)[: 2 if a.tiny else None]
    versions = [v.strip() for v in a.versions.split(",") if v.strip()]
    methods = [LOO] + [m for v in versions for m in (v, f"{v}+detailer")]
    _CAPTURED["photos"] = {p: load_photos(paths) for p, paths in people.items()}
    run = gb.make_runner()
    scores: dict = {}
    cells: list = []
    with torch.inference_mode():
        for person, photos in _CAPTURED["photos"].items():
            rows, _missing = fp.reference_rows(analyzer, photos)
            if rows is None:
                print(f"[likeness] {person}: no face in any photo, skipped", flush=True)
                continue
            ref = similarity.reference_embedding(rows)
            scores[person] = {LOO: leave_one_out(analyzer, photos, fp, similarity)}
            for prompt in prompts:
                for seed in range(a.seeds):
                    cell = {"person": person, "prompt": prompt, "seed": seed, "images": {}, "scores": {}}
                    for v in versions:
                        tag = f"{person}|{v}|{seed}|{prompt}"
                        run(graph(a, models, v, person, prompt, seed, tag))
                        for kind, method in (("plain", v), ("detailer", f"{v}+detailer")):
                            image = _CAPTURED["images"].pop(f"{tag}|{kind}")[0]
                            face = fp.best_faces(analyzer, image[None])[0]
                            s = None if face is None else similarity.cosine(face.embedding, ref)
                            cell["images"][method], cell["scores"][method] = image, s
                            scores[person].setdefault(method, []).append(s)
                    cells.append(cell)
                    print(f"[likeness] {person} seed {seed} '{prompt[:40]}': " + ", ".join(
                        f"{m} {'no face' if s is None else f'{s:.3f}'}" for m, s in cell["scores"].items()),
                        flush=True)

    summary = summarise(scores)
    meta = {"tiny": a.tiny, "size": a.size, "steps": a.steps, "seeds": a.seeds, "prompts": len(prompts),
            "detailer": {"steps": a.detailer_steps, "denoise": a.denoise, "working_size": a.working_size},
            "models": models, "seconds": round(time.perf_counter() - t0, 1)}
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "likeness.json").write_text(
        json.dumps({"meta": meta, "summary": summary, "scores": scores}, indent=1))
    (out / "likeness.html").write_text(contact_sheet(summary, methods, cells,
                                                     {p: _CAPTURED["photos"][p] for p in scores}, meta))
    print("\nFace Sim. (mean ± spread over prompts x seeds; "
          "ArcFace cosine vs the mean of the person's photos)"
          + ("\nTINY RANDOM MODELS: the numbers are meaningless, only the plumbing is checked"
             if a.tiny else ""))
    print(table(summary, methods))
    print(f"\n{out / 'likeness.json'}\n{out / 'likeness.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
