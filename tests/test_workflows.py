"""The example workflows (workflows/*.json), their UI -> API conversion (scripts/workflow_api.py) and
the demo (scripts/demo.py).

* every workflow is a well-formed UI-format file with a Note, references only installed node types,
  converts, validates and runs through the real engine with tiny random models;
* 09-photomaker-controlnet.json gives the ControlNet the text-only prompt at every step (as the
  reference) while the UNet gets the identity; 08-photomaker-two-people.json masks one prompt per person
  to complementary halves;
* the converter follows the frontend's rules (widget order, seed control values, Reroute,
  PrimitiveNode, muted and bypassed nodes), checked on small hand-made graphs;
* the demo's downloader resumes and size-checks, and the demo reports missing weights (exit 2) or,
  with --synthetic, writes a labelled PNG in well under a minute.
"""
from __future__ import annotations

import http.server
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from support.workflow_run import LATENT, WORKFLOWS, saved_images, tiny_api

REPO = Path(__file__).resolve().parents[1]
EXPECTED = ["01-photomaker-v2-basic.json", "02-photomaker-v1-basic.json",
            "07-photomaker-identity-mixing.json", "08-photomaker-two-people.json",
            "04-photomaker-stylization.json", "05-photomaker-save-identity.json",
            "03-photomaker-v2-multi-photo.json", "09-photomaker-controlnet.json"]
FRONTEND_ONLY = {"Note", "MarkdownNote", "Reroute", "PrimitiveNode"}


def _load_script(name):
    spec = importlib.util.spec_from_file_location(f"_pm_script_{name}", REPO / "scripts" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


wapi = _load_script("workflow_api")
demo = _load_script("demo")


def _ids(paths):
    return [p.stem for p in paths]


# ------------------------------------------------------------------------------ file format

def test_expected_workflows_exist():
    names = [p.name for p in WORKFLOWS]
    for name in EXPECTED:
        assert name in names


@pytest.mark.parametrize("path", WORKFLOWS, ids=_ids(WORKFLOWS))
def test_workflow_is_ui_format(path):
    wf = json.loads(path.read_text())
    for key in ("last_node_id", "last_link_id", "nodes", "links", "groups", "config", "extra", "version"):
        assert key in wf, key
    assert wf["version"] == 0.4
    nodes = {n["id"]: n for n in wf["nodes"]}
    assert len(nodes) == len(wf["nodes"]), "duplicate node ids"
    assert wf["last_node_id"] >= max(nodes)
    for n in wf["nodes"]:
        for key in ("id", "type", "pos", "size", "flags", "order", "mode", "properties", "widgets_values"):
            assert key in n, (n.get("id"), key)
        assert n["mode"] in (0, 2, 4)
        if n["type"] not in FRONTEND_ONLY:
            assert n["properties"].get("Node name for S&R") == n["type"]
            assert isinstance(n["inputs"], list) and isinstance(n["outputs"], list)
    notes = [n for n in wf["nodes"] if n["type"] in ("Note", "MarkdownNote")]
    assert notes and all(len(n["widgets_values"][0]) > 100 for n in notes), "each workflow explains itself"
    # links: [id, from_node, from_slot, to_node, to_slot, type], consistent with the slots
    link_ids = [link[0] for link in wf["links"]]
    assert len(set(link_ids)) == len(link_ids)
    assert wf["last_link_id"] >= max(link_ids)
    for lid, src, sslot, dst, dslot, typ in wf["links"]:
        out = nodes[src]["outputs"][sslot]
        assert lid in out["links"] and out["slot_index"] == sslot
        assert out["type"] == typ
        inp = nodes[dst]["inputs"][dslot]
        assert inp["link"] == lid, (lid, dst, dslot)
        assert inp["type"] == typ or inp.get("widget"), (lid, inp, typ)
    for n in wf["nodes"]:
        for inp in n.get("inputs", []):
            if inp["link"] is not None:
                assert inp["link"] in link_ids
            else:
                assert "widget" not in inp, "unlinked widget inputs are not stored (frontend compression)"
        for out in n.get("outputs", []):
            for lid in out["links"] or []:
                assert lid in link_ids


def test_workflows_use_reference_defaults():
    neg = ("nsfw, lowres, bad anatomy, bad hands, text, error, missing fingers, extra digit, fewer digits, "
           "cropped, worst quality, low quality, normal quality, jpeg artifacts, signature, watermark, "
           "username, blurry")
    for path in WORKFLOWS:
        wf = json.loads(path.read_text())
        by_type = {}
        for n in wf["nodes"]:
            by_type.setdefault(n["type"], []).append(n)
        for ks in by_type.get("KSampler", []):
            seed, control, steps, cfg, sampler, scheduler, denoise = ks["widgets_values"]
            assert control in ("fixed", "randomize", "increment", "decrement")
            assert 30 <= steps <= 50 and cfg == 5.0 and (sampler, scheduler) == ("euler", "normal")
            assert denoise == 1.0 or ("img2img" in path.name and 0 < denoise < 1)  # img2img keeps some input
        texts = [n["widgets_values"][0] for n in by_type.get("CLIPTextEncode", [])] + \
                [n["widgets_values"][2] for n in by_type.get("StackedIDStyle", [])]
        assert neg in texts, path.name
        strengths = [n["widgets_values"][2] for n in by_type.get("StackedIDApply", [])]
        assert strengths == ([0.4] if "stylization" in path.name else [0.2] * len(strengths))
        for n in by_type.get("CheckpointLoaderSimple", []):
            assert n["widgets_values"][0] == "sd_xl_base_1.0.safetensors"
        for n in by_type.get("StackedIDFaceAnalysisLoader", []):
            assert n["widgets_values"][0] == "buffalo_l"
        assert {n["widgets_values"][0] for n in by_type.get("StackedIDLoader", [])} <= {"photomaker-v1.bin",
                                                                                         "photomaker-v2.bin"}


# ------------------------------------------------------------------------- converter rules

class _Fake:
    def __init__(self, required, optional=None, returns=("X",)):
        self._spec = {"required": required, "optional": optional or {}}
        self.RETURN_TYPES = returns

    def INPUT_TYPES(self):
        return self._spec


FAKES = {
    "Src": _Fake({}, returns=("MODEL", "INT")),
    "Sampler": _Fake({"model": ("MODEL",), "seed": ("INT", {"default": 0, "control_after_generate": True}),
                      "steps": ("INT", {"default": 20}), "name": (["a", "b"],),
                      "pick": ("COMBO", {"options": ["x", "y"], "control_after_generate": True}),
                      "text": ("STRING", {"forceInput": True}), "flag": ("BOOLEAN", {"default": True})},
                     {"extra": ("FLOAT", {"default": 1.0}), "opt_model": ("MODEL",)}),
    "Legacy": _Fake({"noise_seed": ("INT", {}), "cfg": ("FLOAT", {})}),
    "Upload": _Fake({"image": (["a.png"], {"image_upload": True})}, {"mode": (["m"],)}, returns=("IMAGE",)),
    "Pass": _Fake({"model": ("MODEL",), "strength": ("FLOAT", {})}, returns=("MODEL",)),
}


def _node(nid, ntype, widgets=(), inputs=(), outputs=(), mode=0):
    return {"id": nid, "type": ntype, "mode": mode, "widgets_values": list(widgets),
            "inputs": [{"name": n, "type": t, "link": lk} for n, t, lk in inputs],
            "outputs": [{"name": t, "type": t, "links": lk, "slot_index": i}
                        for i, (t, lk) in enumerate(outputs)]}


def test_widget_layout_follows_the_frontend():
    layout = [(w.name, w.extra) for w in wapi.widget_layout(FAKES["Sampler"])]
    # forceInput STRING is a socket; seed has one control value, a controlled combo two; optional last
    assert layout == [("seed", 1), ("steps", 0), ("name", 0), ("pick", 2), ("flag", 0), ("extra", 0)]
    assert [(w.name, w.extra) for w in wapi.widget_layout(FAKES["Legacy"])] == [("noise_seed", 1), ("cfg", 0)]
    # LoadImage-style upload button: its value ("image") is stored after all inputs
    assert [w.name for w in wapi.widget_layout(FAKES["Upload"])] == ["image", "mode", None]


def test_convert_widgets_links_and_frontend_nodes():
    wf = {"nodes": [
        _node(1, "Src", outputs=[("MODEL", [1]), ("INT", [])]),
        _node(2, "Reroute", inputs=[("", "*", 1)], outputs=[("MODEL", [2])]),
        _node(3, "PrimitiveNode", widgets=["from primitive", "fixed"], outputs=[("STRING", [3])]),
        _node(4, "Sampler", widgets=[7, "randomize", 30, "b", "y", "fixed", "", False, 0.5],
              inputs=[("model", "MODEL", 2), ("text", "STRING", 3), ("opt_model", "MODEL", None)]),
        _node(5, "Note", widgets=["hello"]),
        _node(6, "Upload", widgets=["face.png", "m", "image"], outputs=[("IMAGE", [])]),
    ], "links": [[1, 1, 0, 2, 0, "MODEL"], [2, 2, 0, 4, 0, "MODEL"], [3, 3, 0, 4, 1, "STRING"]]}
    api = wapi.ui_to_api(wf, FAKES)
    assert set(api) == {"1", "4", "6"}
    assert api["4"]["class_type"] == "Sampler"
    assert api["4"]["inputs"] == {"seed": 7, "steps": 30, "name": "b", "pick": "y", "flag": False,
                                  "extra": 0.5, "model": ["1", 0], "text": "from primitive"}
    assert api["6"]["inputs"] == {"image": "face.png", "mode": "m"}


def test_convert_muted_and_bypassed_nodes():
    wf = {"nodes": [
        _node(1, "Src", outputs=[("MODEL", [1, 4])]),
        _node(2, "Pass", widgets=[0.5], inputs=[("model", "MODEL", 1)], outputs=[("MODEL", [2])], mode=4),
        _node(3, "Sampler", widgets=[1, "fixed", 2, "a", "x", "fixed", "", True, 1.0],
              inputs=[("model", "MODEL", 2), ("text", "STRING", None), ("opt_model", "MODEL", 3)]),
        _node(4, "Pass", widgets=[0.5], inputs=[("model", "MODEL", 4)], outputs=[("MODEL", [3])], mode=2),
    ], "links": [[1, 1, 0, 2, 0, "MODEL"], [2, 2, 0, 3, 0, "MODEL"], [3, 4, 0, 3, 2, "MODEL"],
                 [4, 1, 0, 4, 0, "MODEL"]]}
    api = wapi.ui_to_api(wf, FAKES)
    assert set(api) == {"1", "3"}  # bypassed and muted nodes are not sent
    assert api["3"]["inputs"]["model"] == ["1", 0]  # through the bypassed node's MODEL input
    assert "opt_model" not in api["3"]["inputs"]  # fed by a muted node: dropped


def test_convert_rejects_unknown_types_and_bad_links():
    wf = {"nodes": [_node(1, "NoSuchNode")], "links": []}
    with pytest.raises(wapi.WorkflowError, match="NoSuchNode"):
        wapi.ui_to_api(wf, FAKES)
    wf = {"nodes": [_node(1, "Pass", widgets=[1.0], inputs=[("model", "MODEL", 99)])], "links": []}
    with pytest.raises(wapi.WorkflowError, match="99"):
        wapi.ui_to_api(wf, FAKES)
    with pytest.raises(wapi.WorkflowError, match="UI-format"):
        wapi.ui_to_api({"1": {"class_type": "X", "inputs": {}}}, FAKES)


def test_substitute():
    api = {"1": {"class_type": "Loader", "inputs": {"ckpt_name": "a.safetensors", "other": ["2", 0]}},
           "2": {"class_type": "KSampler", "inputs": {"steps": 50, "seed": 1}}}
    out = wapi.substitute(api, {"a.safetensors": "b.safetensors", ("KSampler", "steps"): 2, ("2", "seed"): 9})
    assert out["1"]["inputs"] == {"ckpt_name": "b.safetensors", "other": ["2", 0]}
    assert out["2"]["inputs"] == {"steps": 2, "seed": 9}
    assert api["2"]["inputs"]["steps"] == 50  # a copy


# ---------------------------------------------------------------------------- downloader

class _Handler(http.server.BaseHTTPRequestHandler):
    payload = b""
    mode = "ok"  # ok | truncate | norange

    def log_message(self, *a):
        pass

    def do_HEAD(self):
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.payload)))
        self.end_headers()

    def do_GET(self):
        data, start = self.payload, 0
        rng = self.headers.get("Range")
        if rng and self.mode != "norange":
            start = int(rng.split("=")[1].split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[: len(body) // 2] if self.mode == "truncate" else body)


@pytest.fixture
def http_server():
    _Handler.payload = os.urandom(300_000)
    _Handler.mode = "ok"
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/file.bin", _Handler
    server.shutdown()
    server.server_close()


def test_download_resumes_and_checks_size(http_server, tmp_path):
    url, handler = http_server
    dest = tmp_path / "models" / "file.bin"
    handler.mode = "truncate"  # the connection drops halfway: size check fails, the .part stays
    with pytest.raises(demo.DemoError, match="resume"):
        demo.download(url, dest, progress=False)
    part = dest.with_name("file.bin.part")
    assert not dest.exists() and 0 < part.stat().st_size < len(handler.payload)
    handler.mode = "ok"  # the next run continues with a Range request
    demo.download(url, dest, progress=False)
    assert dest.read_bytes() == handler.payload and not part.exists()
    # a server that ignores Range: the partial file is replaced, not appended to
    part.write_bytes(b"junk" * 10)
    handler.mode = "norange"
    dest.unlink()
    demo.download(url, dest, progress=False)
    assert dest.read_bytes() == handler.payload


def test_unpack_insightface_pack(tmp_path):
    for nested in (True, False):
        archive = tmp_path / "buffalo_l.zip"
        with zipfile.ZipFile(archive, "w") as z:
            for name in ("det_10g.onnx", "w600k_r50.onnx"):
                z.writestr(("buffalo_l/" if nested else "") + name, b"x")
        pack = tmp_path / f"out{nested}" / "buffalo_l"
        demo.unpack_pack(archive, pack)
        assert sorted(p.name for p in pack.iterdir()) == ["det_10g.onnx", "w600k_r50.onnx"]
        assert not archive.exists()


# ------------------------------------------------------------------- through the real engine

# wf_env (tiny models, photos, one executor), tiny_api and saved_images: tests/support/workflow_run.py.


@pytest.mark.host
def test_workflows_reference_installed_node_types(comfy_host):
    import nodes

    shown = {"StackedIDLoader", "StackedIDFaceAnalysisLoader", "StackedIDEncode", "StackedIDStack",
             "StackedIDSave", "StackedIDLoad", "StackedIDApply", "StackedIDStyle"}
    assert shown <= set(comfy_host.pack_node_ids())
    used = set()
    for path in WORKFLOWS:
        types = {n["type"] for n in json.loads(path.read_text())["nodes"]} - FRONTEND_ONLY
        missing = types - set(nodes.NODE_CLASS_MAPPINGS)
        assert not missing, f"{path.name}: unknown node types {missing}"
        used |= types
    assert shown <= used, f"node types no workflow shows: {shown - used}"


@pytest.mark.host
@pytest.mark.parametrize("path", WORKFLOWS, ids=_ids(WORKFLOWS))
def test_workflow_validates(comfy_host, wf_env, path):
    import asyncio

    import execution

    api = tiny_api(path, wf_env)
    ok, err, outputs, node_errors = asyncio.run(execution.validate_prompt("wf", api, None))[:4]
    assert ok, (err, node_errors)
    assert outputs


@pytest.mark.host
@pytest.mark.parametrize("path", [p for p in WORKFLOWS if "save-identity" not in p.name],
                         ids=_ids([p for p in WORKFLOWS if "save-identity" not in p.name]))
def test_workflow_runs(comfy_host, wf_env, path):
    api = tiny_api(path, wf_env)
    _, outputs = comfy_host.run_graph(api, executor=wf_env["executor"], prompt_id=path.stem)
    images = saved_images(outputs, api)
    assert images, "no SaveImage output"
    for img in images:
        assert img.shape == (LATENT, LATENT, 3) and img.std() > 0


@pytest.mark.host
def test_save_identity_workflow_then_reuse(comfy_host, wf_env):
    """Group 1 saves the identity; then, as the Note says, mute group 1 and unmute group 2: the
    portrait is made from the saved file."""
    path = REPO / "workflows" / "05-photomaker-save-identity.json"
    wf = json.loads(path.read_text())
    before = set(os.listdir(wf_env["identities"]))
    api = tiny_api(path, wf_env)
    assert "StackedIDLoad" not in {n["class_type"] for n in api.values()}  # muted until the file exists
    comfy_host.run_graph(api, executor=wf_env["executor"], prompt_id="save")
    saved = sorted(set(os.listdir(wf_env["identities"])) - before)
    assert len(saved) == 1 and saved[0].startswith("my_identity") and saved[0].endswith(".safetensors")

    for n in wf["nodes"]:
        if n["type"] not in FRONTEND_ONLY:
            n["mode"] = 0 if n["mode"] == 2 else 2
    api = tiny_api(path, wf_env, workflow=wf)
    api = wapi.substitute(api, {("StackedIDLoad", "identity_file"): saved[0]})
    assert {n["class_type"] for n in api.values()} >= {"StackedIDLoad", "KSampler", "SaveImage"}
    assert "StackedIDEncode" not in {n["class_type"] for n in api.values()}
    _, outputs = comfy_host.run_graph(api, executor=wf_env["executor"], prompt_id="reuse")
    (img,) = saved_images(outputs, api)
    assert img.shape == (LATENT, LATENT, 3)


def _evaluate(api, nid):
    """Output 0 of node `nid` of an API graph, run in-process with the host's classes (for chains of
    host nodes without models, e.g. masks)."""
    import nodes

    node = api[nid]
    cls = nodes.NODE_CLASS_MAPPINGS[node["class_type"]]
    kwargs = {k: _evaluate(api, v[0]) if isinstance(v, list) else v for k, v in node["inputs"].items()}
    out = getattr(cls(), cls.FUNCTION)(**kwargs)
    return tuple(getattr(out, "result", out))[0]  # a V1 tuple or a V3 NodeOutput


@pytest.mark.host
def test_face_detailer_workflow_changes_only_the_face(comfy_host, wf_env):
    """25-photomaker-face-detailer.json on the engine: the saved picture differs from the detailer's
    input (saved alongside) inside the face's crop box only, bit for bit equal outside it."""
    from photomaker_core.detailer import crop_box

    path = REPO / "workflows" / "25-photomaker-face-detailer.json"
    api = tiny_api(path, wf_env)
    det = next(nid for nid, n in api.items() if n["class_type"] == "StackedIDFaceDetailer")
    api["input_copy"] = {"class_type": "SaveImage",
                         "inputs": {"images": api[det]["inputs"]["images"], "filename_prefix": "wf25_input"}}
    _, outputs = comfy_host.run_graph(api, executor=wf_env["executor"], prompt_id="detailer")
    detailed, source = saved_images(outputs, api)  # the workflow's SaveImage, then the copy added here
    red = (source[..., 0] > 160) & (source[..., 1] < 96) & (source[..., 2] < 96)
    ys, xs = np.nonzero(red)
    assert ys.size, "the scaled picture should still show the (red) face"
    box = crop_box((xs.min(), ys.min(), xs.max() + 1, ys.max() + 1), api[det]["inputs"]["crop_padding"],
                   LATENT, LATENT)
    changed = np.any(detailed != source, axis=-1)
    assert changed.any(), "the matched face was re-sampled"
    outside = np.ones_like(changed)
    # +-1 px: box rounding
    outside[max(0, box.top - 1):box.bottom + 1, max(0, box.left - 1):box.right + 1] = False
    assert not changed[outside].any()


@pytest.mark.host
def test_two_people_workflow_masks_each_person_to_one_half(comfy_host, wf_env):
    """08-photomaker-two-people.json: the sampler's positive is the shared two-trigger prompt combined
    with one prompt per person (only that person's identity), masked to complementary halves:
    Person A (identity, img) left, Person B (identity_2, img2) right."""
    import re

    import torch

    api = wapi.ui_to_api(json.loads((REPO / "workflows" / "08-photomaker-two-people.json").read_text()))

    def evaluate(nid):
        return _evaluate(api, nid)

    def parts(nid):
        node = api[nid]
        if node["class_type"] == "ConditioningCombine":
            return parts(node["inputs"]["conditioning_1"][0]) + parts(node["inputs"]["conditioning_2"][0])
        return [node]

    ks = next(n for n in api.values() if n["class_type"] == "KSampler")
    shared, *masked = parts(ks["inputs"]["positive"][0])
    assert shared["class_type"] == "StackedIDApply" and "identity_2" in shared["inputs"]
    assert [m["class_type"] for m in masked] == ["ConditioningSetMask"] * 2
    masks = []
    for person, m in zip(("identity", "identity_2"), masked, strict=True):
        apply = api[m["inputs"]["conditioning"][0]]
        assert apply["class_type"] == "StackedIDApply" and "identity_2" not in apply["inputs"]
        assert apply["inputs"]["identity"] == shared["inputs"][person]
        trigger = shared["inputs"]["trigger_word" if person == "identity" else "trigger_word_2"]
        assert (apply["inputs"]["trigger_word"] == trigger
                and re.search(rf"\b{trigger}\b", apply["inputs"]["text"]))
        masks.append(evaluate(m["inputs"]["mask"][0]))
    left, right = masks
    half = left.shape[-1] // 2
    assert bool((left[..., :half] == 1).all()) and bool((left[..., half:] == 0).all())
    assert torch.equal(left + right, torch.ones_like(left))


@pytest.mark.host
def test_controlnet_workflow_gives_the_controlnet_the_text_only_prompt(comfy_host, wf_env, monkeypatch):
    """09-photomaker-controlnet.json does what the reference pipeline does: the ControlNet's
    cross-attention input is the text-only prompt at every step (CLIPTextEncodeControlnet sets
    cross_attn_controlnet on Apply's conditioning), while the UNet's switches from text-only to the
    identity prompt. With that node bypassed (plain Apply ControlNet on Apply's output) the ControlNet
    would see the identity prompt too: the check is not vacuous."""
    import torch

    import comfy.cldm.cldm
    from comfy.ldm.modules.diffusionmodules import openaimodel

    seen = {"unet": [], "control": []}

    def recording(kind, original):
        def forward(self, *args, **kwargs):
            seen[kind].extend(kwargs["context"].detach().float().clone())  # one row per batch item
            return original(self, *args, **kwargs)
        return forward

    monkeypatch.setattr(openaimodel.UNetModel, "forward", recording("unet", openaimodel.UNetModel.forward))
    monkeypatch.setattr(comfy.cldm.cldm.ControlNet, "forward",
                        recording("control", comfy.cldm.cldm.ControlNet.forward))

    def same(a, b):
        return a.shape == b.shape and torch.allclose(a, b, atol=1e-5)

    def distinct(rows):
        out = []
        for r in rows:
            if not any(same(r, o) for o in out):
                out.append(r)
        return out

    path = REPO / "workflows" / "09-photomaker-controlnet.json"
    wf = json.loads(path.read_text())
    results = {}
    for variant in ("as shipped", "CLIPTextEncodeControlnet bypassed"):
        if variant != "as shipped":
            for n in wf["nodes"]:
                if n["type"] == "CLIPTextEncodeControlnet":
                    n["mode"] = 4
        seen["unet"].clear(), seen["control"].clear()
        api = tiny_api(path, wf_env, workflow=wf)
        comfy_host.run_graph(api, executor=comfy_host.make_executor(), prompt_id="cn-" + variant[:3])
        assert seen["control"], "the ControlNet never ran"
        results[variant] = distinct(seen["unet"]), distinct(seen["control"])

    unet, control = results["as shipped"]
    # UNet: negative, text-only (first style_strength share of the steps), identity (after it)
    assert len(unet) == 3, len(unet)
    # ControlNet: negative and text-only only, both exactly what the UNet got at some step
    assert len(control) == 2 and all(any(same(c, u) for u in unet) for c in control)
    identity = [u for u in unet if not any(same(u, c) for c in control)]
    assert len(identity) == 1
    unet_b, control_b = results["CLIPTextEncodeControlnet bypassed"]
    assert len(control_b) == 3 and any(same(identity[0], c) for c in control_b)


def _only(api, class_type):
    (nid,) = [k for k, n in api.items() if n["class_type"] == class_type]
    return nid, api[nid]


@pytest.mark.host
def test_regions_workflow_gives_each_person_one_half(comfy_host, wf_env):
    """20-photomaker-two-people-regions.json: one Apply with both identities, Person A's mask the left
    half and Person B's the right half (complementary, from the host's mask nodes); the sampler's
    positive is Apply's output, whose identity entries carry exactly those masks."""
    import torch

    path = REPO / "workflows" / "20-photomaker-two-people-regions.json"
    api = tiny_api(path, wf_env)
    apply_id, apply = _only(api, "StackedIDApply")
    _, ks = _only(api, "KSampler")
    assert ks["inputs"]["positive"] == [apply_id, 0]
    left, right = (_evaluate(api, apply["inputs"][name][0]) for name in ("mask", "mask_2"))
    half = left.shape[-1] // 2
    assert bool((left[..., :half] == 1).all()) and bool((left[..., half:] == 0).all())
    assert torch.equal(left + right, torch.ones_like(left))
    _, outputs = comfy_host.run_graph(api, executor=wf_env["executor"], prompt_id="regions-wf")
    (img,) = saved_images(outputs, api)
    assert img.shape == (LATENT, LATENT, 3) and img.std() > 0


@pytest.mark.host
def test_pose_t2i_adapter_workflow_uses_the_reference_setting(comfy_host, wf_env):
    """21-photomaker-pose-t2i-adapter.json: Load ControlNet Model gives a T2I-Adapter; it acts on
    Apply's conditioning at strength 0.8 over the first 80 % of the schedule (the reference's
    adapter_conditioning_scale and _factor), and it changes the picture."""
    import comfy.controlnet

    path = REPO / "workflows" / "21-photomaker-pose-t2i-adapter.json"
    api = tiny_api(path, wf_env)
    cn_id, cn = _only(api, "ControlNetApplyAdvanced")
    apply_id, _ = _only(api, "StackedIDApply")
    assert cn["inputs"]["positive"] == [apply_id, 0]
    assert (cn["inputs"]["strength"], cn["inputs"]["start_percent"],
            cn["inputs"]["end_percent"]) == (0.8, 0.0, 0.8)
    adapter = _evaluate(api, cn["inputs"]["control_net"][0])
    assert isinstance(adapter, comfy.controlnet.T2IAdapter)
    images = {}
    for strength in (0.8, 0.0):
        api[cn_id]["inputs"]["strength"] = strength
        _, outputs = comfy_host.run_graph(api, executor=wf_env["executor"], prompt_id=f"t2i-{strength}")
        (images[strength],) = saved_images(outputs, api)
    assert np.abs(images[0.8].astype(np.float32) - images[0.0].astype(np.float32)).max() > 0


@pytest.mark.host
def test_keypoints_controlnet_workflow_draws_the_id_photo_keypoints(comfy_host, wf_env):
    """22-photomaker-keypoints-controlnet.json: Face Keypoints takes the ID photo (the same Load Image
    as Encode Identity) and its InstantID-style drawing is the ControlNet's hint image."""
    api = tiny_api(path := REPO / "workflows" / "22-photomaker-keypoints-controlnet.json", wf_env)
    kp_id, kp = _only(api, "StackedIDFaceKeypoints")
    _, enc = _only(api, "StackedIDEncode")
    _, cn = _only(api, "ControlNetApplyAdvanced")
    assert cn["inputs"]["image"] == [kp_id, 0] and kp["inputs"]["images"] == enc["inputs"]["images"]
    assert kp["inputs"]["style"] == "instantid"
    _, outputs = comfy_host.run_graph(api, executor=wf_env["executor"], prompt_id=path.stem)
    (img,) = saved_images(outputs, api)
    assert img.shape == (LATENT, LATENT, 3) and img.std() > 0


# ----------------------------------------------------------------------------------- demo

def _run_demo(*args, timeout=300):
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "2")
    return subprocess.run([sys.executable, str(REPO / "scripts" / "demo.py"), *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.host
@pytest.mark.parametrize("how", ["no-download", "download-fails"])
def test_demo_without_weights_lists_what_to_get(tmp_path, how):
    base = tmp_path / "comfy"
    extra = ["--no-download"] if how == "no-download" else ["--mirror", "http://127.0.0.1:9/"]
    res = _run_demo("--base-directory", str(base), *extra, timeout=120)
    text = res.stdout + res.stderr
    assert res.returncode == demo.EXIT_MISSING, text
    models = base / "models"
    for name, folder in (("sd_xl_base_1.0.safetensors", models / "checkpoints"),
                         ("photomaker-v2.bin", models / "photomaker"),
                         ("buffalo_l", models / "insightface" / "models" / "buffalo_l")):
        assert name in text and str(folder) in text, (name, text)
    assert "huggingface.co/stabilityai/stable-diffusion-xl-base-1.0" in text
    assert "huggingface.co/TencentARC/PhotoMaker-V2" in text
    assert "deepinsight/insightface/releases/download/v0.7/buffalo_l.zip" in text
    assert "--synthetic" in text
    if how == "download-fails":
        assert "download failed" in text
    assert not list(models.rglob("*.part")), "a failed connection leaves no partial file"


@pytest.mark.host
def test_demo_synthetic_writes_labelled_png(tmp_path):
    from PIL import Image

    out = tmp_path / "demo.png"
    t0 = time.time()
    res = _run_demo("--synthetic", "--out", str(out), timeout=180)
    elapsed = time.time() - t0
    text = res.stdout + res.stderr
    assert res.returncode == 0, text
    assert elapsed < 60, f"demo --synthetic took {elapsed:.1f} s"
    assert "SYNTHETIC" in text and "random" in text.lower()
    img = Image.open(out)
    assert img.size == (demo.SYNTHETIC_SIZE, demo.SYNTHETIC_SIZE)
    assert "SYNTHETIC" in img.info.get("Comment", "")
    print(f"demo --synthetic: {elapsed:.1f} s")


def _checkout_inside_comfyui(host_root: Path, where: Path) -> Path:
    """A ComfyUI folder whose entries link to `host_root`, with a real copy of this checkout (tracked
    and untracked-but-not-ignored files) at custom_nodes/<pack>, as a user's clone would sit."""
    comfy = where / "ComfyUI"
    comfy.mkdir()
    for entry in host_root.iterdir():
        if entry.name != "custom_nodes":
            (comfy / entry.name).symlink_to(entry)
    pack = comfy / "custom_nodes" / "comfyui-photomaker-stackedid"
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True,
                           text=True, check=True).stdout.split()
    for rel in files:
        if (REPO / rel).is_file():
            (pack / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, pack / rel)
    return pack


def test_demo_synthetic_inside_comfyui_033(tmp_path):
    """`scripts/demo.py --synthetic` from a checkout inside a ComfyUI 0.33.0's custom_nodes/ finds that
    ComfyUI (no COMFYUI_PATH, no pin) and runs the workflow through its engine."""
    prov = _load_script("provision_host")
    try:
        host_root = prov.find_host("0.33.0")
    except prov.HostUnavailable as e:
        pytest.skip(e.message)
    pack = _checkout_inside_comfyui(host_root, tmp_path)
    env = {k: v for k, v in os.environ.items() if k not in ("COMFYUI_PATH", "PM_COMFY_VERSION")}
    env.setdefault("OMP_NUM_THREADS", "2")
    out = tmp_path / "demo.png"
    res = subprocess.run([sys.executable, "scripts/demo.py", "--synthetic", "--out", str(out)], cwd=pack,
                         env=env, capture_output=True, text=True, timeout=300)
    text = res.stdout + res.stderr
    assert res.returncode == 0, text
    assert f"ComfyUI host: {tmp_path / 'ComfyUI'}" in text
    assert out.is_file() and out.stat().st_size > 0
