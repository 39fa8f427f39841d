"""Peak extra resident memory of one tanh-net step, per library, each in a fresh process (Linux).

``tracemalloc`` sees only NumPy's buffers, so torch and jax are invisible to
it.  This measures every case the same way instead: in a child process, set
up the parameters and input, run the step twice (warm-up), reset the kernel's
resident-set high-water mark (``/proc/self/clear_refs``, value 5), then run
one step and report ``VmHWM`` minus the ``VmRSS`` before the step.  glibc's
mmap threshold is pinned (``MALLOC_MMAP_THRESHOLD_``) so large buffers are
mapped and unmapped, not kept in a heap whose high-water mark would hide them.
Page granularity and allocator caches make this a coarser figure than
tracemalloc's; read it as a cross-check.
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys

from .common import ROOT

MiB = 2.0 ** 20


def supported():
    return sys.platform.startswith("linux") and os.path.exists("/proc/self/clear_refs")


def _status_kib(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def _child(case, cfg):
    from . import peers as peers_mod
    from . import tanhnet

    params, x = tanhnet.setup(cfg["layers"], cfg["width"], cfg["batch"])
    if case == "numpy":
        def fn():
            return tanhnet.numpy_step(params, x)
    elif case == "gpuad":
        step = tanhnet.gpuad_step_fn()

        def fn():
            return step(params, x)
    else:
        lib = "jax" if case.startswith("jax") else case
        fn = tanhnet.peer_steps(peers_mod.load((lib,)), params, x)[case][1]
    fn()
    fn()
    gc.collect()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before = _status_kib("VmRSS")
    res = fn()
    peak = _status_kib("VmHWM")
    del res
    return {"case": case, "peak_extra_MiB": (peak - before) / 1024.0}


def measure(cases, cfg, timeout=300):
    """``{case: MiB or None}``: each case in its own process (None when it failed)."""
    env = dict(os.environ)
    env["MALLOC_MMAP_THRESHOLD_"] = "131072"
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    out = {}
    for case in cases:
        try:
            res = subprocess.run([sys.executable, "-m", "bench.rss", case, json.dumps(cfg)], cwd=ROOT, env=env,
                                 capture_output=True, text=True, timeout=timeout)
            ok = res.returncode == 0
            out[case] = json.loads(res.stdout.strip().splitlines()[-1])["peak_extra_MiB"] if ok else None
        except (subprocess.SubprocessError, ValueError, IndexError, KeyError):
            out[case] = None
    return out


if __name__ == "__main__":
    from .common import pin_threads

    pin_threads(1)
    print(json.dumps(_child(sys.argv[1], json.loads(sys.argv[2]))))
