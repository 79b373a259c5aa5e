"""Stand-ins for the modules ComfyUI imports at start-up but Euler sampling never uses (torchsde, av),
installed only where the real one is missing: the GPU benchmark (gpu_bench.py) and
the prepared GPU demo check (scripts/gpu_demo_check.sh, through a .pth file) run on machines without
them. Development tooling: the pack never imports this.
"""
from __future__ import annotations

import importlib
import sys
import types


class _Stub(types.ModuleType):
    """Stand-in for a module the host imports but this benchmark never calls."""

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)

        def fail(*a, **k):
            raise RuntimeError(f"{self.__name__}.{name} is a stub in gpu_bench.py")
        value = type(name, (), {"__init__": fail, "__call__": fail})
        setattr(self, name, value)
        return value


def stub_missing() -> list[str]:
    stubbed = []
    for root, subs in (("torchsde", ()), ("av", ("container", "subtitles", "subtitles.stream", "error",
                                                  "audio", "audio.frame", "video", "video.frame"))):
        try:
            importlib.import_module(root)
        except ImportError:
            for name in (root, *(f"{root}.{s}" for s in subs)):
                sys.modules[name] = _Stub(name)
                parent, _, leaf = name.rpartition(".")
                if parent:
                    setattr(sys.modules[parent], leaf, sys.modules[name])
            stubbed.append(root)
    return stubbed
