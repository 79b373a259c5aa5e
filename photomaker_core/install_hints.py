"""Which ONNX Runtime build is installed, and the exact pip commands that fix a missing install
without replacing anything the user already has.

Why this exists: every insightface release from 1.0 on declares a dependency on the CPU package
`onnxruntime`. The accelerated builds (`onnxruntime-gpu`, `-directml`, ...) are *other* distributions
that install the same `onnxruntime` import package, so `pip install insightface` beside an
`onnxruntime-gpu` puts the CPU build's files over the GPU build's and the CUDA provider is gone. So
the pack's requirements name neither, and where an accelerated build is present the hints install
insightface with `--no-deps` plus its other dependencies. Metadata lookups only: nothing is imported.
"""
from __future__ import annotations

import importlib.metadata
import sys

CPU_DIST = "onnxruntime"
# Distributions that install the `onnxruntime` import package (any one of them is enough).
ONNXRUNTIME_DISTS = (CPU_DIST, "onnxruntime-gpu", "onnxruntime-directml", "onnxruntime-rocm",
                     "onnxruntime-openvino", "onnxruntime-silicon", "onnxruntime-qnn")
# insightface's own requirements (2.x), less onnxruntime: what --no-deps leaves out.
INSIGHTFACE_OTHER_DEPS = ("onnx", "opencv-python", "scikit-image", "scipy", "tqdm", "requests")


def installed_onnxruntime() -> dict[str, str]:
    """{distribution name: version} of every ONNX Runtime build installed in this Python."""
    found = {}
    for dist in ONNXRUNTIME_DISTS:
        try:
            found[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


def describe_onnxruntime(installed: dict[str, str] | None = None) -> str:
    installed = installed_onnxruntime() if installed is None else installed
    if not installed:
        return "No ONNX Runtime build found."
    return "ONNX Runtime found: " + ", ".join(f"{d} {v}" for d, v in installed.items()) + "."


def pip_command(*args: str, python: str | None = None) -> str:
    """A copy-pastable pip command for the Python that runs ComfyUI (quoted: paths with spaces)."""
    return f'`"{python or sys.executable}" -m pip ' + " ".join(args) + "`"


def _accelerated(installed: dict[str, str]) -> list[str]:
    return [d for d in installed if d != CPU_DIST]


def insightface_install_hint(installed: dict[str, str] | None = None, python: str | None = None) -> str:
    """How to install insightface here without replacing an accelerated ONNX Runtime build."""
    installed = installed_onnxruntime() if installed is None else installed
    accelerated = _accelerated(installed)
    if accelerated:
        return (f"Install with {pip_command('install', '--no-deps', 'insightface', python=python)} then "
                f"{pip_command('install', *INSIGHTFACE_OTHER_DEPS, python=python)} (--no-deps keeps your "
                f"{accelerated[0]}: insightface declares the CPU onnxruntime, which would overwrite it).")
    gpu = pip_command("install", "onnxruntime-gpu", python=python)
    return (f"Install with {pip_command('install', 'insightface', python=python)} (it brings the CPU "
            f"onnxruntime). For the CUDA provider on an NVIDIA GPU run {gpu} first, then install "
            f"insightface with --no-deps and its other dependencies: "
            f"{pip_command('install', *INSIGHTFACE_OTHER_DEPS, python=python)}.")


def onnxruntime_install_hint(installed: dict[str, str] | None = None, python: str | None = None) -> str:
    """How to get a working ONNX Runtime: install one build when none is there; when one is there but
    does not import, reinstall that build alone (or keep one of two builds that share files)."""
    installed = installed_onnxruntime() if installed is None else installed
    if not installed:
        cpu, gpu = (pip_command("install", dist, python=python) for dist in (CPU_DIST, "onnxruntime-gpu"))
        return f"Install one ONNX Runtime build: {cpu} (CPU, any machine) or {gpu} (NVIDIA GPU, CUDA)."
    conflict = onnxruntime_conflict_hint(installed, python=python)
    if conflict:
        return conflict.strip()
    dist = next(iter(installed))
    return f"Reinstall it: {pip_command('install', '--force-reinstall', '--no-deps', dist, python=python)}."


def onnxruntime_conflict_hint(installed: dict[str, str] | None = None, python: str | None = None) -> str:
    """'' unless the CPU build and an accelerated build are both installed (the CPU one's files then
    shadow the accelerated provider): the two commands that leave only the accelerated build."""
    installed = installed_onnxruntime() if installed is None else installed
    accelerated = _accelerated(installed)
    if CPU_DIST not in installed or not accelerated:
        return ""
    return (f" Both {CPU_DIST} {installed[CPU_DIST]} and {accelerated[0]} {installed[accelerated[0]]} are "
            f"installed; they share files, so the accelerated provider can be lost. Keep one: "
            f"{pip_command('uninstall', '-y', CPU_DIST, accelerated[0], python=python)} then "
            f"{pip_command('install', accelerated[0], python=python)}.")
