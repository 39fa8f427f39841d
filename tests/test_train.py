"""``gpuad train``: end to end in a subprocess, and its one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytest.importorskip("sklearn")
pytest.importorskip("tqdm")
pytest.importorskip("matplotlib")


def run_gpuad(*args, pythonpath=(), timeout=300, **env):
    full_env = {k: v for k, v in os.environ.items() if k != "GPUAD_BACKEND"}
    full_env["PYTHONPATH"] = os.pathsep.join([*map(str, pythonpath), str(ROOT), full_env.get("PYTHONPATH", "")])
    full_env.update(env)
    return subprocess.run([sys.executable, "-m", "gpuad", *args], capture_output=True, text=True,
                          cwd=ROOT, env=full_env, timeout=timeout)


def test_short_run_writes_files_and_loss_falls(tmp_path):
    out = tmp_path / "run"
    proc = run_gpuad("train", "--epochs", "2", "--out", str(out), "--backend", "numpy")
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    assert "backend: numpy on cpu (requested explicitly" in text
    assert "epoch   1/2" in text and "epoch   2/2" in text and "test acc" in text
    assert "samples/s" in text and "peak tape memory" in text
    assert "epoch 1/2" in proc.stderr  # the tqdm bar
    for name in ("params.npz", "optimizer.npz", "metrics.json", "curves.png"):
        assert (out / name).stat().st_size > 0, name
    with open(out / "curves.png", "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    m = json.loads((out / "metrics.json").read_text())
    h = m["history"]
    assert h[1]["loss"] < h[0]["loss"]
    assert m["test_accuracy"] > 0.8
    assert m["samples_per_second"] > 0
    from gpuad import serialization

    params = serialization.load(out / "params.npz", backend="array_api_strict")
    assert tuple(params["conv1"]["w"].shape) == (16, 1, 3, 3)


def test_float64_on_strict(tmp_path):
    proc = run_gpuad("train", "--epochs", "1", "--batch-size", "256", "--dtype", "float64",
                     "--backend", "array_api_strict", "--no-progress", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert "backend: array_api_strict" in proc.stdout and "dtype float64" in proc.stdout


@pytest.mark.parametrize("args,message", [
    (["--model", "resnet"], "--model: unknown model 'resnet'"),
    (["--batch-size", "-4"], "--batch-size must be a positive integer, got -4"),
    (["--epochs", "0"], "--epochs must be a positive integer"),
    (["--lr", "0"], "--lr must be positive"),
    (["--dtype", "int8"], "--dtype must be float32 or float64"),
])
def test_bad_options_are_one_line_errors(args, message, tmp_path):
    proc = run_gpuad("train", *args, "--out", str(tmp_path))
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"gpuad: error: {proc.stderr.strip()[len('gpuad: error: '):]}"
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_unwritable_out_dir(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    proc = run_gpuad("train", "--out", str(blocker / "sub"))
    assert proc.returncode == 2
    assert "is not a writable directory" in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_missing_optional_dependency_names_the_extra(tmp_path):
    fake = tmp_path / "fake"
    (fake / "sklearn").mkdir(parents=True)
    (fake / "sklearn" / "__init__.py").write_text("raise ImportError('simulated: not installed')\n")
    proc = run_gpuad("train", "--out", str(tmp_path / "o"), pythonpath=[fake])
    assert proc.returncode == 2
    assert "pip install 'gpuad[train]'" in proc.stderr and "scikit-learn" in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_default_training_reaches_97_percent(tmp_path):
    proc = run_gpuad("train", "--out", str(tmp_path), "--no-progress", timeout=600)
    assert proc.returncode == 0, proc.stderr
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m["test_accuracy"] >= 0.97, proc.stdout
    assert m["wall_seconds"] < 120, proc.stdout
