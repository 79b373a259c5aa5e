"""PhotoMaker (Stacked ID) for ComfyUI: the host's entry point.

V3 only: ComfyUI calls `comfy_entrypoint`. (Exporting NODE_CLASS_MAPPINGS too would make the host
ignore the entry point.) Importing does nothing else: no downloads, no model loading.

On a ComfyUI without the V3 node API (`comfy_api.latest`, ComfyUI < 0.3.52) the pack logs one line
naming the version it needs and registers no nodes, instead of failing the import with a traceback.
"""
import logging

# The oldest host with comfy_api.latest + comfy_entrypoint (= pyproject's requires-comfyui).
MIN_COMFYUI = "0.3.52"


def _host_has_v3_api() -> bool:
    try:
        from comfy_api.latest import ComfyExtension, io  # noqa: F401
    except ImportError:
        return False
    return True


def _host_version() -> str:
    """The running ComfyUI's version (its comfyui_version module), or a description if unknown."""
    try:
        from comfyui_version import __version__
    except ImportError:
        return "an older ComfyUI without comfyui_version.py"
    return str(__version__)


if _host_has_v3_api():
    from .nodes import comfy_entrypoint

    # Node documentation for the frontend's docs panel (web/docs/<node id>.md).
    WEB_DIRECTORY = "./web"
    __all__ = ["comfy_entrypoint", "WEB_DIRECTORY"]
else:
    logging.getLogger(__name__).error(
        "StackedID/PhotoMaker needs ComfyUI >= %s (the V3 node API, comfy_api.latest); found %s. "
        "Its nodes are not loaded: update ComfyUI.", MIN_COMFYUI, _host_version())
    # An empty V1 mapping: the host registers nothing and logs no import failure.
    NODE_CLASS_MAPPINGS: dict = {}
    __all__ = ["NODE_CLASS_MAPPINGS"]
