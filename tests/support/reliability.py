"""Helpers the reliability suite (tests/test_reliability.py) and its long form (tests/test_stress.py)
share: graphs that reach a hostile input and the check of its refusal, odd images through Encode,
prompt fuzzing (hypothesis strategies, the token-logic property, one Apply call checked row by row),
the test server with the tiny models, interrupts. Their fixtures (encoders, fuzz_env,
fuzz_tokenizer) are in support/fixtures.py."""
from __future__ import annotations

import re
import threading
import time

import torch
from hypothesis import strategies as st

from support import hostile_files as hf
from support import long_run
from support import reliability_summary as summary
from support.graphs import call, graph, node
from support.tiny_models import write_tiny_models


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


def _write_server_models(base):

    from synthetic import fake_insightface as fi

    models = base / "models"
    pm_dir = write_tiny_models(models)["pm_dir"]
    (models / "photomaker_identities").mkdir()
    long_run.write_identity_files(models / "photomaker_identities")
    (base / "input").mkdir()
    images = {"face_red.png": fi.synthetic_face(), "face_green.png": fi.synthetic_face(color=fi.GREEN),
              "face_red2.png": fi.synthetic_face(box=(120, 80, 312, 272)), "noface.png": fi.blank_image(),
              "big_face.png": fi.synthetic_face(512, 512, box=(128, 128, 384, 384))}
    for name, img in images.items():
        fi.save_png(img, base / "input" / name)
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


def execution_error(entry) -> dict:
    assert entry["status"]["status_str"] == "error", entry["status"]
    errs = [m[1] for m in entry["status"]["messages"] if m[0] == "execution_error"]
    assert len(errs) == 1, entry["status"]["messages"]
    return errs[0]


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
