"""``import gpuad`` stays light: no GPU or plotting stacks are imported."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("cupy", "cupyx", "cupy_backends", "scipy", "matplotlib", "torch", "jax", "tensorflow", "pandas")


def _modules_after(code):
    env = {k: v for k, v in os.environ.items() if k != "GPUAD_BACKEND"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    proc = subprocess.run(
        [sys.executable, "-c", code + "\nimport sys, json; print(json.dumps(sorted(sys.modules)))"],
        capture_output=True, text=True, cwd=ROOT, env=env, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return set(json.loads(proc.stdout.strip().splitlines()[-1]))


def _top(mods):
    return {m.split(".")[0] for m in mods}


def test_import_gpuad_is_light():
    mods = _modules_after("import gpuad")
    assert "gpuad" in mods
    heavy = _top(mods) & set(HEAVY)
    assert not heavy, f"import gpuad imported {sorted(heavy)}"


def test_import_cli_adds_nothing_heavy():
    base = _modules_after("import gpuad")
    mods = _modules_after("import gpuad, gpuad.cli")
    added = _top(mods - base) - {"gpuad"}
    assert not added & (set(HEAVY) | {"numpy", "array_api_compat", "array_api_strict"}), sorted(added)


def test_choosing_backend_without_cupy_installed_does_not_import_it():
    mods = _modules_after("import gpuad; gpuad.set_backend('numpy'); gpuad.xp.zeros(3)")
    assert not _top(mods) & {"cupy", "cupyx", "scipy", "matplotlib"}


def test_documented_submodules_resolve_as_attributes():
    # The README reaches these as ``gpuad.<name>`` after a bare ``import gpuad``.
    names = ("nn", "testing", "random", "optim", "memory", "distributed", "checkpointing",
             "serialization", "loss_scaling", "training", "training_gpt", "gpt", "data", "sweep")
    code = "import gpuad\n" + "".join(f"assert gpuad.{n}.__name__ == 'gpuad.{n}'\n" for n in names)
    mods = _modules_after(code)
    assert {f"gpuad.{n}" for n in names} <= mods
