"""Convert a UI-format ComfyUI workflow (what the web frontend saves) into the API format that
`execution.PromptExecutor` runs, using the host's own node definitions.

This mirrors what the frontend does in `graphToPrompt` (ComfyUI frontend 1.x):

* widget values: a node's widgets are its widget inputs in schema order (required, then optional),
  plus the frontend-only companions the frontend inserts: the `control_after_generate` combo after
  an INT that has it (or is named seed / noise_seed), a control combo *and* a filter string after a
  COMBO that has it, and the `upload` button of image/video upload nodes (LoadImage), added last;
  `widgets_values` holds one value per widget, in that order;
* links: an input's link is followed back to the producing node's output slot; Reroute nodes are
  followed through, a PrimitiveNode gives its value, a bypassed node (mode 4) passes on its first
  input of a matching type, a muted node (mode 2) is left out together with every input fed by it;
* frontend-only nodes (Note, MarkdownNote, Reroute, PrimitiveNode) do not appear in the output.

Usage (with the host booted, e.g. by the test harness or scripts/demo.py):

    from workflow_api import ui_to_api, substitute
    api = ui_to_api(json.load(open("workflows/01-photomaker-v2-basic.json")))
    api = substitute(api, {"sd_xl_base_1.0.safetensors": "my-sdxl.safetensors",
                           ("KSampler", "steps"): 20})

Against a running server instead: `ui_to_api(workflow, node_classes_from_object_info(object_info))`
with the server's GET /object_info (scripts/photomaker_batch.py does this).

Development tooling: nothing in the pack imports this.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Mapping

# Nodes that exist only in the frontend (no backend class): never sent to the executor.
FRONTEND_ONLY = frozenset({"Note", "MarkdownNote", "Reroute", "PrimitiveNode"})
# litegraph modes
MODE_ALWAYS, MODE_NEVER, MODE_BYPASS = 0, 2, 4
WIDGET_TYPES = frozenset({"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"})
UPLOAD_OPTIONS = ("image_upload", "video_upload", "animated_image_upload")


class WorkflowError(ValueError):
    """The workflow cannot be converted (unknown node type, broken link, unsupported feature)."""


@dataclass(frozen=True)
class Widget:
    name: str | None  # None: a frontend-only widget (upload button) whose value is not an input
    extra: int = 0  # values stored right after this one by companion widgets (seed control...)


def _is_widget(type_: Any, options: Mapping) -> bool:
    if options.get("forceInput"):
        return False
    return isinstance(type_, (list, tuple)) or type_ in WIDGET_TYPES


def widget_layout(node_class) -> list[Widget]:
    """The widgets of a node class in the order the frontend stores their values."""
    spec = node_class.INPUT_TYPES()
    layout: list[Widget] = []
    upload = False
    for section in ("required", "optional"):
        for name, entry in (spec.get(section) or {}).items():
            type_ = entry[0]
            options = entry[1] if len(entry) > 1 and isinstance(entry[1], Mapping) else {}
            if not _is_widget(type_, options):
                continue
            extra = 0
            if type_ == "INT":
                control = options.get("control_after_generate")
                if control is None:  # the frontend's legacy convention
                    control = name in ("seed", "noise_seed")
                extra = 1 if control else 0
            elif isinstance(type_, (list, tuple)) or type_ == "COMBO":
                extra = 2 if options.get("control_after_generate") else 0
                if section == "required" and any(options.get(k) for k in UPLOAD_OPTIONS):
                    upload = True
            layout.append(Widget(name, extra))
    if upload:  # Comfy.UploadImage adds `required.upload`; not in the server's input_order: last
        layout.append(Widget(None))
    return layout


def _links(workflow: Mapping) -> dict[int, tuple]:
    """link id -> (origin_id, origin_slot, target_id, target_slot, type); accepts both the array
    form of the root graph and the object form."""
    out = {}
    for link in workflow.get("links") or []:
        if isinstance(link, Mapping):
            out[int(link["id"])] = (str(link["origin_id"]), int(link["origin_slot"]), str(link["target_id"]),
                                    int(link["target_slot"]), link.get("type"))
        else:
            lid, origin, oslot, target, tslot, typ = link[:6]
            out[int(lid)] = (str(origin), int(oslot), str(target), int(tslot), typ)
    return out


def _types_match(a: Any, b: Any) -> bool:
    """litegraph's isValidConnection: equal, a wildcard, or overlapping comma-separated lists."""
    a, b = str(a or "").upper(), str(b or "").upper()
    if a in ("", "*") or b in ("", "*") or a == b:
        return True
    return bool(set(a.split(",")) & set(b.split(",")))


class _Resolver:
    def __init__(self, workflow: Mapping):
        self.nodes = {str(n["id"]): n for n in workflow.get("nodes") or []}
        self.links = _links(workflow)

    def input_link(self, node_id: str, link_id) -> tuple | None:
        if link_id is None:
            return None
        link = self.links.get(int(link_id))
        if link is None:
            raise WorkflowError(f"node {node_id}: input link {link_id} is not in the workflow's links")
        return link

    def resolve(self, link: tuple, want_type, seen: frozenset = frozenset()):
        """Follow a link to what really feeds the input: ('link', node_id, slot), ('value', v),
        ('muted', node_id) or None (nothing: the input keeps its widget value)."""
        origin_id, origin_slot = link[0], link[1]
        key = (origin_id, origin_slot)
        if key in seen:
            raise WorkflowError(f"circular link through node {origin_id}")
        seen = seen | {key}
        node = self.nodes.get(origin_id)
        if node is None:
            raise WorkflowError(f"a link comes from node {origin_id}, which is not in the workflow")
        ntype, mode = node.get("type"), node.get("mode", MODE_ALWAYS)
        if mode == MODE_BYPASS and ntype not in FRONTEND_ONLY:
            inputs = node.get("inputs") or []
            outputs = node.get("outputs") or []
            out_type = outputs[origin_slot].get("type") if origin_slot < len(outputs) else want_type
            idx = self._bypass_slot(inputs, origin_slot, out_type, want_type)
            if idx < 0:
                return None
            nxt = self.input_link(origin_id, inputs[idx].get("link"))
            return self.resolve(nxt, want_type, seen) if nxt else None
        if ntype == "Reroute":
            inputs = node.get("inputs") or []
            nxt = self.input_link(origin_id, inputs[0].get("link")) if inputs else None
            return self.resolve(nxt, want_type, seen) if nxt else None
        if ntype == "PrimitiveNode":
            values = node.get("widgets_values") or []
            return ("value", values[0]) if values else None
        if ntype in FRONTEND_ONLY:
            return None
        if mode == MODE_NEVER:
            return ("muted", origin_id)
        return ("link", origin_id, origin_slot)

    @staticmethod
    def _bypass_slot(inputs: list, slot: int, out_type, want_type) -> int:
        """The input a bypassed node passes on for output `slot` (frontend ExecutableNodeDTO rule)."""
        if want_type in ("*", "", None):
            return slot if len(inputs) > slot else (0 if inputs else -1)
        if slot < len(inputs) and _types_match(inputs[slot].get("type"), out_type) \
                and _types_match(inputs[slot].get("type"), want_type):
            return slot
        for i, inp in enumerate(inputs):
            if inp.get("type") == want_type:
                return i
        for i, inp in enumerate(inputs):
            if _types_match(inp.get("type"), out_type) and _types_match(inp.get("type"), want_type):
                return i
        return -1


def _wrap(value):
    # Array values would read as links: the frontend boxes them and the backend unboxes.
    return {"__value__": value} if isinstance(value, list) else value


class ObjectInfoNode:
    """A node class as ui_to_api needs it, built from a server's /object_info entry: convert for a
    running server (its own nodes, custom ones included) without booting a host here."""

    def __init__(self, info: Mapping):
        self._inputs = info["input"]
        self.DISPLAY_NAME = info.get("display_name") or info["name"]

    def INPUT_TYPES(self):
        return self._inputs


def node_classes_from_object_info(object_info: Mapping) -> dict:
    """{node type: ObjectInfoNode} for ui_to_api's `node_classes`, from GET /object_info."""
    return {name: ObjectInfoNode(info) for name, info in object_info.items()}


def ui_to_api(workflow: Mapping, node_classes: Mapping | None = None) -> dict:
    """API-format prompt {node_id: {"class_type", "inputs", "_meta"}} of a UI-format workflow.

    `node_classes` defaults to the booted host's `nodes.NODE_CLASS_MAPPINGS`; for a running server
    pass `node_classes_from_object_info(GET /object_info)`."""
    if node_classes is None:
        import nodes

        node_classes = nodes.NODE_CLASS_MAPPINGS
    if not isinstance(workflow, Mapping) or "nodes" not in workflow:
        raise WorkflowError("not a UI-format workflow (no 'nodes' list); "
                            "API-format prompts need no conversion")
    subgraphs = {s.get("id") for s in (workflow.get("definitions") or {}).get("subgraphs") or []}
    resolver = _Resolver(workflow)
    api: dict[str, dict] = {}
    for node in sorted(workflow["nodes"], key=lambda n: (n.get("order", 0), str(n["id"]))):
        node_id, ntype = str(node["id"]), node.get("type")
        if ntype in FRONTEND_ONLY or node.get("mode", MODE_ALWAYS) in (MODE_NEVER, MODE_BYPASS):
            continue
        if ntype in subgraphs or str(ntype).startswith("workflow>") or str(ntype).startswith("workflow/"):
            raise WorkflowError(f"node {node_id} is a subgraph / group node ({ntype}): convert it in the "
                                f"frontend (Convert to nodes) first")
        cls = node_classes.get(ntype)
        if cls is None:
            raise WorkflowError(f"node {node_id}: unknown node type '{ntype}' "
                                f"(not installed in this ComfyUI)")
        inputs: dict[str, Any] = {}
        values = node.get("widgets_values")
        layout = widget_layout(cls)
        if isinstance(values, Mapping):  # some nodes serialise widgets by name
            for w in layout:
                if w.name is not None and w.name in values:
                    inputs[w.name] = _wrap(values[w.name])
        elif values:
            pos = 0
            for w in layout:
                if pos >= len(values):
                    break
                if w.name is not None:
                    inputs[w.name] = _wrap(values[pos])
                pos += 1 + w.extra
        for slot in node.get("inputs") or []:
            link = resolver.input_link(node_id, slot.get("link"))
            if link is None:
                continue
            got = resolver.resolve(link, slot.get("type"))
            name = slot["name"]
            if got is None:
                continue  # nothing behind the link: the widget value (if any) stays
            if got[0] == "value":
                inputs[name] = _wrap(got[1])
            elif got[0] == "muted":
                inputs.pop(name, None)  # the frontend drops inputs fed by nodes it does not send
            else:
                inputs[name] = [got[1], got[2]]
        title = node.get("title") or getattr(cls, "DISPLAY_NAME", None) or ntype
        api[node_id] = {"inputs": inputs, "class_type": ntype, "_meta": {"title": title}}
    # Inputs linked to nodes that are not sent (muted / unknown) are dropped, as the frontend does.
    for entry in api.values():
        for name, value in list(entry["inputs"].items()):
            if isinstance(value, list) and len(value) == 2 and value[0] not in api:
                del entry["inputs"][name]
    return api


def substitute(api: Mapping, replacements: Mapping) -> dict:
    """A copy of `api` with values swapped. Keys of `replacements`:

    * a plain value (e.g. "sd_xl_base_1.0.safetensors"): replaced wherever it is an input value;
    * (class_type, input_name), e.g. ("KSampler", "steps"): that input set on every node of the class;
    * (node_id, input_name) with a node id of the prompt: that input of that node.
    """
    out = copy.deepcopy(dict(api))
    by_value = {k: v for k, v in replacements.items() if not isinstance(k, tuple)}
    targeted = {k: v for k, v in replacements.items() if isinstance(k, tuple)}
    for node_id, entry in out.items():
        ins = entry["inputs"]
        for name, value in list(ins.items()):
            if isinstance(value, list):
                continue  # a link
            try:
                if value in by_value:
                    ins[name] = by_value[value]
            except TypeError:  # unhashable (boxed list)
                pass
        for (who, name), value in targeted.items():
            if who == node_id or who == entry["class_type"]:
                ins[name] = value
    return out


def model_references(workflow: Mapping) -> list[tuple[str, str, str]]:
    """(node type, input, value) of the model-file widgets of a UI workflow, without a host:
    the first widget of each of these loader nodes names the file or pack."""
    first_widget = {"CheckpointLoaderSimple": "ckpt_name", "StackedIDLoader": "photomaker_file",
                    "StackedIDFaceAnalysisLoader": "model_pack", "StackedIDLoad": "identity_file"}
    refs = []
    for node in workflow.get("nodes") or []:
        ntype = node.get("type")
        if ntype in first_widget and node.get("mode", MODE_ALWAYS) not in (MODE_NEVER, MODE_BYPASS):
            values = node.get("widgets_values") or []
            if values:
                refs.append((ntype, first_widget[ntype], values[0]))
    return refs
