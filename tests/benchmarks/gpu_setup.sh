#!/usr/bin/env bash
# A Python for tests/benchmarks/gpu_bench.py on a GPU machine without network access.
#
# * A python that already has torch with CUDA (PYTHON, python3, /opt/torch/.venv/bin/python3):
#   a venv on top of it that sees its packages (--system-site-packages, plus a .pth file when that
#   python is itself a venv, whose packages --system-site-packages would not reach).
# * Otherwise: a plain venv and `pip install --no-index` from a local wheel folder (PM_WHEELS,
#   default .whl/ in the repository) holding torch and the host's requirements.
# Host modules still missing afterwards are only reported: gpu_bench.py stubs torchsde and av, which
# Euler sampling never calls. Prints the venv's python as the last line.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
VENV=${PM_GPU_VENV:-/tmp/pm-gpu-venv}
WHEELS=${PM_WHEELS:-$ROOT/.whl}
NEEDED="numpy einops transformers tokenizers safetensors yaml PIL scipy tqdm psutil aiohttp yarl"

has_cuda_torch() { "$1" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; }

BASE=""
for py in ${PYTHON:-} python3 /opt/torch/.venv/bin/python3 python; do
  if command -v "$py" >/dev/null 2>&1 && has_cuda_torch "$py"; then BASE=$(command -v "$py"); break; fi
done

if [ -x "$VENV/bin/python" ] && has_cuda_torch "$VENV/bin/python"; then
  echo "reusing $VENV" >&2
elif [ -n "$BASE" ]; then
  echo "torch with CUDA found: $BASE ($("$BASE" -c 'import torch; print(torch.__version__)'))" >&2
  "$BASE" -m venv --system-site-packages "$VENV"
  SP=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  # If BASE is itself a venv, its packages are not the "system" ones: point at them explicitly.
  "$BASE" -c 'import site, sys; print("\n".join(p for p in site.getsitepackages() if p))' > "$SP/_pm_base_site.pth"
  has_cuda_torch "$VENV/bin/python" || { echo "venv on $BASE cannot import torch with CUDA" >&2; exit 1; }
else
  echo "no python with torch+CUDA; installing from $WHEELS" >&2
  [ -d "$WHEELS" ] || { echo "no wheel folder $WHEELS: carry one (torch + host requirements)" >&2; exit 1; }
  python3 -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --no-index --find-links "$WHEELS" torch $(ls "$WHEELS" | sed -n 's/^\([A-Za-z0-9_.]*\)-.*\.whl$/\1/p' | sort -u | grep -vi '^torch$' || true)
  has_cuda_torch "$VENV/bin/python" || { echo "torch from $WHEELS has no CUDA here" >&2; exit 1; }
fi

missing=""
for m in $NEEDED; do "$VENV/bin/python" -c "import $m" 2>/dev/null || missing="$missing $m"; done
if [ -n "$missing" ] && [ -d "$WHEELS" ]; then
  "$VENV/bin/python" -m pip install -q --no-index --find-links "$WHEELS" $(ls "$WHEELS"/*.whl) || true
fi
for m in $NEEDED; do "$VENV/bin/python" -c "import $m" 2>/dev/null || echo "warning: module $m missing (ComfyUI needs it)" >&2; done
for m in torchsde av; do "$VENV/bin/python" -c "import $m" 2>/dev/null || echo "note: $m missing: gpu_bench.py stubs it" >&2; done
echo "$VENV/bin/python"
