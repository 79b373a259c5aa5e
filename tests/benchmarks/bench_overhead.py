"""End-to-end overhead of the PhotoMaker nodes on a warm tiny-SDXL graph.

Two graphs, each on its own PromptExecutor (with cache) and its own identical tiny UNet:
* with:    loader (encoder + LoRA'd MODEL) -> encode identity -> apply -> KSampler -> VAE -> preview
* without: CLIPTextEncode -> KSampler -> VAE -> preview (same UNet weights, same prompt minus trigger)
Both run once to warm up; then each repeat changes only the sampler seed, so what re-runs is what a
user pays per image once the identity and prompt are cached: sampling with the LoRA-patched MODEL
and the two-range conditioning, decode, preview.

Usage: python tests/benchmarks/bench_overhead.py --repeats 7 --steps 10 --size 64
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common as C  # noqa: E402
import graphs  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--images", type=int, default=4)
    ap.add_argument("--clip", default="tiny", choices=["tiny", "full"])
    ap.add_argument("--threads", type=int, default=0)
    a = ap.parse_args(argv)
    import torch

    path = C.photomaker_file("v1")
    host = graphs.setup(path)
    if a.threads:
        torch.set_num_threads(a.threads)
    text = "a photo of a man img, portrait, natural light"
    plain_text = "a photo of a man, portrait, natural light"
    seeds = {"with": 0, "without": 0}
    builders = {
        "with": lambda seed: graphs.ours_graph(path.name, text, images=a.images, instance=4, clip_size=a.clip,
                                               seed=seed, steps=a.steps, size=a.size),
        "without": lambda seed: graphs.plain_graph(plain_text, instance=5, clip_size=a.clip, seed=seed,
                                                   steps=a.steps, size=a.size),
    }
    sides = {}
    for name, build in builders.items():
        run = graphs.runner(host, name)

        def side(name=name, build=build, run=run):
            seeds[name] += 1
            run(build(seeds[name]))
        sides[name] = side
        run(build(0))  # cold run: loads, encodes identity and prompt
    cpu = {}
    times = C.alternate(sides, repeats=a.repeats, warmup=1, cpu=cpu)
    row = {k: {**C.summary(v), "cpu_median_s": C.summary(cpu[k])["median_s"]} for k, v in times.items()}
    w, wo = row["with"], row["without"]
    overhead = C.ratio(w["median_s"], wo["median_s"]) - 1
    cpu_overhead = C.ratio(w["cpu_median_s"], wo["cpu_median_s"]) - 1
    C.log(f"end-to-end warm: with PhotoMaker {w['median_s']:.3f}s, without {wo['median_s']:.3f}s -> "
          f"overhead {100 * overhead:+.1f}% (cpu {100 * cpu_overhead:+.1f}%)")
    C.emit({"bench": "overhead", "results": row, "overhead": overhead, "cpu_overhead": cpu_overhead,
            "steps": a.steps, "size": a.size, "images": a.images, "clip": a.clip, "repeats": a.repeats,
            "load": C.load_note()})


if __name__ == "__main__":
    main()
