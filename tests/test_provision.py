"""Host lookup order of scripts/provision_host.py: COMFYUI_PATH, the enclosing ComfyUI, the pin."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _fake_comfy(root: Path) -> Path:
    (root / "comfy").mkdir(parents=True)
    (root / "comfy" / "model_management.py").write_text("")
    (root / "nodes.py").write_text("")
    return root


def _lookup(script: Path, env_extra: dict, *args) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "COMFYUI_PATH"}
    env.update(env_extra)
    return subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, env=env,
                          timeout=60)


def test_comfyui_path_wins(tmp_path):
    host = _fake_comfy(tmp_path / "MyComfy")
    out = _lookup(REPO / "scripts" / "provision_host.py", {"COMFYUI_PATH": str(host)})
    assert out.returncode == 0 and out.stdout.strip() == str(host.resolve())


def test_bad_comfyui_path_is_an_error(tmp_path):
    out = _lookup(REPO / "scripts" / "provision_host.py", {"COMFYUI_PATH": str(tmp_path)})
    assert out.returncode != 0 and "not a ComfyUI folder" in out.stderr


def test_enclosing_comfyui_is_found(tmp_path):
    host = _fake_comfy(tmp_path / "ComfyUI")
    pack = host / "custom_nodes" / "comfyui-photomaker-stackedid"
    (pack / "scripts").mkdir(parents=True)
    shutil.copy(REPO / "scripts" / "provision_host.py", pack / "scripts")
    out = _lookup(pack / "scripts" / "provision_host.py", {})
    assert out.returncode == 0 and out.stdout.strip() == str(host.resolve())


def test_pinned_copies_are_the_expected_versions():
    for version in ("0.3.75", "0.3.52"):  # 0.33.0: test_033_snapshot_is_checksummed_and_extracted
        out = _lookup(REPO / "scripts" / "provision_host.py", {}, "--version", version)
        assert out.returncode == 0, out.stderr
        text = (Path(out.stdout.strip()) / "comfyui_version.py").read_text()
        assert f'"{version}"' in text


def _provision_module(tmp_path: Path, monkeypatch):
    """scripts/provision_host.py imported with its cache and shared folder moved into tmp_path."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("_pm_provision_test",
                                                  REPO / "scripts" / "provision_host.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    monkeypatch.setattr(mod, "CACHE", tmp_path / "cache")
    monkeypatch.setenv("PM_SHARED_HOSTS", str(tmp_path / "shared"))
    (tmp_path / "shared").mkdir()
    return mod


def test_033_snapshot_is_checksummed_and_extracted():
    """The 0.33.0 host comes from the shared snapshot, whose sha256 matches the pin."""
    out = _lookup(REPO / "scripts" / "provision_host.py", {}, "--version", "0.33.0")
    if out.returncode == 3:
        pytest.skip(f"ComfyUI 0.33.0 not obtainable here: {out.stderr.strip()}")
    assert out.returncode == 0, out.stderr
    root = Path(out.stdout.strip())
    assert '"0.33.0"' in (root / "comfyui_version.py").read_text()
    assert (root / ".complete").read_text() == "0.33.0"


def test_033_snapshot_with_wrong_checksum_is_refused(tmp_path, monkeypatch):
    mod = _provision_module(tmp_path, monkeypatch)
    name = mod.SNAPSHOTS["0.33.0"][0]
    (tmp_path / "shared" / name).write_bytes(b"not the snapshot")
    with pytest.raises(SystemExit) as e:
        mod.extract_pinned("0.33.0")
    assert "does not match the pinned" in str(e.value.code)
    assert not (tmp_path / "cache" / "0.33.0").exists()


def test_033_unobtainable_exits_3_with_a_reason(tmp_path, monkeypatch):
    """No snapshot and no network: exit status 3 (the Makefile then reports and skips the run)."""
    mod = _provision_module(tmp_path, monkeypatch)
    name, sha, _ = mod.SNAPSHOTS["0.33.0"]
    # Port 9 (discard) on loopback: refused at once, as a machine without network refuses.
    monkeypatch.setitem(mod.SNAPSHOTS, "0.33.0", (name, sha, "http://127.0.0.1:9/ComfyUI-v0.33.0.tar.gz"))
    with pytest.raises(mod.HostUnavailable) as e:
        mod.extract_pinned("0.33.0")
    assert e.value.code == 3
    assert "not available here" in e.value.message and str(tmp_path / "shared") in e.value.message


def test_033_archive_is_extracted_safely(tmp_path, monkeypatch):
    """A snapshot whose members try to leave the cache folder is refused by the tar data filter."""
    import hashlib
    import io
    import tarfile

    mod = _provision_module(tmp_path, monkeypatch)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo("../escape.txt")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"bad"))
    name = mod.SNAPSHOTS["0.33.0"][0]
    (tmp_path / "shared" / name).write_bytes(buf.getvalue())
    monkeypatch.setitem(mod.SNAPSHOTS, "0.33.0", (name, hashlib.sha256(buf.getvalue()).hexdigest(), ""))
    with pytest.raises(tarfile.TarError):
        mod.extract_pinned("0.33.0")
    assert not (tmp_path / "cache" / "escape.txt").exists() and not (tmp_path / "escape.txt").exists()
