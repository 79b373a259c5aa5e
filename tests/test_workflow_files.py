"""The example workflow files as a user meets them: ordered names, a thumbnail each, and the model
metadata the frontend needs to offer downloads. (Their graphs run in test_workflows.py; they open
in the real frontend, laid out and with the Missing Models panel checked, in test_ui.py.)"""
from __future__ import annotations

import json
import re
from pathlib import Path

from support import workflow_env

REPO = Path(__file__).resolve().parents[1]
WORKFLOWS = sorted((REPO / "workflows").glob("*.json"))
NAME = re.compile(r"^(\d\d)-photomaker-[a-z0-9]+(-[a-z0-9]+)*\.json$")
# what the frontend scans as a model file name (1.49.6's list of model extensions, abridged)
MODEL_FILE = re.compile(r"\.(safetensors|ckpt|pt|pth|bin|sft|gguf)$", re.I)


def test_names_order_the_templates():
    """`NN-photomaker-<slug>.json`: templates list by name, so the number is the order a new user
    follows; 01 is the V2 basic workflow; numbers are unique and in 01..29."""
    numbers = []
    for path in WORKFLOWS:
        m = NAME.match(path.name)
        assert m, f"{path.name} is not NN-photomaker-<slug>.json"
        numbers.append(int(m.group(1)))
        assert (path.with_suffix(".jpg")).is_file(), f"{path.name} has no thumbnail"
    assert len(set(numbers)) == len(numbers) and 1 <= min(numbers) and max(numbers) <= 29, numbers
    assert WORKFLOWS[0].name == "01-photomaker-v2-basic.json"
    assert sorted(p.stem for p in (REPO / "workflows").glob("*.jpg")) == [p.stem for p in WORKFLOWS]


def _model_widgets(workflow: dict):
    for node in workflow["nodes"]:
        for value in node.get("widgets_values") or []:
            if isinstance(value, str) and MODEL_FILE.search(value):
                yield node, value


def test_every_public_model_file_carries_its_download():
    """Each loader widget naming a public model file has the frontend's metadata on its node
    (properties.models: name, url, directory = the ComfyUI model folder); nothing else is listed."""
    catalogue = workflow_env.model_downloads()
    for path in WORKFLOWS:
        workflow = json.loads(path.read_text())
        for node, value in _model_widgets(workflow):
            listed = (node.get("properties") or {}).get("models")
            where = f"{path.name} node {node['id']} ({node['type']}) '{value}'"
            if value == workflow_env.IDENTITY_NAME:  # made by the user (Save Identity): nothing to fetch
                assert not listed, where
                continue
            assert value in catalogue, f"{where}: no known download for this file"
            assert listed == [catalogue[value]], where
        for node in workflow["nodes"]:
            values = node.get("widgets_values") if isinstance(node.get("widgets_values"), list) else []
            for entry in (node.get("properties") or {}).get("models", []):
                assert entry["name"] in values, f"{path.name} node {node['id']}: lists {entry['name']}"
                assert entry["url"].startswith("https://huggingface.co/"), entry


def test_directories_are_the_hosts_model_folders(comfy_host):
    """The frontend downloads into models/<directory>: it must be the folder the loader reads
    (the pack's registered PhotoMaker folder; core's checkpoints and controlnet)."""
    import folder_paths

    reads = {"StackedIDLoader": comfy_host.pack_submodule("nodes.folders").PHOTOMAKER_FOLDER,
             "CheckpointLoaderSimple": "checkpoints", "ControlNetLoader": "controlnet"}
    for path in WORKFLOWS:
        for node, _ in _model_widgets(json.loads(path.read_text())):
            for entry in (node.get("properties") or {}).get("models", []):
                assert entry["directory"] == reads[node["type"]], f"{path.name} node {node['id']}"
                assert entry["directory"] in folder_paths.folder_names_and_paths
