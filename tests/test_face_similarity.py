"""Face Similarity (scoring/ranking, photomaker_core.similarity + StackedIDFaceSimilarity) and Apply per
Batch Item (StackedIDApplyBatch): the library math, the nodes through the real engine with the fake
InsightFace pack and tiny SDXL, and the two example workflows."""
from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------ library (no host)

def _sim():
    from photomaker_core import similarity

    return similarity


def test_reference_is_mean_of_normalised_embeddings():
    sim = _sim()
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal(512) * 20, rng.standard_normal(512) * 3  # very different norms
    ref = sim.reference_embedding(np.stack([a, b]))
    np.testing.assert_allclose(ref, (a / np.linalg.norm(a) + b / np.linalg.norm(b)) / 2)
    g = rng.standard_normal(512)
    expected = float(ref @ g / (np.linalg.norm(ref) * np.linalg.norm(g)))
    assert sim.cosine(g, ref) == pytest.approx(expected)
    # scale of a reference or a generated embedding does not matter
    assert sim.score_embeddings([g * 7], sim.reference_embedding(np.stack([a * 5, b])))[0] == \
        pytest.approx(expected)
    assert sim.score_embeddings([a], sim.reference_embedding(torch.tensor(a)))[0] == pytest.approx(1.0)
    for bad in (np.zeros((1, 512)), np.full((1, 512), np.nan), np.zeros((0, 512))):
        with pytest.raises(sim.SimilarityError):
            sim.reference_embedding(bad)


def test_ranking_best_first_no_face_last_stable():
    sim = _sim()
    scores = [0.2, None, 0.9, -0.3, float("nan"), 0.9, -1.0]
    assert sim.rank(scores) == [2, 5, 0, 3, 6, 1, 4]
    r = sim.Ranking(scores=[0.5, None, 0.8], order=sim.rank([0.5, None, 0.8]), reference_faces=2)
    assert r.order == [2, 0, 1] and r.best_score == pytest.approx(0.8)
    assert json.loads(r.to_json()) == [0.5, sim.NO_FACE, 0.8]
    assert r.top(2) == [2, 0] and r.top(10) == [2, 0, 1] and r.top(0) == [2]
    text = r.report(top_k=2)
    assert ("#1  image 3: 0.8000  <- kept" in text and "#3  image 2: no face" in text
            and "2 reference faces" in text)
    assert "note" not in text and "note" in r.report(top_k=3)
    none = sim.Ranking(scores=[None], order=[0], reference_faces=1)
    assert none.best_score == sim.NO_FACE


def test_score_sheet_draws_labels_and_boxes():
    sim = _sim()
    imgs = torch.full((3, 60, 90, 3), 0.5)
    sheet = sim.score_sheet(imgs, ["#1 img 0: 0.990", "#2 img 1: 0.500", "#3 img 2: no face"],
                            boxes=[(10, 10, 50, 50), None, None], good=[True, True, False], thumb=64)
    assert sheet.shape[0] == 1 and sheet.shape[-1] == 3 and sheet.dtype == torch.float32
    assert sheet.shape[2] == 2 * 64  # ceil(sqrt(3)) = 2 columns, 2 rows
    blank = sim.score_sheet(imgs, ["", "", ""], thumb=64)
    assert not torch.equal(sheet, blank)  # text and box pixels drawn
    green = (sheet[0, ..., 1] > 0.8) & (sheet[0, ..., 0] < 0.45)
    assert green.any()



def test_rank_faces_keeps_each_images_box_for_the_sheet():
    sim = _sim()
    from types import SimpleNamespace

    ref = np.eye(512)[:1]
    faces = [SimpleNamespace(embedding=np.eye(512)[1], bbox=(1, 1, 5, 5)), None,
             SimpleNamespace(embedding=np.eye(512)[0] + 0.1 * np.eye(512)[1], bbox=(2, 2, 8, 8))]
    ranking = sim.rank_faces(faces, ref)
    assert ranking.order == [2, 0, 1] and ranking.boxes == [(1, 1, 5, 5), None, (2, 2, 8, 8)]
    images = torch.arange(3, dtype=torch.float32).reshape(3, 1, 1, 1).expand(3, 60, 90, 3)
    assert ranking.reorder(images)[:, 0, 0, 0].tolist() == [2.0, 0.0, 1.0]
    assert ranking.reorder(images, first=2)[:, 0, 0, 0].tolist() == [2.0, 0.0]
    assert ranking.reorder(images, first=0).shape[0] == 1
    boxed, plain = sim.ranking_sheet(ranking, images, 2), sim.ranking_sheet(
        sim.Ranking(ranking.scores, ranking.order, ranking.reference_faces), images, 2)
    assert not torch.equal(boxed, plain)  # the boxes are drawn


# ------------------------------------------------------------------ host fixtures

from support.graphs import call, node  # noqa: E402  (the shared direct-call helpers)


@pytest.fixture(scope="module")
def env(pm_env):
    """pm_env plus a blue face (a third identity) and a blue+red image for the multi-face case."""
    import folder_paths
    from PIL import Image
    from synthetic import fake_insightface as fi

    extra = {
        "ft_blue.png": fi.synthetic_face(color=fi.BLUE),
        # two faces: the red one is bigger (w + h larger) so it has the higher detection score
        "ft_red_big_blue_small.png": fi.add_face(fi.synthetic_face(box=(300, 100, 556, 356), color=fi.RED),
                                                 box=(40, 40, 104, 104), color=fi.BLUE),
    }
    for name, img in extra.items():
        Image.fromarray((img.numpy() * 255).round().astype(np.uint8)).save(
            os.path.join(folder_paths.get_input_directory(), name))
    images = dict(pm_env["images"])
    images.update(extra)
    return {**pm_env, "images": images}


@pytest.fixture(scope="module")
def tiny(env):
    return node("TinySDXLLoader")().load(0)


@pytest.fixture(scope="module")
def faces(env):
    return call("StackedIDFaceAnalysisLoader", model_pack="buffalo_l", provider="CPU", det_size=640)[0]


@pytest.fixture(scope="module")
def v1(env, tiny):
    return call("StackedIDLoader", photomaker_file="tiny-v1.bin", model=tiny[0], lora_strength=1.0)


def batch(env, *names):
    return torch.stack([env["images"][n] for n in names])


# ------------------------------------------------------------------ Face Similarity

def test_similarity_scores_ranks_and_reports_no_face(env, faces):
    gen = batch(env, "face_green.png", "face_red2.png", "noface.png", "face_red.png", "ft_blue.png")
    ranked, top, scores_json, best, report, preview = call(
        "StackedIDFaceSimilarity", face_analysis=faces, images=gen,
        reference_images=batch(env, "face_red.png"), top_k=2)
    scores = json.loads(scores_json)
    assert len(scores) == 5
    assert scores[3] == pytest.approx(1.0, abs=1e-5)  # the very same face
    assert scores[1] > 0.99  # same identity, other position and size
    assert scores[0] < 0.5 and scores[4] < 0.5  # other people (colours): clearly lower
    assert scores[2] == -1.0  # no face
    order = sorted(range(5), key=lambda i: (scores[i] == -1.0, -scores[i]))
    assert order[-1] == 2 and set(order[:2]) == {1, 3}
    torch.testing.assert_close(ranked, gen[order], rtol=0, atol=0)
    torch.testing.assert_close(top, gen[order[:2]], rtol=0, atol=0)
    assert best == pytest.approx(max(scores))
    lines = [ln for ln in report.splitlines() if ln.startswith("#")]
    assert [int(ln.split("image ")[1].split(":")[0]) for ln in lines] == [i + 1 for i in order]  # 1-based
    assert "image 3: no face" in report and "5 images, 4 with a face" in report
    assert preview.ndim == 4 and preview.shape[0] == 1 and preview.shape[-1] == 3


def test_similarity_uses_highest_score_face_and_identity_reference(env, faces, v1):
    encoder, _ = v1
    ident, _ = call("StackedIDEncode", encoder=encoder, images=batch(env, "face_red.png", "face_red2.png"),
                    face_analysis=faces)
    assert ident.arcface is not None and ident.version == "v1"
    gen = batch(env, "ft_red_big_blue_small.png", "ft_blue.png")
    _, _, scores_json, _, _, _ = call("StackedIDFaceSimilarity", face_analysis=faces, images=gen,
                                      reference_identity=ident, top_k=1)
    scores = json.loads(scores_json)
    assert scores[0] > 0.99 and scores[1] < 0.5  # the red face (best det score) was scored, not the blue one
    # the identity's stored embeddings give the same numbers as detecting the photos again
    _, _, again, _, _, _ = call("StackedIDFaceSimilarity", face_analysis=faces, images=gen, top_k=1,
                                reference_images=batch(env, "face_red.png", "face_red2.png"))
    np.testing.assert_allclose(json.loads(again), scores, atol=1e-5)


def test_similarity_errors_name_the_inputs(env, faces, v1):
    encoder, _ = v1
    gen = batch(env, "face_red.png")
    with pytest.raises(ValueError,
                       match="reference_identity.*reference_images|reference_images.*reference_identity"):
        call("StackedIDFaceSimilarity", face_analysis=faces, images=gen, top_k=2)
    plain_v1, _ = call("StackedIDEncode", encoder=encoder, images=gen)  # no face analysis: no ArcFace
    with pytest.raises(ValueError,
                       match="(?s)reference_identity.*face_analysis of PhotoMaker Encode Identity"):
        call("StackedIDFaceSimilarity", face_analysis=faces, images=gen, reference_identity=plain_v1, top_k=2)
    with pytest.raises(ValueError, match="reference_images.*no face"):
        call("StackedIDFaceSimilarity", face_analysis=faces, images=gen,
             reference_images=batch(env, "noface.png"), top_k=2)
    # all generated images without a face: reported, not fatal; top_k capped at the batch size
    _, top, scores_json, best, report, _ = call("StackedIDFaceSimilarity", face_analysis=faces,
                                                images=batch(env, "noface.png"), reference_images=gen,
                                                top_k=3)
    assert json.loads(scores_json) == [-1.0] and best == -1.0 and top.shape[0] == 1 and "no face" in report


def _sim_graph(reference, images, with_faces_at_encode=True, top_k=2):
    g = {
        "1": {"class_type": "TinySDXLLoader", "inputs": {"seed": 0}},
        "2": {"class_type": "StackedIDLoader",
              "inputs": {"photomaker_file": "tiny-v1.bin", "lora_strength": 1.0}},
        "4": {"class_type": "StackedIDFaceAnalysisLoader",
              "inputs": {"model_pack": "buffalo_l", "provider": "CPU", "det_size": 640}},
        "3": {"class_type": "LoadImage", "inputs": {"image": reference}},
        "5": {"class_type": "StackedIDEncode",
              "inputs": {"encoder": ["2", 0], "images": ["3", 0], "no_face": "error",
                         "face_select": "best score", "crop_to_face": False}},
        "20": {"class_type": "StackedIDFaceSimilarity",
               "inputs": {"face_analysis": ["4", 0], "reference_identity": ["5", 0], "top_k": top_k}},
        "21": {"class_type": "SaveImage", "inputs": {"images": ["20", 1], "filename_prefix": "ft_top"}},
    }
    if with_faces_at_encode:
        g["5"]["inputs"]["face_analysis"] = ["4", 0]
    prev = None
    for i, name in enumerate(images):
        g[f"1{i}"] = {"class_type": "LoadImage", "inputs": {"image": name}}
        if prev is None:
            prev = [f"1{i}", 0]
        else:
            g[f"3{i}"] = {"class_type": "ImageBatch", "inputs": {"image1": prev, "image2": [f"1{i}", 0]}}
            prev = [f"3{i}", 0]
    g["20"]["inputs"]["images"] = prev
    return g


def test_similarity_through_the_engine(comfy_host, env):
    from support.graphs import saved_images

    gen = ["face_green.png", "noface.png", "face_red2.png", "face_red.png"]
    _, outputs = comfy_host.run_graph(_sim_graph("face_red.png", gen))
    (report,) = outputs["20"]["text"]
    lines = [ln for ln in report.splitlines() if ln.startswith("#")]
    assert lines[0].startswith("#1  image 4: 1.0000") or lines[0].startswith("#1  image 3:")
    assert {ln.split(":")[0] for ln in lines[:2]} == {"#1  image 4", "#2  image 3"} or \
        {ln.split(":")[0] for ln in lines[:2]} == {"#1  image 3", "#2  image 4"}
    assert lines[3] == "#4  image 2: no face"
    green = float(lines[2].split(": ")[1].split()[0])
    assert lines[2].startswith("#3  image 1") and green < 0.5
    assert len(outputs["20"]["images"]) == 1  # the scored contact sheet shows in the node
    top = saved_images(outputs, "21")
    assert len(top) == 2
    # the kept images are the red faces (the fake detector's red block survives PNG round trips)
    for img in top:
        assert ((img[..., 0] > 200) & (img[..., 1] < 50)).sum() > 1000

    with pytest.raises(comfy_host.GraphError, match="face_analysis"):
        comfy_host.run_graph(_sim_graph("face_red.png", gen[:1], with_faces_at_encode=False))


# ------------------------------------------------------------------ Apply per Batch Item

def _specs(clip):
    from photomaker_core.tokens import spec_from_vocab

    tok = clip.tokenizer
    return {k: spec_from_vocab(t.start_token, t.end_token, t.pad_token, t.max_length,
                               t.tokenizer.convert_ids_to_tokens)
            for k, t in (("l", tok.clip_l), ("g", tok.clip_g))}


def _expanded(clip, text, n_tokens):
    """CLIP encoding of the prompt with the class word repeated n_tokens times (no fusion), the rows
    of the copies, via the library's token logic (independent of the node code)."""
    from photomaker_core.tokens import Trigger, expand_tokens, host_layout

    trig = [Trigger("img", tuple(clip.tokenizer.clip_g.tokenizer("img")["input_ids"][1:-1]), n_tokens)]
    tokens, positions = expand_tokens(clip.tokenize(text, return_word_ids=True), _specs(clip), trig,
                                      host_layout(lambda t: clip.tokenize(t, return_word_ids=True)))
    with torch.inference_mode():
        cond, pooled = clip.encode_from_tokens(tokens, return_pooled=True)
    return cond, pooled, positions["img"]


def _latent(n):
    return {"samples": torch.zeros(n, 4, 8, 8)}


@pytest.fixture(scope="module")
def four(env, v1):
    """Four V1 identities with 1, 2, 1 and 3 images (different k: 1-3 ID tokens)."""
    encoder, _ = v1
    sets = [("face_red.png",), ("face_green.png", "face_red2.png"), ("ft_blue.png",),
            ("face_green.png", "face_red.png", "ft_blue.png")]
    return [call("StackedIDEncode", encoder=encoder, images=batch(env, *s))[0] for s in sets]


def _long_prompt(clip):
    """A prompt whose expanded form needs one 77-token chunk with <= 2 ID tokens and two with 3."""
    for j in range(55, 80):
        text = "a photo of a man img, " + " ".join(["red"] * j)
        sizes = [len(_expanded_tokens(clip, text, n)) for n in (1, 2, 3)]
        if sizes == [1, 1, 2]:
            return text
    raise AssertionError("no prompt length found")


def _expanded_tokens(clip, text, n):
    from photomaker_core.tokens import Trigger, expand_tokens, host_layout

    trig = [Trigger("img", tuple(clip.tokenizer.clip_g.tokenizer("img")["input_ids"][1:-1]), n)]
    tokens, _ = expand_tokens(clip.tokenize(text, return_word_ids=True), _specs(clip), trig,
                              host_layout(lambda t: clip.tokenize(t, return_word_ids=True)))
    return tokens["g"]


def _check_item_rows(clip, encoder, text, ident, cond_row, pooled_row):
    """Batch item = the identity's own fused conditioning (row by row), tiled along T if padded."""
    plain, pooled, rows = _expanded(clip, text, ident.total_tokens)
    t = plain.shape[1]
    assert cond_row.shape[0] % t == 0
    own = cond_row[:t]
    changed = (own != plain[0]).any(-1).nonzero().flatten().tolist()
    assert changed == rows and len(rows) == ident.total_tokens
    with torch.inference_mode():
        expected = encoder.model.fuse_module(plain[0, rows].float(), ident.flat_tokens().float())
    torch.testing.assert_close(own[rows].float(), expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(cond_row, own.repeat(cond_row.shape[0] // t, 1), rtol=0, atol=0)
    torch.testing.assert_close(pooled_row, pooled[0])
    return t


def test_batch_items_carry_their_own_identity(env, tiny, v1, four):
    encoder, _ = v1
    clip = tiny[1]
    text = _long_prompt(clip)
    cond, text_only, latent, n = call("StackedIDApplyBatch", clip=clip, encoder=encoder, latent=_latent(4),
                                      identity_1=four[0], identity_2=four[1], identity_3=four[2],
                                      identity_4=four[3], text=text, trigger_word="img", style_strength=0.3,
                                      identity_strength=1.0)
    assert n == 4 and latent["samples"].shape[0] == 4
    assert [(c[1]["start_percent"], c[1]["end_percent"]) for c in cond] == [(0.0, 0.3), (0.3, 1.0)]
    id_cond, id_pooled = cond[1][0], cond[1][1]["pooled_output"]
    assert id_cond.shape == (4, 2 * 77, 2048) and id_pooled.shape == (4, 1280)
    lengths = [_check_item_rows(clip, encoder, text, ident, id_cond[i], id_pooled[i])
               for i, ident in enumerate(four)]
    assert lengths == [77, 77, 77, 154]  # items 0-2 repeated twice along T (attention-invariant)
    # text-only phase: the trigger-free prompt for every item
    ref_text, ref_pooled, _ = _expanded(clip, text, 1)
    for entry in (cond[0], text_only[0]):
        assert entry[0].shape[0] == 4 and entry[1]["pooled_output"].shape[0] == 4
        torch.testing.assert_close(entry[0], ref_text.expand(4, -1, -1))
        torch.testing.assert_close(entry[1]["pooled_output"], ref_pooled.expand(4, -1))


def test_single_identity_batch_equals_apply(env, tiny, v1, four):
    encoder, _ = v1
    kw = dict(clip=tiny[1], encoder=encoder, text="a portrait of a woman img, studio light",
              trigger_word="img", style_strength=0.2, identity_strength=0.8)
    ref, ref_text = call("StackedIDApply", identity=four[1], **kw)
    got, got_text, _, n = call("StackedIDApplyBatch", identity_1=four[1], latent=_latent(1), **kw)
    assert n == 1 and len(got) == len(ref) == 2
    for (c1, o1), (c2, o2) in zip(got + got_text, ref + ref_text, strict=False):
        assert torch.equal(c1, c2) and torch.equal(o1["pooled_output"], o2["pooled_output"])
        assert {k: v for k, v in o1.items() if k != "pooled_output"} == \
            {k: v for k, v in o2.items() if k != "pooled_output"}


def test_sampler_gives_each_latent_its_own_identity(env, tiny, v1, four):
    """ComfyUI's sampler pairs cond row i with latent i: record what the UNet receives."""
    import nodes

    encoder, model = v1
    cond, _, _, _ = call("StackedIDApplyBatch", clip=tiny[1], encoder=encoder, latent=_latent(4),
                         identity_1=four[0], identity_2=four[1], identity_3=four[2], identity_4=four[3],
                         text="a photo of a man img", trigger_word="img", style_strength=0.0,
                         identity_strength=1.0)
    neg = call("StackedIDApply", clip=tiny[1], encoder=encoder, identity=four[0], text="blurry img",
               trigger_word="img", style_strength=0.0, identity_strength=0.0)[1]
    seen = []

    def wrapper(apply_model, args):
        seen.append((args["input"].shape[0], args["c"]["c_crossattn"].clone(), args["c"]["y"].clone()))
        return apply_model(args["input"], args["timestep"], **args["c"])

    m = model.clone()
    m.set_model_unet_function_wrapper(wrapper)
    with torch.inference_mode():
        (out,) = nodes.common_ksampler(m, 1, 2, 1.0, "euler", "normal", cond, neg,
                                       {"samples": torch.zeros(4, 4, 8, 8)})
    assert out["samples"].shape == (4, 4, 8, 8) and torch.isfinite(out["samples"]).all()
    assert len(seen) == 2  # cfg 1: one UNet call per step, the whole batch at once
    for bsz, ctx, y in seen:
        assert bsz == 4
        torch.testing.assert_close(ctx, cond[0][0].to(ctx.dtype))
        torch.testing.assert_close(y[:, :1280], cond[0][1]["pooled_output"].to(y.dtype))
    # and identities really differ per item
    assert not torch.equal(seen[0][1][0], seen[0][1][2])


def test_token_repeat_leaves_the_unet_output_unchanged(tiny):
    """The alignment choice: a conditioning repeated along T gives the same UNet output (attention over
    duplicated keys/values is unchanged), so padding items by repetition does not alter them."""
    base = tiny[0].model
    g = torch.Generator().manual_seed(0)
    x, ctx, y = (torch.randn(1, 4, 8, 8, generator=g), torch.randn(1, 77, 2048, generator=g),
                 torch.randn(1, 2816, generator=g))
    t = torch.tensor([500.0])
    with torch.inference_mode():
        one = base.apply_model(x, t, c_crossattn=ctx, y=y)
        two = base.apply_model(x, t, c_crossattn=ctx.repeat(1, 2, 1), y=y)
        other = base.apply_model(x, t, c_crossattn=torch.cat([ctx, torch.zeros_like(ctx)], 1), y=y)
    scale = float(one.abs().max())
    same, changed = float((two - one).abs().max()), float((other - one).abs().max())
    assert same < 1e-4 * scale  # float rounding only
    assert changed > 100 * max(same, 1e-6 * scale)  # padding with other tokens would change the result


def test_batch_count_errors_name_the_input(env, tiny, v1, four, comfy_host):
    encoder, _ = v1
    kw = dict(clip=tiny[1], encoder=encoder, text="a photo of a man img", trigger_word="img",
              style_strength=0.2, identity_strength=1.0)
    with pytest.raises(ValueError, match="input 'latent'.*3 item.*2 identities"):
        call("StackedIDApplyBatch", latent=_latent(3), identity_1=four[0], identity_2=four[1], **kw)
    with pytest.raises(ValueError, match="input 'latent'.*1 item.*2 identities"):
        call("StackedIDApplyBatch", latent=_latent(1), identity_1=four[0], identity_2=four[1], **kw)
    with pytest.raises(ValueError, match="input 'identity_2'.*in order"):
        call("StackedIDApplyBatch", latent=_latent(2), identity_1=four[0], identity_3=four[1], **kw)
    # a multiple of the identity count tiles them (latent i -> identity i mod n), as ComfyUI repeats conds
    cond, _, _, n = call("StackedIDApplyBatch", latent=_latent(4), identity_1=four[0], identity_2=four[1],
                         **kw)
    assert n == 2 and cond[1][0].shape[0] == 2
    v2_enc, _ = call("StackedIDLoader", photomaker_file="tiny-v2.safetensors")
    with pytest.raises(ValueError, match="input 'identity_1'.*V1.*encoder is V2"):
        call("StackedIDApplyBatch", latent=_latent(2), identity_1=four[0], identity_2=four[1],
             **{**kw, "encoder": v2_enc})


# ------------------------------------------------------------------ workflows

def _workflow_api():
    name = "_pm_script_workflow_api"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / "workflow_api.py")
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        spec.loader.exec_module(mod)
    return sys.modules[name]


PHOTOS = {"photomaker_face.png": "face_red.png", "photomaker_person_a.png": "face_red.png",
          "photomaker_person_b.png": "face_green.png", "photomaker_person_c.png": "ft_blue.png",
          "photomaker_person_d.png": "face_red2.png"}


def _tiny_api(path):
    """The workflow as API prompt, with tiny stand-ins: TinySDXLLoader for the checkpoint, the tiny
    PhotoMaker files, the fake buffalo_l, test photos, 64x64 latents and 2 steps."""
    wapi = _workflow_api()
    api = wapi.ui_to_api(json.loads(path.read_text()))
    repl = {"photomaker-v1.bin": "tiny-v1.bin", "photomaker-v2.bin": "tiny-v2.safetensors",
            ("EmptyLatentImage", "width"): 64, ("EmptyLatentImage", "height"): 64, ("KSampler", "steps"): 2,
            ("StackedIDFaceAnalysisLoader", "provider"): "CPU", **PHOTOS}
    api = wapi.substitute(api, repl)
    for entry in api.values():
        if entry["class_type"] == "CheckpointLoaderSimple":
            entry["class_type"], entry["inputs"] = "TinySDXLLoader", {"seed": 0}
    return api


def test_rank_seeds_workflow_runs(comfy_host, env):
    from support.graphs import saved_images

    api = _tiny_api(REPO / "workflows" / "06-photomaker-rank-seeds.json")
    types = {e["class_type"] for e in api.values()}
    assert {"StackedIDFaceSimilarity", "KSampler", "SaveImage", "StackedIDApply"} <= types
    (sim_id,) = [k for k, e in api.items() if e["class_type"] == "StackedIDFaceSimilarity"]
    (save_id,) = [k for k, e in api.items() if e["class_type"] == "SaveImage"]
    (lat,) = [e for e in api.values() if e["class_type"] == "EmptyLatentImage"]
    assert lat["inputs"]["batch_size"] >= 4 and api[sim_id]["inputs"]["top_k"] == 2
    assert api[save_id]["inputs"]["images"] == [sim_id, 1]  # the top_k output
    _, outputs = comfy_host.run_graph(api, prompt_id="rank-seeds")
    assert len(saved_images(outputs, save_id)) == 2
    (report,) = outputs[sim_id]["text"]
    # every candidate scored or "no face"
    assert len([ln for ln in report.splitlines() if ln.startswith("#")]) == 4


def test_batch_identities_workflow_runs(comfy_host, env):
    from support.graphs import saved_images

    api = _tiny_api(REPO / "workflows" / "10-photomaker-batch-identities.json")
    (apply_id,) = [k for k, e in api.items() if e["class_type"] == "StackedIDApplyBatch"]
    assert all(f"identity_{i}" in api[apply_id]["inputs"] for i in range(1, 5))
    (save_id,) = [k for k, e in api.items() if e["class_type"] == "SaveImage"]
    (ks_id,) = [k for k, e in api.items() if e["class_type"] == "KSampler"]
    (lat_id,) = [k for k, e in api.items() if e["class_type"] == "EmptyLatentImage"]
    assert api[lat_id]["inputs"]["batch_size"] == 4
    ex = comfy_host.make_executor()
    _, outputs = comfy_host.run_graph(api, executor=ex, prompt_id="batch-identities")
    imgs = saved_images(outputs, save_id)
    assert len(imgs) == 4 and all(i.shape == (64, 64, 3) and i.std() > 0 for i in imgs)
    # four identities, one KSampler execution for the whole batch
    assert [d["node"] for ev, d in ex.server.messages
            if ev == "executing" and d.get("node") == ks_id] == [ks_id]
    assert not np.array_equal(imgs[0], imgs[1])
    api[lat_id]["inputs"]["batch_size"] = 3
    with pytest.raises(comfy_host.GraphError, match="input 'latent'.*3 item.*4 identities"):
        comfy_host.run_graph(api, executor=ex, prompt_id="batch-identities-bad")
