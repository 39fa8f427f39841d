"""Checkpointing benchmark: a deep tanh chain under each strategy.

    python -m bench.checkpoint [--layers 1000] [--width 256] [--batch 64] [--repeat 3]

Prints, per strategy, the peak tape bytes measured by ``gpuad.memory`` (input,
parameters, snapshots and step tapes), the advances, and the time of one
gradient evaluation relative to ``"none"``.  ``optimal`` runs under the
budget ``uniform`` measured (its peak), so the two compare at equal memory.
Then a dry run compares revolve with recursive bisection at ``s = log2 l``
snapshots.  Not part of the test-suite.
"""

from __future__ import annotations

import argparse
import time

import gpuad
from gpuad import xp
from gpuad.checkpointing import checkpoint_sequential, last_report


def step(w, h):
    return xp.tanh(xp.matmul(h, w))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=1000)
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--backend", default=None)
    ap.add_argument("--strategies", default="none,uniform,revolve,optimal")
    args = ap.parse_args(argv)
    if args.backend:
        gpuad.set_backend(args.backend)
    ns = gpuad.get_backend().namespace
    L, n = args.layers, args.width
    # Orthogonal-ish scaled weights keep tanh in its active range over 1000 layers.
    ws = [xp.asarray(ns.eye(n) * 0.9 + 0.05 * ns.ones((n, n)) / n) for _ in range(L)]
    x = ns.ones((args.batch, n)) * 0.5
    rows = []
    budget = None
    for strategy in args.strategies.split(","):
        kw = {"budget_bytes": budget} if strategy == "optimal" else {}

        def loss(x, ws):
            return xp.sum(checkpoint_sequential([(step, w) for w in ws], x, strategy=strategy, **kw))

        g = gpuad.grad(loss, (0, 1))
        g(x, ws)  # warm-up
        best = float("inf")
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            out = g(x, ws)
            float(xp.sum(out[0]))  # synchronise (host read of a scalar)
            best = min(best, time.perf_counter() - t0)
        rep = last_report()
        if strategy == "uniform":
            budget = rep.actual_peak_bytes
        rows.append((strategy, rep, best))
    base_mem = rows[0][1].actual_peak_bytes - rows[0][1].profile.base_bytes
    base_t = rows[0][2]
    print(f"{L}-layer tanh chain, width {n}, batch {args.batch}, backend {gpuad.get_backend().name}")
    print(f"{'strategy':10} {'peak MiB':>10} {'tape MiB':>10} {'predicted':>10} {'advances':>9} "
          f"{'time s':>8} {'mem ratio':>9} {'time ratio':>10}")
    for strategy, rep, t in rows:
        tape = rep.actual_peak_bytes - rep.profile.base_bytes
        print(f"{strategy:10} {rep.actual_peak_bytes / 2**20:10.2f} {tape / 2**20:10.2f} "
              f"{rep.predicted_peak_bytes / 2**20:10.2f} {rep.actual_advances:9d} {t:8.3f} "
              f"{base_mem / tape:9.1f}x {t / base_t:9.2f}x")
    print("tape MiB: peak excluding the input and the parameters (which every strategy keeps)")
    if budget is not None and any(r[0] == "optimal" for r in rows):
        print(f"optimal ran under budget_bytes={budget} (uniform's measured peak)")
    from gpuad.checkpointing import plan_checkpoints

    print("dry run, s = log2 l snapshots (the input included):")
    for l in (256, 1024, 4096):
        s = l.bit_length() - 1
        rev = plan_checkpoints(l, strategy="revolve", snapshots=s).predicted_advances
        bis = plan_checkpoints(l, strategy="bisection", snapshots=s).predicted_advances
        print(f"  l={l:5d} s={s:2d}: revolve {rev:6d} advances, bisection {bis:6d} "
              f"({100 * (1 - rev / bis):.1f}% fewer)")


if __name__ == "__main__":
    main()
