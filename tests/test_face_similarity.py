"""Face Similarity (scoring/ranking, photomaker_core.similarity + StackedIDFaceSimilarity): the library
math, the node through the real engine with the fake InsightFace pack and tiny SDXL, and the rank-seeds
example workflow."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from support.graphs import call
from support.multi_identity import batch, tiny_api, with_extra_faces

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

@pytest.fixture(scope="module")
def env(pm_env):
    return with_extra_faces(pm_env)


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



# ------------------------------------------------------------------ workflows


def test_rank_seeds_workflow_runs(comfy_host, env):
    from support.graphs import saved_images

    api = tiny_api(REPO / "workflows" / "06-photomaker-rank-seeds.json")
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


