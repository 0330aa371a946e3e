#!/usr/bin/env bash
# The CUDA paths in one run (under 8 minutes on one GPU): the paper presets' smoke in bf16, one
# full-size training step of each paper network with its peak memory, CAM inference and
# relabelling images/s, the torch CRF on the GPU against `fast` on the CPU. Prints one table and
# writes it to benchmarks/gpu_check.md.
#   bash benchmarks/gpu_check.sh [--scalenet-structure scalenet101.json] [--skip smoke] ...
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
test -x "$PY" || PY=python3
exec timeout 480 "$PY" benchmarks/gpu_check.py --out benchmarks/gpu_check.md "$@"
