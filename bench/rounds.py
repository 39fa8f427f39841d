"""Timing the MLP and tanh steps in fresh processes ("rounds"), one group of cases per process.

Why: on these machines the time of a BLAS-bound step depends on the process
it runs in, not only on the code.  The hand-written NumPy tanh step measured
110 ms in one process and 160 ms in another on the same quiet machine (where
the allocator puts the arrays changes how the matrix products hit the
caches), and the cases of other libraries timed in the same process change
it too (with mygrad's step interleaved, hand-written NumPy took 147 ms
instead of 119 ms).  A ratio measured in one process therefore carries that
process's luck: gpuad's tanh ratio moved between ×0.95 and ×1.05 from one
run of the bench to the next with no change in gpuad.

So :func:`measure` starts ``rounds`` fresh processes for each group of
cases: hand-written NumPy with gpuad, and hand-written NumPy with each peer
library on its own (torch, jax with and without jit, HIPS autograd, mygrad).
Within a process the group's cases are timed interleaved
(:func:`bench.common.time_interleaved`) and each case's ratio to NumPy is the
median of its per-repetition ratios (:func:`bench.common.paired_ratio`), so
every ratio is still a same-process, same-moment comparison; the reported
ratio is the median of those over the rounds, with their range.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys

from .common import ROOT, paired_ratio

__all__ = ["measure", "groups_for", "peer_of"]


def peer_of(case):
    """The peer library a case belongs to (``"jax_jit"`` -> ``"jax"``), or None for numpy and gpuad."""
    if case in ("numpy", "gpuad"):
        return None
    return case.split("_")[0]


def groups_for(cases):
    """The groups of case names timed together: ``("numpy", "gpuad")`` and ``("numpy", <one peer's cases>)``."""
    groups = [("numpy", "gpuad")]
    peers = []
    for c in cases:
        p = peer_of(c)
        if p is not None and p not in peers:
            peers.append(p)
    for p in peers:
        groups.append(("numpy",) + tuple(c for c in cases if peer_of(c) == p))
    return groups


def _worker(spec):
    """In the fresh process: build the workload's cases, time the requested ones, print JSON."""
    from .common import CPU_PER_WALL, pin_threads

    pin_threads(1)
    from . import mlp, peers as peers_mod, tanhnet
    from .common import time_interleaved

    mod = {"mlp": mlp, "tanh": tanhnet}[spec["workload"]]
    wanted = tuple(sorted({p for p in map(peer_of, spec["cases"]) if p is not None}))
    peers = peers_mod.load(wanted)
    cases = mod.make_cases(spec["cfg"], peers)
    missing = [c for c in spec["cases"] if c not in cases]
    if missing:
        raise SystemExit(f"bench.rounds: cases {missing} are not available in this process")
    times = time_interleaved({c: cases[c][1] for c in spec["cases"]}, spec["reps"], spec["warmup"])
    print(json.dumps({"times": times, "cpu_per_wall": dict(CPU_PER_WALL)}), flush=True)


def _run_group(workload, cfg, group, reps, warmup, timeout):
    spec = {"workload": workload, "cfg": cfg, "cases": list(group), "reps": reps, "warmup": warmup}
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run([sys.executable, "-m", "bench.rounds", json.dumps(spec)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"bench.rounds: {workload} {group} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads([line for line in proc.stdout.splitlines() if line.startswith("{")][-1])


def measure(workload, cfg, cases, reps, warmup, rounds, timeout=1800):
    """Times and ratios of ``cases`` (names), each group in ``rounds`` fresh processes.

    Returns
    -------
    dict
        Per case: ``times`` (seconds, every repetition of every round),
        ``vs_numpy`` (``median``: the median over rounds of the per-round
        median paired ratio; ``min``/``max``: the range of those;
        ``of_min``: the case's fastest repetition over the fastest NumPy
        repetition in the same processes; ``rounds``: the per-round ratios)
        and ``cpu_per_wall`` (the largest over rounds).  NumPy's own times
        are those of the ``numpy``/``gpuad`` processes.
    """
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    groups = groups_for(cases)
    times = {c: [] for c in cases}
    base = {c: [] for c in cases}  # NumPy's times in the processes of each case
    per_round = {c: [] for c in cases}
    cpu = {c: [] for c in cases}
    for _ in range(rounds):
        for g in groups:
            out = _run_group(workload, cfg, g, reps, warmup, timeout)
            t, np_t = out["times"], out["times"]["numpy"]
            for c in g:
                if c == "numpy" and g[1] != "gpuad":
                    continue  # each peer group's NumPy is its own baseline only
                times[c] += t[c]
                base[c] += np_t
                per_round[c].append(paired_ratio(t[c], np_t)["median"])
                cpu[c].append(out["cpu_per_wall"].get(c))
    result = {}
    for c in cases:
        r = per_round[c]
        result[c] = {"times": times[c],
                     "vs_numpy": {"median": statistics.median(r), "min": min(r), "max": max(r),
                                  "of_min": min(times[c]) / min(base[c]), "rounds": r},
                     "cpu_per_wall": max((v for v in cpu[c] if v is not None), default=None)}
    return result


if __name__ == "__main__":
    _worker(json.loads(sys.argv[1]))
