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

The figures go to the summary line printed at the end of the run (tests/support/reliability_summary.py).
In-process runs use one torch thread (see one_torch_thread). Sizes can be raised with
PM_RELIABILITY_LONG_RUN, PM_FUZZ_TOKEN_EXAMPLES and PM_FUZZ_APPLY_EXAMPLES.
"""
from __future__ import annotations

import os

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from support import hostile_files as hf
from support import long_run
from support import reliability_summary as summary
from support.graphs import call
from support.reliability import (TRIGGER_WORDS, SpyEncoder, apply_once, assert_alive, assert_identity,
                                 big_photo, blank, case_graph, check_conditioning, check_refusal, encode,
                                 execution_error, face, fuzz_tokens_once, good_graph, interrupt_once,
                                 prompt_pieces, start_server)
from support.long_run import one_torch_thread  # noqa: F401  (autouse fixture)

pytestmark = pytest.mark.host

LONG_RUN_PROMPTS = int(os.environ.get("PM_RELIABILITY_LONG_RUN", "40"))
SERVER_SUBSET = ((hf.PHOTOMAKER, "pickle-os-system-zip"), (hf.PHOTOMAKER, "safetensors-huge-header"),
                 (hf.PHOTOMAKER, "nan-encoder"), (hf.PHOTOMAKER, "sd15-checkpoint"),
                 (hf.IDENTITY, "corrupt-header"), (hf.VERSION, "v1-identity-file-with-v2-encoder"),
                 (hf.INSIGHTFACE, "random-bytes-onnx"))


# ---------------------------------------------------------------------------------------- helpers


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
    from support.graphs import saved_images

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


@pytest.fixture(scope="module")
def server(comfy_host, tmp_path_factory):
    srv, folders = start_server(comfy_host, tmp_path_factory.mktemp("rel-server"))
    yield srv, folders
    assert_alive(srv)
    log = srv.log()
    srv.cleanup()
    assert "memory leak with model PhotoMakerEncoder" not in log


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


def test_interrupt_during_large_encode_then_next_prompt(server):
    srv, _ = server
    result = interrupt_once(srv, seed=77)
    summary.note(f"interrupt: landed in {result['node_type']}, prompt stopped "
                 f"{result['stopped_after']:.2f} s after POST /interrupt")
    assert result["node_type"] == "StackedIDEncode"
    assert result["stopped_after"] < 5.0
