#!/usr/bin/env bash
# One prepared device check (a lent GPU machine, no network) for `make demo` inside a ComfyUI: a
# ComfyUI 0.3.75 with its own venv on top of the machine's CUDA torch, this pack in its custom_nodes/,
# and `make demo` run from there must pick ComfyUI/venv (scripts/pick_python.py), print it with
# "device cuda (...)", and run the workflow on the GPU. Synthetic weights (no download possible there),
# the V1 workflow (the machine has no insightface). Carry .cache/comfyui/0.3.75 with the run:
#   run(command="bash scripts/gpu_demo_check.sh", carry=[".cache/comfyui/0.3.75"], timeout_s=480)
# The log and the image go to $OUT.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
H=/tmp/ComfyUI; P=$H/custom_nodes/comfyui-photomaker-stackedid
mkdir -p "$P"
cp -r .cache/comfyui/0.3.75/. "$H/"
tar -cf - --exclude=./.cache --exclude=./.venv . | tar -xf - -C "$P"
python3 -m venv --system-site-packages "$H/venv"
SP=$("$H/venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
python3 -c 'import site; print("\n".join(p for p in site.getsitepackages() if p))' > "$SP/_pm_base.pth"
# torchsde and av: imported by the host, never used by Euler sampling, absent on that machine: the
# GPU benchmark's stand-ins (scripts/host_stubs/optional_modules.py), installed at every start of this
# venv's Python
echo "import sys; sys.path.insert(0, '$P/scripts/host_stubs'); import optional_modules; optional_modules.stub_missing()" \
  > "$SP/_pm_stub.pth"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
echo "== make demo inside $P (V1 workflow, synthetic weights: no network here)"
cd "$P"
command -v make || echo "no make"
time make demo ARGS="--synthetic --workflow workflows/02-photomaker-v1-basic.json --out $OUT/demo_v1_synthetic.png" 2>&1 | grep -v "it/s\]" | tee "$OUT/make_demo.log"
echo "rc=${PIPESTATUS[0]}"
