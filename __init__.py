"""PhotoMaker (Stacked ID) for ComfyUI: the host's entry point.

V3 only: ComfyUI calls `comfy_entrypoint`. (Exporting NODE_CLASS_MAPPINGS too would make the host
ignore the entry point.) Importing does nothing else: no downloads, no model loading.
"""
from .nodes import comfy_entrypoint

__all__ = ["comfy_entrypoint"]
