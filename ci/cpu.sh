#!/usr/bin/env bash
# CPU CI job: a fresh venv, gpuad installed with its test extras, lint (ruff,
# configured in pyproject.toml), the test suite (exactly the command in
# README.md), then the packaging/slow tests in a separate step bounded to 30
# minutes (they include the CuPy-without-a-driver checks), then the CUDA kernel
# compile check with a compiler required (nvcc, or NVRTC from its wheel).
#
# Environment:
#   PYTHON            interpreter that creates the venv (default: python3)
#   GPUAD_CI_VENV     venv directory (default: .venv in the repository root)
#   GPUAD_CI_NO_VENV  set to 1 to install into the current Python instead
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() { printf '\n== %s\n' "$*"; }

PYTHON=${PYTHON:-python3}
if [ "${GPUAD_CI_NO_VENV:-0}" != 1 ]; then
    VENV=${GPUAD_CI_VENV:-.venv}
    if [ ! -x "$VENV/bin/python" ]; then
        step "create venv $VENV"
        "$PYTHON" -m venv "$VENV"
    fi
    # shellcheck disable=SC1091
    . "$VENV/bin/activate"
fi

step "install gpuad[test,train,distributed,lint]"
python -m pip install -q --upgrade pip "setuptools>=70.1" wheel
python -m pip install -q -e '.[test,train,distributed,lint]'

step "lint: ruff check ."
ruff check .

step "gpuad info"
gpuad info

step "main job: gpuad train (short run)"
gpuad train --epochs 2 --no-progress --out "${TMPDIR:-/tmp}/gpuad-ci-train"

step "tests: python -m pytest -q"
python -m pytest -q

step "packaging and slow tests (bounded; includes CuPy installed without a driver)"
timeout 1800 python -m pytest -q -m "packaging or slow"

# The suite above already compiles the kernels when a compiler is found; this
# step makes a missing compiler an error: nvcc from PATH, else NVRTC from the
# nvidia-cuda-nvrtc-cu12 wheel (installed here when there is no nvcc).
step "CUDA kernel compile check (float32 and float64)"
if ! command -v nvcc >/dev/null; then
    python -m pip install -q nvidia-cuda-nvrtc-cu12
fi
GPUAD_REQUIRE_CUDA_COMPILER=1 python -m pytest -q -rs tests/backends/test_cuda_kernels.py
