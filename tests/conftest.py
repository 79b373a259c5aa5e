"""Shared fixtures. The ComfyUI host is booted lazily: pure-library tests never import it."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
# photomaker_core is importable as a top-level package for library tests. Appended (not prepended)
# so the host's own `nodes` module always wins over this repo's `nodes/` package.
if str(REPO_ROOT) not in sys.path:
    sys.path.append(str(REPO_ROOT))
# scripts/ for `synthetic` (the tiny SDXL, PhotoMaker files and fake InsightFace the demo builds too)
# and the scripts the tests drive. Appended as well: nothing there shadows an installed module.
SCRIPTS = REPO_ROOT / "scripts"
if str(SCRIPTS) not in sys.path:
    sys.path.append(str(SCRIPTS))

os.environ.setdefault("OMP_NUM_THREADS", "2")

# pm_env and friends (tiny PhotoMaker files, fake InsightFace, input photos, the encoders and
# tokenizer the reliability and stress suites share) for host tests; the reliability summary line.
pytest_plugins = ["support.reliability_summary", "support.fixtures", "support.workflow_run"]
# The shared helpers assert like test code (support.reliability, support.graphs): pytest's detailed
# assertion messages there too.
pytest.register_assert_rewrite("support")



@pytest.fixture(scope="session")
def comfy_host():
    """Boot ComfyUI in-process (CPU) and load this pack through nodes.load_custom_node."""
    from support import host

    host.boot()
    host.load_pack()
    return host


@pytest.fixture(scope="session")
def tiny_clip(comfy_host):
    import torch
    from synthetic import tiny_sdxl

    with torch.inference_mode(False):
        return tiny_sdxl.make_clip()


@pytest.fixture(scope="session")
def tiny_model(comfy_host):
    from synthetic import tiny_sdxl

    return tiny_sdxl.make_model()


@pytest.fixture(scope="session")
def tiny_vae(comfy_host):
    from synthetic import tiny_sdxl

    return tiny_sdxl.make_vae()


HOST_FIXTURES = {"comfy_host", "comfy_lib", "host_tok", "ti_host", "pm_env"}


def pytest_collection_modifyitems(config, items):
    """Every test that boots the ComfyUI host is a `host` test (re-run on ComfyUI 0.3.52)."""
    for item in items:
        if HOST_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.host)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """Name the ComfyUI the host tests ran on, next to the run's summary line (also under -q)."""
    from support import host

    try:
        root = host.host_path()
        version = (root / "comfyui_version.py").read_text().split('"')[1]
    except (SystemExit, OSError, IndexError) as e:
        terminalreporter.write_line(f"ComfyUI host: not available ({e})")
        return
    terminalreporter.write_line(f"ComfyUI host: {version} at {root}")
