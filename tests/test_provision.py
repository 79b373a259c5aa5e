"""Host lookup order of scripts/provision_host.py: COMFYUI_PATH, the enclosing ComfyUI, the pin."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

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
    for version in ("0.3.75", "0.3.52"):
        out = _lookup(REPO / "scripts" / "provision_host.py", {}, "--version", version)
        assert out.returncode == 0, out.stderr
        text = (Path(out.stdout.strip()) / "comfyui_version.py").read_text()
        assert f'"{version}"' in text
