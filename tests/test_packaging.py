"""Registry-ready packaging: pyproject.toml, requirements.txt, node docs, no install scripts.

* pyproject.toml has the registry's [project] and [tool.comfy] fields, parses with the host's own
  `comfy_config.config_parser` (what ComfyUI and the registry tooling read), declares no torch, and
  requires the oldest ComfyUI that CI tests (the Makefile's PM_COMFY_VERSION runs);
* requirements.txt never touches torch: pip's resolver (dry run, with installed packages ignored)
  finds no torch anywhere in the dependency tree, and in a venv with CPU torch it plans no change;
* requirements never replace an installed onnxruntime-gpu (a simulated GPU environment and a fresh
  one, through pip's resolver), and the runtime install hints fit the ONNX Runtime build installed;
* a ComfyUI without comfy_api.latest gets one log line, no nodes, no traceback;
* every node id has web/docs/<node id>.md, served through WEB_DIRECTORY;
* nothing runs at install time (no setup.py / install.py, no build hooks);
* every workflows/*.json has its template thumbnail <name>.jpg, and the real server lists the
  workflows and serves both files where the frontend's Templates dialog asks for them.
"""
from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = REPO / "pyproject.toml"
TORCH_LIKE = re.compile(r"^(torch|torchvision|torchaudio|torchsde|xformers|triton|nvidia-.*|pytorch.*)$",
                        re.I)


def _pyproject() -> dict:
    return tomllib.loads(PYPROJECT.read_text())


def _req_name(line: str) -> str:
    return re.split(r"[\s<>=!~;\[@]", line.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _requirements() -> list[str]:
    lines = [ln.split("#", 1)[0].strip() for ln in (REPO / "requirements.txt").read_text().splitlines()]
    return [ln for ln in lines if ln]


def _oldest_tested_host() -> str:
    """The oldest ComfyUI that `make test` runs the host tests on (PM_COMFY_VERSION=...), or the
    default host (tests/support/host.py) if none is named."""
    versions = set(re.findall(r"PM_COMFY_VERSION=(\d+\.\d+\.\d+)", (REPO / "Makefile").read_text()))
    default = re.search(r'version or "(\d+\.\d+\.\d+)"', (REPO / "tests" / "support" / "host.py").read_text())
    versions.add(default.group(1))
    return min(versions, key=lambda v: tuple(int(x) for x in v.split(".")))


# ----------------------------------------------------------------------------------- pyproject

def test_project_section():
    project = _pyproject()["project"]
    name = project["name"]
    # registry node id: < 100 chars, alphanumerics and - _ ., no consecutive specials, starts with a letter
    assert len(name) < 100 and re.fullmatch(r"[A-Za-z](?:[A-Za-z0-9]|[-_.](?=[A-Za-z0-9]))*", name), name
    assert re.fullmatch(r"\d+\.\d+\.\d+", project["version"]), "semantic X.Y.Z version"
    assert len(project["description"]) > 20
    assert project["license"] == {"file": "LICENSE"} and (REPO / "LICENSE").is_file()
    assert project["urls"]["Repository"].startswith("https://")
    deps = project["dependencies"]
    assert not [d for d in deps if TORCH_LIKE.match(_req_name(d))], deps
    # the same runtime needs as requirements.txt (users install either way)
    assert sorted(map(_req_name, deps)) == sorted(map(_req_name, _requirements()))


def test_tool_comfy_section():
    comfy = _pyproject()["tool"]["comfy"]
    assert re.fullmatch(r"[a-z0-9][a-z0-9-]*", comfy["PublisherId"])
    assert comfy["DisplayName"] == "PhotoMaker (Stacked ID)"
    assert comfy["requires-comfyui"] == f">={_oldest_tested_host()}" == ">=0.3.52"


def test_icon_is_a_small_image_in_this_repository():
    from PIL import Image

    project = _pyproject()["project"]
    icon = _pyproject()["tool"]["comfy"]["Icon"]
    repo = project["urls"]["Repository"].removeprefix("https://github.com/").rstrip("/")
    raw = rf"https://raw\.githubusercontent\.com/{re.escape(repo)}/main/"
    m = re.fullmatch(raw + r"(.+\.(?:png|jpg|gif|svg))", icon)
    assert m, f"Icon should be a raw URL of a file in {repo}: {icon}"
    path = REPO / m.group(1)
    assert path.is_file(), path
    with Image.open(path) as im:
        assert im.width <= 800 and im.height <= 400, im.size  # the registry's limit


def test_parses_with_the_hosts_config_parser():
    from support import host

    root = host.host_path()
    if not (root / "comfy_config" / "config_parser.py").is_file():
        pytest.skip(f"this host ({root.name}) has no comfy_config")
    sys.path.insert(0, str(root))
    try:
        from comfy_config import config_parser
    finally:
        sys.path.remove(str(root))
    cfg = config_parser.extract_node_configuration(str(REPO))
    project = _pyproject()["project"]
    assert cfg.project.name == project["name"] and cfg.project.version == project["version"]
    assert cfg.project.license.file == "LICENSE"
    assert cfg.project.dependencies == project["dependencies"]
    assert cfg.project.urls.repository == project["urls"]["Repository"]
    assert cfg.project.supported_os == ["OS Independent"]
    assert cfg.project.supported_comfyui_version == ">=0.3.52"
    assert cfg.tool_comfy.publisher_id == "stackedid"
    assert cfg.tool_comfy.display_name == "PhotoMaker (Stacked ID)"
    assert cfg.tool_comfy.icon.endswith("/docs/icon.png")


# -------------------------------------------------------------------------------- requirements

def test_requirements_never_name_torch():
    reqs = _requirements()
    assert reqs
    assert not [r for r in reqs if TORCH_LIKE.match(_req_name(r))], reqs
    for r in reqs:  # no URLs, editable installs or options that could pull arbitrary code
        assert not r.startswith("-") and "://" not in r and "@" not in r, r


def _dry_run(*extra, requirements: str | None = None, python: Path | None = None) -> list[str]:
    """pip's resolver plan (names of the distributions it would install) for requirements.txt, or for
    the given requirement lines; into `python`'s environment if given (pip's --python)."""
    req = ["-r", str(REPO / "requirements.txt")] if requirements is None else requirements.split()
    target = ["--python", str(python)] if python else []
    res = subprocess.run([sys.executable, "-m", "pip", *target, "install", "--dry-run", "--quiet",
                          "--report", "-", "--disable-pip-version-check", *extra, *req],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    report = json.loads(res.stdout[res.stdout.index("{"):])
    return sorted(item["metadata"]["name"].lower() for item in report["install"])


ORT = re.compile(r"^onnxruntime(-.*)?$")


def _env_with_gpu_onnxruntime(tmp_path) -> Path:
    """A Python environment (a venv without pip) in which only onnxruntime-gpu is installed, as pip
    sees it: the distribution's metadata in site-packages (pip decides from metadata alone)."""
    import venv

    env = tmp_path / "gpu-env"
    venv.create(env, with_pip=False)
    python = env / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    info = Path(purelib) / "onnxruntime_gpu-1.20.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: onnxruntime-gpu\nVersion: 1.20.1\n")
    (info / "INSTALLER").write_text("pip\n")
    (info / "RECORD").write_text("")
    return python


def test_pip_install_would_not_touch_torch():
    """The resolver's plan: from nothing (installed packages ignored), nothing in the tree is torch or
    needs it; in this venv (CPU torch 2.13.0 present, as in a ComfyUI install), torch stays as is."""
    import importlib.metadata

    fresh = _dry_run("--ignore-installed")
    assert "safetensors" in fresh
    assert not [n for n in fresh if TORCH_LIKE.match(n)], fresh
    torch_before = importlib.metadata.version("torch")
    here = _dry_run()
    assert not [n for n in here if TORCH_LIKE.match(n)], here
    assert importlib.metadata.version("torch") == torch_before


def test_requirements_never_replace_an_installed_onnxruntime_gpu(tmp_path):
    """Both situations, through pip's real resolver: a Python with no ONNX Runtime (installed packages
    ignored) and one with onnxruntime-gpu installed: requirements.txt plans no onnxruntime build of any
    flavour anywhere in its tree. The control shows the simulation can fail: insightface (every release
    from 1.0 on requires the CPU onnxruntime) would put the CPU build over the GPU one."""
    assert not [r for r in _requirements() if ORT.match(_req_name(r)) or _req_name(r) == "insightface"]
    fresh = _dry_run("--ignore-installed")
    assert not [n for n in fresh if ORT.match(n)], fresh
    gpu_python = _env_with_gpu_onnxruntime(tmp_path)
    with_gpu = _dry_run(python=gpu_python)
    assert not [n for n in with_gpu if ORT.match(n)], with_gpu
    control = _dry_run(python=gpu_python, requirements="insightface==2.1")
    assert "onnxruntime" in control, control  # what the old requirements.txt did to GPU users


# ------------------------------------------------------------------------ runtime install hints

def _fake_installed(monkeypatch, dists: dict[str, str]):
    """importlib.metadata as it would look with exactly these ONNX Runtime builds installed."""
    import importlib.metadata

    from photomaker_core import install_hints

    real = importlib.metadata.version

    def version(name):
        if name in install_hints.ONNXRUNTIME_DISTS:
            if name in dists:
                return dists[name]
            raise importlib.metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(importlib.metadata, "version", version)
    return install_hints


def _commands(text: str) -> list[str]:
    return re.findall(r"`([^`]*)`", text)


def test_install_hint_keeps_a_gpu_onnxruntime(monkeypatch):
    hints = _fake_installed(monkeypatch, {"onnxruntime-gpu": "1.20.1"})
    assert hints.installed_onnxruntime() == {"onnxruntime-gpu": "1.20.1"}
    assert hints.describe_onnxruntime() == "ONNX Runtime found: onnxruntime-gpu 1.20.1."
    cmds = _commands(hints.insightface_install_hint(python="/opt/comfy/python"))
    assert cmds == ['"/opt/comfy/python" -m pip install --no-deps insightface',
                    '"/opt/comfy/python" -m pip install onnx opencv-python scikit-image scipy tqdm requests']
    assert not any(ORT.match(word) for c in cmds for word in c.split()), cmds
    assert hints.onnxruntime_conflict_hint() == ""


def test_install_hint_with_the_cpu_build_or_none(monkeypatch):
    hints = _fake_installed(monkeypatch, {"onnxruntime": "1.32.0"})
    assert _commands(hints.insightface_install_hint(python="py"))[0] == '"py" -m pip install insightface'
    hints = _fake_installed(monkeypatch, {})
    assert hints.describe_onnxruntime() == "No ONNX Runtime build found."
    assert _commands(hints.onnxruntime_install_hint(python="py")) == [
        '"py" -m pip install onnxruntime', '"py" -m pip install onnxruntime-gpu']
    broken = {"onnxruntime-gpu": "1.20.1"}  # installed, but does not import
    assert _commands(hints.onnxruntime_install_hint(broken, python="py")) == [
        '"py" -m pip install --force-reinstall --no-deps onnxruntime-gpu']
    # with nothing installed the simple command is offered, and the GPU route with --no-deps
    cmds = _commands(hints.insightface_install_hint(python="py"))
    assert cmds[0] == '"py" -m pip install insightface' and '"py" -m pip install onnxruntime-gpu' in cmds


def test_conflict_hint_when_cpu_and_gpu_builds_are_both_installed(monkeypatch):
    hints = _fake_installed(monkeypatch, {"onnxruntime": "1.32.0", "onnxruntime-gpu": "1.20.1"})
    assert _commands(hints.onnxruntime_conflict_hint(python="py")) == [
        '"py" -m pip uninstall -y onnxruntime onnxruntime-gpu', '"py" -m pip install onnxruntime-gpu']
    assert _commands(hints.onnxruntime_install_hint(python="py")) == _commands(
        hints.onnxruntime_conflict_hint(python="py"))


def test_face_errors_use_the_flavour_aware_hint(monkeypatch):
    """The message a V2 user sees when insightface is missing, with onnxruntime-gpu installed."""
    _fake_installed(monkeypatch, {"onnxruntime-gpu": "1.20.1"})
    from photomaker_core import faces

    msg = faces._missing_message("insightface")
    assert "--no-deps insightface" in msg and "V1 works without it" in msg and sys.executable in msg
    assert "ONNX Runtime found: onnxruntime-gpu 1.20.1." in msg


def test_insightface_without_onnxruntime_names_onnxruntime():
    """insightface installed but onnxruntime does not import: the error names onnxruntime (not
    insightface), the build found and the fix for it (a fresh process: insightface must really be
    imported)."""
    script = (f"import sys; sys.path.insert(0, {str(REPO)!r}); sys.modules['onnxruntime'] = None\n"
              "from photomaker_core import faces\n"
              "try:\n    faces.require_insightface()\n"
              "except faces.InsightFaceMissing as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert out.stdout.startswith("onnxruntime is not installed"), out.stdout + out.stderr[-2000:]
    # this venv has the CPU build's metadata, so the fix is to reinstall that build alone
    assert "ONNX Runtime found: onnxruntime 1." in out.stdout, out.stdout
    assert "-m pip install --force-reinstall --no-deps onnxruntime`" in out.stdout, out.stdout


def test_no_install_hint_reinstalls_the_world():
    """Every pip command the pack's code suggests: a --force-reinstall always comes with --no-deps,
    and no hint installs onnxruntime together with insightface."""
    sources = [p for d in ("nodes", "photomaker_core") for p in (REPO / d).glob("*.py")]
    sources.append(REPO / "__init__.py")
    for path in sources:
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if "force-reinstall" in line:
                assert "no-deps" in line, f"{path.name}:{n}: {line.strip()}"
            assert not re.search(r"pip install[^`]*insightface[^`]*onnxruntime", line), f"{path.name}:{n}"


# -------------------------------------------------------------------------------- docs, scripts

def _web_directory() -> str:
    tree = ast.parse((REPO / "__init__.py").read_text())
    for node in ast.walk(tree):  # set inside the "host has the V3 API" branch
        names = [getattr(t, "id", None) for t in getattr(node, "targets", [])]
        if isinstance(node, ast.Assign) and "WEB_DIRECTORY" in names:
            return node.value.value
    raise AssertionError("__init__.py sets no WEB_DIRECTORY")


def test_every_node_has_docs(comfy_host):
    web = (REPO / _web_directory()).resolve()
    assert web == REPO / "web"
    ids = comfy_host.pack_node_ids()
    assert ids
    docs = {p.stem for p in (web / "docs").glob("*.md")}
    missing = sorted(set(ids) - docs)
    assert not missing, f"node ids without web/docs/<id>.md: {missing}"
    assert not sorted(docs - set(ids)), f"docs for nodes that do not exist: {sorted(docs - set(ids))}"
    for node_id in ids:
        text = (web / "docs" / f"{node_id}.md").read_text()
        assert len(text) > 200 and text.lstrip().startswith("#"), node_id


def test_no_install_time_scripts():
    for name in ("setup.py", "install.py"):
        assert not (REPO / name).exists(), f"{name}: the pack must not run code at install time"
    assert "build-system" not in _pyproject(), "no build backend: the registry ships the folder as is"


# ------------------------------------------------------------------------- template thumbnails

WORKFLOWS = sorted((REPO / "workflows").glob("*.json"))


def _thumbnails_script():
    import importlib.util

    spec = importlib.util.spec_from_file_location("_pm_make_thumbnails",
                                                  REPO / "scripts" / "make_thumbnails.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_every_workflow_has_a_small_jpeg_thumbnail():
    """The frontend shows a pack template's thumbnail from <workflow name>.jpg beside the .json
    (scripts/make_thumbnails.py makes them from the UI test's screenshots)."""
    from PIL import Image

    assert WORKFLOWS
    for wf in WORKFLOWS:
        thumb = wf.with_suffix(".jpg")
        assert thumb.is_file(), f"{wf.name}: no {thumb.name} (run scripts/make_thumbnails.py)"
        assert thumb.stat().st_size < 60_000, (thumb.name, thumb.stat().st_size)
        with Image.open(thumb) as im:
            assert im.format == "JPEG" and im.size == (400, 400), (thumb.name, im.format, im.size)
    orphans = {p.stem for p in (REPO / "workflows").glob("*.jpg")} - {p.stem for p in WORKFLOWS}
    assert not orphans, f"thumbnails without a workflow: {sorted(orphans)}"


def test_make_thumbnails_script(tmp_path):
    from PIL import Image

    script = _thumbnails_script()
    shots, flows = tmp_path / "shots", tmp_path / "workflows"
    shots.mkdir(), flows.mkdir()
    (flows / "a.json").write_text("{}")
    assert script.main(["--screenshots", str(shots), "--workflows", str(flows)]) == 1  # no screenshot yet
    noise = Image.effect_noise((1800, 700), 80).convert("RGB")  # wide, like a graph; noise compresses badly
    noise.save(shots / "a.png")
    assert script.main(["--screenshots", str(shots), "--workflows", str(flows)]) == 0
    with Image.open(flows / "a.jpg") as im:
        assert im.format == "JPEG" and im.size == (400, 400)
    assert (flows / "a.jpg").stat().st_size <= script.MAX_BYTES


@pytest.mark.host
def test_server_offers_the_workflows_and_their_thumbnails():
    """What the frontend's Templates dialog asks the real server (0.3.75: app/custom_node_manager.py):
    GET /workflow_templates lists this pack's folder with every workflow name, and
    /api/workflow_templates/<folder>/<name>.json and .jpg serve the files."""
    import urllib.request

    from support.server import PACK_DIR_NAME, ComfyServer

    server = ComfyServer(with_tiny_pack=False)
    try:
        server.start()
        templates = server.get("/workflow_templates")
        assert sorted(templates.get(PACK_DIR_NAME, [])) == [p.stem for p in WORKFLOWS], templates
        for wf in WORKFLOWS:
            for suffix, ctype in ((".json", "application/json"), (".jpg", "image/jpeg")):
                url = f"{server.url}/api/workflow_templates/{PACK_DIR_NAME}/{wf.stem}{suffix}"
                with urllib.request.urlopen(url, timeout=30) as r:
                    assert r.status == 200 and r.headers.get_content_type() == ctype, (url, r.headers)
                    assert r.read() == wf.with_suffix(suffix).read_bytes(), url
    finally:
        server.cleanup()


# --------------------------------------------------------------------------- a too-old ComfyUI

@pytest.mark.host
def test_host_without_v3_api_gets_one_log_line_and_no_nodes(comfy_host, tmp_path, monkeypatch, caplog):
    """A ComfyUI without comfy_api.latest (< 0.3.52): the host's own loader imports the pack, which
    logs one line naming the version it needs and the one found, registers nothing, raises nothing.
    The pack's entry files are copied under another folder name so the host gives them a fresh
    module; comfy_api.latest is made unimportable for the duration."""
    import asyncio
    import logging
    import shutil

    import nodes

    pack = tmp_path / "comfyui-photomaker-stackedid"
    pack.mkdir()
    for name in ("__init__.py", "pyproject.toml"):  # no nodes/: importing it would fail the load
        shutil.copy(REPO / name, pack / name)
    monkeypatch.setitem(sys.modules, "comfy_api.latest", None)
    before = dict(nodes.NODE_CLASS_MAPPINGS)
    caplog.clear()
    with caplog.at_level(logging.INFO):
        ok = asyncio.run(nodes.load_custom_node(str(pack)))
    assert ok is True
    assert nodes.NODE_CLASS_MAPPINGS == before
    problems = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(problems) == 1, [r.getMessage() for r in problems]
    msg = problems[0].getMessage()
    required = _pyproject()["tool"]["comfy"]["requires-comfyui"].removeprefix(">=")
    assert msg.startswith(f"StackedID/PhotoMaker needs ComfyUI >= {required}"), msg
    assert f"found {comfy_host.host_version()}" in msg and problems[0].exc_info is None
