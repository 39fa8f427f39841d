"""Per-op tracing overhead of gpuad on tiny arrays.

Workload: a chain of ``n_ops`` elementwise ops (``sin``, ``cos``,
``multiply`` by 0.9, ``add`` 0.1, in turn) on a float64 array of shape (4,),
so the arithmetic is negligible and the time is gpuad's per-op cost.

Measured, each as total time / ``n_ops``:

``numpy_forward``
    the chain in plain NumPy (the floor);
``gpuad_forward``
    the chain through ``gpuad.xp`` on plain NumPy arrays (no transform:
    dispatch only);
``gpuad_grad``
    ``gpuad.grad`` of ``sum(chain(x))`` (forward with taping + backward);
``numpy_tape_grad``
    a hand-written NumPy forward that saves what the backward needs, then
    the backward pass (what a zero-overhead reverse mode would cost).

All cases are warmed up, then timed ``reps`` times, taking the cases in turn;
median, min and max are reported.  Run it as ``python -m bench`` (which pins thread pools first).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS_DIR = HERE / "results"
RESULTS_MD = HERE / "RESULTS.md"
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS")


def chain(ns, x, n_ops):
    """``n_ops`` elementwise ops through namespace ``ns`` (numpy or gpuad.xp)."""
    sin, cos, mul, add = ns.sin, ns.cos, ns.multiply, ns.add
    for i in range(n_ops):
        k = i & 3
        if k == 0:
            x = sin(x)
        elif k == 1:
            x = cos(x)
        elif k == 2:
            x = mul(x, 0.9)
        else:
            x = add(x, 0.1)
    return x


def numpy_tape_grad(np, x, n_ops):
    """Gradient of ``sum(chain(x))`` by a hand-written NumPy tape."""
    tape = []
    for i in range(n_ops):
        k = i & 3
        if k == 0:
            tape.append(np.cos(x))  # d sin
            x = np.sin(x)
        elif k == 1:
            tape.append(-np.sin(x))  # d cos
            x = np.cos(x)
        elif k == 2:
            tape.append(None)
            x = np.multiply(x, 0.9)
        else:
            tape.append(None)
            x = np.add(x, 0.1)
    g = np.ones_like(x)
    for i in range(n_ops - 1, -1, -1):
        k = i & 3
        if k == 2:
            g = np.multiply(g, 0.9)
        elif k < 2:
            g = np.multiply(g, tape[i])
    return np.sum(x), g


def _time_interleaved(fns, reps, warmup):
    """Seconds per call of each of ``fns``, ``reps`` times, the cases taken in turn.

    Interleaving spreads any background load evenly over the cases.  The
    garbage collector stays on (its cost is part of taping) but each call
    starts with it empty, so no call pays for another's garbage.
    """
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    out = {k: [] for k in fns}
    for _ in range(reps):
        for k, fn in fns.items():
            gc.collect()
            t0 = time.perf_counter()
            fn()
            out[k].append(time.perf_counter() - t0)
    return out


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


def machine():
    import numpy

    import gpuad

    try:
        affinity = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        affinity = None
    try:
        load = [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        load = None
    return {
        "cpu_model": _cpu_model(),
        "load_average": load,
        "cpu_count": os.cpu_count(),
        "cpus_available": affinity,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "gpuad": gpuad.__version__,
        "backend": gpuad.get_backend().name,
        "threads": {v: os.environ.get(v, "unset") for v in THREAD_VARS},
        "commit": _git_commit(),
    }


def run(n_ops=2000, reps=21, warmup=3, size=4):
    import numpy as np

    import gpuad
    from gpuad import xp

    x0 = np.linspace(0.1, 0.7, size, dtype=np.float64)

    def gpuad_grad():
        return gpuad.grad(lambda x: xp.sum(chain(xp, x, n_ops)))(x0)

    # The four cases compute the same thing; check before timing.
    ref = chain(np, x0, n_ops)
    assert np.allclose(chain(xp, x0, n_ops), ref)
    _, g_tape = numpy_tape_grad(np, x0, n_ops)
    assert np.allclose(gpuad_grad(), g_tape), "gpuad.grad disagrees with the hand-written tape"

    cases = {
        "numpy_forward": ("raw NumPy forward", lambda: chain(np, x0, n_ops)),
        "gpuad_forward": ("gpuad.xp forward, plain arrays (no transform)", lambda: chain(xp, x0, n_ops)),
        "gpuad_grad": ("gpuad.grad (forward + backward)", gpuad_grad),
        "numpy_tape_grad": ("hand-written NumPy tape (forward + backward)", lambda: numpy_tape_grad(np, x0, n_ops)),
    }
    times = _time_interleaved({k: fn for k, (_, fn) in cases.items()}, reps, warmup)
    rows = {}
    for key, (label, _) in cases.items():
        ts = times[key]
        per_op = [t / n_ops * 1e6 for t in ts]
        rows[key] = {
            "label": label,
            "us_per_op_median": statistics.median(per_op),
            "us_per_op_min": min(per_op),
            "us_per_op_max": max(per_op),
            "total_ms_median": statistics.median(ts) * 1e3,
        }
    base_f = rows["numpy_forward"]["us_per_op_median"]
    base_g = rows["numpy_tape_grad"]["us_per_op_median"]
    rows["gpuad_forward"]["vs_numpy"] = rows["gpuad_forward"]["us_per_op_median"] / base_f
    rows["gpuad_grad"]["vs_numpy"] = rows["gpuad_grad"]["us_per_op_median"] / base_g
    return {
        "benchmark": "overhead",
        "workload": {"n_ops": n_ops, "shape": [size], "dtype": "float64",
                     "ops": "sin, cos, multiply(x, 0.9), add(x, 0.1), repeated"},
        "reps": reps,
        "warmup": warmup,
        "timestamp": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "results": rows,
    }


def markdown_table(res):
    lines = [
        "| case | µs/op median | min | max | ms total (median) | vs NumPy |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for key, r in res["results"].items():
        ratio = f"{r['vs_numpy']:.1f}×" if "vs_numpy" in r else ""
        lines.append(
            f"| {r['label']} (`{key}`) | {r['us_per_op_median']:.2f} | {r['us_per_op_min']:.2f} | "
            f"{r['us_per_op_max']:.2f} | {r['total_ms_median']:.2f} | {ratio} |"
        )
    w = res["workload"]
    lines.append("")
    lines.append(
        f"{w['n_ops']} ops ({w['ops']}) on shape {tuple(w['shape'])} {w['dtype']}; {res['reps']} timed "
        f"repetitions after {res['warmup']} warm-up runs. `vs NumPy`: gpuad forward against raw NumPy "
        "forward, gpuad.grad against the hand-written NumPy tape."
    )
    return "\n".join(lines)


def machine_text(m):
    threads = ", ".join(f"{k}={v}" for k, v in m["threads"].items())
    return (
        f"- CPU: {m['cpu_model']}, {m['cpu_count']} logical cores ({m['cpus_available']} available)\n"
        f"- {m['platform']}; Python {m['python']}; NumPy {m['numpy']}; gpuad {m['gpuad']} "
        f"(commit {m['commit'] or 'unknown'}); default backend {m['backend']}\n"
        f"- threads: {threads}\n"
        f"- load average (1, 5, 15 min) when the run started: {m['load_average']}"
    )


COMMAND = "python -m bench --record"


def write_results(res, record=False):
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    stamp = res["timestamp"].replace(":", "").replace("-", "").replace("+0000", "Z")
    table = markdown_table(res)
    md = f"# gpuad overhead benchmark, {res['timestamp']}\n\n{table}\n\n{machine_text(res['machine'])}\n"
    paths = []
    for name in (f"overhead-{stamp}", "overhead-latest"):
        (RESULTS_DIR / f"{name}.json").write_text(json.dumps(res, indent=2) + "\n")
        (RESULTS_DIR / f"{name}.md").write_text(md)
        paths += [RESULTS_DIR / f"{name}.json", RESULTS_DIR / f"{name}.md"]
    if record:
        RESULTS_MD.write_text(
            "# Benchmark results\n\n"
            "Latest run of the per-op overhead benchmark (`bench/overhead.py`). Regenerate with\n\n"
            f"```\n{COMMAND}\n```\n\n"
            "from the repository root (`python -m bench` alone writes only `bench/results/`, which is "
            "gitignored).\n\n"
            f"## Per-op overhead ({res['timestamp']})\n\n{table}\n\n"
            f"### Machine\n\n{machine_text(res['machine'])}\n"
        )
        paths.append(RESULTS_MD)
    return paths


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--n-ops", type=int, default=2000, help="ops in the chain (default 2000)")
    p.add_argument("--reps", type=int, default=21, help="timed repetitions, at least 7 (default 21)")
    p.add_argument("--warmup", type=int, default=3, help="untimed warm-up runs (default 3)")
    p.add_argument("--record", action="store_true", help="also rewrite bench/RESULTS.md")
    p.add_argument("--no-write", action="store_true", help="print only; write nothing")
    args = p.parse_args(argv)
    if args.reps < 7:
        p.error("--reps must be at least 7")
    if any(v not in os.environ for v in THREAD_VARS[:2]):
        print("note: thread pools are not pinned; run as `python -m bench`", file=sys.stderr)
    res = run(n_ops=args.n_ops, reps=args.reps, warmup=args.warmup)
    print(markdown_table(res))
    print()
    print(machine_text(res["machine"]))
    if not args.no_write:
        for path in write_results(res, record=args.record):
            print(f"wrote {os.path.relpath(path)}")
    return 0


if __name__ == "__main__":  # python bench/overhead.py: pin threads, find the checkout's gpuad
    for _var in THREAD_VARS:
        os.environ.setdefault(_var, "1")
    sys.path.insert(0, str(HERE.parent))
    sys.exit(main())
