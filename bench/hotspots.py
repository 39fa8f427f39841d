"""``python -m bench.hotspots``: where gpuad spends its time in the MLP, tanh and per-op steps.

Runs each gpuad step a few times under ``cProfile`` (after a warm-up) and
prints the top functions by own time (``tottime``), plus the share of the
own time by category: gpuad's engine (tracing, tape, dispatch: the overhead),
op implementations (which include the NumPy calls they make) and the array
library.
``--markdown`` prints tables to paste into a note.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import sys

from .common import pin_threads

pin_threads(1)


def _steps(quick):
    from . import mlp, overhead, tanhnet

    cfg = mlp.QUICK if quick else mlp.FULL
    params, x, y = mlp.setup(cfg["sizes"], cfg["batch"])
    mstep = mlp.gpuad_step_fn()
    cfg = tanhnet.QUICK if quick else tanhnet.FULL
    tparams, tx = tanhnet.setup(cfg["layers"], cfg["width"], cfg["batch"])
    tstep = tanhnet.gpuad_step_fn()

    import numpy as np

    import gpuad
    from gpuad import xp

    n_ops = overhead.QUICK["n_ops"] if quick else overhead.FULL["n_ops"]
    x0 = np.linspace(0.1, 0.7, 4, dtype=np.float32)
    gf = gpuad.grad(lambda x: xp.sum(overhead.chain(xp, x, n_ops)))
    return {"mlp": lambda: mstep(params, x, y), "tanh": lambda: tstep(tparams, tx), "overhead": lambda: gf(x0)}


def _category(func):
    """Where a function's own time goes: engine overhead, op kernels, or the array library."""
    f = func[0].replace(os.sep, "/")
    if "/gpuad/ops/" in f or "/gpuad/nn/" in f or "/backends/" in f:
        return "op implementations (their NumPy calls included)"
    if "/gpuad/" in f:
        return "engine: tracing, tape, dispatch, backward loop"
    if f == "~" or "array_api_compat" in f or "/numpy/" in f:
        return "array library (NumPy, array-api-compat wrappers, builtins)"
    return "other (bench, stdlib)"


def profile(fn, reps):
    fn()
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(reps):
        fn()
    prof.disable()
    st = pstats.Stats(prof)
    total = st.total_tt or 1e-12
    shares = {}
    for k, v in st.stats.items():
        c = _category(k)
        shares[c] = shares.get(c, 0.0) + v[2] / total
    rows = sorted(((v[2], v[3], v[1], k) for k, v in st.stats.items()), reverse=True)
    return total / reps, shares, rows


def _name(k):
    filename, line, name = k
    if filename == "~":
        return name
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    rel = os.path.relpath(filename, root) if filename.startswith(root) else os.path.basename(filename)
    return f"{rel}:{line}({name})"


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m bench.hotspots", description=__doc__.split("\n\n")[0])
    p.add_argument("--only", default="mlp,tanh,overhead")
    p.add_argument("--top", type=int, default=15)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--markdown", action="store_true")
    args = p.parse_args(argv)
    steps = _steps(args.quick)
    for name in args.only.split(","):
        per_step, shares, rows = profile(steps[name], args.reps)
        print(f"\n## {name}: {per_step * 1e3:.1f} ms per step under cProfile\n")
        for c, v in sorted(shares.items(), key=lambda kv: -kv[1]):
            print(f"- {v:5.1%} {c}")
        print()
        if args.markdown:
            print("| tottime s/step | cumtime s/step | calls/step | function |\n|---:|---:|---:|---|")
        for tt, ct, nc, k in rows[: args.top]:
            if args.markdown:
                print(f"| {tt / args.reps:.4f} | {ct / args.reps:.4f} | {nc // args.reps} | `{_name(k)}` |")
            else:
                print(f"{tt / args.reps:9.4f} {ct / args.reps:9.4f} {nc // args.reps:8d}  {_name(k)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
