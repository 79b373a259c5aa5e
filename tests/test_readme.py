"""The README is for users first: its sections, links, names and numbers are checked against
the repository itself, so a renamed workflow, a moved file or a re-measured figure shows up here.

* sections: Install (Manager, comfy-cli with the registry id, clone with the repository URL from
  pyproject, the portable build's embedded Python), the minimum ComfyUI version from pyproject, Models
  (a direct https link and a licence per model, the demo's download URLs), Start here (the demo's
  workflow, numbered 01 once templates are numbered), Troubleshooting (the entries users hit), Nodes;
* every relative link target exists, every #anchor is a heading, every URL is https;
* every workflow named exists in workflows/ (with or without its number prefix) and every workflow
  and node id is documented;
* exactly the two set-up commands: one block with `make demo` and `make test`, no other make target;
* the VRAM figures quoted are the measured ones in tests/benchmarks/results/;
* CONTRIBUTING.md's "Where each thing is tested" has one row per tests/test_*.py.
"""
from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
NUMBERED = re.compile(r"^(\d\d)-(.+)$")


def _sections() -> dict[str, str]:
    """'## Title' -> its text (up to the next '## ')."""
    parts = re.split(r"^## (.+)$", README, flags=re.M)
    return {title.strip(): body for title, body in zip(parts[1::2], parts[2::2], strict=True)}


def _section(prefix: str) -> str:
    found = [body for title, body in _sections().items() if title.lower().startswith(prefix.lower())]
    assert len(found) == 1, f"README needs one '## {prefix}...' section; has {list(_sections())}"
    return found[0]


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _workflows() -> dict[str, Path]:
    """slug (file stem without its number prefix) -> file."""
    out = {}
    for path in sorted((REPO / "workflows").glob("*.json")):
        m = NUMBERED.match(path.stem)
        out[m.group(2) if m else path.stem] = path
    return out


def _code_blocks(text: str = README) -> list[str]:
    return re.findall(r"^```[^\n]*\n(.*?)^```", text, flags=re.M | re.S)


def _demo_downloads() -> list[str]:
    """The official URLs scripts/demo.py downloads from (read from its source, not imported)."""
    src = (REPO / "scripts" / "demo.py").read_text()
    return re.findall(r'"(https://[^"]+)"', src[src.index("DOWNLOADS = {"):src.index("REFERENCE_FOLDERS")])


def test_users_first_order_of_sections():
    titles = [t.lower() for t in _sections()]
    order = ["install", "models", "start here", "the two commands", "example workflows", "nodes",
             "troubleshooting"]
    index = [next(i for i, t in enumerate(titles) if t.startswith(name)) for name in order]
    assert index == sorted(index), titles
    intro = README.split("\n## ", 1)[0]
    assert "](docs/" in intro and ".png)" in intro, "a picture of the workflow before the first section"


def test_install_section():
    text = _section("Install")
    name, repo_url = PYPROJECT["project"]["name"], PYPROJECT["project"]["urls"]["Repository"]
    assert "ComfyUI-Manager" in text and PYPROJECT["tool"]["comfy"]["DisplayName"] in text
    assert f"comfy node install {name}" in text
    assert f"git clone {repo_url}" in text and "<" not in repo_url
    assert f"-m pip install -r {name}/requirements.txt" in text
    portable = rf"python_embeded\python.exe -m pip install -r ComfyUI\custom_nodes\{name}\requirements.txt"
    assert portable in text
    # the ONNX Runtime choice is explained, with the command that keeps a GPU build
    assert "onnxruntime-gpu" in text and "-m pip install --no-deps insightface" in text


def test_minimum_comfyui_version_is_pyprojects():
    minimum = PYPROJECT["tool"]["comfy"]["requires-comfyui"].removeprefix(">=")
    intro = README.split("\n## ", 1)[0]
    assert f"ComfyUI {minimum} or newer" in intro
    init = (REPO / "__init__.py").read_text()
    assert f'MIN_COMFYUI = "{minimum}"' in init, "the pack's own refusal names the same version"


def test_model_table_has_direct_links_and_licences():
    text = _section("Models")
    rows = [r for r in text.splitlines() if r.startswith("|") and not r.startswith("|---")][1:]
    assert len(rows) >= 4
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert len(cells) == 4, row
        model, file_cell, needed_for, licence = cells
        link = re.search(r"\[`([^`]+)`\]\((https://[^)]+)\)", file_cell)
        assert link and link.group(2).endswith("/" + link.group(1)), f"direct download link: {row}"
        assert licence and needed_for, row
    for url in _demo_downloads():
        assert url in text, f"the demo downloads {url}; the table should link it"
    buffalo = next(r for r in rows if "buffalo_l" in r)
    assert "non-commercial" in buffalo


def test_start_here_opens_the_demos_workflow():
    text = _section("Start here")
    named = re.findall(r"`((?:\d\d-)?photomaker-[a-z0-9-]+)(?:\.json)?`", text)
    assert named, "Start here names the workflow to open"
    workflows = _workflows()
    slug = NUMBERED.sub(r"\2", named[0])
    assert slug in workflows, (named[0], sorted(workflows))
    demo_default = re.search(r'DEFAULT_WORKFLOW = REPO / "workflows" / "([^"]+)"',
                             (REPO / "scripts" / "demo.py").read_text()).group(1)
    assert workflows[slug].name == demo_default, "the same workflow as `make demo`"
    if any(NUMBERED.match(p.stem) for p in workflows.values()):
        assert workflows[slug].stem.startswith("01-"), "the first template is the one to start with"


TROUBLES = {  # entry -> words its title must contain, words its text must contain
    "install": (("insightface", "onnxruntime"), ("--no-deps", "onnxruntime-gpu", "Windows")),
    "likeness": (("look like",), ("Loader's `model`", "class word", "style strength", "crop_to_face",
                                  "more photos")),
    "versions": (("V1/V2",), ("face_analysis",)),
    "dropdown": (("dropdown",), ("press **R**",)),
    "old host": (("Old ComfyUI",), (">= 0.3.52",)),
    "vram": (("VRAM",), ("GiB", "--lowvram", "provider")),
    "folder": (("model folder",), ("extra_model_paths.yaml",)),
}


@pytest.mark.parametrize("entry", list(TROUBLES))
def test_troubleshooting_entries(entry):
    text = _section("Troubleshooting")
    items = re.split(r"^- ", text, flags=re.M)[1:]
    title_words, body_words = TROUBLES[entry]
    found = [it for it in items if all(w.lower() in it.split("**")[1].lower() for w in title_words)]
    assert len(found) == 1, f"one Troubleshooting entry titled with {title_words}"
    missing = [w for w in body_words if w not in found[0]]
    assert not missing, f"{entry}: {missing}"


def test_troubleshooting_names_the_packs_real_folders():
    host_src = (REPO / "nodes" / "folders.py").read_text()
    defaults = host_src[host_src.index("def register_folders"):]
    consts = dict(re.findall(r'^(\w+_FOLDER) = "([^"]+)"', host_src, flags=re.M))
    keys = [consts[c] for c in re.findall(r"^\s+(\w+_FOLDER):", defaults, flags=re.M)]
    assert sorted(keys) == ["insightface", "photomaker", "photomaker_identities"], keys
    text = _section("Troubleshooting")
    for key in keys:
        assert f"`models/{key}/" in text and f"`{key}`" in text, key
    assert "`models/insightface/models/buffalo_l/`" in text


def test_vram_figures_are_the_measured_ones():
    peaks = {}
    for version in ("v1", "v2"):
        path = REPO / "tests" / "benchmarks" / "results" / f"gpu_h100_{version}.json"
        data = json.loads(path.read_text())
        peaks[version] = {k: v["vram"]["torch_max_allocated_gib"] for k, v in data["results"].items()}
    text = _section("Troubleshooting")
    plain = {round(p["without"], 1) for p in peaks.values()}
    assert len(plain) == 1
    expected = (f"{round(peaks['v1']['with_10'], 1)} GiB (V1) and "
                f"{round(peaks['v2']['with_10'], 1)} GiB (V2) against {plain.pop()} GiB for plain SDXL")
    assert expected in " ".join(text.split()), expected
    if "the same with 1 or 10 ID" in text:
        assert all(round(p["with_1"], 1) == round(p["with_10"], 1) for p in peaks.values())


def test_links_exist_and_urls_are_https():
    anchors = {_slug(t) for t in _sections()}
    targets = re.findall(r"\]\(([^)\s]+)\)", README) + re.findall(r'src="([^"]+)"', README)
    assert targets
    for target in targets:
        if target.startswith("#"):
            assert target[1:] in anchors, f"no heading for {target}"
        elif re.match(r"[a-z]+:", target):
            assert target.startswith("https://"), target
        else:
            path = REPO / target.split("#", 1)[0]
            assert path.exists(), f"README links {target}, which is not in the repository"
    for url in re.findall(r"\b[a-z]+://[^\s)>`\"]+", README):
        # Downloads and references are https; a ComfyUI server address in an example (loopback or a
        # bare LAN host name such as gpu2) is what users type, plain http.
        server = re.match(r"http://(127\.0\.0\.1|localhost|[a-z0-9-]+)(:\d+)?/?$", url)
        assert url.startswith("https://") or server, url


def test_every_workflow_named_exists_and_every_workflow_is_named():
    workflows = _workflows()
    named = set(re.findall(r"`((?:\d\d-)?photomaker-[a-z0-9-]+)(?:\.json)?`", README))
    assert named
    for name in named:
        assert NUMBERED.sub(r"\2", name) in workflows, f"README names {name}; workflows/: {sorted(workflows)}"
    section = _section("Example workflows")
    missing = [slug for slug, path in workflows.items()
               if f"`{slug}`" not in section and f"`{path.stem}`" not in section]
    assert not missing, f"workflows not described under 'Example workflows': {missing}"


def test_every_node_is_in_the_node_reference():
    ids = sorted(p.stem for p in (REPO / "web" / "docs").glob("*.md"))
    assert ids
    table = _section("Nodes")
    assert not [i for i in ids if f"`{i}`" not in table], "node ids missing from the README's node table"


def test_exactly_the_two_setup_commands():
    blocks = _code_blocks()
    make_lines = [ln.split("#", 1)[0].strip() for b in blocks for ln in b.splitlines()
                  if re.match(r"\s*make\b", ln)]
    assert sorted(make_lines) == ["make demo", "make test"], make_lines
    targets = set(re.findall(r"`make ([\w-]+)", README)) | set(re.findall(r"\bmake ([\w-]+)`", README))
    assert targets <= {"demo", "test"}, f"developer targets belong in CONTRIBUTING.md: {targets}"
    contributing = (REPO / "CONTRIBUTING.md").read_text()
    for moved in ("make bench", "make stress", "tests/test_reliability.py", "gpu_bench.py"):
        assert moved not in README and moved in contributing, moved


def test_contributing_maps_every_test_file_once():
    """CONTRIBUTING's "Where each thing is tested": exactly one row per tests/test_*.py, and every row
    names a file that exists."""
    text = (REPO / "CONTRIBUTING.md").read_text()
    section = re.search(r"^## Where each thing is tested\n(.*?)(?=^## )", text, re.S | re.M)
    assert section, "CONTRIBUTING.md has no 'Where each thing is tested' section"
    rows = re.findall(r"^\| `(tests/[^`]+)` \|", section.group(1), re.M)
    files = sorted(f"tests/{p.name}" for p in (REPO / "tests").glob("test_*.py"))
    duplicated = sorted({r for r in rows if rows.count(r) > 1})
    assert not duplicated, f"more than one row: {duplicated}"
    assert not [r for r in rows if not (REPO / r).is_file()], "rows naming files that do not exist"
    assert sorted(rows) == files, f"files without a row: {sorted(set(files) - set(rows))}"
