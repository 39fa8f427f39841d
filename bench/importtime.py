"""Workload 5: ``import gpuad`` against ``import numpy``, each in a fresh interpreter.

Each repetition starts a new ``python`` in the repository root (so the
checkout's gpuad is the one imported) and times the import statement alone
with ``time.perf_counter`` inside that process (interpreter start-up is left
out).  gpuad imports NumPy lazily, so two more rows show what a first real
use costs: ``import gpuad, numpy`` and ``import gpuad`` plus one op (which
also resolves the default backend).  The target compares ``import gpuad``
alone with ``import numpy``.  The gpuad run also reports which heavy
optional modules (cupy, scipy, matplotlib, torch, jax) the import loaded: the
issue asks for none of them.  torch and jax are timed too when installed
(not with ``--quick``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from .common import ROOT, paired_ratio, summarize

FULL = {"peers": True}
QUICK = {"peers": False}
HEAVY = ("cupy", "scipy", "matplotlib", "torch", "jax")
STATEMENTS = {
    "numpy": "import numpy",
    "gpuad": "import gpuad",
    # gpuad imports NumPy lazily; these two show what a first real use costs.
    "gpuad_numpy": "import gpuad, numpy",
    "gpuad_first_op": "import gpuad; gpuad.xp.sum(gpuad.xp.ones(3))",
    "torch": "import torch",
    "jax": "import jax",
}
SNIPPET = (
    "import sys, time, json; t = time.perf_counter(); {stmt}; dt = time.perf_counter() - t; "
    "print(json.dumps([dt, [m for m in {heavy!r} if m in sys.modules]]))"
)


def _installed(mod):
    import importlib.util

    return importlib.util.find_spec(mod) is not None


def time_import(mod, env):
    code = SNIPPET.format(stmt=STATEMENTS[mod], heavy=HEAVY)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         env=env, timeout=120)
    if res.returncode != 0:
        raise RuntimeError(f"{STATEMENTS[mod]!r} failed: {res.stderr.strip()[-500:]}")
    dt, heavy = json.loads(res.stdout.strip().splitlines()[-1])
    return dt, heavy


def run(cfg, peers, reps, warmup):
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)  # the checkout comes first anyway (cwd is the repository root)
    mods = ["numpy", "gpuad", "gpuad_numpy", "gpuad_first_op"]
    if cfg.get("peers", True):
        mods += [m for m in ("torch", "jax") if m in peers and _installed(m)]
    for _ in range(warmup):  # fill the OS file cache
        for m in mods:
            time_import(m, env)
    times = {m: [] for m in mods}
    loaded = {}
    for _ in range(reps):
        for m in mods:
            dt, heavy = time_import(m, env)
            times[m].append(dt)
            loaded[m] = heavy
    rows = {}
    for m in mods:
        rows[m] = {"label": STATEMENTS[m], "ms": summarize(times[m], 1e3),
                   "vs_numpy": paired_ratio(times[m], times["numpy"]), "heavy_modules_loaded": loaded[m]}
    return {"benchmark": "import", "unit": "ms",
            "workload": {"method": "perf_counter around the import statement in a fresh interpreter",
                         "python": sys.executable},
            "results": rows}
