"""Prompt-edit latency through the real engine: the identity stays, the prompt text changes.

Each side is its own graph on its own PromptExecutor (with cache): tiny SDXL UNet/VAE, but the
real-size CLIP-L + CLIP-G text encoders so that text encoding costs what it costs, and the full-size
V1 PhotoMaker file. A repeat edits the prompt of every side (a new, never-seen text) and times the
whole graph run (validation + execution of what the edit invalidated):

* ours_N:  this pack with N ID images: Apply re-encodes the prompt and fuses N rows; the vision
           tower ran once when the graph first ran (identity cached).
* core_N:  core's PhotoMakerEncode with N images: text encode + the vision tower over all N images
           on every edit (it then uses only the first).

Usage: python tests/benchmarks/bench_prompt_edit.py --images 1,4 --repeats 5
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common as C  # noqa: E402
import graphs  # noqa: E402

EDITS = ["smiling", "in the rain", "oil painting", "studio light", "at the beach", "wearing a hat",
         "black and white", "in a forest", "cinematic", "close-up", "laughing", "at night"]


def text_for(side: str, i: int) -> str:
    # The trigger ends the text: core finds its trigger by splitting on spaces ("photomaker," with a
    # comma would not match and core would silently skip the identity).
    edit = f"{EDITS[i % len(EDITS)]}, take {i}"
    return f"{edit}, a photo of a man {'photomaker' if side.startswith('core') else 'img'}"


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", default="1,4")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--two-pass", action="store_true",
                    help="also run ours_1 with the one-pass shortcut disabled (the text-only and ID prompts "
                         "encoded separately although equal: the code before the optimisation)")
    a = ap.parse_args(argv)
    import torch

    path = C.photomaker_file("v1")
    host = graphs.setup(path)
    if a.threads:
        torch.set_num_threads(a.threads)
    counts = [int(n) for n in a.images.split(",")]
    sides, builders = {}, {}
    for i, n in enumerate(counts):
        # Each side its own (identical) UNet instance: two LoRA-patched clones of one UNet would
        # unpatch and re-patch each other's weights at every alternation.
        builders[f"ours_{n}"] = (lambda text, n=n, i=i: graphs.ours_graph(path.name, text, images=n,
                                                                          instance=2 * i, steps=a.steps))
        builders[f"core_{n}"] = (lambda text, n=n, i=i: graphs.core_graph(path.name, text, images=n,
                                                                          instance=2 * i + 1, steps=a.steps))
    if a.two_pass and 1 in counts:
        builders["ours_1_twopass"] = (lambda text: graphs.ours_graph(path.name, text, images=1, instance=8,
                                                                     steps=a.steps))
    conditioning = C.pack_module("nodes.conditioning")
    edit_no = {k: 0 for k in builders}
    for name, build in builders.items():
        run = graphs.runner(host, name)

        def side(name=name, build=build, run=run):
            edit_no[name] += 1
            same = conditioning.same_tokens
            if name.endswith("_twopass"):
                conditioning.same_tokens = lambda a, b: False
            try:
                run(build(text_for(name, edit_no[name])))
            finally:
                conditioning.same_tokens = same
        sides[name] = side
        run(build(text_for(name, 0)))  # first run: loads, encodes the identity; not timed
    cpu = {}
    times = C.alternate(sides, repeats=a.repeats, warmup=1, cpu=cpu)
    row = {k: {**C.summary(v), "cpu_median_s": C.summary(cpu[k])["median_s"]} for k, v in times.items()}
    for n in counts:
        o, c = row[f"ours_{n}"], row[f"core_{n}"]
        o["ratio_vs_core"] = C.ratio(o["median_s"], c["median_s"])
        o["cpu_ratio_vs_core"] = C.ratio(o["cpu_median_s"], c["cpu_median_s"])
        C.log(f"prompt edit, {n} image(s): ours {o['median_s']:.2f}s vs core {c['median_s']:.2f}s "
              f"-> {o['ratio_vs_core']:.2f}x (cpu {o['cpu_ratio_vs_core']:.2f}x)")
    if "ours_1_twopass" in row:
        t, o = row["ours_1_twopass"], row["ours_1"]
        t["ratio_vs_core"] = C.ratio(t["median_s"], row["core_1"]["median_s"])
        C.log(f"prompt edit, 1 image, one pass vs two passes: {o['median_s']:.2f}s vs {t['median_s']:.2f}s "
              f"(cpu {o['cpu_median_s']:.2f}s vs {t['cpu_median_s']:.2f}s)")
    C.emit({"bench": "prompt_edit", "results": row, "repeats": a.repeats, "steps": a.steps,
            "load": C.load_note()})


if __name__ == "__main__":
    main()
