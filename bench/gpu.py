"""Workload 6 (issue 6): gpuad on CuPy against hand-written CuPy, timed with CUDA events.

Three steps, each gpuad (``value_and_grad`` / ``grad`` on CuPy arrays) against
the hand-written forward and backward passes of the CPU workloads run on CuPy
(they are written against an array-module argument, so the baseline is the
same code on both):

``mlp``
    the MLP training step of ``bench/mlp.py`` (784-1024-1024-10, batch 256);
``tanh``
    the 100-layer tanh step of ``bench/tanhnet.py`` (width 512, batch 128);
``overhead``
    the 2000-op elementwise chain of ``bench/overhead.py`` on shape (4,),
    per op (the GPU work is negligible: this is launch and Python overhead).

All float32.  Times come from ``cupyx.profiler.benchmark``: GPU time between
CUDA events recorded on the current stream before and after each call, and
the CPU time of the call (``perf_counter``).  The cases are taken in turn in
a few rounds, so drift is spread over both.  Gradients of gpuad are compared
with the hand-written ones (on the device, then copied to the host) before
timing.

Without a usable CuPy (not installed, no driver or device, no compiler) the
workload is skipped with the reason that ``gpuad.backends.cupy.probe`` gives;
it never fails for that.  CuPy is imported only here, and only when usable.
``run`` takes the array module and the timing function as arguments, so the
tests run this whole path on NumPy with a ``perf_counter`` stand-in.
"""

from __future__ import annotations

import math
import os
import sys
import traceback

import numpy as np

from . import mlp, overhead, tanhnet
from .common import summarize

FULL = {"mlp": dict(mlp.FULL), "tanh": dict(tanhnet.FULL), "overhead": dict(overhead.FULL),
        "n_repeat": 100, "n_warmup": 10, "rounds": 5}
QUICK = {"mlp": dict(mlp.QUICK), "tanh": dict(tanhnet.QUICK), "overhead": dict(overhead.QUICK),
         "n_repeat": 6, "n_warmup": 2, "rounds": 2}
STEPS = ("mlp", "tanh", "overhead")
TIMER = "cupyx.profiler.benchmark"


def unavailable():
    """``None`` when the CuPy backend is usable, else why not (never raises)."""
    from gpuad.backends import cupy as cupy_backend

    ok, reason = cupy_backend.probe()
    return None if ok else reason


def skipped(reason):
    return {"benchmark": "gpu", "skipped": reason}


def _cuda_version(v):
    """CUDA's integer version (12040) as "12.4"."""
    try:
        v = int(v)
    except (TypeError, ValueError):
        return None
    return f"{v // 1000}.{(v % 1000) // 10}"


def device_info(cupy):
    """The current device and the versions that matter for the timings; never raises."""
    info = {"cupy": str(getattr(cupy, "__version__", "unknown"))}
    rt = cupy.cuda.runtime
    for key, get in (("cuda_runtime", lambda: _cuda_version(rt.runtimeGetVersion())),
                     ("cuda_driver", lambda: _cuda_version(rt.driverGetVersion()))):
        try:
            info[key] = get()
        except Exception:  # noqa: BLE001 - cosmetic
            info[key] = None
    try:
        dev = cupy.cuda.Device()
        props = rt.getDeviceProperties(dev.id)
        name = props["name"]
        info.update(id=int(dev.id), name=name.decode() if isinstance(name, bytes) else str(name),
                    compute_capability=str(dev.compute_capability),
                    memory_GiB=round(props["totalGlobalMem"] / 2.0 ** 30, 1))
    except Exception as e:  # noqa: BLE001 - cosmetic
        info.setdefault("name", f"unknown ({type(e).__name__})")
    # CUPY_TF32=1 lets cuBLAS use TF32 for float32 matmuls (both cases alike).
    info["env"] = {v: os.environ.get(v, "unset") for v in ("CUPY_TF32", "CUPY_ACCELERATORS", "CUDA_VISIBLE_DEVICES")}
    return info


def _host(a):
    """A NumPy copy of an array of either module (CuPy: ``.get()``)."""
    if isinstance(a, np.ndarray):
        return a
    get = getattr(a, "get", None)
    return np.asarray(get() if callable(get) else a)


def _time(benchmark, cases, n_repeat, n_warmup, rounds):
    """``{case: (gpu_seconds, cpu_seconds)}``: ``benchmark`` over the cases in turn, ``rounds`` times.

    The first round warms each case ``n_warmup`` times, later rounds once.
    """
    rounds = max(1, min(rounds, n_repeat))
    per = math.ceil(n_repeat / rounds)
    out = {k: ([], []) for k in cases}
    for r in range(rounds):
        for k, fn in cases.items():
            res = benchmark(fn, n_repeat=per, n_warmup=n_warmup if r == 0 else 1, name=k)
            gpu = np.atleast_2d(np.asarray(res.gpu_times, dtype=np.float64))[0]  # (devices, n): the first device
            out[k][0].extend(gpu.tolist())
            out[k][1].extend(np.asarray(res.cpu_times, dtype=np.float64).tolist())
    return out


def _ratio(ts, base):
    return {"median": float(np.median(ts) / np.median(base)), "of_min": float(min(ts) / min(base))}


def _rows(cases, times, agrees, scale):
    rows = {}
    for k, (label, _) in cases.items():
        gpu, cpu = times[k]
        hg, hc = times["handwritten"]
        rows[k] = {"label": label, "gpu": summarize(gpu, scale), "cpu": summarize(cpu, scale),
                   "vs_handwritten": {"gpu": _ratio(gpu, hg), "cpu": _ratio(cpu, hc)}}
        if k in agrees:
            rows[k]["agrees"] = agrees[k]
    return rows


def _lib(xp):
    return "CuPy" if xp.__name__.split(".")[0] == "cupy" else xp.__name__


def _mlp(cfg, xp):
    import gpuad

    params, x, y = mlp.setup(tuple(cfg["sizes"]), cfg["batch"])
    params, x, y = [xp.asarray(p) for p in params], xp.asarray(x), xp.asarray(y)
    vg = gpuad.value_and_grad(mlp.gpuad_loss)
    cases = {"handwritten": (f"hand-written {_lib(xp)}", lambda: mlp.numpy_step(params, x, y, np=xp)),
             "gpuad": ("gpuad.value_and_grad", lambda: vg(params, x, y))}
    ref, got = (_to_host(fn()) for _, fn in cases.values())
    workload = {"sizes": list(cfg["sizes"]), "batch": cfg["batch"], "dtype": "float32",
                "loss": "mean softmax cross-entropy, ReLU hidden layers"}
    return workload, cases, {"gpuad": bool(mlp.check(ref, got))}, 1e3, "ms per step"


def _tanh(cfg, xp):
    import gpuad

    params, x = tanhnet.setup(cfg["layers"], cfg["width"], cfg["batch"])
    params, x = [xp.asarray(p) for p in params], xp.asarray(x)
    vg = gpuad.value_and_grad(tanhnet.gpuad_loss)
    cases = {"handwritten": (f"hand-written {_lib(xp)}", lambda: tanhnet.numpy_step(params, x, np=xp)),
             "gpuad": ("gpuad.value_and_grad", lambda: vg(params, x))}
    ref, got = (_to_host(fn()) for _, fn in cases.values())
    workload = dict(cfg, dtype="float32", loss="sum(h_out**2) / batch")
    return workload, cases, {"gpuad": bool(mlp.check(ref, got))}, 1e3, "ms per step"


def _overhead(cfg, xp):
    import gpuad

    n_ops = cfg["n_ops"]
    x0 = xp.asarray(np.linspace(0.1, 0.7, cfg["size"], dtype=np.float32))
    gf = gpuad.grad(lambda x: gpuad.xp.sum(overhead.chain(gpuad.xp, x, n_ops)))
    cases = {"handwritten": (f"hand-written {_lib(xp)} tape (forward + backward)",
                             lambda: overhead.numpy_tape_grad(xp, x0, n_ops)),
             "gpuad": ("gpuad.grad (forward + backward)", lambda: gf(x0))}
    want = _host(overhead.numpy_tape_grad(xp, x0, n_ops)[1])
    got = _host(gf(x0))
    workload = {"n_ops": n_ops, "shape": [cfg["size"]], "dtype": "float32",
                "ops": "sin, cos, multiply(x, 0.9), add(x, 0.1), repeated"}
    return workload, cases, {"gpuad": bool(np.allclose(got, want, rtol=1e-4, atol=1e-6))}, 1e6 / n_ops, "µs per op"


def _to_host(res):
    loss, grads = res
    return _host(loss), [_host(g) for g in grads]


_BUILD = {"mlp": _mlp, "tanh": _tanh, "overhead": _overhead}


def run(cfg, peers, reps, warmup, *, xp=None, benchmark=None, device=None):
    """Run the GPU steps; a skip record when CuPy is not usable.

    Parameters
    ----------
    cfg : dict
        ``FULL`` or ``QUICK``: the sizes of each step and ``n_repeat``,
        ``n_warmup`` and ``rounds``.  ``--reps`` / ``--warmup`` raise
        ``n_repeat`` / ``n_warmup`` (never lower them).
    peers : dict
        Unused (no peer runs on the GPU here).
    xp, benchmark, device : optional
        The array module (default ``cupy``), the timing function with
        ``cupyx.profiler.benchmark``'s signature and result (``cpu_times``
        of shape ``(n,)``, ``gpu_times`` of shape ``(devices, n)``, seconds;
        default ``cupyx.profiler.benchmark``) and the device record (default
        :func:`device_info`).  Tests pass NumPy and a ``perf_counter`` stand-in.
    """
    if xp is None:
        why = unavailable()
        if why is not None:
            return skipped(why)
        import cupy

        xp = cupy
    if benchmark is None:
        from cupyx.profiler import benchmark

        timer = TIMER
    else:
        timer = f"{getattr(benchmark, '__module__', '?')}.{getattr(benchmark, '__qualname__', benchmark)}"
    if device is None:
        device = device_info(xp) if hasattr(xp, "cuda") else {"name": f"none ({_lib(xp)} on the CPU)"}
    n_repeat = max(reps, cfg["n_repeat"])
    n_warmup = max(warmup, cfg["n_warmup"])
    rounds = cfg.get("rounds", 1)
    steps = {}
    for name in STEPS:
        try:
            workload, cases, agrees, scale, unit = _BUILD[name](cfg[name], xp)
            times = _time(benchmark, {k: fn for k, (_, fn) in cases.items()}, n_repeat, n_warmup, rounds)
            steps[name] = {"unit": unit, "workload": workload, "results": _rows(cases, times, agrees, scale)}
        except Exception as e:  # noqa: BLE001 - one broken step must not lose the others' results
            traceback.print_exc(file=sys.stderr)
            steps[name] = {"error": f"{type(e).__name__}: {' '.join(str(e).split())[:500]}"}
    return {"benchmark": "gpu", "timer": timer,
            "device": device, "n_repeat": n_repeat, "n_warmup": n_warmup, "rounds": rounds, "steps": steps}
