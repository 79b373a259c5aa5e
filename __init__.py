"""PhotoMaker (Stacked ID) for ComfyUI: the host's entry point.

V3 only: ComfyUI calls `comfy_entrypoint`. (Exporting NODE_CLASS_MAPPINGS too would make the host
ignore the entry point.) Importing does nothing else: no downloads, no model loading.
"""
from .nodes import comfy_entrypoint

# Node documentation for the frontend's docs panel (web/docs/<node id>.md).
WEB_DIRECTORY = "./web"

__all__ = ["comfy_entrypoint", "WEB_DIRECTORY"]
