"""Shared pieces of the benchmarks: timing, a quiet-machine wait, statistics, machine facts.

Every workload times its cases with :func:`time_interleaved` (the cases taken
in turn, so background load is spread evenly over them) after
:func:`wait_quiet` has had a chance to let a busy machine settle.
"""

from __future__ import annotations

import gc
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS")
# OpenBLAS tuning variables some machines set; they change which kernels NumPy's
# BLAS picks, so a NumPy comparison must run with both unset (see RESULTS.md).
OPENBLAS_TUNING_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


def pin_threads(n=1):
    """Set the thread-count variables (unless already set); call before numpy is imported."""
    for var in THREAD_VARS:
        os.environ.setdefault(var, str(n))


CPU_PER_WALL = {}  # case -> process CPU seconds per wall second in the last time_interleaved run


def time_interleaved(fns, reps, warmup, min_time=0.02):
    """Seconds per call of each of ``fns`` (a dict), ``reps`` times, the cases taken in turn.

    A case faster than ``min_time`` is called ``inner`` times in a row per
    repetition (its own count, found during warm-up, like ``timeit``'s
    autorange) and the time divided by ``inner``, so sub-millisecond cases are
    not at the mercy of the timer and of single scheduler hiccups.  The
    garbage collector stays on (its cost is part of taping) but each
    repetition starts with it empty, so no case pays for another's garbage.
    Process CPU time per wall time of each case goes to ``CPU_PER_WALL``:
    above 1 means the case ran on more than one thread despite the pinning.
    """
    inner = {}
    for i in range(max(1, warmup)):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            dt = time.perf_counter() - t0
            inner[k] = dt if i == 0 else min(inner[k], dt)
    inner = {k: max(1, int(min_time / max(dt, 1e-9)) + 1) if dt < min_time else 1 for k, dt in inner.items()}
    out = {k: [] for k in fns}
    cpu = dict.fromkeys(fns, 0.0)
    for _ in range(reps):
        for k, fn in fns.items():
            n = inner[k]
            gc.collect()
            c0 = time.process_time()
            t0 = time.perf_counter()
            for _ in range(n):
                fn()
            out[k].append((time.perf_counter() - t0) / n)
            cpu[k] += (time.process_time() - c0) / n
    CPU_PER_WALL.clear()
    CPU_PER_WALL.update({k: cpu[k] / sum(out[k]) for k in fns})
    return out


def _calibrate(n=5):
    """Spread (max/min) of ``n`` runs of a fixed pure-Python loop: near 1.0 on a quiet CPU."""
    ts = []
    for _ in range(n):
        t0 = time.perf_counter()
        s = 0
        for i in range(200_000):
            s += i
        ts.append(time.perf_counter() - t0)
    return max(ts) / min(ts), min(ts)


def wait_quiet(max_wait_s=60.0, max_load_per_cpu=0.5, max_spread=1.10, own_load=0.0):
    """Wait (at most ``max_wait_s``) until the load average and a calibration loop look quiet.

    Quiet: the 1-minute load average, less ``own_load`` (about 1.0 once this
    process has been busy for a minute), is at most ``max_load_per_cpu`` per
    available CPU, and a short calibration loop varies by at most ``max_spread``.

    Returns a record of what was seen: the load average, the calibration
    spread, the seconds waited and whether the machine was judged quiet.
    Never fails: a machine that stays busy is benchmarked anyway, and the
    record (which goes into the results) says so.
    """
    ncpu = _cpus_available() or 1
    t_start = time.monotonic()
    while True:
        load = _loadavg()
        spread, base = _calibrate()
        quiet = (load is None or load[0] - own_load <= max_load_per_cpu * ncpu) and spread <= max_spread
        waited = time.monotonic() - t_start
        if quiet or waited >= max_wait_s:
            return {"quiet": quiet, "load_average": load, "calibration_spread": round(spread, 3),
                    "calibration_ms": round(base * 1e3, 3), "waited_s": round(waited, 1)}
        time.sleep(min(5.0, max(0.5, max_wait_s - waited)))


def timed(cases, workload, cfg, reps, warmup, rounds=0):
    """Per case of ``cases`` (``{name: (label, fn)}``): ``{"times", "vs_numpy", "cpu_per_wall"}``.

    ``rounds == 0``: every case interleaved in this process.  Otherwise each
    group of cases in ``rounds`` fresh processes (:func:`bench.rounds.measure`).
    """
    if rounds:
        from .rounds import measure

        return measure(workload, cfg, list(cases), reps, warmup, rounds)
    times = time_interleaved({k: fn for k, (_, fn) in cases.items()}, reps, warmup)
    return {k: {"times": times[k], "vs_numpy": paired_ratio(times[k], times["numpy"]),
                "cpu_per_wall": CPU_PER_WALL.get(k)} for k in cases}


def timing_note(rounds):
    """How :func:`timed` measured, for the results."""
    if not rounds:
        return {"rounds": 0, "method": "all cases interleaved in this process"}
    return {"rounds": rounds,
            "method": f"{rounds} fresh processes per group (NumPy with gpuad; NumPy with each peer), cases "
                      "interleaved within a process; ratio: median over the processes of each process's "
                      "median per-repetition ratio"}


def summarize(ts, scale=1.0):
    """Median, min and max of ``ts`` (seconds) times ``scale``."""
    v = [t * scale for t in ts]
    return {"median": statistics.median(v), "min": min(v), "max": max(v), "n": len(v)}


def paired_ratio(ts, base):
    """Ratio of case to baseline: median of per-repetition ratios, and ratio of the minima.

    Interleaving makes repetition ``i`` of both cases see the same machine
    state, so the per-repetition ratio is steadier than a ratio of medians.
    """
    per_rep = [a / b for a, b in zip(ts, base)]
    return {"median": statistics.median(per_rep), "of_min": min(ts) / min(base),
            "min": min(per_rep), "max": max(per_rep)}


def _loadavg():
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def _cpus_available():
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count()


def _cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git_commit():
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             cwd=HERE, timeout=10)
        if rev.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, cwd=HERE, timeout=10)
        return rev.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def blas_info():
    """The BLAS NumPy uses, and its thread count (from threadpoolctl when installed)."""
    import numpy

    info = {"name": None, "version": None, "threads": None, "config": None}
    try:
        cfg = numpy.show_config(mode="dicts")["Build Dependencies"]["blas"]
        info.update(name=cfg.get("name"), version=cfg.get("version"),
                    config=cfg.get("openblas configuration"))
    except Exception:  # older numpy: no mode="dicts"
        pass
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return info
    pools = [p for p in threadpool_info() if p.get("user_api") == "blas"]
    if pools:
        p = pools[0]
        info.update(threads=p.get("num_threads"), internal_api=p.get("internal_api"),
                    architecture=p.get("architecture"), version=p.get("version") or info["version"])
    return info


def machine():
    import numpy

    import gpuad

    return {
        "cpu_model": _cpu_model(),
        "load_average": _loadavg(),
        "cpu_count": os.cpu_count(),
        "cpus_available": _cpus_available(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "gpuad": gpuad.__version__,
        "backend": gpuad.get_backend().name,
        "threads": {v: os.environ.get(v, "unset") for v in THREAD_VARS},
        "openblas_tuning": {v: os.environ.get(v, "unset") for v in OPENBLAS_TUNING_VARS},
        "blas": blas_info(),
        "commit": _git_commit(),
        "argv": sys.argv[1:],
    }


def machine_text(m):
    threads = ", ".join(f"{k}={v}" for k, v in m["threads"].items())
    tuning = ", ".join(f"{k}={v}" for k, v in m.get("openblas_tuning", {}).items())
    b = m.get("blas") or {}
    blas = f"{b.get('name')} {b.get('version')}"
    if b.get("architecture"):
        blas += f" (kernels: {b['architecture']})"
    lines = [
        f"- CPU: {m['cpu_model']}, {m['cpu_count']} logical cores ({m['cpus_available']} available)",
        f"- {m['platform']}; Python {m['python']}; NumPy {m['numpy']}; gpuad {m['gpuad']} "
        f"(commit {m['commit'] or 'unknown'}); default backend {m['backend']}",
        f"- BLAS: {blas}; BLAS threads in use: {b.get('threads', 'unknown')}",
        f"- threads: {threads}",
        f"- OpenBLAS tuning variables: {tuning}",
        f"- load average (1, 5, 15 min) when the run started: {m['load_average']}",
    ]
    if m.get("peers"):
        lines.append("- peers: " + ", ".join(f"{k} {v}" for k, v in m["peers"].items()))
    return "\n".join(lines)
