"""The node set through the real ComfyUI engine (PromptExecutor) with tiny SDXL and tiny
PhotoMaker V1/V2 files, plus direct checks of what the nodes compute."""
from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from support.graphs import call, expanded_encoding, graph, images, saved_images

pytestmark = pytest.mark.host

EXPECTED_NODES = {"StackedIDLoader", "StackedIDFaceAnalysisLoader", "StackedIDEncode", "StackedIDStack",
                  "StackedIDSave", "StackedIDLoad", "StackedIDApply", "StackedIDStyle",
                  "StackedIDFaceSimilarity", "StackedIDApplyBatch", "StackedIDFaceKeypoints",
                  "StackedIDFaceDetailer"}


@pytest.fixture(scope="module")
def v2(pm_env, tiny):
    encoder, model = call("StackedIDLoader", photomaker_file="tiny-v2.safetensors", model=tiny[0])
    return encoder, model


def test_nodes_registered_without_clash(comfy_host):
    import nodes

    assert set(comfy_host.pack_node_ids()) == EXPECTED_NODES
    # core's own PhotoMaker nodes are still core's (no id taken over)
    assert nodes.NODE_CLASS_MAPPINGS["PhotoMakerLoader"].__module__.endswith("comfy_extras/nodes_photomaker")


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_full_graph_runs(comfy_host, pm_env, version):
    _, outputs = comfy_host.run_graph(graph(version))
    (img,) = saved_images(outputs)
    assert img.shape == (64, 64, 3) and np.isfinite(img).all() and img.std() > 0


def test_apply_fuses_exactly_the_class_rows_and_adds_no_drift(pm_env, tiny, v1):
    encoder, _ = v1
    ident, _ = call("StackedIDEncode", encoder=encoder,
                    images=images(pm_env, "face_red.png", "face_green.png"))
    text = "a photo of a man img, smiling in the rain"
    cond, text_only = call("StackedIDApply", clip=tiny[1], encoder=encoder, identity=ident, text=text,
                           trigger_word="img", style_strength=0.3, identity_strength=1.0)
    assert [(c[1]["start_percent"], c[1]["end_percent"]) for c in cond] == [(0.0, 0.3), (0.3, 1.0)]
    id_cond = cond[1][0]
    plain, pooled, positions = expanded_encoding(tiny[1], text, [("img", 2)])
    rows = positions["img"]
    changed = (id_cond != plain).any(-1)[0].nonzero().flatten().tolist()
    assert changed == rows and len(rows) == 2
    # each fused row equals the library's fuse of (text row, its identity token): the node adds no drift
    m = encoder.model
    with torch.inference_mode():
        expected = m.fuse_module(plain[0, rows].float(), ident.flat_tokens().float())
    torch.testing.assert_close(id_cond[0, rows].float(), expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(cond[1][1]["pooled_output"], pooled)
    # the text-only phase is the prompt with the trigger removed (nothing repeated)
    ref_text, ref_pooled, _ = expanded_encoding(tiny[1], text, [("img", 1)])
    torch.testing.assert_close(cond[0][0], ref_text)
    torch.testing.assert_close(text_only[0][0], ref_text)


def test_v2_tokens_image_major_and_two_per_image(pm_env, tiny, v2, faces):
    encoder, _ = v2
    ident, preview = call("StackedIDEncode", encoder=encoder,
                          images=images(pm_env, "face_red.png", "face_green.png"), face_analysis=faces)
    assert ident.tokens.shape == (2, 2, 2048) and ident.arcface.shape == (2, 512)
    assert preview.shape == (2, 480, 640, 3)
    cond, _ = call("StackedIDApply", clip=tiny[1], encoder=encoder, identity=ident,
                   text="portrait of a woman img", trigger_word="img", style_strength=0.2,
                   identity_strength=1.0)
    plain, _, positions = expanded_encoding(tiny[1], "portrait of a woman img", [("img", 4)])
    rows = positions["img"]
    with torch.inference_mode():
        expected = encoder.model.fuse_module(plain[0, rows].float(), ident.flat_tokens().float())
    torch.testing.assert_close(cond[1][0][0, rows].float(), expected, atol=1e-5, rtol=1e-5)
    # image-major: rows 0,1 come from image 0's two tokens
    torch.testing.assert_close(ident.flat_tokens()[:2], ident.tokens[0])


def test_two_identities_two_triggers(pm_env, tiny, v1):
    encoder, _ = v1
    a, _ = call("StackedIDEncode", encoder=encoder, images=images(pm_env, "face_red.png"))
    b, _ = call("StackedIDEncode", encoder=encoder, images=images(pm_env, "face_green.png", "face_red2.png"))
    text = "a man img and a woman img2 at the beach"
    cond, _ = call("StackedIDApply", clip=tiny[1], encoder=encoder, identity=a, text=text, trigger_word="img",
                   style_strength=0.0, identity_strength=1.0, identity_2=b, trigger_word_2="img2")
    assert len(cond) == 1 and cond[0][1]["start_percent"] == 0.0
    plain, _, pos = expanded_encoding(tiny[1], text, [("img", 1), ("img2", 2)])
    with torch.inference_mode():
        fa = encoder.model.fuse_module(plain[0, pos["img"]].float(), a.flat_tokens())
        fb = encoder.model.fuse_module(plain[0, pos["img2"]].float(), b.flat_tokens())
    torch.testing.assert_close(cond[0][0][0, pos["img"]].float(), fa, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(cond[0][0][0, pos["img2"]].float(), fb, atol=1e-5, rtol=1e-5)


def test_nothing_mutates_cached_inputs(pm_env, tiny, v1):
    encoder, _ = v1
    imgs = images(pm_env, "face_red.png", "face_green.png")
    before = imgs.clone()
    ident, _ = call("StackedIDEncode", encoder=encoder, images=imgs)
    tokens_before = ident.tokens.clone()
    call("StackedIDApply", clip=tiny[1], encoder=encoder, identity=ident, text="a man img",
         trigger_word="img", style_strength=0.2, identity_strength=0.5)
    assert torch.equal(imgs, before) and torch.equal(ident.tokens, tokens_before)


def test_identity_strength_blends_rows(pm_env, tiny, v1):
    encoder, _ = v1
    ident, _ = call("StackedIDEncode", encoder=encoder, images=images(pm_env, "face_red.png"))
    kw = dict(clip=tiny[1], encoder=encoder, identity=ident, text="a man img", trigger_word="img",
              style_strength=0.0)
    full = call("StackedIDApply", identity_strength=1.0, **kw)[0][0][0]
    half = call("StackedIDApply", identity_strength=0.5, **kw)[0][0][0]
    zero = call("StackedIDApply", identity_strength=0.0, **kw)[0][0][0]
    plain, _, _ = expanded_encoding(tiny[1], "a man img", [("img", 1)])
    torch.testing.assert_close(zero, plain)
    torch.testing.assert_close(half, (full + plain) / 2, atol=1e-5, rtol=1e-5)


def test_prompt_edit_reruns_no_vision_tower_and_requeue_runs_nothing(comfy_host, pm_env, v1):
    ex = comfy_host.make_executor()
    g = graph("v1")
    comfy_host.run_graph(g, executor=ex)
    encoders = [o for o in _live_encoders()]
    calls_before = {id(e): e.vision_calls for e in encoders}
    g2 = graph("v1", text="a watercolor of a man img in Paris")
    ex2, _ = comfy_host.run_graph(g2, executor=ex)
    assert {id(e): e.vision_calls for e in _live_encoders()} == calls_before
    executed = _executed_nodes(ex2)
    assert "5" not in executed and "6" in executed  # encode cached, apply re-ran
    ex3, _ = comfy_host.run_graph(g2, executor=ex)
    assert not ({"2", "5", "6"} & _executed_nodes(ex3))


def _live_encoders():
    from support import host as h

    return list(h.pack_submodule("nodes.managed_encoder")._ENCODERS.values())


def _executed_nodes(executor) -> set:
    msgs = executor.server.messages
    last_start = max(i for i, (ev, _) in enumerate(msgs) if ev == "execution_start")
    return {d["node"] for ev, d in msgs[last_start:] if ev == "executing" and d.get("node")}


def test_encoder_is_managed_by_host(pm_env, v1):
    import comfy.model_management as mm

    encoder, _ = v1
    call("StackedIDEncode", encoder=encoder, images=images(pm_env, "face_red.png"))
    assert any(lm.model is encoder.patcher for lm in mm.current_loaded_models)
    mm.unload_all_models()
    assert not any(lm.model is encoder.patcher for lm in mm.current_loaded_models)
    assert all(p.device == torch.device(encoder.offload_device) for p in encoder.model.parameters())
    assert next(encoder.model.parameters()).dtype == mm.text_encoder_dtype(encoder.load_device)


def test_lora_applied_to_a_clone(pm_env, tiny, v1, caplog):
    _, patched = v1
    base = tiny[0]
    from photomaker_core.lora import normalize_lora

    expected = len({k.rsplit(".lora_", 1)[0] for k in normalize_lora(pm_env["lora"]) if ".lora_" in k})
    assert len(patched.patches) == expected > 0
    assert len(base.patches) == 0 and patched is not base
    with caplog.at_level(logging.WARNING):
        call("StackedIDLoader", photomaker_file="tiny-v1.bin", model=base, lora_strength=0.5)
    assert "not loaded" not in caplog.text


# ------------------------------------------------------------------ errors reach the user


def _error(comfy_host, g):
    with pytest.raises(comfy_host.GraphError) as e:
        comfy_host.run_graph(g)
    return str(e.value)


def test_errors_are_actionable_and_host_keeps_serving(comfy_host, pm_env):
    missing = _error(comfy_host, graph("v1", text="a photo of a man, smiling"))
    assert "PhotoMaker Apply" in missing and "'text'" in missing and "not found" in missing
    sd15 = graph("v1", extra={"20": {"class_type": "TinySD15Loader", "inputs": {}},
                              "2": {"inputs": {"model": ["20", 0]}}})
    msg = _error(comfy_host, sd15)
    assert "SDXL" in msg and "'model'" in msg
    msg = _error(comfy_host, graph("v2", with_faces=False))
    assert "face_analysis" in msg and "InsightFace" in msg
    msg = _error(comfy_host, graph("v2", image="noface.png"))
    assert "no face found in image 1 of" in msg and "skip" in msg
    msg = _error(comfy_host,
                 graph("v1", extra={"2": {"inputs": {"photomaker_file": "lora-only.safetensors"}}}))
    assert "only a LoRA" in msg
    # the host still serves the next prompt
    _, outputs = comfy_host.run_graph(graph("v1"))
    assert saved_images(outputs)[0].std() > 0


def test_no_face_skip_policy(pm_env, v2, faces):
    encoder, _ = v2
    ident, preview = call("StackedIDEncode", encoder=encoder,
                          images=images(pm_env, "face_red.png", "noface.png", "face_green.png"),
                          face_analysis=faces, no_face="skip")
    assert ident.count == 2 and ident.provenance["source_indices"] == [0, 2] and preview.shape[0] == 2


def test_version_mismatch_is_clear(pm_env, tiny, v1, v2, faces):
    ident2, _ = call("StackedIDEncode", encoder=v2[0], images=images(pm_env, "face_red.png"),
                     face_analysis=faces)
    with pytest.raises(ValueError, match="V2 but the encoder is V1|encoded with PhotoMaker V2"):
        call("StackedIDApply", clip=tiny[1], encoder=v1[0], identity=ident2, text="a man img",
             trigger_word="img", style_strength=0.2, identity_strength=1.0)


def test_stack_save_load_identity(pm_env, v1, caplog):
    encoder, _ = v1
    a, _ = call("StackedIDEncode", encoder=encoder, images=images(pm_env, "face_red.png"))
    b, _ = call("StackedIDEncode", encoder=encoder, images=images(pm_env, "face_green.png", "face_red2.png"))
    (s,) = call("StackedIDStack", identity_1=a, weight_1=1.0, identity_2=b, weight_2=0.5)
    assert s.count == 3 and s.weights.tolist() == [1.0, 0.5, 0.5]
    (only_a,) = call("StackedIDStack", identity_1=a, weight_1=1.0, identity_2=b, weight_2=0.0)
    assert only_a.count == 1
    (fname,) = call("StackedIDSave", identity=s, name="mix")
    assert fname == "mix.safetensors"
    (loaded,) = call("StackedIDLoad", identity_file=fname, encoder=encoder)
    assert torch.equal(loaded.tokens, s.tokens) and torch.equal(loaded.weights, s.weights)
    other = call("StackedIDLoader", photomaker_file="tiny-v2.safetensors")[0]
    with pytest.raises(ValueError, match="V1 identity but the encoder is V2"):
        call("StackedIDLoad", identity_file=fname, encoder=other)


def test_style_keeps_trigger():
    from photomaker_core import styles

    assert len(styles.STYLE_NAMES) == 11
    for name in styles.STYLE_NAMES:
        pos, neg = styles.apply_style(name, "a photo of a man img, smiling", "ugly")
        assert "a man img, smiling" in pos and neg.startswith("ugly")
