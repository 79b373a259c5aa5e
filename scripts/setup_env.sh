#!/usr/bin/env bash
# Development / test environment from nothing: .venv with CPU torch, the host's and the pack's
# requirements, test tools, and the pinned ComfyUI hosts. Idempotent: a stamp keyed on the inputs
# makes a second run a no-op.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
PY=${PYTHON:-python3}
VENV="$ROOT/.venv"
STAMP="$VENV/.setup-stamp"
KEY=$(cat scripts/setup_env.sh requirements.txt requirements-dev.txt scripts/host_stubs/tv_cpu_shim.py \
        scripts/host_stubs/torchaudio_stub/torchaudio/*.py | sha256sum | cut -c1-16)

if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$KEY" ]; then
  [ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
  PIP="$VENV/bin/python -m pip install -q"
  # torch is never a pack dependency: the host brings it. Here: the CPU build (2.13.0).
  $PIP torch==2.13.0
  # ComfyUI imports torchvision unconditionally; PyPI's build is CUDA-linked, so it goes in without
  # deps and a test-only shim (scripts/host_stubs/tv_cpu_shim.py) lets it import beside CPU torch.
  $PIP --no-deps torchvision==0.28.0
  SP=$("$VENV/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
  cp scripts/host_stubs/tv_cpu_shim.py "$SP/_pm_tv_cpu_shim.py"
  echo "import _pm_tv_cpu_shim; _pm_tv_cpu_shim.install_hook()" > "$SP/_pm_tv_cpu_shim.pth"
  # The host's runtime needs (its requirements.txt, plus requests which server.py imports).
  $PIP numpy einops 'transformers>=4.50.3' 'tokenizers>=0.13.3' 'safetensors>=0.4.2' pyyaml Pillow \
      scipy tqdm psutil torchsde 'av>=14.2.0' 'aiohttp>=3.11.8' 'yarl>=1.18.0' requests \
      alembic SQLAlchemy 'pydantic~=2.0' 'pydantic-settings~=2.0' sentencepiece
  # ComfyUI 0.33's additions to its requirements.txt (harmless for the older hosts).
  $PIP 'comfy-kitchen==0.2.31' 'comfy-aimdo==0.4.13' 'simpleeval>=1.0.0' blake3 'av>=16.0.0' \
      'SQLAlchemy>=2.0.0' filelock
  # ComfyUI 0.33 imports torchaudio unconditionally; no build of it loads beside CPU torch 2.13, so
  # the test venv gets a stand-in that imports and raises on use (never part of the pack).
  rm -rf "$SP/torchaudio"
  cp -r scripts/host_stubs/torchaudio_stub/torchaudio "$SP/torchaudio"
  $PIP -r requirements.txt -r requirements-dev.txt
  echo "$KEY" > "$STAMP"
fi

# Headless Chromium for the UI test (tests/test_ui.py): Debian's package, installed only when missing
# and only where we may (root with apt-get). Without it the UI test skips locally and fails in CI.
if [ ! -x /usr/bin/chromium ] && ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing chromium (apt-get) for the UI test..."
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } ||
      echo "warning: could not install chromium: tests/test_ui.py will fail in CI, skip locally" >&2
  else
    echo "note: chromium not found and not installable here (needs root + apt-get): tests/test_ui.py will skip" >&2
  fi
fi

# The hosts. 0.3.75 and 0.3.52 must be there; 0.33.0 comes from ../shared/hosts (or its upstream
# archive): where neither can be had, its test run says so and is skipped (Makefile, test-host-033).
for v in ${COMFY_VERSIONS:-0.3.75 0.3.52}; do
  "$VENV/bin/python" scripts/provision_host.py --version "$v" > /dev/null
done
if "$VENV/bin/python" scripts/provision_host.py --version 0.33.0 > /dev/null; then
  # Each host's frontend pin beside the venv's (1.32.9, 0.3.75's): the UI test serves the one the
  # host it runs on pins, with --front-end-root.
  FE=$(sed -n 's/^comfyui-frontend-package==//p' .cache/comfyui/0.33.0/requirements.txt)
  if [ -n "$FE" ] && [ ! -f ".cache/frontends/$FE/.complete" ]; then
    rm -rf ".cache/frontends/$FE"
    $VENV/bin/python -m pip install -q --no-deps --target ".cache/frontends/$FE" "comfyui-frontend-package==$FE"
    touch ".cache/frontends/$FE/.complete"
  fi
fi
echo "environment ready: $VENV"
