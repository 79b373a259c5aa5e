"""The example workflows in the real ComfyUI frontend, in a real browser.

A real server (main.py, its own process) runs with this pack in custom_nodes/, the test-only tiny
pack, and the `comfyui-frontend-package` version the host's requirements.txt pins. Headless Debian
Chromium, driven by playwright, opens the page and loads every workflows/*.json with
`app.loadGraphData`, as a user dropping the file on the canvas would:

* no missing-nodes dialog, no other dialog or error toast, no node with `has_errors`, every node
  type registered, every link consistent (both ends exist, slots agree, types connect), every
  widget value valid (combo values in their option lists, numbers in range);
* the frontend's own API conversion (`graphToPrompt().output`) equals scripts/workflow_api.py's
  `ui_to_api` of the file (run against the same server's /object_info);
* queued from the page (`app.queuePrompt`), the run succeeds (/history) and writes its images;
* a screenshot of each graph lands in test-artifacts/ui/<workflow>.png;
* the layout reads at the saved view (`extra.ds`, restored on load) on a 1600x900 canvas: no two
  node boxes overlap (title bars included, sizes as the frontend drew them), every Note lies inside
  the restored view, the zoom is >= 0.6 (below it the frontend stops drawing node text), and a
  workflow of more than 12 nodes has every node inside a titled group (the opened view lands in
  <workflow>.opened.png, the boxes in <workflow>.layout.json);
* on frontends with the errors panel's stores (1.49.6, ComfyUI 0.33's pin), missing nodes and models
  are read from them (that frontend opens no missing-nodes dialog), and each template opened on a
  second, model-less server lists exactly the model files it needs with their download URL and
  folder (the workflows' `properties.models`).

The frontend is the one the host pins (its requirements.txt): the venv's package when it is that
version, else `.cache/frontends/<version>` (scripts/setup_env.sh), served with --front-end-root.
So `PM_COMFY_VERSION=0.33.0` runs this file on 1.49.6 and the default host on 1.32.9.

Models: the demo's tiny random set is linked into the server's models/ under the names the
workflows use (tests/support/workflow_env.py), and PM_TINY_CHECKPOINTS=1 makes the tiny pack
register a tiny SDXL config inside the server, so the real CheckpointLoaderSimple loads the tiny
checkpoint. Nothing in the workflows is renamed.

Size and steps: before queueing, the page's own node API sets Empty Latent Image to 64x64 and the
KSampler to 2 steps (the files say 1024x1024 and 50 steps). We edit widgets rather than install a
substitute node in the server because a core node id cannot be overridden (clashing ids are dropped
silently), and because editing widgets is exactly what a user does: the frontend then converts the
edited graph, and that conversion is checked too (against ui_to_api + the same substitutions).

Needs /usr/bin/chromium (or $PM_CHROMIUM), playwright and the pinned frontend (installed by
scripts/setup_env.sh). Without them the test skips locally and fails in CI (CI=true).
`PM_UI_UPDATE_DOCS=1` also rewrites docs/workflow-v2-basic.png (the README's picture).
"""
from __future__ import annotations

import importlib.metadata
import json
import os
import re
import sys
import time
from pathlib import Path

import pytest
from support import browser as browser_support
from support import workflow_env

pytestmark = pytest.mark.ui

REPO = Path(__file__).resolve().parents[1]
WORKFLOWS = sorted((REPO / "workflows").glob("*.json"))
ARTIFACTS = REPO / "test-artifacts" / "ui"
DOCS_PICTURE = REPO / "docs" / "workflow-v2-basic.png"
DOCS_WORKFLOW = "01-photomaker-v2-basic.json"
LATENT, STEPS = 64, 2
SMALL = workflow_env.small_widgets(LATENT, STEPS)
# The canvas a workflow must read well on at its saved view (extra.ds); focus mode gives the canvas
# the whole window.
VIEWPORT = {"width": 1600, "height": 900}
MIN_SCALE = 0.5  # below this the saved view is too small to read
GROUPED_ABOVE = 12  # workflows with more nodes than this put every node in a titled group
# A fresh profile would open the Templates browser, a "Nodes 2.0" banner and the minimap; screenshots
# should show the graph: full detail at any zoom, no canvas info or canvas menu.
SETTINGS = {"Comfy.TutorialCompleted": True, "Comfy.Minimap.Visible": False, "Comfy.Graph.CanvasInfo": False,
            "Comfy.Graph.CanvasMenu": False, "LiteGraph.Canvas.MinFontSizeForLOD": 0}


def _ids(paths):
    return [p.stem for p in paths]


def _load_converter():
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        import workflow_api
    finally:
        sys.path.remove(str(REPO / "scripts"))
    return workflow_api


wapi = _load_converter()


# ------------------------------------------------------------------------------ prerequisites

def _required_frontend(host_root: Path) -> str:
    req = (host_root / "requirements.txt").read_text()
    m = re.search(r"^comfyui-frontend-package==(\S+)", req, re.M)
    assert m, "the host's requirements.txt pins no comfyui-frontend-package"
    return m.group(1)


def _frontend_root(pinned: str) -> str | None:
    """Where the host's pinned frontend is: None when the venv has that version (the server's
    default), else the static folder of .cache/frontends/<version> (scripts/setup_env.sh installs
    each host's pin there), served with --front-end-root."""
    try:
        installed = importlib.metadata.version("comfyui-frontend-package")
    except importlib.metadata.PackageNotFoundError:
        installed = None
    if installed == pinned:
        return None
    static = REPO / ".cache" / "frontends" / pinned / "comfyui_frontend_package" / "static"
    if not (static / "index.html").is_file():
        browser_support.unavailable(f"comfyui-frontend-package {pinned} "
                                    "(the host's pin) is neither installed "
                                    f"(the venv has {installed}) nor in {static.parents[1]}")
    return str(static)


def _check_prerequisites(host_root: Path) -> tuple[str, str, str | None]:
    chromium = browser_support.chromium()
    browser_support.require_playwright()
    pinned = _required_frontend(host_root)
    return chromium, pinned, _frontend_root(pinned)


# ------------------------------------------------------------------------------------ session

class UI:
    def __init__(self, server, page, object_info, base: Path, console: list):
        self.server, self.page, self.base, self.console = server, page, base, console
        self.schemas = wapi.node_classes_from_object_info(object_info)
        self.timings: dict[str, float] = {}

    def js(self, script: str, arg=None):
        return self.page.evaluate(script, arg)


@pytest.fixture(scope="module")
def ui(tmp_path_factory):
    from support import host

    t0 = time.time()
    host_root = host.host_path()
    chromium, pinned, frontend_root = _check_prerequisites(host_root)
    from playwright.sync_api import sync_playwright

    base = tmp_path_factory.mktemp("ui-server")
    cache = workflow_env.ensure_synthetic_models()
    workflow_env.install_models(base / "models", cache)
    workflow_env.write_photos(base / "input", WORKFLOWS)
    workflow_env.write_identity(base / "models" / "photomaker_identities" / workflow_env.IDENTITY_NAME)
    t_models = time.time()

    server = _server(base, frontend_root)
    old = os.environ.get("PM_TINY_CHECKPOINTS")
    os.environ["PM_TINY_CHECKPOINTS"] = "1"  # read by tests/support/tiny_pack inside the server
    try:
        server.start()
    finally:
        if old is None:
            os.environ.pop("PM_TINY_CHECKPOINTS")
        else:
            os.environ["PM_TINY_CHECKPOINTS"] = old
    t_server = time.time()
    pw = browser = None
    try:
        stats = server.get("/system_stats")["system"]
        assert stats.get("required_frontend_version") in (None, pinned), stats
        status, _ = server.post("/settings", SETTINGS)
        assert status == 200
        object_info = server.get("/object_info")
        pw = sync_playwright().start()
        browser = browser_support.launch(pw, chromium)
        context = browser.new_context(viewport=VIEWPORT)
        context.add_init_script("localStorage.setItem('vueNodesBannerDismissed', 'true')")
        page, console = _open_page(context, server)
        session = UI(server, page, object_info, base, console)
        session.pinned, session.context, session.frontend_root = pinned, context, frontend_root
        session.timings.update(models=t_models - t0, server=t_server - t_models, page=time.time() - t_server)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        yield session
        session.timings["total"] = time.time() - t0
        print("\nUI test timings (s): " + ", ".join(f"{k} {v:.1f}" for k, v in session.timings.items()))
    except BaseException:
        print(server.log()[-4000:])
        raise
    finally:
        if browser is not None:
            browser.close()
        if pw is not None:
            pw.stop()
        server.stop()


def _server(base: Path, frontend_root: str | None, with_tiny_pack: bool = True):
    from support.server import ComfyServer

    return ComfyServer(base=base, frontend=True, with_tiny_pack=with_tiny_pack,
                       extra_args=["--front-end-root", frontend_root] if frontend_root else None)


def _open_page(context, server):
    """A page of the app served by `server`, ready (node definitions registered), in focus mode
    (the canvas alone, without the side bar and menus over it)."""
    page = context.new_page()
    page.set_default_timeout(60_000)
    console: list[str] = []
    page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
    page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
    page.goto(server.url)
    page.wait_for_function(APP_READY)
    page.evaluate(FOCUS_MODE)
    return page, console


# ----------------------------------------------------------------------------------- page code

APP_READY = ("window.app && window.app.graph && window.app.canvas && window.LiteGraph"
             " && LiteGraph.registered_node_types['KSampler'] !== undefined")
FOCUS_MODE = "async () => { await app.extensionManager.command.execute('Workspace.ToggleFocusMode'); }"

CHECK_GRAPH = """() => {
  const g = app.graph, problems = [];
  const links = g.links instanceof Map ? [...g.links.values()] : Object.values(g.links || {});
  const linkIds = new Set(links.map(l => l.id));
  for (const n of g.nodes) {
    const who = `node ${n.id} (${n.type})`;
    if (n.has_errors) problems.push(`${who}: has_errors`);
    if (!LiteGraph.registered_node_types[n.type]) problems.push(`${who}: type not registered`);
    for (const [i, inp] of (n.inputs || []).entries())
      if (inp.link != null && !linkIds.has(inp.link))
        problems.push(`${who}: input ${i} names missing link ${inp.link}`);
    for (const [i, out] of (n.outputs || []).entries())
      for (const id of out.links || [])
        if (!linkIds.has(id)) problems.push(`${who}: output ${i} names missing link ${id}`);
    for (const w of n.widgets || []) {
      if (w.type === 'button' || w.type === 'custom' || (w.options && w.options.serialize === false))
        continue;
      const what = `${who} widget '${w.name}' = ${JSON.stringify(w.value)}`;
      if (w.type === 'combo') {
        let vals = w.options.values;
        if (typeof vals === 'function') vals = vals(w, n);
        if (!Array.isArray(vals) || !vals.includes(w.value))
          problems.push(`${what}: not one of ${JSON.stringify(vals)}`);
      } else if (w.type === 'number') {
        if (typeof w.value !== 'number' || !Number.isFinite(w.value)) problems.push(`${what}: not a number`);
        else if ((w.options.min != null && w.value < w.options.min)
                 || (w.options.max != null && w.value > w.options.max))
          problems.push(`${what}: outside [${w.options.min}, ${w.options.max}]`);
      } else if (w.type === 'toggle') {
        if (typeof w.value !== 'boolean') problems.push(`${what}: not a boolean`);
      } else if (w.type === 'text' || w.type === 'customtext') {
        if (typeof w.value !== 'string') problems.push(`${what}: not a string`);
      }
    }
  }
  for (const l of links) {
    const a = g.getNodeById(l.origin_id), b = g.getNodeById(l.target_id);
    const what = `link ${l.id} (${l.origin_id}:${l.origin_slot} -> `
      + `${l.target_id}:${l.target_slot}, ${l.type})`;
    if (!a || !b) { problems.push(`${what}: an end node is missing`); continue; }
    const out = (a.outputs || [])[l.origin_slot], inp = (b.inputs || [])[l.target_slot];
    if (!out || !inp) { problems.push(`${what}: slot missing`); continue; }
    if (!(out.links || []).includes(l.id)) problems.push(`${what}: not listed on its output`);
    if (inp.link !== l.id) problems.push(`${what}: its input points at link ${inp.link}`);
    if (!LiteGraph.isValidConnection(out.type, inp.type))
      problems.push(`${what}: ${out.type} -> ${inp.type} is not a valid connection`);
    else if (l.type && !LiteGraph.isValidConnection(l.type, inp.type))
      problems.push(`${what}: link type ${l.type} does not fit ${inp.type}`);
  }
  return {problems, nodes: g.nodes.length, links: links.length};
}"""

# Frontend 1.49.6 and newer report missing nodes and models in Pinia stores (shown in the errors
# panel, no modal dialog); older ones have no such stores (null here) and open a dialog instead.
STORES = """() => {
  const el = document.getElementById('vue-app');
  const pinia = el && el.__vue_app__ && el.__vue_app__.config.globalProperties.$pinia;
  const nodes = pinia && pinia._s.get('missingNodesError'), models = pinia && pinia._s.get('missingModel');
  if (!nodes || !models) return null;
  return {missingNodes: ((nodes.missingNodesError || {}).nodeTypes || []).map(t => t.type || t),
          missingModels: (models.missingModelCandidates || []).map(c => ({name: c.name, url: c.url || null,
            directory: c.directory || null, nodeId: String(c.nodeId), missing: c.isMissing}))};
}"""

OPEN_DIALOGS = """() => {
  const seen = el => !!(el.offsetWidth || el.offsetHeight || el.getClientRects().length);
  const dialogs = [...document.querySelectorAll('.p-dialog, [role=dialog], [role=alertdialog]')].filter(seen);
  const toasts = [...document.querySelectorAll('.p-toast-message-error, .p-toast-message-warn')].filter(seen);
  return {dialogs: dialogs.map(d => d.innerText.slice(0, 500)),
          toasts: toasts.map(t => t.innerText.slice(0, 500)),
          missing: document.body.innerText.includes('missing nodes')};
}"""

SET_WIDGETS = """(changes) => {
  const done = [];
  for (const n of app.graph.nodes) for (const [type, name, value] of changes) {
    if (n.type !== type) continue;
    const w = (n.widgets || []).find(w => w.name === name);
    if (!w) continue;
    w.value = value;
    if (w.callback) w.callback(value, app.canvas, n);
    done.push([n.id, name]);
  }
  app.graph.setDirtyCanvas(true, true);
  return done;
}"""

# Zoom the canvas onto the graph (nodes and groups; no animation, unlike the FitView command) and
# return the graph's box on the screen (CSS px) for cropping the screenshot.
FIT_GRAPH = """(zoom) => {
  const c = app.canvas, title = LiteGraph.NODE_TITLE_HEIGHT || 30;
  let x0 = Infinity, y0 = Infinity, x1 = -Infinity, y1 = -Infinity;
  const add = (x, y, w, h) => {
    x0 = Math.min(x0, x); y0 = Math.min(y0, y); x1 = Math.max(x1, x + w); y1 = Math.max(y1, y + h);
  };
  for (const n of app.graph.nodes) add(n.pos[0], n.pos[1] - title, n.size[0], n.size[1] + title);
  for (const gr of app.graph.groups || app.graph._groups || [])
    add(gr.pos[0], gr.pos[1], gr.size[0], gr.size[1]);
  c.ds.fitToBounds([x0, y0, x1 - x0, y1 - y0], {zoom});
  c.setDirty(true, true);
  c.draw(true, true);
  const r = c.canvas.getBoundingClientRect(), ds = c.ds;
  return {x: r.left + (x0 + ds.offset[0]) * ds.scale, y: r.top + (y0 + ds.offset[1]) * ds.scale,
          width: (x1 - x0) * ds.scale, height: (y1 - y0) * ds.scale, scale: ds.scale};
}"""


# The graph as the frontend placed it, right after loading (saved view restored): every node's box
# (title bar included), every group, the Notes, and the part of the graph the canvas shows.
LAYOUT = """() => {
  const c = app.canvas, ds = c.ds, title = LiteGraph.NODE_TITLE_HEIGHT || 30;
  const r = c.canvas.getBoundingClientRect();
  const view = [-ds.offset[0], -ds.offset[1], r.width / ds.scale, r.height / ds.scale];
  const box = n => [n.pos[0], n.pos[1] - title, n.size[0], n.size[1] + title];
  const nodes = app.graph.nodes.map(n => ({id: n.id, type: n.type, box: box(n),
                                           note: n.type === 'Note' || n.type === 'MarkdownNote'}));
  const groups = (app.graph.groups || app.graph._groups || []).map(g => ({title: g.title,
    box: [g.pos[0], g.pos[1], g.size[0], g.size[1]]}));
  return {view, scale: ds.scale, canvas: [r.width, r.height], nodes, groups};
}"""


def _overlap(a, b) -> bool:
    return a[0] < b[0] + b[2] and b[0] < a[0] + a[2] and a[1] < b[1] + b[3] and b[1] < a[1] + a[3]


def _inside(inner, outer) -> bool:
    return (inner[0] >= outer[0] and inner[1] >= outer[1] and inner[0] + inner[2] <= outer[0] + outer[2]
            and inner[1] + inner[3] <= outer[1] + outer[3])


def layout_problems(layout: dict) -> list[str]:
    """What makes a workflow hard to read when it opens: overlapping nodes, a Note outside the
    restored view, a view too small to read, ungrouped nodes in a large workflow."""
    problems, nodes = [], layout["nodes"]
    name = {n["id"]: f"node {n['id']} ({n['type']})" for n in nodes}
    for i, a in enumerate(nodes):
        for b in nodes[i + 1:]:
            if _overlap(a["box"], b["box"]):
                problems.append(f"{name[a['id']]} overlaps {name[b['id']]}")
    notes = [n for n in nodes if n["note"]]
    if not notes:
        problems.append("no instructions Note")
    for n in notes:
        if not _inside(n["box"], layout["view"]):
            problems.append(f"{name[n['id']]} is outside the restored view {layout['view']}")
    if layout["scale"] < MIN_SCALE:
        problems.append(f"saved view scale {layout['scale']:.2f} < {MIN_SCALE}")
    if len(nodes) > GROUPED_ABOVE:
        titled = [g for g in layout["groups"] if (g["title"] or "").strip()]
        if len(titled) != len(layout["groups"]) or not titled:
            problems.append(f"{len(nodes)} nodes: every group needs a title, and there must be groups")
        for n in nodes:
            if not n["note"] and not any(_inside(n["box"], g["box"]) for g in titled):
                problems.append(f"{name[n['id']]} is in no titled group")
    return problems


DISMISS_ERRORS = """() => {
  const el = document.getElementById('vue-app');
  const store = el && el.__vue_app__.config.globalProperties.$pinia._s.get('executionError');
  if (store && store.dismissErrorOverlay) store.dismissErrorOverlay();
}"""


def _load(ui: UI, workflow: dict, name: str) -> dict:
    ui.js("async ([wf, name]) => { await app.loadGraphData(wf, true, true, name); }", [workflow, name])
    ui.page.wait_for_timeout(300)  # let the Vue layer react (dialogs, toasts, DOM widgets)
    state = ui.js(OPEN_DIALOGS)
    stores = ui.js(STORES)
    state["stores"] = stores
    # the old dialog, or (1.49.6+) the missing-nodes store
    state["missing"] = state["missing"] or bool(stores and stores["missingNodes"])
    return state


def _screenshot(ui: UI, path: Path) -> dict:
    box = ui.js(FIT_GRAPH, 0.96)
    ui.page.wait_for_timeout(250)  # a couple of frames: DOM widgets (text areas) follow the canvas
    pad = 10
    clip = {"x": max(0.0, box["x"] - pad), "y": max(0.0, box["y"] - pad)}
    clip["width"] = min(VIEWPORT["width"] - clip["x"], box["width"] + 2 * pad)
    clip["height"] = min(VIEWPORT["height"] - clip["y"], box["height"] + 2 * pad)
    ui.page.screenshot(path=str(path), clip=clip)
    return clip


def _queue(ui: UI) -> tuple[str, dict]:
    """Queue the loaded graph from the page; returns (prompt id, the body the frontend POSTed)."""
    def is_prompt(r):
        return r.url.rstrip("/").endswith("/prompt") and r.request.method == "POST"

    with ui.page.expect_response(is_prompt) as resp_info:
        ui.js("async () => { await app.queuePrompt(0, 1); }")
    resp = resp_info.value
    body = json.loads(resp.request.post_data)
    reply = resp.json()
    assert resp.status == 200 and not reply.get("node_errors"), reply
    return reply["prompt_id"], body


def _api_view(prompt: dict) -> dict:
    return {k: {"class_type": v["class_type"], "inputs": v["inputs"],
                "title": v.get("_meta", {}).get("title")} for k, v in prompt.items()}


def _diff(ours: dict, theirs: dict) -> list[str]:
    out = []
    for nid in sorted(set(ours) | set(theirs), key=str):
        a, b = ours.get(nid), theirs.get(nid)
        if a != b:
            out.append(f"node {nid}: ui_to_api {a} != frontend {b}")
    return out


def _check_outputs(ui: UI, entry: dict, prompt: dict) -> list[tuple[str, tuple]]:
    from PIL import Image

    assert entry["status"]["status_str"] == "success", entry["status"]
    saved = []
    for nid, node in prompt.items():
        if node["class_type"] not in ("SaveImage", "PreviewImage"):
            continue
        images = entry["outputs"].get(nid, {}).get("images", [])
        assert images, f"node {nid} ({node['class_type']}) produced no images"
        if node["class_type"] == "SaveImage":
            for img in images:
                path = ui.base / "output" / img.get("subfolder", "") / img["filename"]
                with Image.open(path) as im:
                    assert im.size == (LATENT, LATENT), (path, im.size)
                saved.append((img["filename"], im.size))
    return saved


# --------------------------------------------------------------------------------------- tests

def test_frontend_is_the_hosts_pinned_version(ui):
    version = ui.js("() => window.__COMFYUI_FRONTEND_VERSION__")
    assert version == ui.pinned
    # the pack's workflows are offered as templates
    templates = ui.server.get("/workflow_templates")
    pack = next(v for k, v in templates.items() if "photomaker" in k)
    assert sorted(pack) == sorted(p.stem for p in WORKFLOWS)


@pytest.mark.parametrize("path", WORKFLOWS, ids=_ids(WORKFLOWS))
def test_workflow_in_the_browser(ui, path):
    t0 = time.time()
    workflow = json.loads(path.read_text())
    state = _load(ui, workflow, path.stem)
    assert not state["missing"], "missing-nodes dialog shown"
    assert not state["dialogs"], f"dialogs open after loading: {state['dialogs']}"
    assert not state["toasts"], f"error/warning toasts after loading: {state['toasts']}"
    if state["stores"] is not None:  # 1.49.6+: with every model installed, none is reported missing
        assert not [m for m in state["stores"]["missingModels"] if m["missing"]], state["stores"]
    check = ui.js(CHECK_GRAPH)
    assert not check["problems"], "\n".join(check["problems"])
    assert check["nodes"] == len(workflow["nodes"]) and check["links"] == len(workflow["links"])
    layout = ui.js(LAYOUT)
    (ARTIFACTS / f"{path.stem}.layout.json").write_text(json.dumps(layout, indent=1))
    ui.page.screenshot(path=str(ARTIFACTS / f"{path.stem}.opened.png"))  # what a user sees first
    assert layout["canvas"] == [VIEWPORT["width"], VIEWPORT["height"]], layout["canvas"]
    problems = layout_problems(layout)
    assert not problems, "layout at the saved view:\n" + "\n".join(problems)

    shot = ARTIFACTS / f"{path.stem}.png"
    clip = _screenshot(ui, shot)

    # The frontend's own API conversion == ours (same server schema, same model names).
    theirs = ui.js("async () => (await app.graphToPrompt()).output")
    ours = wapi.ui_to_api(workflow, ui.schemas)
    diff = _diff(_api_view(ours), _api_view(theirs))
    assert not diff, "\n".join(diff)

    changed = ui.js(SET_WIDGETS, [[t, n, v] for (t, n), v in SMALL.items()])
    assert changed, "no size/steps widget found"
    prompt_id, body = _queue(ui)
    sent = body["prompt"]
    expected = wapi.substitute(ours, SMALL)
    diff = _diff(_api_view(expected), _api_view(sent))
    assert not diff, "queued prompt differs from ui_to_api + substitutions:\n" + "\n".join(diff)
    assert body["extra_data"]["extra_pnginfo"]["workflow"]["nodes"], "the workflow is embedded for the PNG"
    entry = ui.server.wait(prompt_id, timeout=120)
    saved = _check_outputs(ui, entry, sent)
    if "save-identity" in path.name:
        files = sorted(os.listdir(ui.base / "models" / "photomaker_identities"))
        assert any(f.startswith("my_identity_") for f in files), files
    else:
        assert saved, "no SaveImage output"
    ui.timings[path.stem] = time.time() - t0
    if path.name == DOCS_WORKFLOW and os.environ.get("PM_UI_UPDATE_DOCS") == "1":
        _write_docs_picture(ui, workflow)
    print(f"{path.stem}: {len(sent)} nodes, clip {clip['width']:.0f}x{clip['height']:.0f}, "
          f"{time.time() - t0:.1f} s, saved {saved}")


def test_saved_identity_is_reused_from_the_page(ui):
    """The save-identity workflow's second step as its Note tells a user: after the save, refresh the
    lists (R), pick the saved file in Load Identity, mute group 1, unmute group 2, queue."""
    path = REPO / "workflows" / "05-photomaker-save-identity.json"
    folder = ui.base / "models" / "photomaker_identities"
    saved = sorted(f for f in os.listdir(folder) if f.startswith("my_identity_"))
    if not saved:  # this test alone: run step 1 first
        _load(ui, json.loads(path.read_text()), path.stem)
        prompt_id, _ = _queue(ui)
        assert ui.server.wait(prompt_id, timeout=120)["status"]["status_str"] == "success"
        saved = sorted(f for f in os.listdir(folder) if f.startswith("my_identity_"))
    workflow = json.loads(path.read_text())
    _load(ui, workflow, path.stem + "-reuse")
    ui.js("async () => { await app.refreshComboInNodes(); }")
    modes = ui.js("""(file) => {
      const out = {};
      for (const n of app.graph.nodes) {
        if (n.type === 'Note' || n.type === 'MarkdownNote') continue;
        n.mode = n.mode === 2 ? 0 : 2;
        out[n.id] = n.mode;
        if (n.type === 'StackedIDLoad') n.widgets.find(w => w.name === 'identity_file').value = file;
      }
      return out;
    }""", saved[-1])
    assert sorted(set(modes.values())) == [0, 2]
    check = ui.js(CHECK_GRAPH)
    assert not check["problems"], "\n".join(check["problems"])  # the saved file is now in the list
    ui.js(SET_WIDGETS, [[t, n, v] for (t, n), v in SMALL.items()])
    prompt_id, body = _queue(ui)
    classes = {n["class_type"] for n in body["prompt"].values()}
    assert "StackedIDLoad" in classes and "StackedIDEncode" not in classes
    load = next(n for n in body["prompt"].values() if n["class_type"] == "StackedIDLoad")
    assert load["inputs"]["identity_file"] == saved[-1]
    entry = ui.server.wait(prompt_id, timeout=120)
    assert _check_outputs(ui, entry, body["prompt"])
    _screenshot(ui, ARTIFACTS / "05-photomaker-save-identity-reuse.png")


def _write_docs_picture(ui: UI, workflow: dict, limit: int = 300_000) -> None:
    """The README's picture: the workflow as a user sees it, with a real photo (scikit-image's
    astronaut, public domain) in place of the synthetic face, palette-quantised to stay small."""
    import skimage.data
    from PIL import Image

    photo = ui.base / "input" / workflow_env.PHOTO_NAME
    Image.fromarray(skimage.data.astronaut()).save(photo)
    try:
        ui.page.reload()  # a fresh page, so the preview is fetched again
        ui.page.wait_for_function(APP_READY)
        ui.js(FOCUS_MODE)
        _load(ui, workflow, "docs")
        ui.page.wait_for_timeout(1000)  # the photo preview
        shot = ARTIFACTS / "docs-workflow-v2-basic.png"
        _screenshot(ui, shot)
    finally:
        workflow_env.write_photos(ui.base / "input", WORKFLOWS)
    with Image.open(shot) as im:
        im = im.convert("RGB")
        DOCS_PICTURE.parent.mkdir(parents=True, exist_ok=True)
        for colours in (256, 128, 64):
            im.quantize(colours, method=Image.Quantize.MEDIANCUT).save(DOCS_PICTURE, optimize=True)
            if DOCS_PICTURE.stat().st_size < limit:
                break


def test_checks_catch_a_broken_workflow(ui):
    """The checks above are not vacuous: a workflow with an unknown node, a model name the server
    does not have, an out-of-range number and a mistyped link fails every one of them."""
    wf = json.loads((REPO / "workflows" / "01-photomaker-v2-basic.json").read_text())
    by_type = {n["type"]: n for n in wf["nodes"]}
    by_type["PreviewImage"]["type"] = "NoSuchPhotoMakerNode"
    by_type["CheckpointLoaderSimple"]["widgets_values"][0] = "not_installed.safetensors"
    by_type["EmptyLatentImage"]["widgets_values"][2] = 100000  # batch_size max is 4096
    # Rewire the KSampler's negative input (CONDITIONING) to come from Empty Latent Image (LATENT).
    ks, latent = by_type["KSampler"], by_type["EmptyLatentImage"]
    neg = next(i for i in ks["inputs"] if i["name"] == "negative")
    link = next(lk for lk in wf["links"] if lk[0] == neg["link"])
    for n in wf["nodes"]:
        if n["id"] == link[1]:
            n["outputs"][link[2]]["links"].remove(link[0])
    latent["outputs"][0]["links"].append(link[0])
    link[1], link[2], link[5] = latent["id"], 0, "LATENT"
    state = _load(ui, wf, "broken")
    try:
        assert state["missing"], state
        if state["stores"] is not None:  # 1.49.6+: the stores behind the errors panel
            assert state["stores"]["missingNodes"] == ["NoSuchPhotoMakerNode"], state["stores"]
            missing = [m["name"] for m in state["stores"]["missingModels"] if m["missing"]]
            assert missing == ["not_installed.safetensors"], state["stores"]
        problems = "\n".join(ui.js(CHECK_GRAPH)["problems"])
        assert "NoSuchPhotoMakerNode" in problems
        assert "'ckpt_name' = \"not_installed.safetensors\": not one of" in problems
        assert "'batch_size' = 100000: outside" in problems
        assert "LATENT -> CONDITIONING is not a valid connection" in problems
    finally:  # close the dialog (or 1.49.6's errors overlay) as a user would, so later tests start clean
        ui.js("""() => document.querySelectorAll(
                   '.p-dialog .p-dialog-close-button, [role=dialog] button[aria-label=Close]')
                   .forEach(b => b.click())""")
        ui.js(DISMISS_ERRORS)
        ui.page.wait_for_function("() => ![...document.querySelectorAll('.p-dialog, [role=dialog]')]"
                                  ".some(el => el.offsetWidth || el.offsetHeight)", timeout=10_000)


# ------------------------------------------------------------------ a fresh ComfyUI without models

@pytest.fixture(scope="module")
def bare(ui, tmp_path_factory):
    """The same frontend on a second server that has no models at all, as a new user's ComfyUI."""
    if ui.js(STORES) is None:
        pytest.skip(f"frontend {ui.pinned} has no missing-models store (its Missing Models panel came with "
                    f"1.49.6: run on ComfyUI 0.33.0, PM_COMFY_VERSION=0.33.0)")
    server = _server(tmp_path_factory.mktemp("bare-server"), ui.frontend_root, with_tiny_pack=False)
    server.start()
    page = None
    try:
        assert server.post("/settings", SETTINGS)[0] == 200
        page, console = _open_page(ui.context, server)
        yield UI(server, page, {}, server.base, console)
    finally:
        if page is not None:
            page.close()
        server.stop()


def _needed_downloads(workflow: dict) -> set[tuple]:
    """(name, directory, url) of every public model file the workflow's active nodes load, from the
    pack's catalogue (not from the file's own metadata); muted nodes load nothing."""
    catalogue = workflow_env.model_downloads()
    return {(m["name"], m["directory"], m["url"]) for n in workflow["nodes"] if n.get("mode", 0) == 0
            for v in n.get("widgets_values") or [] if isinstance(v, str) and v in catalogue
            for m in [catalogue[v]]}


@pytest.mark.parametrize("path", WORKFLOWS, ids=_ids(WORKFLOWS))
def test_missing_models_panel_offers_the_downloads(bare, path):
    """Opened in a ComfyUI without models, the errors panel lists exactly the files the workflow
    needs, each with its download (URL and model folder), so one click fetches it."""
    workflow = json.loads(path.read_text())
    _load(bare, workflow, path.stem)
    # the frontend lists the candidates once it has asked the server for the model folders
    bare.page.wait_for_function(f"() => {{ const s = ({STORES})(); return !!s && s.missingModels.length; }}")
    stores = bare.js(STORES)
    listed = {(m["name"], m["directory"], m["url"]) for m in stores["missingModels"] if m["missing"]}
    assert listed == _needed_downloads(workflow), stores["missingModels"]
    assert not stores["missingNodes"]
    bare.js(DISMISS_ERRORS)
