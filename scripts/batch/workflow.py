"""The workflow as a template: converted to API format with the server's /object_info, overrides
applied, and the places that take a job's prompt, seed and person found once; `bind` then makes
one job's prompt from it."""
from __future__ import annotations

import copy
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import workflow_api

from .errors import BatchInputError

APPLY_TYPES = ("StackedIDApply", "StackedIDApplyBatch")
ENCODE_TYPE, LOAD_TYPE, FACE_SIM_TYPE = "StackedIDEncode", "StackedIDLoad", "StackedIDFaceSimilarity"
SEED_INPUTS = ("seed", "noise_seed")
# Where an Apply node's linked `text` comes from: the string widget of the node feeding it
# (PhotoMaker Style's positive, a primitive's value, a string node's input), followed upstream.
TEXT_SOURCES = ("positive", "value", "text", "string", "prompt")
BATCH_NODE_PREFIX = "pmbatch"


def is_link(value: Any) -> bool:
    return (isinstance(value, list) and len(value) == 2 and isinstance(value[0], str)
            and isinstance(value[1], int))


def read_workflow(path: str) -> dict:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as e:
        raise BatchInputError(f"--workflow {path}: cannot read it ({e.strerror or e}).") from e
    except json.JSONDecodeError as e:
        raise BatchInputError(f"--workflow {path}: not JSON ({e}). Export the workflow from ComfyUI "
                              f"(Workflow > Export, or Export (API)).") from e
    if not isinstance(data, dict):
        raise BatchInputError(f"--workflow {path}: not a ComfyUI workflow (expected a JSON object).")
    return data


def to_api(workflow: Mapping, object_info: Mapping, where: str) -> dict:
    """API format: a UI-format workflow is converted with the server's node definitions; an
    API-format prompt is checked against them and used as is."""
    if "nodes" in workflow:
        try:
            return workflow_api.ui_to_api(workflow, workflow_api.node_classes_from_object_info(object_info))
        except workflow_api.WorkflowError as e:
            raise BatchInputError(f"--workflow: cannot convert it for {where}: {e}") from e
    api = {}
    for node_id, node in workflow.items():
        if (not isinstance(node, Mapping) or "class_type" not in node
                or not isinstance(node.get("inputs"), Mapping)):
            raise BatchInputError(f"--workflow: entry '{node_id}' is neither a UI-format workflow nor an "
                                  f"API-format node (no class_type/inputs). Export it again from ComfyUI.")
        if node["class_type"] not in object_info:
            raise BatchInputError(f"--workflow: node {node_id} is a '{node['class_type']}', which {where} "
                                  f"does not have. Install that custom node on the server.")
        api[str(node_id)] = copy.deepcopy(dict(node))
    return api


# ------------------------------------------------------------------------------------- overrides

def input_spec(object_info: Mapping, class_type: str, name: str):
    spec = object_info[class_type]["input"]
    for section in ("required", "optional"):
        if name in (spec.get(section) or {}):
            return spec[section][name]
    return None


def _combo_options(spec) -> list | None:
    type_ = spec[0]
    if isinstance(type_, list):
        return type_
    if type_ == "COMBO" and len(spec) > 1 and isinstance(spec[1], Mapping):
        return list(spec[1].get("options") or [])
    return None


def _coerce(value: Any, spec, what: str):
    """`value` as the widget's type, or a BatchInputError saying what the widget takes."""
    type_, opts = spec[0], (spec[1] if len(spec) > 1 and isinstance(spec[1], Mapping) else {})
    options = _combo_options(spec)
    try:
        if options is not None:
            if value not in options:
                shown = ", ".join(map(str, options[:12])) + (" ..." if len(options) > 12 else "")
                raise ValueError(f"not one of the server's choices: {shown}")
            return value
        if type_ == "INT":
            if isinstance(value, bool) or float(value) != int(float(value)):
                raise ValueError("not a whole number")
            value = int(float(value))
        elif type_ == "FLOAT":
            value = float(value)
        elif type_ == "BOOLEAN":
            if not isinstance(value, bool):
                raise ValueError("use true or false")
            return value
        elif type_ == "STRING":
            return value if isinstance(value, str) else json.dumps(value)
        else:
            raise ValueError(f"it is a {type_} input (a link), not a widget")
    except (TypeError, ValueError) as e:
        raise BatchInputError(f"--set {what}={value!r}: {e}.") from e
    lo, hi = opts.get("min"), opts.get("max")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise BatchInputError(f"--set {what}={value}: outside the widget's range [{lo}, {hi}].")
    return value


def parse_override(text: str) -> tuple[str, str, Any]:
    """'Node.widget=value' (node = title or type); the value is JSON when it parses, else a string."""
    lhs, sep, raw = text.partition("=")
    node, dot, widget = lhs.strip().rpartition(".")
    if not sep or not dot or not node or not widget:
        raise BatchInputError(f"--set {text}: write it as Node.widget=value, with the node's title or type, "
                              f"e.g. --set KSampler.steps=20 or --set \"Empty Latent Image.width=768\".")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return node.strip(), widget.strip(), value


def apply_overrides(api: dict, object_info: Mapping, overrides: list[str]) -> dict:
    """Set each --set on every node whose title or type matches; unknown nodes/widgets are errors."""
    for text in overrides:
        node, widget, value = parse_override(text)
        matches = [nid for nid, n in api.items()
                   if node in (n["class_type"], (n.get("_meta") or {}).get("title"),
                               object_info[n["class_type"]].get("display_name"))]
        if not matches:
            names = sorted({(n.get("_meta") or {}).get("title") or n["class_type"] for n in api.values()})
            raise BatchInputError(f"--set {text}: no node titled or typed '{node}' in the workflow. "
                                  f"Nodes: {', '.join(names)}.")
        for nid in matches:
            ctype = api[nid]["class_type"]
            spec = input_spec(object_info, ctype, widget)
            if spec is None:
                spec_all = object_info[ctype]["input"]
                names = [k for s in ("required", "optional") for k in (spec_all.get(s) or {})]
                raise BatchInputError(f"--set {text}: node '{node}' ({ctype}) has no widget '{widget}'. "
                                      f"Its inputs: {', '.join(names)}.")
            api[nid]["inputs"][widget] = _coerce(value, spec, f"{node}.{widget}")
    return api


# -------------------------------------------------------------------------------------- template

@dataclass
class Template:
    api: dict
    prompt_targets: list[tuple[str, str]] = field(default_factory=list)
    triggers: list[str] = field(default_factory=list)
    seed_targets: list[tuple[str, str]] = field(default_factory=list)
    encode_nodes: list[str] = field(default_factory=list)
    load_nodes: list[str] = field(default_factory=list)
    face_sim_nodes: list[str] = field(default_factory=list)
    output_types: frozenset = frozenset()


def _of_type(api: Mapping, *types: str) -> list[str]:
    return sorted((nid for nid, n in api.items() if n["class_type"] in types), key=str)


def _text_target(api: Mapping, node_id: str) -> tuple[str, str]:
    """The node and input that hold the prompt an Apply node reads (following links upstream)."""
    nid, name, seen = node_id, "text", set()
    while True:
        value = api[nid]["inputs"].get(name)
        if isinstance(value, str):
            return nid, name
        if not is_link(value) or value[0] in seen or value[0] not in api:
            break
        nid = value[0]
        seen.add(nid)
        ins = api[nid]["inputs"]
        name = next((k for k in TEXT_SOURCES if k in ins), None)
        if name is None:
            break
    raise BatchInputError(f"--workflow: cannot find the prompt text of PhotoMaker Apply node {node_id}: "
                          f"its 'text' comes from a {api[nid]['class_type']} node without a text widget. "
                          f"Type the prompt into the Apply node's text (or a PhotoMaker Style / text "
                          f"primitive node).")


def analyse(api: dict, object_info: Mapping, people_kinds: set[str], seed_count: int) -> Template:
    """Find where prompts, seeds and people go; BatchInputError when the workflow cannot take them."""
    t = Template(api=api)
    apply_nodes = _of_type(api, *APPLY_TYPES)
    if not apply_nodes:
        raise BatchInputError("--workflow: it has no PhotoMaker Apply node (StackedIDApply or "
                              "StackedIDApplyBatch), so the prompts have nowhere to go. Use one of the "
                              "pack's workflows (workflows/*.json) or add PhotoMaker Apply to yours.")
    t.prompt_targets = sorted({_text_target(api, nid) for nid in apply_nodes})
    t.triggers = sorted({api[nid]["inputs"]["trigger_word"].strip() for nid in apply_nodes
                         if isinstance(api[nid]["inputs"].get("trigger_word"), str)})
    t.seed_targets = [(nid, k) for nid, n in sorted(api.items()) for k in SEED_INPUTS
                      if k in n["inputs"] and not is_link(n["inputs"][k])]
    if seed_count > 1 and not t.seed_targets:
        raise BatchInputError("--seeds: the workflow has no node with a seed or noise_seed widget "
                              "(a KSampler), so several seeds would give the same image. Use --seeds 1 or "
                              "add a sampler.")
    t.encode_nodes = _of_type(api, ENCODE_TYPE)
    t.load_nodes = _of_type(api, LOAD_TYPE)
    t.face_sim_nodes = _of_type(api, FACE_SIM_TYPE)
    if "photos" in people_kinds:
        bad = [nid for nid in t.encode_nodes if "images" not in api[nid]["inputs"]]
        if not t.encode_nodes or bad:
            raise BatchInputError("--people: people given as photo folders, but the workflow has no "
                                  "PhotoMaker Encode Identity node (StackedIDEncode) with its images "
                                  "connected. Use a workflow that encodes photos (e.g. "
                                  "workflows/01-photomaker-v2-basic.json).")
        if "LoadImage" not in object_info:
            raise BatchInputError("--server: the server has no LoadImage node to read the uploaded photos.")
    if "identity" in people_kinds and not t.load_nodes:
        raise BatchInputError("--people: people given as saved identity files (.safetensors), but the "
                              "workflow has no PhotoMaker Load Identity node (StackedIDLoad). Use a workflow "
                              "with Load Identity, or give the people as photo folders.")
    t.output_types = frozenset(name for name, info in object_info.items() if info.get("output_node"))
    if not any(n["class_type"] in t.output_types and "filename_prefix" in n["inputs"] for n in api.values()):
        raise BatchInputError("--workflow: it saves no image (no Save Image node), so a batch would produce "
                              "nothing. Add a Save Image node.")
    return t


def check_prompts(template: Template, prompts: list[str], path: str) -> None:
    """Every prompt names the Apply nodes' trigger word (the node would stop with an error otherwise)."""
    for i, prompt in enumerate(prompts, 1):
        for trigger in template.triggers:
            if trigger and not re.search(rf"(?<!\w){re.escape(trigger)}(?!\w)", prompt, re.IGNORECASE):
                raise BatchInputError(f"--prompts {path}: prompt {i} ('{prompt[:60]}') lacks the trigger "
                                      f"word '{trigger}'. Put it after the class word: "
                                      f"'a photo of a man {trigger}'.")


def _prune(api: dict, output_types: frozenset) -> dict:
    """Only the nodes an output node depends on (photo loaders the job replaced are dropped)."""
    keep, stack = set(), [nid for nid, n in api.items() if n["class_type"] in output_types]
    while stack:
        nid = stack.pop()
        if nid in keep or nid not in api:
            continue
        keep.add(nid)
        stack.extend(v[0] for v in api[nid]["inputs"].values() if is_link(v))
    return {nid: n for nid, n in api.items() if nid in keep}


def _photo_chain(api: dict, names: list[str]) -> list:
    """LoadImage per uploaded photo, batched with core Image Batch; returns the link to the batch."""
    link = None
    for i, name in enumerate(names):
        load_id = f"{BATCH_NODE_PREFIX}_photo_{i}"
        api[load_id] = {"class_type": "LoadImage", "inputs": {"image": name},
                        "_meta": {"title": f"photo {i}"}}
        if link is None:
            link = [load_id, 0]
        else:
            batch_id = f"{BATCH_NODE_PREFIX}_batch_{i}"
            api[batch_id] = {"class_type": "ImageBatch", "inputs": {"image1": link, "image2": [load_id, 0]},
                             "_meta": {"title": f"photos 0-{i}"}}
            link = [batch_id, 0]
    return link


def bind(template: Template, prompt: str, seed: int, photos: list[str] | None = None,
         identity: str | None = None) -> dict:
    """One job's API prompt: the prompt text, the seed and the person put in place."""
    api = copy.deepcopy(template.api)
    for nid, name in template.prompt_targets:
        api[nid]["inputs"][name] = prompt
    for nid, name in template.seed_targets:
        api[nid]["inputs"][name] = int(seed)
    if photos:
        link = _photo_chain(api, photos)
        for nid in template.encode_nodes:
            api[nid]["inputs"]["images"] = list(link)
    if identity:
        for nid in template.load_nodes:
            api[nid]["inputs"]["identity_file"] = identity
    return _prune(api, template.output_types)
