"""Real ComfyUI servers ready for scripts/photomaker_batch.py: the tiny model set under the names
the example workflows use, PM_TINY_CHECKPOINTS=1 (tiny SDXL detection inside the server), and
people folders of synthetic faces (the fake detector's face is a coloured block; the colour is the
person)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from unittest import mock


from . import workflow_env
from synthetic import fake_insightface
from .server import ComfyServer

BATCH_SCRIPT = workflow_env.REPO / "scripts" / "photomaker_batch.py"
# Small and fast: 64x64, 2 steps (the workflows say 1024x1024, 50 steps).
SMALL = ["Empty Latent Image.width=64", "Empty Latent Image.height=64", "KSampler.steps=2"]


def start_server(base: Path) -> ComfyServer:
    cache = workflow_env.ensure_synthetic_models()
    workflow_env.install_models(Path(base) / "models", cache)
    server = ComfyServer(base=Path(base))
    with mock.patch.dict(os.environ, {"PM_TINY_CHECKPOINTS": "1"}):  # read inside the server process
        return server.start()


def write_people(root: Path, people: dict[str, list[str]]) -> Path:
    """{person: [colour name, ...]}: one photo per colour (fake_insightface.RED, GREEN, ...; "NOFACE":
    a photo without a face)."""

    for name, colours in people.items():
        folder = Path(root) / name
        folder.mkdir(parents=True, exist_ok=True)
        for i, colour in enumerate(colours):
            if colour == "NOFACE":
                img = fake_insightface.blank_image()
            else:
                img = fake_insightface.synthetic_face(box=(200 + 10 * i, 120, 328 + 10 * i, 248),
                                                      color=getattr(fake_insightface, colour))
            fake_insightface.save_png(img, folder / f"photo_{i}.png")
    return Path(root)


def batch_command(*args: str) -> list[str]:
    return [sys.executable, str(BATCH_SCRIPT), *map(str, args)]


def client_env() -> dict:
    return dict(os.environ, OMP_NUM_THREADS="1")


def run_batch(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(batch_command(*args), capture_output=True, text=True, timeout=timeout,
                          env=client_env(), cwd=workflow_env.REPO, check=False)


def start_batch(*args: str, log: Path) -> subprocess.Popen:
    """The command in the background (its output in `log`), to stop servers or kill it mid-run."""
    with open(log, "wb") as out:
        return subprocess.Popen(batch_command(*args), stdout=out, stderr=subprocess.STDOUT,
                                env=client_env(), cwd=workflow_env.REPO)
