#!/usr/bin/env bash
# One prepared device run (a lent GPU machine with no network): ComfyUI 0.33.0 on CUDA with this
# pack, full-size random-weight SDXL in fp16 under the host's memory manager:
#   1. tests/benchmarks/gpu_bench.py   first/warm image with and without PhotoMaker V2, peak VRAM
#   2. tests/benchmarks/gpu_detailer.py  the face detailer per face at 1024 px (when present)
# Needs a folder .gpu/ carried with the run (git-ignored; made on a machine with network):
#   .gpu/site/                 the host's extra requirements for the GPU machine's Python, unpacked
#                              from wheels (comfy-kitchen without its prebuilt CUDA/HIP kernels,
#                              comfy-aimdo, blake3, simpleeval, SQLAlchemy, alembic, insightface)
#   .gpu/comfyui-0.33.0.tar.gz the checksummed host snapshot (../shared/hosts)
# Results go to $OUT (or test-artifacts/gpu).
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
OUT=${OUT:-$ROOT/test-artifacts/gpu}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="$ROOT/.gpu/site${PYTHONPATH:+:$PYTHONPATH}"
PY=${PYTHON:-python3}
HOST=/tmp/pm-comfyui-033
if [ ! -f "$HOST/ComfyUI-0.33.0/comfyui_version.py" ]; then
  mkdir -p "$HOST" && tar -xzf .gpu/comfyui-0.33.0.tar.gz -C "$HOST"
fi
export COMFYUI_PATH="$HOST/ComfyUI-0.33.0"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
"$PY" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)' | tee -a "$OUT/gpu.txt"
rc=0
"$PY" tests/benchmarks/gpu_bench.py --version v2 --images ${PM_GPU_IMAGES:-1,4} --steps ${PM_GPU_STEPS:-30} \
    --repeats 2 --out "$OUT" 2>&1 | tee "$OUT/gpu_bench.log" | grep -v "it/s\]" || rc=1
if [ -f tests/benchmarks/gpu_detailer.py ]; then
  "$PY" tests/benchmarks/gpu_detailer.py --out "$OUT" 2>&1 | tee "$OUT/gpu_detailer.log" | grep -v "it/s\]" || rc=1
fi
exit $rc
