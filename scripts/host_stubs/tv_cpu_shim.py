"""Test-environment only: let PyPI's CUDA-linked torchvision import beside CPU torch.

ComfyUI imports torchvision unconditionally. PyPI's torchvision wheel links its C extension against
CUDA libraries the CPU torch build lacks; the extension then fails to load and torchvision's
meta registrations crash on the missing `torchvision::nms` schema. Defining the two unguarded
schemas before torchvision is imported is enough (ComfyUI only uses torchvision's Python parts).
Installed into the dev venv by scripts/setup_env.sh; never shipped in the pack.
"""
import sys

_LIB = None


def define_schemas():
    global _LIB
    import torch

    if _LIB is not None:
        return
    try:
        torch.ops.torchvision.nms  # noqa: B018 -- the lookup is the probe; the real extension loaded: nothing to do
        return
    except (AttributeError, RuntimeError):
        pass
    _LIB = torch.library.Library("torchvision", "DEF")
    _LIB.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _LIB.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")


class _Finder:
    """Runs define_schemas() the first time anything imports torchvision (lazy: no torch import
    at interpreter start)."""

    def find_spec(self, name, path=None, target=None):
        if name == "torchvision":
            sys.meta_path.remove(self)
            define_schemas()
        return None


def install_hook():
    if not any(isinstance(f, _Finder) or type(f).__name__ == "_Finder" for f in sys.meta_path):
        sys.meta_path.insert(0, _Finder())
