"""`make demo` runs with the ComfyUI's own Python (scripts/pick_python.py), in temp folder layouts.

The interpreters are small shell wrappers: a working one execs this test's Python (which has torch and
ComfyUI's requirements, so the real probe passes); a broken one exits 1, like a venv whose torch is
missing. The probe itself is never faked.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("_pm_pick_python", REPO / "scripts" / "pick_python.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # its dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


pick = _script()


def _exe(path: Path, works: bool = True) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    body = f'exec "{sys.executable}" "$@"' if works else "exit 1"
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def _comfyui(root: Path) -> Path:
    """A ComfyUI folder (what is_comfyui checks) with this pack's checkout in custom_nodes/."""
    (root / "comfy").mkdir(parents=True)
    (root / "comfy" / "model_management.py").write_text("")
    (root / "nodes.py").write_text("")
    pack = root / "custom_nodes" / "comfyui-photomaker-stackedid"
    pack.mkdir(parents=True)
    return pack


def test_comfyui_venv_is_used_with_its_torch_and_device(tmp_path):
    import torch

    pack = _comfyui(tmp_path / "ComfyUI")
    venv_python = _exe(tmp_path / "ComfyUI" / "venv" / "bin" / "python")
    choice = pick.choose(pack, {})
    assert (choice.python, choice.source) == (venv_python, "ComfyUI's venv/")
    assert choice.info == {"torch": torch.__version__, "device": "cpu"}  # this machine has no GPU
    assert pick.describe(choice) == (f"demo Python: {venv_python} (ComfyUI's venv/): "
                                     f"torch {torch.__version__}, device cpu")


def test_portable_build_embedded_python(tmp_path):
    pack = _comfyui(tmp_path / "ComfyUI_windows_portable" / "ComfyUI")
    embedded = _exe(tmp_path / "ComfyUI_windows_portable" / "python_embeded" / "python.exe")
    choice = pick.choose(pack, {})
    assert choice.python == embedded and "python_embeded" in choice.source


def test_a_broken_venv_is_skipped_for_the_active_env(tmp_path):
    pack = _comfyui(tmp_path / "ComfyUI")
    _exe(tmp_path / "ComfyUI" / ".venv" / "bin" / "python", works=False)  # e.g. no torch in it
    conda = _exe(tmp_path / "conda" / "envs" / "comfy" / "bin" / "python")
    choice = pick.choose(pack, {"CONDA_PREFIX": str(tmp_path / "conda" / "envs" / "comfy")})
    assert choice.python == conda and choice.source.startswith("the active conda env")


def test_comfyui_path_names_the_host(tmp_path):
    _comfyui(tmp_path / "ComfyUI")
    venv_python = _exe(tmp_path / "ComfyUI" / ".venv" / "bin" / "python")
    clone = tmp_path / "somewhere" / "comfyui-photomaker-stackedid"
    clone.mkdir(parents=True)
    choice = pick.choose(clone, {"COMFYUI_PATH": str(tmp_path / "ComfyUI")})
    assert choice.python == venv_python


def test_bare_clone_falls_back_to_the_cpu_venv(tmp_path):
    """No ComfyUI around: the pack's .venv, even with an active env (the pinned host needs the pack's
    own set-up), and no probe is run."""
    clone = tmp_path / "comfyui-photomaker-stackedid"
    clone.mkdir()
    active = _exe(tmp_path / "env" / "bin" / "python")
    choice = pick.choose(clone, {"VIRTUAL_ENV": str(active.parent.parent)})
    assert (choice.python, choice.source, choice.info) == (clone / ".venv" / "bin" / "python",
                                                            pick.FALLBACK_SOURCE, {})
    assert "CPU torch" in pick.describe(choice)


def test_explicit_python(tmp_path):
    good, bad = _exe(tmp_path / "good" / "python"), _exe(tmp_path / "bad" / "python", works=False)
    assert pick.choose(tmp_path, {}, explicit=str(good)).python == good
    for wrong in (bad, tmp_path / "missing" / "python"):
        with pytest.raises(pick.PickError, match="PYTHON=.*cannot run the demo"):
            pick.choose(tmp_path, {}, explicit=str(wrong))


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_demo_runs_the_demo_with_the_picked_python(tmp_path):
    """The Makefile's demo target in a ComfyUI layout: the demo script runs under the ComfyUI's venv
    Python (a stand-in demo.py reports its interpreter and arguments) and the choice is printed."""
    pack = _comfyui(tmp_path / "ComfyUI")
    venv_python = _exe(tmp_path / "ComfyUI" / "venv" / "bin" / "python")
    (pack / "scripts").mkdir()
    shutil.copy(REPO / "Makefile", pack / "Makefile")
    shutil.copy(REPO / "scripts" / "pick_python.py", pack / "scripts" / "pick_python.py")
    (pack / "scripts" / "demo.py").write_text("import sys; print('DEMO', sys.argv[1:], sys.executable)\n")
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "CONDA_PREFIX", "COMFYUI_PATH")}
    res = subprocess.run(["make", "-s", "demo", "ARGS=--synthetic --steps 2"], cwd=pack, env=env,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert f"demo Python: {venv_python} (ComfyUI's venv/)" in res.stderr and "device cpu" in res.stderr
    assert res.stdout.strip().startswith("DEMO ['--synthetic', '--steps', '2']"), res.stdout
    assert not (pack / ".venv").exists()  # no CPU venv was built inside a ComfyUI
