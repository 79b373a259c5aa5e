#!/usr/bin/env python3
"""Pick the Python that `make demo` runs with, so the demo uses the ComfyUI's own torch (and GPU).

Order (first usable wins):
  1. --python PATH (`make demo PYTHON=...`): used as given, and an error if it cannot import torch;
  2. when a ComfyUI is known (this checkout sits in ComfyUI/custom_nodes/<pack>, or $COMFYUI_PATH):
     its `venv/` or `.venv/`, the Windows portable build's `python_embeded` beside the ComfyUI folder,
     then the active virtualenv ($VIRTUAL_ENV) or conda env ($CONDA_PREFIX);
  3. the pack's own CPU venv, `.venv/bin/python` (`make setup` builds it): a bare clone.
A candidate is usable when it runs and imports torch and ComfyUI's own requirements (einops,
safetensors, yaml). Prints the chosen interpreter's path on stdout and, on stderr, where it came from
with its torch version and device (cuda / mps / cpu). Standard library only: any python3 runs it.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

PACK_ROOT = Path(__file__).resolve().parent.parent
FALLBACK_SOURCE = "the pack's CPU venv (make setup)"
# What the probe runs: torch and a few of ComfyUI's own requirements, then the device torch sees.
PROBE = """
import json, torch, einops, safetensors, yaml
mps = getattr(torch.backends, "mps", None)
if torch.cuda.is_available():
    device = "cuda (" + torch.cuda.get_device_name(0) + ")"
elif mps is not None and mps.is_available():
    device = "mps"
else:
    device = "cpu"
print(json.dumps({"torch": torch.__version__, "device": device}))
"""


@dataclass
class Choice:
    python: Path
    source: str
    info: dict = field(default_factory=dict)  # the probe's {"torch": ..., "device": ...}; {} if not run


class PickError(RuntimeError):
    pass


def is_comfyui(path: Path) -> bool:
    return (path / "comfy" / "model_management.py").is_file() and (path / "nodes.py").is_file()


def comfyui_root(pack_root: Path, env: dict) -> Path | None:
    """$COMFYUI_PATH, else the ComfyUI two folders up (custom_nodes/<pack>), else None."""
    if env.get("COMFYUI_PATH"):
        path = Path(env["COMFYUI_PATH"])
        return path if is_comfyui(path) else None
    parent = pack_root.parent
    if parent.name == "custom_nodes" and is_comfyui(parent.parent):
        return parent.parent
    return None


def _env_pythons(prefix: Path) -> list[Path]:
    """The interpreter of a venv / conda prefix, POSIX and Windows layouts."""
    return [prefix / "bin" / "python", prefix / "Scripts" / "python.exe", prefix / "python.exe"]


def candidates(pack_root: Path, env: dict) -> list[tuple[Path, str]]:
    """(interpreter, where it comes from) in the order they are tried; only existing files."""
    found: list[tuple[Path, str]] = []
    root = comfyui_root(pack_root, env)
    if root is not None:
        for name in ("venv", ".venv"):
            found += [(p, f"ComfyUI's {name}/") for p in _env_pythons(root / name)]
        # The portable build: ComfyUI_windows_portable/{python_embeded,ComfyUI}/ (sic: "embeded").
        for name in ("python_embeded", "python_embedded"):
            found += [(root.parent / name / exe, f"the portable build's {name}")
                      for exe in ("python.exe", "python")]
        for var, what in (("VIRTUAL_ENV", "the active virtualenv"), ("CONDA_PREFIX", "the active conda env")):
            if env.get(var):
                found += [(p, f"{what} ({env[var]})") for p in _env_pythons(Path(env[var]))]
    return [(p, why) for p, why in found if p.is_file()]


def fallback_python(pack_root: Path) -> Path:
    return pack_root / ".venv" / "bin" / "python"


def probe(python: Path, timeout: float = 180.0) -> dict | None:
    """{"torch": version, "device": ...} if `python` runs and imports torch + ComfyUI's needs, else None."""
    try:
        res = subprocess.run([str(python), "-c", PROBE], capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if res.returncode != 0:
        return None
    try:
        return json.loads(res.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return None


def choose(pack_root: Path, env: dict, explicit: str | None = None, probe=probe) -> Choice:
    """The interpreter for the demo (see the module docstring for the order)."""
    if explicit:
        python = Path(explicit)
        info = probe(python) if python.is_file() else None
        if info is None:
            raise PickError(f"PYTHON={explicit} cannot run the demo: it is not a Python that imports torch "
                            "and ComfyUI's requirements (einops, safetensors, pyyaml). Give the Python that "
                            "runs your ComfyUI.")
        return Choice(python, "PYTHON=", info)
    for python, source in candidates(pack_root, env):
        info = probe(python)
        if info is not None:
            return Choice(python, source, info)
    return Choice(fallback_python(pack_root), FALLBACK_SOURCE)


def describe(choice: Choice) -> str:
    where = f"demo Python: {choice.python} ({choice.source})"
    if choice.info:
        return f"{where}: torch {choice.info['torch']}, device {choice.info['device']}"
    return f"{where}: CPU torch; inside a ComfyUI, or with PYTHON=..., the demo uses that ComfyUI's Python"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--python", help="use this interpreter (make demo PYTHON=...)")
    args = ap.parse_args(argv)
    try:
        choice = choose(PACK_ROOT, dict(os.environ), args.python)
    except PickError as e:
        print(f"make demo: {e}", file=sys.stderr)
        return 2
    print(describe(choice), file=sys.stderr)
    print(choice.python)
    return 0


if __name__ == "__main__":
    sys.exit(main())
