"""The layering the code is built on, read from the source (CONTRIBUTING.md, "Code layout"):
photomaker_core is a library that never imports the host; nodes/ are host glue that call the core
for every tensor computation; neither imports the tests."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
HOST_MODULES = {"comfy", "comfy_api", "comfy_extras", "folder_paths", "execution", "server", "nodes",
                "latent_preview", "node_helpers"}
# What nodes/ may call on torch: running the core without autograd. Tensor building (cat, stack,
# where, zeros, ...) belongs to photomaker_core, where it has library tests.
NODE_TORCH_CALLS = {"inference_mode", "no_grad"}
TENSOR_BUILDING_METHODS = {"cat", "stack", "concat", "index_select", "gather", "scatter", "masked_fill",
                           "einsum", "matmul", "bmm"}


def _trees(folder: str):
    for path in sorted((REPO / folder).rglob("*.py")):
        yield path.relative_to(REPO), ast.parse(path.read_text(encoding="utf-8"))


def _imported_roots(tree: ast.AST) -> set[str]:
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


def test_core_never_imports_the_host_the_nodes_or_the_tests():
    found = {str(path): sorted(_imported_roots(tree) & (HOST_MODULES | {"tests", "support"}))
             for path, tree in _trees("photomaker_core")}
    assert not {p: m for p, m in found.items() if m}, found


@pytest.mark.parametrize("folder", ["nodes", "photomaker_core"])
def test_the_pack_never_imports_the_tests(folder):
    found = {str(path): sorted(_imported_roots(tree) & {"tests", "support", "conftest"})
             for path, tree in _trees(folder)}
    assert not {p: m for p, m in found.items() if m}, found


def _tensor_maths(tree: ast.AST) -> list[str]:
    """torch.<fn>(...) calls outside NODE_TORCH_CALLS, and .cat/.stack-like method calls."""
    found = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        owner, name = node.func.value, node.func.attr
        if isinstance(owner, ast.Name) and owner.id in {"torch", "F", "np", "numpy"}:
            if not (owner.id == "torch" and name in NODE_TORCH_CALLS):
                found.append(f"{node.lineno}: {ast.unparse(node.func)}")
        elif name in TENSOR_BUILDING_METHODS:
            found.append(f"{node.lineno}: .{name}")
    return found


def test_nodes_do_no_tensor_maths():
    found = {str(path): hits for path, tree in _trees("nodes") if (hits := _tensor_maths(tree))}
    assert not found, f"tensor maths in nodes/ (move it to photomaker_core): {found}"


def test_the_tensor_maths_check_finds_what_it_forbids():
    tree = ast.parse("import torch\nx = torch.cat([a, b])\ny = a.stack()\nwith torch.inference_mode():\n"
                     "    z = np.where(a)\n")
    assert _tensor_maths(tree) == ["2: torch.cat", "3: .stack", "5: np.where"]
