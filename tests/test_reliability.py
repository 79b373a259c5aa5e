"""Reliability and security, fast part (default suite; the long versions are tests/test_stress.py).

1. Hostile and broken files for every loader (PhotoMaker file, identity file, InsightFace folder):
   each is refused with one actionable error (node + input + fix), code payloads never run, and
   the engine runs the next good prompt normally. All cases through the real engine in-process
   (PromptExecutor), a representative subset through the real server over HTTP.
2. Odd images: RGBA, grayscale, 1x1, 4000x3000 (8000x8000 in the stress suite), a batch of 64,
   batches where only some images have a face (both no_face policies), all-black, NaN/inf pixels,
   shapes no photo has.
3. Prompt fuzzing (hypothesis): the token logic with the real SDXL tokenizer, and the Apply node with
   the tiny CLIP: a valid conditioning with exactly k fused rows per identity, or a clear
   ValueError (NodeInputError) naming the node; never an exception from deep inside.
4. A short long run through the real server (40 prompts; 200 in `make stress`): all succeed,
   resident memory grows < 5 % after warm-up; in-process, the host's loaded-model list holds each
   encoder once.
5. POST /interrupt during a large identity encode on the server; the next prompt succeeds.

The figures go to the summary line printed at the end of the run (tests/reliability_summary.py).
In-process runs use one torch thread (see one_torch_thread). Sizes can be raised with
PM_RELIABILITY_LONG_RUN, PM_FUZZ_TOKEN_EXAMPLES and PM_FUZZ_APPLY_EXAMPLES.
"""
from __future__ import annotations

import os
import re
import threading
import time

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import reliability_summary as summary
from graph_fixtures import graph
from support import hostile_files as hf
from support import long_run
from support.long_run import one_torch_thread  # noqa: F401  (autouse fixture)

pytestmark = pytest.mark.host

LONG_RUN_PROMPTS = int(os.environ.get("PM_RELIABILITY_LONG_RUN", "40"))
SERVER_SUBSET = ((hf.PHOTOMAKER, "pickle-os-system-zip"), (hf.PHOTOMAKER, "safetensors-huge-header"),
                 (hf.PHOTOMAKER, "nan-encoder"), (hf.PHOTOMAKER, "sd15-checkpoint"),
                 (hf.IDENTITY, "corrupt-header"), (hf.VERSION, "v1-identity-file-with-v2-encoder"),
                 (hf.INSIGHTFACE, "random-bytes-onnx"))


# ---------------------------------------------------------------------------------------- helpers

def node(name):
    import nodes

    return nodes.NODE_CLASS_MAPPINGS[name]


def call(node_name, /, **kwargs):
    with torch.inference_mode():
        return node(node_name).execute(**kwargs).result


def node_display_name(node_type: str) -> str:
    return getattr(node(node_type), "NAME", node_type)


def check_refusal(case: hf.Case, err: dict) -> None:
    """One actionable error: the right node, naming the input, what is wrong and the fix."""
    msg = err.get("exception_message", "")
    assert err.get("node_type") == case.node_type, f"{case.id}: reported by {err.get('node_type')}: {msg}"
    head = f"{node_display_name(case.node_type)} - input '{case.input_name}':"
    assert msg.startswith(head), f"{case.id}: message does not name node and input ({head!r}): {msg}"
    assert re.search(case.expect, msg, re.I), f"{case.id}: expected /{case.expect}/ in: {msg}"
    assert any(w in msg.lower() for w in hf.FIX_WORDS), f"{case.id}: message names no fix: {msg}"
    assert str(err.get("exception_type", "")).endswith("NodeInputError"), \
        f"{case.id}: {err.get('exception_type')}"


def case_graph(case: hf.Case, seed: int) -> dict:
    """A full graph (tiny SDXL -> PhotoMaker -> KSampler -> SaveImage) that reaches the bad input."""
    if case.loader == hf.PHOTOMAKER:
        g = graph("v1", steps=1, extra={"2": {"inputs": {"photomaker_file": case.name}}})
    elif case.loader == hf.IDENTITY:
        g = graph("v1", steps=1)
        g["5"] = {"class_type": "StackedIDLoad", "inputs": {"identity_file": case.name}}
        g.pop("3")
    elif case.loader == hf.INSIGHTFACE:
        g = graph("v2", steps=1, extra={"4": {"inputs": {"model_pack": case.name}}})
    else:
        g = _version_graph(case)
    g["9"]["inputs"]["seed"] = seed
    return g


def _version_graph(case: hf.Case) -> dict:
    if case.id == "v1-identity-file-with-v2-encoder":
        g = graph("v2", steps=1)
        g["5"] = {"class_type": "StackedIDLoad", "inputs": {"identity_file": case.name, "encoder": ["2", 0]}}
        g.pop("3"), g.pop("4")
    elif case.id == "v2-identity-file-with-v1-encoder":
        g = graph("v1", steps=1)
        g["5"] = {"class_type": "StackedIDLoad", "inputs": {"identity_file": case.name, "encoder": ["2", 0]}}
        g.pop("3")
    elif case.id == "v2-identity-file-into-v1-apply":
        g = graph("v1", steps=1)
        g["5"] = {"class_type": "StackedIDLoad", "inputs": {"identity_file": case.name}}
        g.pop("3")
    elif case.id == "v1-encoded-into-v2-apply":
        g = graph("v1", steps=1)
        g["12"] = {"class_type": "StackedIDLoader", "inputs": {"photomaker_file": "tiny-v2.safetensors",
                                                               "lora_strength": 1.0}}
        g["6"]["inputs"]["encoder"] = ["12", 0]
    elif case.id == "stack-v1-with-v2":
        g = graph("v1", steps=1)
        g["12"] = {"class_type": "StackedIDLoader", "inputs": {"photomaker_file": "tiny-v2.safetensors",
                                                               "lora_strength": 1.0}}
        g["4"] = {"class_type": "StackedIDFaceAnalysisLoader",
                  "inputs": {"model_pack": "buffalo_l", "provider": "CPU", "det_size": 640}}
        g["13"] = {"class_type": "StackedIDEncode",
                   "inputs": {"encoder": ["12", 0], "images": ["3", 0], "face_analysis": ["4", 0],
                              "no_face": "error", "face_select": "best score", "crop_to_face": False}}
        g["14"] = {"class_type": "StackedIDStack", "inputs": {"identity_1": ["5", 0], "weight_1": 1.0,
                                                              "identity_2": ["13", 0], "weight_2": 1.0,
                                                              "weight_3": 1.0, "weight_4": 1.0}}
        g["6"]["inputs"]["identity"] = ["14", 0]
    elif case.id == "v2-file-without-face-analysis":
        g = graph("v2", steps=1, with_faces=False)
    else:
        raise KeyError(case.id)
    return g


def good_graph(i: int, version: str = "v1") -> dict:
    """The good prompt after a refusal: a new seed, so at least the sampler, the VAE and the save
    run again."""
    g = graph(version, steps=1)
    g["9"]["inputs"]["seed"] = 1000 + i
    g["11"]["inputs"]["filename_prefix"] = "rel_good"
    return g


# one_torch_thread (autouse, imported from support.long_run) keeps torch on one thread here.
@pytest.fixture(scope="module")
def rel_env(pm_env, tmp_path_factory):
    """Every hostile case written into folders of its own, registered with the host next to
    pm_env's (removed again at the end of the module)."""
    import folder_paths

    root = tmp_path_factory.mktemp("hostile")
    folders = {hf.PHOTOMAKER: root / "photomaker", hf.IDENTITY: root / "photomaker_identities",
               hf.INSIGHTFACE: root / "insightface"}
    ctx = hf.Ctx.make(root / "PAYLOAD-RAN")
    for case in hf.ALL_CASES:
        hf.write_case(case, folders, ctx)
    long_run.write_identity_files(folders[hf.IDENTITY])
    registered = [(hf.PHOTOMAKER, folders[hf.PHOTOMAKER]), ("photomaker_identities", folders[hf.IDENTITY]),
                  ("insightface", folders[hf.INSIGHTFACE])]
    for name, path in registered:
        folder_paths.add_model_folder_path(name, str(path))
    yield {"root": root, "folders": folders, "ctx": ctx, "marker": ctx.marker}
    for name, path in registered:
        paths = folder_paths.folder_names_and_paths[name][0]
        if str(path) in paths:
            paths.remove(str(path))
    assert not ctx.marker.exists(), "a code payload ran"


def make_lru_executor(size: int = 32):
    """A PromptExecutor that keeps outputs across prompts (as a server started with --cache-lru):
    after a refused file the next good prompt re-runs the sampler, not every loader. The classic
    cache (everything after the failure re-executes) is what the HTTP tests run."""
    import execution
    from support.host import make_executor

    return make_executor(cache_type=execution.CacheType.LRU, lru_size=size)


@pytest.fixture(scope="module")
def executor(comfy_host, pm_env):
    return make_lru_executor()


def run(comfy_host, executor, g, prompt_id):
    """(ok, execution_error dicts) of one prompt on the shared executor."""
    try:
        comfy_host.run_graph(g, executor=executor, prompt_id=prompt_id)
        return True, []
    except comfy_host.GraphError:
        errs = [m[1] for m in executor.status_messages if m[0] == "execution_error"]
        return False, errs


# ------------------------------------------------------------------- 1. hostile files, in-process

@pytest.mark.parametrize("case", hf.ALL_CASES, ids=[f"{c.loader}-{c.id}" for c in hf.ALL_CASES])
def test_hostile_file_refused_then_next_prompt_runs(comfy_host, pm_env, rel_env, executor, case):
    from graph_fixtures import saved_images

    summary.add("files_tried")
    i = hf.ALL_CASES.index(case)
    ok, errs = run(comfy_host, executor, case_graph(case, seed=i), f"hostile-{i}")
    assert not ok, f"{case.id}: accepted"
    assert len(errs) == 1, f"{case.id}: {len(errs)} execution errors"
    check_refusal(case, errs[0])
    assert not rel_env["marker"].exists(), f"{case.id}: the code payload ran"
    ok, errs = run(comfy_host, executor, good_graph(i), f"good-after-{i}")
    assert ok, f"next good prompt after {case.id} failed: {errs}"
    (img,) = saved_images(executor.history_result["outputs"])
    assert img.shape == (64, 64, 3) and img.std() > 0
    summary.add("files_refused")


def test_the_payloads_are_live(tmp_path):
    """Control for the refusals above: every code payload in the catalogue really runs when the
    file is unpickled the unsafe way (torch.load(weights_only=False) / pickle.load), in a throwaway
    subprocess. So "marker absent" after the pack loaded them means the pack never ran them."""
    import subprocess
    import sys
    from pathlib import Path

    payload_cases = [c for c in hf.ALL_CASES if c.payload]
    assert len(payload_cases) >= 7
    jobs = []
    for i, case in enumerate(payload_cases):
        folder = tmp_path / f"case{i}"
        ctx = hf.Ctx(marker=tmp_path / f"marker{i}")
        hf.write_case(case, {hf.PHOTOMAKER: folder, hf.IDENTITY: folder, hf.INSIGHTFACE: folder}, ctx)
        path = next(p for p in Path(folder).rglob("*") if p.is_file() and (p.name == case.name or
                                                                           p.name == "det_10g.onnx"))
        copy = tmp_path / f"live{i}.bin"  # torch.load reads a *.safetensors name with safetensors
        copy.write_bytes(path.read_bytes())
        jobs.append((str(copy), str(ctx.marker)))
    script = ("import pickle, sys, torch\n"
              "for path in sys.argv[1:]:\n"
              "    try:\n"
              "        torch.load(path, weights_only=False)\n"
              "    except Exception:\n"
              "        with open(path, 'rb') as f:\n"
              "            pickle.load(f)\n")
    out = subprocess.run([sys.executable, "-c", script, *[p for p, _ in jobs]], capture_output=True,
                         text=True, timeout=300)
    ran = [Path(m).exists() for _, m in jobs]
    assert all(ran), (dict(zip([c.id for c in payload_cases], ran, strict=True)), out.stderr[-2000:])


def test_valid_identity_with_unreadable_provenance_is_accepted(rel_env, pm_env, tmp_path):
    """Metadata that is JSON but not an object is ignored, not a crash (it crashed: AttributeError)."""
    path = rel_env["folders"][hf.IDENTITY] / "rel-odd-provenance.safetensors"
    hf.save_identity_file(path, torch.randn(1, 1, 2048), "v1", meta={"provenance": "[1, 2, 3]"})
    (ident,) = call("StackedIDLoad", identity_file=path.name)
    assert ident.count == 1 and ident.version == "v1"


# ------------------------------------------------------------------------------------ 2. images

@pytest.fixture(scope="module")
def encoders(pm_env):
    v1 = call("StackedIDLoader", photomaker_file="tiny-v1.bin")[0]
    v2 = call("StackedIDLoader", photomaker_file="tiny-v2.safetensors")[0]
    faces = call("StackedIDFaceAnalysisLoader", model_pack="buffalo_l", provider="CPU", det_size=640)[0]
    return {"v1": v1, "v2": v2, "faces": faces}


def face(h=240, w=320, color=None, box=None):
    from synthetic import fake_insightface as fi

    box = box or (w // 4, h // 4, 3 * w // 4, 3 * h // 4)
    return fi.synthetic_face(h=h, w=w, box=box, color=color or fi.RED)


def blank(h=240, w=320):
    from synthetic import fake_insightface as fi

    return fi.blank_image(h, w)


def encode(encoders, version, images, faces=None, **kw):
    """Encode with the version's encoder; faces defaults to on for V2. Counts the images."""
    summary.add("images_tried", int(images.shape[0]) if images.ndim == 4 else 1)
    use_faces = version == "v2" if faces is None else faces
    return call("StackedIDEncode", encoder=encoders[version], images=images,
                face_analysis=encoders["faces"] if use_faces else None, **kw)


def assert_identity(ident, n, version):
    k = 1 if version == "v1" else 2
    assert ident.tokens.shape == (n, k, 2048), ident.tokens.shape
    assert torch.isfinite(ident.tokens).all()


def assert_node_error(excinfo, input_name="images", node_name="PhotoMaker Encode Identity"):
    assert type(excinfo.value).__name__ == "NodeInputError", repr(excinfo.value)
    assert str(excinfo.value).startswith(f"{node_name} - input '{input_name}':"), str(excinfo.value)


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_rgba_and_grayscale(encoders, version):
    rgba = torch.cat([face(), torch.full((240, 320, 1), 0.3)], -1).unsqueeze(0)
    gray = face().mean(-1, keepdim=True).unsqueeze(0)
    ident, preview = encode(encoders, version, rgba)
    assert_identity(ident, 1, version)
    assert preview.shape == (1, 240, 320, 3)
    if version == "v1":
        assert_identity(encode(encoders, version, gray)[0], 1, version)
    else:  # the fake detector finds faces by colour: a grey "face" is no face, and says so
        with pytest.raises(ValueError) as e:
            encode(encoders, version, gray)
        assert_node_error(e)
        assert "no face found in image 1 of" in str(e.value)


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_one_pixel_image(encoders, version):
    img = torch.full((1, 1, 1, 3), 0.5)
    if version == "v1":
        ident, preview = encode(encoders, version, img)
        assert_identity(ident, 1, version)
        assert preview.shape == (1, 1, 1, 3)
    else:
        with pytest.raises(ValueError) as e:
            encode(encoders, version, img, no_face="skip")
        assert_node_error(e)
        assert "no face found in any of the 1 images" in str(e.value)


class PeakRSS:
    """Samples this process's resident memory every 10 ms (the peak of one call)."""

    def __init__(self):
        import psutil

        self.proc = psutil.Process()
        self.base = self.proc.memory_info().rss
        self.peak = self.base
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(0.01)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def big_photo(encoders, h: int, w: int) -> dict:
    """One h x w photo through V2 (face detection + ArcFace + CLIP): works, and how long / how much
    memory it takes. (8000x8000, 732 MB as a float32 IMAGE, runs in tests/test_stress.py.)"""
    img = face(h, w, box=(w // 4, h // 5, 3 * w // 4, 4 * h // 5)).unsqueeze(0)
    image_mb = img.numel() * 4 / 2**20
    t0 = time.perf_counter()
    with PeakRSS() as mem:
        ident, preview = encode(encoders, "v2", img)
    seconds = time.perf_counter() - t0
    extra_mb = (mem.peak - mem.base) / 2**20
    summary.note(f"{w}x{h} V2 encode: {seconds:.1f} s, peak memory +{extra_mb:.0f} MB "
          f"({extra_mb / image_mb:.1f}x the {image_mb:.0f} MB input)")
    assert_identity(ident, 1, "v2")
    assert ident.arcface.shape == (1, 512)
    assert preview.shape == (1, h, w, 3)
    return {"seconds": seconds, "extra_mb": extra_mb, "image_mb": image_mb}


def test_phone_sized_photo(encoders):
    """A 4000x3000 photo (a phone camera's)."""
    r = big_photo(encoders, 3000, 4000)
    assert r["seconds"] < 60 and r["extra_mb"] < 8 * r["image_mb"]


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_batch_of_64_then_apply(encoders, version, tiny_clip):
    from synthetic import fake_insightface as fi

    colors = [fi.RED, fi.GREEN, fi.BLUE]
    batch = torch.stack([face(96, 96, color=colors[i % 3], box=(16 + i % 8, 16, 80, 80)) for i in range(64)])
    ident, preview = encode(encoders, version, batch)
    assert_identity(ident, 64, version)
    assert preview.shape == (64, 96, 96, 3)
    spy = SpyEncoder(encoders[version])
    cond, text_only = call("StackedIDApply", clip=tiny_clip, encoder=spy, identity=ident,
                           text="a photo of a man img, smiling", trigger_word="img")
    check_conditioning(spy, cond, [ident])


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_batch_where_only_some_images_have_a_face(encoders, version):
    batch = torch.stack([face(), blank(), face(color=(0.0, 1.0, 0.0)), torch.zeros(240, 320, 3), face()])
    with pytest.raises(ValueError) as e:
        encode(encoders, version, batch, faces=True, no_face="error")
    assert_node_error(e)
    assert "no face found in image 2 of 5" in str(e.value) and "skip" in str(e.value)
    ident, preview = encode(encoders, version, batch, faces=True, no_face="skip")
    assert_identity(ident, 3, version)
    assert ident.provenance["source_indices"] == [0, 2, 4]
    assert preview.shape[0] == 3


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_all_black(encoders, version):
    black = torch.zeros(1, 240, 320, 3)
    if version == "v1":
        assert_identity(encode(encoders, version, black)[0], 1, version)
    with pytest.raises(ValueError) as e:
        encode(encoders, version, black, faces=True, no_face="skip")
    assert_node_error(e)


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_nan_and_inf_pixels(encoders, version):
    partly = face().unsqueeze(0).clone()
    partly[0, :20, :20] = float("nan")
    partly[0, -20:, -20:] = float("inf")
    partly[0, :5, -5:] = -float("inf")
    ident, preview = encode(encoders, version, partly)
    assert_identity(ident, 1, version)
    assert torch.isfinite(preview).all()
    all_nan = torch.full((1, 64, 64, 3), float("nan"))
    if version == "v1":
        assert_identity(encode(encoders, version, all_nan)[0], 1, version)
    else:
        with pytest.raises(ValueError) as e:
            encode(encoders, version, all_nan)
        assert_node_error(e)


@pytest.mark.parametrize("shape", [(1, 0, 10, 3), (1, 10, 0, 3), (1, 10, 10, 2), (1, 10, 10, 5),
                                   (0, 10, 10, 3), (10, 10, 3)], ids=str)
def test_shapes_no_photo_has(encoders, shape):
    """Empty height/width, 2 or 5 channels, an empty batch, a missing batch axis: a node error
    naming 'images' (0-height crashed with ZeroDivisionError deep in the resize)."""
    for version in ("v1", "v2"):
        with pytest.raises(ValueError) as e:
            encode(encoders, version, torch.zeros(shape))
        assert_node_error(e)


def test_out_of_range_and_half_precision_pixels(encoders):
    img = face().unsqueeze(0)
    for variant in (img * 255, img - 2.0, img.half(), img.double()):
        assert_identity(encode(encoders, "v1", variant)[0], 1, "v1")


# ------------------------------------------------------------------------------- 3. prompt fuzzing

class SpyEncoder:
    """The real managed encoder, recording what Apply asks it to fuse."""

    def __init__(self, real):
        self._real = real
        self.calls = []

    def __getattr__(self, name):
        return getattr(self._real, name)

    def fuse(self, cond, positions, tokens, weights):
        out = self._real.fuse(cond, positions, tokens, weights)
        self.calls.append((list(positions), cond.clone(), out, weights.clone()))
        return out


def check_conditioning(spy, cond, identities):
    """Exactly k fused rows per identity (k = images x tokens per image), everything else untouched,
    the ID-phase conditioning is the fused tensor, and nothing is NaN."""
    assert len(spy.calls) == 1
    positions, before, after, weights = spy.calls[0]
    expected = sum(i.total_tokens for i in identities)
    assert len(positions) == expected == len(set(positions))
    assert all(0 <= p < before.shape[1] for p in positions)
    assert cond[-1][0] is after or torch.equal(cond[-1][0], after)
    assert torch.isfinite(after).all()
    others = torch.ones(before.shape[1], dtype=torch.bool)
    others[positions] = False
    assert torch.equal(before[:, others], after[:, others])
    changed = (before[:, positions] != after[:, positions]).any(-1).squeeze(0)
    nonzero = (weights != 0).view(-1)
    assert changed[nonzero].all(), "a marked row with non-zero weight was not fused"


@pytest.fixture(scope="module")
def fuzz_env(encoders):
    from synthetic import fake_insightface as fi

    v1_one = encode(encoders, "v1", face().unsqueeze(0))[0]
    v1_three = encode(encoders, "v1", torch.stack([face(), face(color=fi.GREEN), face(color=fi.BLUE)]))[0]
    v2_one = encode(encoders, "v2", face().unsqueeze(0))[0]
    v2_two = encode(encoders, "v2", torch.stack([face(), face(color=fi.GREEN)]))[0]
    return {"v1": [v1_one, v1_three], "v2": [v2_one, v2_two]}


ASCII_WORD = st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=8)
WEIRD = st.sampled_from(["(", ")", "[", "]", "{", "}", "\\(", "\\)", ":", ",", ".", "!", "|", "<", ">", "\\",
                         "((", "))", "(:1.2)", "()", "(,:0.5)", "BREAK", "\n", "\t", "  ", "'", '"', "#"])
WEIGHT = st.one_of(st.floats(-4, 4, allow_nan=False).map(lambda f: f"{f:.2f}"),
                   st.sampled_from(["", "abc", "1e3", "-0", "1.", ".5", "1:2", "1.1.1", "1e30", "inf", "nan",
                                    "-1e9"]))
# Mostly forms that must work, a quarter that must not (inside a word, twice, as an embedding name).
TRIGGER_FORMS = st.sampled_from(["{t}"] * 6 + ["{t},", "({t}:1.3)", "{t}.", "({t})", "[{t}]", "{T}",
                                              "{t}:1.2", "\\({t}\\)", "{t}\n", "{t}!"]
                                + ["{t}ur", "x{t}", "{t} {t}", "embedding:{t}", "{t}{t}"])


@st.composite
def prompt_pieces(draw, triggers=("img",), max_words=40):
    pieces = draw(st.lists(st.one_of(
        ASCII_WORD, WEIRD,
        st.sampled_from(["man", "woman", "person", "schoolgirl", "photo", "a", "of", "the", "red", "dog"]),
        st.builds(lambda w, x: f"({w}:{x})", ASCII_WORD, WEIGHT),
        st.builds(lambda w: f"embedding:{w}", st.sampled_from(["pmface", "pmface3", "missing", "../x", ""])),
        st.text(min_size=1, max_size=6),  # any unicode (emoji, CJK, combining marks, controls)
    ), max_size=max_words))
    for trig in triggers:
        for _ in range(draw(st.sampled_from([1] * 12 + [0, 2]))):
            form = draw(TRIGGER_FORMS).format(t=trig, T=trig.upper())
            at = draw(st.integers(0, len(pieces)))
            pieces.insert(at, form)
            if draw(st.sampled_from([True] * 4 + [False])):  # a class word right before it
                pieces.insert(at, draw(st.sampled_from(["man", "woman", "a man", "(woman:1.2)",
                                                        "embedding:pmface", "schoolgirl", "😀", "人"])))
    return pieces


@pytest.fixture(scope="module")
def fuzz_tokenizer(comfy_host, tmp_path_factory):
    """The real SDXL tokenizer with two textual-inversion embeddings: pmface (1 vector per CLIP)
    and pmface3 (3 vectors)."""
    import comfy.sdxl_clip
    import safetensors.torch

    from photomaker_core.tokens import spec_from_vocab

    folder = tmp_path_factory.mktemp("embeddings")
    for name, n in (("pmface", 1), ("pmface3", 3)):
        safetensors.torch.save_file({"clip_l": torch.randn(n, 768), "clip_g": torch.randn(n, 1280)},
                                    str(folder / f"{name}.safetensors"))
    tok = comfy.sdxl_clip.SDXLTokenizer(embedding_directory=str(folder))
    specs = {k: spec_from_vocab(t.start_token, t.end_token, t.pad_token, t.max_length,
                                t.tokenizer.convert_ids_to_tokens)
             for k, t in (("l", tok.clip_l), ("g", tok.clip_g))}
    return tok, specs


def fuzz_tokens_once(tokenizer, specs, text, triggers):
    """The token-logic property for one prompt. Returns 'ok' or 'error'."""
    from photomaker_core.tokens import Trigger, TriggerError, expand_tokens, host_layout, is_token_id

    def ids(word):
        return tuple(tokenizer.clip_g.tokenizer(word)["input_ids"][1:-1])

    try:
        tokens = tokenizer.tokenize_with_weights(text, return_word_ids=True)
    except IndexError:
        # ComfyUI's own tokenizer (not this pack) fails on a bare "embedding:" at the end of a
        # segment when an embedding folder is set; Apply turns that into a node error (see
        # test_host_tokenizer_failure_is_a_node_error).
        assert "embedding:" in text
        return "host-tokenizer-error"
    trig = [Trigger(name, ids(name), repeat) for name, repeat in triggers]
    try:
        new, positions = expand_tokens(tokens, specs, trig,
                                       host_layout(lambda t: tokenizer.tokenize_with_weights(t, True)))
    except TriggerError as e:
        assert len(str(e)) > 20, repr(e)
        return "error"
    for key in ("l", "g"):
        spec = specs[key]
        flat = [slot for chunk in new[key] for slot in chunk]
        assert all(len(chunk) == spec.max_length for chunk in new[key])
        for chunk in new[key]:
            assert chunk[0][0] == spec.start and any(is_token_id(s[0]) and s[0] == spec.end for s in chunk)
        for name, repeat in triggers:
            rows = positions[name]
            assert len(rows) == repeat
            slots = [flat[r] for r in rows]
            assert all(s[0] is slots[0][0] or s[0] == slots[0][0] for s in slots)
        old_content, new_content = content_length(tokens[key], spec), content_length(new[key], spec)
        removed = sum(len(ids(name)) + 1 for name, _ in triggers)
        added = sum(repeat for _, repeat in triggers)
        assert new_content == old_content - removed + added
    return "ok"


def content_length(chunks, spec) -> int:
    """Content slots of ComfyUI chunks: after the start token, up to each chunk's end token."""
    from photomaker_core.tokens import is_token_id

    n = 0
    for chunk in chunks:
        end = next(i for i, s in enumerate(chunk) if i > 0 and is_token_id(s[0]) and s[0] == spec.end)
        n += end - 1
    return n


FUZZ_TOKEN_EXAMPLES = int(os.environ.get("PM_FUZZ_TOKEN_EXAMPLES", "200"))
FUZZ_APPLY_EXAMPLES = int(os.environ.get("PM_FUZZ_APPLY_EXAMPLES", "30"))


@settings(max_examples=FUZZ_TOKEN_EXAMPLES, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                 HealthCheck.function_scoped_fixture])
@given(two=st.booleans(), lead=st.one_of(st.integers(0, 150), st.integers(150, 1000)),
       repeats=st.tuples(st.integers(1, 8), st.integers(1, 8)), data=st.data())
def test_fuzz_token_logic(fuzz_tokenizer, two, lead, repeats, data):
    """Random prompts (unicode, brackets, weights, embeddings, triggers anywhere, up to ~1,000
    tokens) through the real tokenizer and expand_tokens: valid chunks with exactly `repeat` marked
    class-token copies per trigger, or a TriggerError with a message; nothing else."""
    tok, specs = fuzz_tokenizer
    pieces = data.draw(prompt_pieces(triggers=("img", "img2") if two else ("img",)), label="pieces")
    words = ["red"] * lead
    text = " ".join(words[: lead // 2] + pieces + words[lead // 2:])
    triggers = [("img", repeats[0])] + ([("img2", repeats[1])] if two else [])
    summary.add("prompts_fuzzed")
    try:
        outcome = fuzz_tokens_once(tok, specs, text, triggers)
    except (AssertionError, ValueError):
        raise
    except Exception as e:  # anything else is a crash from deep inside
        raise AssertionError(f"{type(e).__name__} from the token logic for {text!r}: {e}") from e
    summary.outcome("tokens-" + outcome)


def apply_once(tiny_clip, encoders, fuzz_env, text, version, two, pick, trigger, trigger_2, strength):
    idents = fuzz_env[version]
    ident = idents[pick % len(idents)]
    ident_2 = idents[(pick + 1) % len(idents)] if two else None
    spy = SpyEncoder(encoders[version])
    try:
        cond, text_only = call("StackedIDApply", clip=tiny_clip, encoder=spy, identity=ident, text=text,
                               trigger_word=trigger, style_strength=0.3, identity_strength=strength,
                               identity_2=ident_2, trigger_word_2=trigger_2)
    except ValueError as e:
        name = type(e).__name__
        assert name == "NodeInputError", f"{name} (not a node error) for {text!r}: {e}"
        assert str(e).startswith("PhotoMaker Apply - input '"), str(e)
        return "error"
    except Exception as e:
        raise AssertionError(f"{type(e).__name__} from deep inside Apply for {text!r} "
                             f"(triggers {trigger!r}, {trigger_2!r}): {e}") from e
    check_conditioning(spy, cond, [ident] + ([ident_2] if two else []))
    assert len(text_only) == 1 and torch.isfinite(text_only[0][0]).all()
    return "ok"


_TRIGGER_CHOICES = (["img"] * 12 + ["IMG", "img2", "ohwx", "photo", "sks", "😀", "é", "人"]
                    + ["", " ", "a b", "(", ",", "embedding:pmface", "\u200b", "img:1.2", "<img>",
                       "BREAK", "a"])
# One trigger word in ten is arbitrary unicode (mostly refused, never a crash), the rest from the list.
TRIGGER_WORDS = st.integers(0, 9).flatmap(
    lambda i: st.text(max_size=6) if i == 0 else st.sampled_from(_TRIGGER_CHOICES))


@settings(max_examples=FUZZ_APPLY_EXAMPLES, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                 HealthCheck.function_scoped_fixture])
@given(version=st.sampled_from(["v1", "v2"]), two=st.booleans(), pick=st.integers(0, 3),
       trigger=TRIGGER_WORDS, trigger_2=st.one_of(st.just("img2"), TRIGGER_WORDS),
       strength=st.sampled_from([1.0, 0.5, 2.0]),
       data=st.data())
def test_fuzz_apply_node(tiny_clip, encoders, fuzz_env, version, two, pick, trigger, trigger_2, strength,
                         data):
    """The Apply node with the tiny CLIP on fuzzed prompts and trigger words (the prompt holds the
    chosen trigger words, in odd forms and places)."""
    summary.add("prompts_fuzzed")
    pieces = data.draw(prompt_pieces(triggers=(trigger, trigger_2) if two else (trigger,), max_words=30),
                       label="pieces")
    outcome = apply_once(tiny_clip, encoders, fuzz_env, " ".join(pieces), version, two, pick, trigger,
                         trigger_2, strength)
    summary.outcome("apply-" + outcome)


@pytest.mark.parametrize("text", ["a (man:1e30) img", "a (man:1e39) img", "a (man:inf) img",
                                  "a (man:nan) img", "a man img, (red:1e38)", "a (man:-1e30) img"])
def test_extreme_prompt_weights_give_a_node_error_not_nan(tiny_clip, encoders, fuzz_env, text):
    """Weights like (man:1e30) made Apply return NaN conditioning; now a node error names 'text'."""
    summary.add("prompts_fuzzed")
    assert apply_once(tiny_clip, encoders, fuzz_env, text, "v1", False, 0, "img", "img2", 1.0) == "error"


def test_host_tokenizer_failure_is_a_node_error(tiny_clip, encoders, fuzz_env, tmp_path):
    """ComfyUI's tokenizer raises IndexError on a bare trailing 'embedding:' whenever an embedding
    folder is set (every real install); Apply reports it as its own error on 'text'."""
    summary.add("prompts_fuzzed")
    toks = [tiny_clip.tokenizer.clip_l, tiny_clip.tokenizer.clip_g]
    saved = [t.embedding_directory for t in toks]
    for t in toks:
        t.embedding_directory = str(tmp_path)
    try:
        with pytest.raises(ValueError) as e:
            call("StackedIDApply", clip=tiny_clip, encoder=encoders["v1"], identity=fuzz_env["v1"][0],
                 text="a photo of a man img embedding:", trigger_word="img")
    finally:
        for t, d in zip(toks, saved, strict=True):
            t.embedding_directory = d
    assert_node_error(e, "text", "PhotoMaker Apply")
    assert "tokenizer" in str(e.value)


def test_empty_identity_is_a_node_error(tiny_clip, encoders):
    """An identity with no images (hand-made; files with none are refused at load) gave a bare
    TriggerError from Apply; now the node names its input."""
    from photomaker_core.identity import Identity

    empty = Identity(tokens=torch.zeros(0, 1, 2048), weights=torch.zeros(0), version="v1")
    summary.add("prompts_fuzzed")
    with pytest.raises(ValueError) as e:
        call("StackedIDApply", clip=tiny_clip, encoder=encoders["v1"], identity=empty, text="a man img",
             trigger_word="img")
    assert_node_error(e, "identity", "PhotoMaker Apply")


def test_thousand_token_prompt_through_apply(tiny_clip, encoders, fuzz_env):
    text = "a photo of a " + " ".join(["red dog"] * 300) + " (woman:1.2) img, " + " ".join(["blue cat"] * 200)
    summary.add("prompts_fuzzed")
    assert apply_once(tiny_clip, encoders, fuzz_env, text, "v2", False, 1, "img", "img2", 1.0) == "ok"


# ---------------------------------------------------------------------------- server over HTTP

def _write_server_models(base):
    from PIL import Image

    from synthetic import fake_insightface as fi
    from synthetic import pm_weights

    models = base / "models"
    pm_dir = models / "photomaker"
    pm_dir.mkdir(parents=True)
    lora = pm_weights.make_lora_state_dict("tiny", seed=13)
    pm_weights.write_nested_bin(pm_dir / "tiny-v1.bin",
                                pm_weights.make_encoder_state_dict("v1", "tiny", seed=11), lora)
    pm_weights.write_flat_safetensors(pm_dir / "tiny-v2.safetensors",
                                      pm_weights.make_encoder_state_dict("v2", "tiny", seed=12), lora)
    fi.write_pack(models / "insightface" / "models" / "buffalo_l")
    (models / "photomaker_identities").mkdir()
    long_run.write_identity_files(models / "photomaker_identities")
    (base / "input").mkdir()
    images = {"face_red.png": fi.synthetic_face(), "face_green.png": fi.synthetic_face(color=fi.GREEN),
              "face_red2.png": fi.synthetic_face(box=(120, 80, 312, 272)), "noface.png": fi.blank_image(),
              "big_face.png": fi.synthetic_face(512, 512, box=(128, 128, 384, 384))}
    for name, img in images.items():
        Image.fromarray((img.numpy() * 255).round().astype(np.uint8)).save(base / "input" / name)
    return {hf.PHOTOMAKER: pm_dir, hf.IDENTITY: models / "photomaker_identities",
            hf.INSIGHTFACE: models / "insightface"}


def start_server(comfy_host, base):
    from support.server import ComfyServer

    folders = _write_server_models(base)
    srv = ComfyServer(base=base).start()
    warm = srv.wait(srv.queue(graph("v1", steps=1)))
    assert warm["status"]["status_str"] == "success", srv.log()[-3000:]
    return srv, folders


def assert_alive(server):
    if server.proc.poll() is not None:
        summary.add("host_crashes")
        raise AssertionError(f"the server died ({server.proc.returncode}):\n{server.log()[-3000:]}")


@pytest.fixture(scope="module")
def server(comfy_host, tmp_path_factory):
    srv, folders = start_server(comfy_host, tmp_path_factory.mktemp("rel-server"))
    yield srv, folders
    assert_alive(srv)
    log = srv.log()
    srv.cleanup()
    assert "memory leak with model PhotoMakerEncoder" not in log


def execution_error(entry) -> dict:
    assert entry["status"]["status_str"] == "error", entry["status"]
    errs = [m[1] for m in entry["status"]["messages"] if m[0] == "execution_error"]
    assert len(errs) == 1, entry["status"]["messages"]
    return errs[0]


def test_hostile_files_over_http(server, tmp_path):
    """The representative subset through the real server: each refused with the node's error in the
    history, the payload never runs, the server keeps answering and runs the next good prompt."""
    srv, folders = server
    ctx = hf.Ctx.make(tmp_path / "PAYLOAD-RAN")
    cases = [c for c in hf.ALL_CASES if (c.loader, c.id) in SERVER_SUBSET]
    assert len(cases) == len(SERVER_SUBSET)
    for i, case in enumerate(cases):
        hf.write_case(case, folders, ctx)
        summary.add("files_tried")
        check_refusal(case, execution_error(srv.wait(srv.queue(case_graph(case, seed=i)))))
        assert not ctx.marker.exists(), f"{case.id}: the code payload ran in the server"
        assert_alive(srv)
        ok = srv.wait(srv.queue(good_graph(i, "v2" if i % 2 else "v1")))
        assert ok["status"]["status_str"] == "success", (case.id, ok["status"])
        assert ok["outputs"]["11"]["images"][0]["filename"].endswith(".png")
        summary.add("files_refused")
    assert srv.get("/system_stats")["system"]["comfyui_version"]


def test_long_run_short_form_over_http(server):
    """PM_RELIABILITY_LONG_RUN (40) changing prompts through the server (200 in `make stress`):
    all succeed, resident memory grows < 5 % after warm-up."""
    srv, _ = server
    result = long_run.run_server(srv, LONG_RUN_PROMPTS, seed=1)
    summary.add("longrun_completed", result.completed)
    growth = result.growth_percent()
    summary.record_memory_growth(growth)
    summary.note(f"long run (server): {result.completed} prompts in {result.seconds:.0f} s, "
                 f"kinds {result.kinds}, RSS after warm-up {result.rss[result.warmup] / 2**20:.0f} MB, "
                 f"end {result.rss[-1] / 2**20:.0f} MB, growth of the floor {growth:+.2f} %")
    assert result.completed == LONG_RUN_PROMPTS
    assert growth < 5.0
    assert_alive(srv)


def test_long_run_short_form_in_process_encoder_once(comfy_host, pm_env, rel_env):
    """The same prompt stream in-process (the real PromptExecutor, as the server's worker runs it),
    checking the host's loaded-model list after every prompt: each encoder is there once."""
    ex = comfy_host.make_executor()
    n = max(long_run.WARMUP, LONG_RUN_PROMPTS // 2)
    result = long_run.run_inprocess(comfy_host.run_graph, ex, n, seed=2)
    assert result.completed == n
    assert 1 <= len(loaded := long_run.loaded_encoders()) <= 2, loaded
    summary.add("longrun_completed", result.completed)


def wait_running(srv, prompt_id, timeout=60.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        queue = srv.get("/queue")
        if any(item[1] == prompt_id for item in queue.get("queue_running", [])):
            return
        time.sleep(0.05)
    raise TimeoutError("prompt never started")


def large_encode_graph(seed: int, amount: int = 64) -> dict:
    """V2 with face detection on a batch of `amount` 512x512 photos: seconds of work in one node."""
    g = graph("v2", steps=1, image="big_face.png")
    g["30"] = {"class_type": "RepeatImageBatch", "inputs": {"image": ["3", 0], "amount": amount}}
    g["5"]["inputs"]["images"] = ["30", 0]
    g["9"]["inputs"]["seed"] = seed
    return g


def interrupt_once(srv, seed: int, delay: float = 1.0) -> dict:
    """Queue a large encode, POST /interrupt while it runs; the next prompt must succeed."""
    prompt_id = srv.queue(large_encode_graph(seed))
    wait_running(srv, prompt_id)
    time.sleep(delay)
    t0 = time.time()
    status, _ = srv.post("/interrupt", {})
    assert status == 200
    entry = srv.wait(prompt_id)
    stopped_after = time.time() - t0
    messages = {m[0]: m[1] for m in entry["status"]["messages"]}
    assert entry["status"]["status_str"] == "error" and "execution_interrupted" in messages, entry["status"]
    assert_alive(srv)
    ok = srv.wait(srv.queue(good_graph(seed)))
    assert ok["status"]["status_str"] == "success", ok["status"]
    return {"node_type": messages["execution_interrupted"].get("node_type"), "stopped_after": stopped_after}


def test_interrupt_during_large_encode_then_next_prompt(server):
    srv, _ = server
    result = interrupt_once(srv, seed=77)
    summary.note(f"interrupt: landed in {result['node_type']}, prompt stopped "
                 f"{result['stopped_after']:.2f} s after POST /interrupt")
    assert result["node_type"] == "StackedIDEncode"
    assert result["stopped_after"] < 5.0
