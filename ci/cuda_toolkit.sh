#!/usr/bin/env bash
# Helpers for ci/gpu.sh, sourced (and tested by tests/test_docker_files.py).
#
# has_cuda_toolkit MAJOR: succeeds when this machine has the CUDA libraries
# CuPy loads (NVRTC is the one every kernel needs) for CUDA major MAJOR:
# libnvrtc.so.MAJOR in the linker cache (ldconfig -p), or under
# $CUDA_HOME/lib64 (default /usr/local/cuda).  A toolkit of another major
# does not count: cupy-cuda13x cannot use CUDA 12's NVRTC, nor the reverse.
has_cuda_toolkit() {
    local major=$1 home=${CUDA_HOME:-/usr/local/cuda}
    if ldconfig -p 2>/dev/null | grep -Eq "libnvrtc\.so\.${major}([^0-9]|$)"; then
        return 0
    fi
    compgen -G "${home}/lib64/libnvrtc.so.${major}" >/dev/null \
        || compgen -G "${home}/lib64/libnvrtc.so.${major}.*" >/dev/null
}
