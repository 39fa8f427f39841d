"""``gpuad info`` and friends, through ``python -m gpuad`` in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run_gpuad(*args, **env):
    full_env = {k: v for k, v in os.environ.items() if k != "GPUAD_BACKEND"}
    full_env["PYTHONPATH"] = os.pathsep.join([str(ROOT), full_env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    full_env.update(env)
    return subprocess.run([sys.executable, "-m", "gpuad", *args], capture_output=True, text=True,
                          cwd=ROOT, env=full_env, timeout=120)


def _cupy_usable():
    from gpuad.backends import cupy

    return cupy.probe()[0]


def test_info_reports_backend_reason_versions():
    import array_api_compat
    import numpy

    proc = run_gpuad("info")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert proc.stderr == ""
    assert "backend: " in out and "(requested: auto)" in out
    assert "reason: auto:" in out
    assert "gpuad: 0.1.0" in out
    assert f"numpy: {numpy.__version__}" in out
    assert f"array-api-compat: {array_api_compat.__version__}" in out
    assert "array-api-strict: " in out
    assert "cupy: " in out
    assert "devices: cpu" in out  # numpy is always usable


def test_info_backend_option():
    proc = run_gpuad("info", "--backend", "array_api_strict")
    assert proc.returncode == 0, proc.stderr
    assert "backend: array_api_strict (requested: array_api_strict)" in proc.stdout
    assert "device1" in proc.stdout


def test_backend_option_overrides_env():
    proc = run_gpuad("info", "--backend", "numpy", GPUAD_BACKEND="cupy")
    assert proc.returncode == 0, proc.stderr
    assert "backend: numpy" in proc.stdout


def test_info_json():
    proc = run_gpuad("info", "--json", GPUAD_BACKEND="numpy")
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["backend"] == "numpy" and info["requested"] == "numpy"
    assert set(info["backends"]) == {"numpy", "cupy", "array_api_strict"}
    assert info["backends"]["numpy"]["usable"] and info["backends"]["numpy"]["devices"] == ["cpu"]
    assert {"gpuad", "numpy", "cupy", "array-api-compat", "array-api-strict"} <= set(info["versions"])
    assert info["environment"]["GPUAD_BACKEND"] == "numpy"


def test_env_cupy_without_gpu_is_a_clear_error():
    if _cupy_usable():
        pytest.skip("a CUDA device is usable here")
    proc = run_gpuad("info", GPUAD_BACKEND="cupy")
    assert proc.returncode == 1
    assert proc.stdout == ""
    err = proc.stderr.strip()
    assert len(err.splitlines()) == 1, err
    assert "Traceback" not in err
    assert err.startswith("gpuad: error: backend 'cupy' was requested but is not usable:")
    assert "GPUAD_BACKEND" in err


def test_unknown_backend_env():
    proc = run_gpuad("info", GPUAD_BACKEND="jax")
    assert proc.returncode == 2
    err = proc.stderr.strip()
    assert len(err.splitlines()) == 1 and "'jax'" in err and "'array_api_strict'" in err


def test_no_subcommand_is_a_usage_error():
    proc = run_gpuad()
    assert proc.returncode == 2
    assert "usage: gpuad" in proc.stderr


def test_version_flag():
    proc = run_gpuad("--version")
    assert proc.returncode == 0 and proc.stdout.strip() == "gpuad 0.1.0"


def test_main_in_process(capsys, monkeypatch):
    from gpuad import _backend
    from gpuad.cli import main

    monkeypatch.setattr(_backend, "_choice", None)
    assert main(["info", "--backend", "numpy"]) == 0
    assert "backend: numpy" in capsys.readouterr().out


@pytest.mark.parametrize("args", [("info", "--json"), ("info",)])
def test_a_closed_stdout_ends_quietly(args):
    """``gpuad info --json | head -5``: the reader goes away; no BrokenPipeError traceback."""
    env = {k: v for k, v in os.environ.items() if k != "GPUAD_BACKEND"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    proc = subprocess.Popen([sys.executable, "-m", "gpuad", *args, "--backend", "numpy"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, cwd=ROOT, env=env)
    proc.stdout.close()  # before the command writes anything: every write to stdout fails (EPIPE)
    err = proc.stderr.read().decode()
    proc.stderr.close()
    assert proc.wait(timeout=120) == 141, err  # 128 + SIGPIPE, as the shell reports a command a pipe ended
    assert err == "", err


def test_broken_pipe_in_process_returns_141(monkeypatch):
    from gpuad import cli

    def reader_gone(args):
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(cli, "cmd_info", reader_gone)  # build_parser() binds it on each main()
    assert cli.main(["info"]) == cli.EXIT_BROKEN_PIPE == 141
