"""Boot a real ComfyUI host in-process (CPU) and load this pack through the host's own loader.

The host is found by scripts/provision_host.py (COMFYUI_PATH, an enclosing ComfyUI, else a pinned
copy). `PM_COMFY_VERSION` selects the pinned copy (0.3.75 default, 0.3.52).
"""
from __future__ import annotations

import asyncio
import importlib.util
import os
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
_STATE: dict = {}


def _script_module(name: str):
    """A module from scripts/ (development tools shared by the demo, the harness and benchmarks)."""
    key = f"_pm_script_{name}"
    if key not in sys.modules:
        spec = importlib.util.spec_from_file_location(key, REPO_ROOT / "scripts" / f"{name}.py")
        mod = importlib.util.module_from_spec(spec)
        sys.modules[key] = mod
        spec.loader.exec_module(mod)
    return sys.modules[key]


def _provisioner():
    return _script_module("provision_host")


def host_path() -> Path:
    version = os.environ.get("PM_COMFY_VERSION")
    return _provisioner().find_host(version or "0.3.75")


def boot() -> Path:
    """Import ComfyUI as a library, on the CPU. Idempotent."""
    if "root" in _STATE:
        return _STATE["root"]
    root = host_path()
    sys.path.insert(0, str(root))
    import comfy.options

    comfy.options.enable_args_parsing(False)
    from comfy.cli_args import args

    args.cpu = True  # must precede comfy.model_management's import (it probes CUDA at import)
    # `utils` must be imported before `nodes`: nodes.py puts comfy/ first on sys.path, after which
    # `import utils` would find comfy/utils.py.
    import utils.extra_config  # noqa: F401
    import folder_paths

    scratch = Path(tempfile.mkdtemp(prefix="pm-host-"))
    folder_paths.set_output_directory(str(scratch / "output"))
    folder_paths.set_temp_directory(str(scratch / "temp"))
    folder_paths.set_input_directory(str(scratch / "input"))
    import comfy.model_management  # noqa: F401
    import execution  # noqa: F401
    import nodes

    # Core's built-in extra nodes (comfy_extras: PhotoMakerLoader, ConditioningSetTimestepRange...),
    # as the server loads them; custom nodes and API nodes are not loaded.
    asyncio.run(nodes.init_extra_nodes(init_custom_nodes=False, init_api_nodes=False))
    _STATE.update(root=root, scratch=scratch)
    return root


def host_version() -> str:
    boot()
    import comfyui_version

    return comfyui_version.__version__


def load_pack():
    """Load this checkout with nodes.load_custom_node, exactly as the host loads custom_nodes/<pack>.
    Returns the pack's module."""
    boot()
    if "pack" in _STATE:
        return _STATE["pack"]
    import nodes

    before = set(nodes.NODE_CLASS_MAPPINGS)
    ok = asyncio.run(nodes.load_custom_node(str(REPO_ROOT)))
    assert ok, "the host failed to load the pack (see log)"
    module = sys.modules[str(REPO_ROOT).replace(".", "_x_")]
    _STATE["pack"] = module
    _STATE["pack_nodes"] = sorted(set(nodes.NODE_CLASS_MAPPINGS) - before)
    return module


def pack_node_ids() -> list[str]:
    load_pack()
    return _STATE["pack_nodes"]


def pack_submodule(name: str):
    """The pack's own copy of a submodule (e.g. 'photomaker_core.loading'), as the host imported it."""
    pack = load_pack()
    return importlib.import_module(f"{pack.__name__}.{name}")


class NullServer:
    """Duck-typed stand-in for server.PromptServer (what PromptExecutor talks to)."""

    def __init__(self):
        self.client_id = "test"  # the executor only reports per-client events when a client is set
        self.last_node_id = None
        self.sockets_metadata = {}
        self.messages = []

    def send_sync(self, event, data, sid=None):
        self.messages.append((event, data))

    def queue_updated(self):
        pass


def make_executor(server=None, cache_type=None, lru_size: int = 0):
    """A real PromptExecutor built with the cache arguments this host's main.py passes."""
    return _script_module("host_compat").make_prompt_executor(server or NullServer(), cache_type, lru_size)


class GraphError(RuntimeError):
    def __init__(self, message, details):
        super().__init__(message)
        self.details = details


def run_graph(prompt: dict, executor=None, prompt_id: str = "test"):
    """Validate and execute an API-format graph with the real engine.
    Returns (executor, outputs) where outputs maps node id -> ui output dict."""
    import execution

    valid = asyncio.run(execution.validate_prompt(prompt_id, prompt, None))
    ok, err, outputs, node_errors = valid[:4]
    if not ok:
        raise GraphError(f"invalid prompt: {err} {node_errors}", {"error": err, "node_errors": node_errors})
    executor = executor or make_executor()
    executor.execute(prompt, prompt_id, {"client_id": "test"}, outputs)
    if not executor.success:
        errs = [m[1] for m in executor.status_messages if m[0] == "execution_error"]
        msg = errs[0].get("exception_message", "") if errs else "unknown"
        raise GraphError(f"execution failed: {msg}", errs[0] if errs else {})
    return executor, executor.history_result.get("outputs", {})


def load_tiny_pack():
    boot()
    if "tiny" not in _STATE:
        import nodes

        ok = asyncio.run(nodes.load_custom_node(str(Path(__file__).parent / "tiny_pack")))
        assert ok
        _STATE["tiny"] = True
