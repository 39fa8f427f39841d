#!/usr/bin/env bash
# GPU CI job, for a runner with an NVIDIA GPU and driver.
#
# Picks gpuad[cuda13] when the driver supports CUDA 13, else gpuad[cuda12]
# (with the train extra, so that the training tests run);
# GPUAD_CUDA_MAJOR=12|13 overrides.  CuPy wheels do not bundle the CUDA
# libraries (NVRTC, cuBLAS, ...): when the runner has no CUDA toolkit of that
# major (ci/cuda_toolkit.sh), they are pip-installed too through CuPy's [ctk]
# extra (GPUAD_CUPY_CTK=1|0 forces it).  Nor do they bundle NCCL, which
# cupyx.distributed needs: nvidia-nccl-cu<major> is installed.  Fails unless
# CuPy is usable, then runs the
# whole suite with GPUAD_BACKEND=cupy (gpu-marked tests included), the bounded
# packaging/slow step and the benchmarks (python -m bench, the gpu workload
# included), whose JSON and markdown go to GPUAD_BENCH_OUT (default
# bench/results/gpu; .github/workflows/ci.yml uploads it as an artifact).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=ci/cuda_toolkit.sh
. ci/cuda_toolkit.sh

step() { printf '\n== %s\n' "$*"; }

step "nvidia-smi"
nvidia-smi

cuda_major=${GPUAD_CUDA_MAJOR:-}
if [ -z "$cuda_major" ]; then
    # "CUDA Version: 12.4" in nvidia-smi's header is the newest CUDA the driver supports.
    cuda_major=$(nvidia-smi | sed -n 's/.*CUDA Version: *\([0-9][0-9]*\)\..*/\1/p' | head -n1)
fi
if [ -z "$cuda_major" ]; then
    # Fall back on the driver version: CUDA 13 needs driver >= 580.
    driver=$(nvidia-smi --query-gpu=driver_version --format=csv,noheader | head -n1)
    if [ "${driver%%.*}" -ge 580 ]; then cuda_major=13; else cuda_major=12; fi
fi
# The CuPy wheel's CUDA major (cupy-cuda12x or cupy-cuda13x): what the toolkit check and NCCL must match.
if [ "$cuda_major" -ge 13 ]; then wheel_major=13; else wheel_major=12; fi
extra=cuda$wheel_major
echo "driver supports CUDA $cuda_major -> gpuad[test,train,$extra] (cupy-cuda${wheel_major}x)"

PYTHON=${PYTHON:-python3}
VENV=${GPUAD_CI_VENV:-.venv-gpu}
if [ ! -x "$VENV/bin/python" ]; then
    step "create venv $VENV"
    "$PYTHON" -m venv "$VENV"
fi
# shellcheck disable=SC1091
. "$VENV/bin/activate"

step "install gpuad[test,train,$extra]"
python -m pip install -q --upgrade pip "setuptools>=70.1" wheel
python -m pip install -q -e ".[test,train,$extra]"
ctk=${GPUAD_CUPY_CTK:-}
if [ -z "$ctk" ]; then
    if has_cuda_toolkit "$wheel_major"; then ctk=0; else ctk=1; fi
fi
if [ "$ctk" = 1 ]; then
    step "no CUDA $wheel_major toolkit on the system: installing cupy-cuda${wheel_major}x[ctk]"
    python -m pip install -q "cupy-cuda${wheel_major}x[ctk]"
fi
# CuPy loads NCCL (cupyx.distributed, test_nccl_two_gpus) from this wheel; its wheels do not bundle it.
step "install nvidia-nccl-cu${wheel_major}"
python -m pip install -q "nvidia-nccl-cu${wheel_major}"

step "gpuad info (CuPy must be usable)"
GPUAD_BACKEND=cupy gpuad info

# The default selection (-m "not slow") includes the gpu-marked tests; CuPy was
# just checked to be usable, so they run rather than skip (-rs lists any skip).
# GPUAD_BACKEND=cupy makes CuPy the default backend explicitly (auto would pick
# it too here): ops without array inputs, keys and initialisers create CuPy
# arrays, and a CuPy that stopped being usable is an error, not a NumPy run.
step "tests: GPUAD_BACKEND=cupy python -m pytest -q -rs (gpu-marked tests included)"
GPUAD_BACKEND=cupy python -m pytest -q -rs

step "packaging and slow tests (bounded)"
GPUAD_BACKEND=cupy timeout 1800 python -m pytest -q -m "packaging or slow"

bench_out=${GPUAD_BENCH_OUT:-bench/results/gpu}
step "benchmarks: python -m bench --out $bench_out"
# Exits non-zero only when a workload step raised; its JSON is written first.
bench_rc=0
python -m bench --out "$bench_out" || bench_rc=$?
echo "benchmark results (JSON and markdown): $bench_out/bench-latest.json, $bench_out/bench-latest.md"
ls -l "$bench_out"
exit "$bench_rc"
