"""One error hierarchy and one way to turn a library error into a node error (nodes/errors.py):
every exception class the pack defines is a PhotoMakerError, and `input_errors` is the only place
a library error becomes a NodeInputError that names the node input to change."""
from __future__ import annotations

import ast
import inspect
import pkgutil
from pathlib import Path

import pytest

pytestmark = pytest.mark.host

PACK = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def errors(comfy_host):
    return comfy_host.pack_submodule("nodes.errors")


@pytest.fixture(scope="module")
def core_errors(comfy_host):
    return comfy_host.pack_submodule("photomaker_core.errors")


def _pack_modules(comfy_host):
    for package in ("photomaker_core", "nodes"):
        pkg = comfy_host.pack_submodule(package)
        yield pkg
        for info in pkgutil.iter_modules(pkg.__path__):
            yield comfy_host.pack_submodule(f"{package}.{info.name}")


def test_every_exception_the_pack_defines_is_a_photomaker_error(comfy_host, core_errors):
    defined = {}
    for module in _pack_modules(comfy_host):
        for name, obj in vars(module).items():
            if inspect.isclass(obj) and issubclass(obj, BaseException) and obj.__module__ == module.__name__:
                defined[f"{module.__name__.split('.', 1)[1]}.{name}"] = obj
    # the walk reaches the library's and the nodes' own errors
    assert {"photomaker_core.lora.LoraFormatError", "nodes.errors.NodeInputError",
            "photomaker_core.tokens.TriggerError"} <= set(defined)
    outside = sorted(k for k, cls in defined.items() if not issubclass(cls, core_errors.PhotoMakerError))
    assert not outside, f"not under PhotoMakerError: {outside}"


def test_library_error_becomes_a_node_error_naming_the_input(errors, core_errors):
    cause = core_errors.IdentityError("identity tokens must be [N, k, 2048]")
    with pytest.raises(errors.NodeInputError) as info:
        with errors.input_errors("PhotoMaker Apply", "identity_2"):
            raise cause
    assert str(info.value) == "PhotoMaker Apply - input 'identity_2': identity tokens must be [N, k, 2048]"
    assert (info.value.node, info.value.input_name) == ("PhotoMaker Apply", "identity_2")
    assert info.value.__cause__ is cause  # the traceback keeps the library's frame


def test_the_error_can_choose_the_input(errors, comfy_host):
    cond = comfy_host.pack_submodule("photomaker_core.conditioning")
    inputs = ["mask", "mask_2"]
    with pytest.raises(errors.NodeInputError, match="input 'mask_2': empty"):
        with errors.input_errors("PhotoMaker Apply", lambda err: inputs[err.index], catch=cond.MaskError):
            raise cond.MaskError(1, "empty")


def test_a_node_error_passes_through_unchanged(errors):
    inner = errors.NodeInputError("PhotoMaker Loader", "model", "not SDXL")
    with pytest.raises(errors.NodeInputError) as info:
        with errors.input_errors("PhotoMaker Loader", "photomaker_file"):
            raise inner
    assert info.value is inner


def test_host_errors_and_cancel_are_not_relabelled(errors, comfy_host):
    import comfy.model_management as mm

    with pytest.raises(mm.InterruptProcessingException):
        with errors.input_errors("PhotoMaker Encode Identity", "images"):
            raise mm.InterruptProcessingException()
    with pytest.raises(RuntimeError, match="CUDA out of memory"):
        with errors.input_errors("PhotoMaker Encode Identity", "images"):
            raise RuntimeError("CUDA out of memory")


def test_a_foreign_error_can_be_worded_for_the_user(errors):
    def worded(err):
        return f"the tokenizer failed ({type(err).__name__})"

    with pytest.raises(errors.NodeInputError, match=r"input 'text': the tokenizer failed \(IndexError\)"):
        with errors.input_errors("PhotoMaker Apply", "text", catch=Exception, message=worded):
            raise IndexError("list index out of range")


def _hand_converted(path: Path) -> list[int]:
    """Lines of `except` handlers that raise a NodeInputError themselves."""
    lines = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ExceptHandler):
            raised = [n for n in ast.walk(node) if isinstance(n, ast.Raise) and n.exc is not None]
            if any("NodeInputError" in ast.unparse(r.exc) for r in raised):
                lines.append(node.lineno)
    return lines


def test_nodes_convert_errors_only_through_input_errors():
    found = {p.name: _hand_converted(p) for p in sorted((PACK / "nodes").glob("*.py"))}
    assert found.pop("errors.py"), "the detector finds input_errors' own handler"
    assert not {k: v for k, v in found.items() if v}, found
