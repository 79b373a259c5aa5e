"""Unconnected inputs stop the graph at the node that caused it, with a message naming the input;
counts in messages are 1-based ("image 2 of 2")."""
from __future__ import annotations

import pytest
import torch

from support.graphs import as_image_batch, call, graph

pytestmark = pytest.mark.host


def _without_loader_model(sampler_model):
    """The basic V1 graph with nothing connected to the Loader's model input; the sampler's model
    comes from `sampler_model`."""
    g = graph("v1")
    del g["2"]["inputs"]["model"]
    g["9"]["inputs"]["model"] = sampler_model
    return g


def test_loader_without_model_blocks_the_sampler_with_a_message(comfy_host, pm_env):
    server = comfy_host.NullServer()
    executor = comfy_host.make_executor(server)
    _, outputs = comfy_host.run_graph(_without_loader_model(["2", 1]), executor=executor)
    errors = [data for event, data in server.messages if event == "execution_error"]
    assert len(errors) == 1, server.messages
    err = errors[0]
    # reported at the node that wanted the MODEL, naming the Loader's input and the fix
    assert err["node_type"] == "KSampler" and err["exception_type"] == "ExecutionBlocked"
    msg = err["exception_message"]
    assert "PhotoMaker Loader - input 'model'" in msg and "Connect the checkpoint loader's MODEL" in msg
    assert "11" not in outputs  # nothing downstream ran (no image saved)


def test_loader_without_model_is_fine_when_its_model_output_is_unused(comfy_host, pm_env):
    server = comfy_host.NullServer()
    executor = comfy_host.make_executor(server)
    _, outputs = comfy_host.run_graph(_without_loader_model(["1", 0]), executor=executor)
    assert not [m for m in server.messages if m[0] == "execution_error"]
    assert outputs["11"]["images"]


def test_no_face_message_counts_from_one(pm_env):
    faces = call("StackedIDFaceAnalysisLoader", model_pack="buffalo_l", provider="CPU", det_size=640)[0]
    encoder = call("StackedIDLoader", photomaker_file="tiny-v2.safetensors")[0]
    images = as_image_batch(pm_env["images"]["face_red.png"], pm_env["images"]["noface.png"])
    with pytest.raises(ValueError) as e:
        call("StackedIDEncode", encoder=encoder, images=images, face_analysis=faces)
    assert "no face found in image 2 of 2" in str(e.value)


def test_similarity_report_counts_from_one(comfy_host):
    similarity = comfy_host.pack_submodule("photomaker_core.similarity")
    ref = torch.nn.functional.normalize(torch.ones(1, 512), dim=-1)
    far = torch.zeros(512)
    far[0] = 1.0
    ranking = similarity.rank_embeddings([far.numpy(), None, ref[0].numpy()], ref)
    lines = ranking.report(top_k=1).splitlines()
    # input order: first image = 1; the third image matches the reference best
    assert lines[2].startswith("#1  image 3:") and lines[2].endswith("<- kept")
    assert lines[3].startswith("#2  image 1:") and lines[4].startswith("#3  image 2: no face")
