"""Long runs for the reliability and stress suites (test-only): a seeded stream of changing
prompts (prompt text, seeds, style strength, PhotoMaker version, photos, one or two identities,
stacked identities, saved identities) run through the real server over HTTP or through the real
engine in-process, with resident memory and the host's loaded-model list watched.

Prompts use the tiny models of support.graphs.graph(): tiny-v1.bin / tiny-v2.safetensors in
models/photomaker, the fake buffalo_l pack, face_red.png / face_green.png / face_red2.png in the
input folder and `IDENTITY_FILES` in models/photomaker_identities (write_identity_files).
"""
from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

FACES = ("face_red.png", "face_green.png", "face_red2.png")
CLASS_WORDS = ("man", "woman", "person", "girl", "boy")
LEADS = ("a photo of a", "portrait of a", "a close-up of an old", "cinematic still, a", "a",
         "(best quality:1.2), a")
STYLE = ("natural light", "smiling", "in a forest", "studio portrait", "film grain", "(bokeh:1.3)",
         "wearing a hat", "looking at the camera", "oil painting", "[sunset]", "85mm", "sharp focus")
IDENTITY_FILES = {"v1": "rel-long-v1.safetensors", "v2": "rel-long-v2.safetensors"}
# The first prompts walk through every kind, with short and with long prompts (the warm-up then covers
# every code path and the largest allocations).
KINDS = ("single", "two", "stack", "loaded")
WARMUP_ORDER = tuple((v, k) for k in KINDS for v in ("v1", "v2"))
WARMUP = 2 * len(WARMUP_ORDER)


def write_identity_files(folder: Path) -> None:
    from . import hostile_files

    for version, name in IDENTITY_FILES.items():
        hostile_files.valid_identity(Path(folder) / name, version, n=2, seed=7)


def _text(rng: random.Random, triggers=("img",), long: bool = False) -> str:
    parts = []
    for trig in triggers:
        parts.append(f"{rng.choice(LEADS)} {rng.choice(CLASS_WORDS)} {trig}")
    style = rng.sample(STYLE, rng.randint(0, 4))
    if long:  # a long prompt: more chunks, the ID rows may move to another chunk
        style += ["red"] * rng.randint(60, 120)
    return " and ".join(parts) + (", " + ", ".join(style) if style else "")


def make_prompt(rng: random.Random, i: int) -> tuple[dict, str]:
    """(API graph, kind label) for prompt number i."""
    from support.graphs import graph

    if i < WARMUP:
        version, kind = WARMUP_ORDER[i % len(WARMUP_ORDER)]
    else:
        version, kind = rng.choice(("v1", "v2")), rng.choice(KINDS)
    # The warm-up walks every kind twice, the second time with long prompts; later one in ten is long.
    long = len(WARMUP_ORDER) <= i < WARMUP or (i >= WARMUP and rng.random() < 0.1)
    faces = rng.sample(FACES, 2)
    g = graph(version, text=_text(rng, ("img", "img2") if kind == "two" else ("img",), long), image=faces[0],
              steps=rng.choice((1, 2)), style_strength=round(rng.uniform(0.0, 0.6), 2))
    g["9"]["inputs"]["seed"] = rng.randrange(1 << 31)
    g["11"]["inputs"]["filename_prefix"] = "long"
    if kind in ("two", "stack"):
        g["12"] = {"class_type": "LoadImage", "inputs": {"image": faces[1]}}
        g["13"] = {"class_type": "StackedIDEncode",
                   "inputs": {"encoder": ["2", 0], "images": ["12", 0], "no_face": "error",
                              "face_select": "best score", "crop_to_face": False}}
        if version == "v2":
            g["13"]["inputs"]["face_analysis"] = ["4", 0]
    if kind == "two":
        g["6"]["inputs"].update(identity_2=["13", 0], trigger_word_2="img2")
    elif kind == "stack":
        g["14"] = {"class_type": "StackedIDStack",
                   "inputs": {"identity_1": ["5", 0], "weight_1": round(rng.uniform(0.2, 1.5), 2),
                              "identity_2": ["13", 0], "weight_2": round(rng.uniform(0.2, 1.5), 2),
                              "weight_3": 1.0, "weight_4": 1.0}}
        g["6"]["inputs"]["identity"] = ["14", 0]
    elif kind == "loaded":
        g["5"] = {"class_type": "StackedIDLoad",
                  "inputs": {"identity_file": IDENTITY_FILES[version], "encoder": ["2", 0]}}
        g.pop("3")
        g.pop("4", None)
    return g, f"{version}-{kind}" + ("+long" if long else "")


@dataclass
class RunResult:
    completed: int = 0
    kinds: dict = field(default_factory=dict)
    rss: list = field(default_factory=list)  # bytes after each prompt (server runs)
    labels: list = field(default_factory=list)  # kind of each prompt
    seconds: float = 0.0
    warmup: int = WARMUP

    def growth_percent(self) -> float:
        """Resident memory growth from just after the warm-up to the end, in percent, of the floor:
        the lowest of the first `window` samples after the warm-up against the lowest of the last
        `window`. Single samples swing by 2-5 % with what the last prompt left loaded (after a V2
        prompt the V2 encoder and InsightFace are resident, after a V1 prompt they are released);
        a leak raises the floor, those swings do not."""
        after = self.rss[self.warmup:]
        window = max(5, len(after) // 5)
        base = min(after[:window])
        return 100.0 * (min(after[-window:]) - base) / base


def run_server(server, n: int, seed: int = 0, on_prompt=None) -> RunResult:
    """n prompts through the real server over HTTP, one at a time; every one must succeed."""
    import psutil

    proc = psutil.Process(server.proc.pid)
    rng, out, t0 = random.Random(seed), RunResult(), time.time()
    for i in range(n):
        g, kind = make_prompt(rng, i)
        entry = server.wait(server.queue(g))
        status = entry["status"]
        if status.get("status_str") != "success":
            raise AssertionError(f"long-run prompt {i} ({kind}) failed: {status}\n{server.log()[-3000:]}")
        if server.proc.poll() is not None:
            raise AssertionError(f"server died at prompt {i}")
        out.completed += 1
        out.kinds[kind] = out.kinds.get(kind, 0) + 1
        out.rss.append(proc.memory_info().rss)
        out.labels.append(kind)
        if on_prompt:
            on_prompt(i, kind)
    out.seconds = time.time() - t0
    return out


def loaded_encoders() -> list[int]:
    """id() of each PhotoMaker encoder module alive in the host's loaded-model list. Only ids: a
    list of the modules themselves would keep them alive into the next prompt."""
    import comfy.model_management as mm

    found = []
    for lm in mm.current_loaded_models:
        ref = getattr(lm, "real_model", None)
        model = ref() if callable(ref) else None
        if model is None:
            patcher = lm.model
            model = getattr(patcher, "model", None) if patcher is not None else None
        if model is not None and type(model).__name__ == "PhotoMakerEncoder":
            found.append(id(model))
        model = None
    return found


def run_inprocess(run_graph, executor, n: int, seed: int = 0, on_prompt=None) -> RunResult:
    """n prompts through the real engine (PromptExecutor) in this process. After every prompt the
    host's loaded-model list must hold each PhotoMaker encoder at most once (one per file: V1, V2)."""
    rng, out, t0 = random.Random(seed), RunResult(), time.time()
    for i in range(n):
        g, kind = make_prompt(rng, i)
        run_graph(g, executor=executor, prompt_id=f"long-{i}")
        ids = loaded_encoders()
        if len(ids) != len(set(ids)) or len(ids) > 2:
            raise AssertionError(f"prompt {i} ({kind}): {len(ids)} PhotoMaker encoder entries in the loaded-"
                                 f"model list ({len(set(ids))} distinct); expected at most one per file (2)")
        out.completed += 1
        out.kinds[kind] = out.kinds.get(kind, 0) + 1
        if on_prompt:
            on_prompt(i, kind, ids)
    out.seconds = time.time() - t0
    return out


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """The tiny models are overhead-bound: on two shared cores (this process and the test server)
    one intra-op thread is several times faster than two (measured 7 s vs 44 s for 8 prompts)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
