"""What a user sees on the pack's nodes, read from the host's own node descriptions.

`GET_NODE_INFO_V1()` is what the host's /object_info route returns for a V3 node (server.py's
`node_info`), computed in-process here so the check runs on every host (0.3.52, 0.3.75, 0.33).
Frontends label an output with its `output_name`, which is the display name, or else the socket
type on 0.3.x hosts (two CONDITIONING outputs then look alike) and the id on 0.33.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.host

REPO = Path(__file__).resolve().parents[1]
# The names the docs, the workflow Notes and the README use for each node's outputs, in order.
OUTPUT_LABELS = {
    "StackedIDLoader": ["encoder", "model"],
    "StackedIDFaceAnalysisLoader": ["face_analysis"],
    "StackedIDEncode": ["identity", "preview"],
    "StackedIDStack": ["identity"],
    "StackedIDSave": ["file"],
    "StackedIDLoad": ["identity"],
    "StackedIDApply": ["conditioning", "text_only"],
    "StackedIDStyle": ["positive", "negative"],
    "StackedIDApplyBatch": ["conditioning", "text_only", "latent", "batch_size"],
    "StackedIDFaceSimilarity": ["ranked", "top_k", "scores_json", "best_score", "report", "preview"],
    "StackedIDFaceKeypoints": ["keypoints", "report"],
    "StackedIDFaceDetailer": ["images", "face_masks", "report"],
}


@pytest.fixture(scope="module")
def node_info(comfy_host):
    import nodes

    return {nid: nodes.NODE_CLASS_MAPPINGS[nid].GET_NODE_INFO_V1() for nid in comfy_host.pack_node_ids()}


def test_every_pack_node_is_covered(node_info):
    assert sorted(node_info) == sorted(OUTPUT_LABELS)


def test_output_labels_are_distinct_names_not_types(node_info):
    for nid, info in node_info.items():
        labels = info["output_name"]
        assert len(labels) == len(info["output"]), nid
        assert len(set(labels)) == len(labels), f"{nid}: two outputs share a label: {labels}"
        # a label equal to the type is what 0.3.x hosts show when the display name is missing
        typed = [lbl for lbl, typ in zip(labels, info["output"], strict=True) if lbl == typ]
        assert not typed, f"{nid}: outputs labelled with their type: {typed}"
        assert labels == OUTPUT_LABELS[nid], nid


def test_every_input_and_output_has_a_tooltip(node_info):
    for nid, info in node_info.items():
        for section in ("required", "optional"):
            for name, spec in info["input"].get(section, {}).items():
                assert len(spec) > 1 and spec[1].get("tooltip"), f"{nid} input '{name}' has no tooltip"
        tips = info.get("output_tooltips") or []
        assert len(tips) == len(info["output"]) and all(tips), f"{nid}: an output has no tooltip"


def test_node_docs_name_every_output_label():
    """web/docs/<node>.md lists each output under the label the node shows."""
    for nid, labels in OUTPUT_LABELS.items():
        doc = (REPO / "web" / "docs" / f"{nid}.md").read_text()
        outputs = re.split(r"^Outputs?:", doc, maxsplit=1, flags=re.M)
        assert len(outputs) == 2, f"{nid}.md has no Outputs: paragraph"
        for label in labels:
            assert f"**{label}**" in outputs[1], f"{nid}.md does not list output '{label}'"


def test_workflows_store_the_current_output_labels(node_info):
    """A UI workflow stores each output's name and the frontend shows the stored one: the files
    must carry the labels the host declares, or users see stale (type) names."""
    for path in sorted((REPO / "workflows").glob("*.json")):
        for node in json.loads(path.read_text())["nodes"]:
            if node["type"] not in node_info:
                continue
            stored = [o.get("label") or o["name"] for o in node.get("outputs", [])]
            assert stored == node_info[node["type"]]["output_name"], f"{path.name} node {node['id']}"
