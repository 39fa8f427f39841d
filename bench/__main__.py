"""``python -m bench``: run the gpuad benchmarks of issues 5 and 6 and write their results.

Workloads (``--only`` picks some): ``mlp``, ``tanh``, ``overhead``, ``hvp``,
``import``, ``gpu``.  The first five compare gpuad with hand-written NumPy in
the same process, and with torch, jax (with and without jit), HIPS autograd
and mygrad when they are installed.  ``gpu`` (``bench/gpu.py``) runs the MLP,
tanh and per-op steps on CuPy against hand-written CuPy with CUDA-event
timing when the CuPy backend is usable, and is reported as skipped (with the
reason) otherwise.  Results go to ``bench/results/`` (gitignored; ``--out``
picks another directory) as JSON and markdown; ``--record`` also rewrites
``bench/RESULTS.md``.  Thread pools are pinned to one thread (unless already
set) before numpy is imported.
"""

from __future__ import annotations

import os

from .common import OPENBLAS_TUNING_VARS, pin_threads

pin_threads(1)

import argparse  # noqa: E402
import datetime as _dt  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

WORKLOADS = ("mlp", "tanh", "overhead", "hvp", "import", "gpu")


def _modules():
    from . import gpu, hvp, importtime, mlp, overhead, tanhnet

    return {"mlp": mlp, "tanh": tanhnet, "overhead": overhead, "hvp": hvp, "import": importtime, "gpu": gpu}


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--only", default=",".join(WORKLOADS),
                   help=f"comma-separated workloads to run (default all: {','.join(WORKLOADS)})")
    p.add_argument("--quick", action="store_true", help="small sizes, few repetitions, no waiting (smoke test)")
    p.add_argument("--reps", type=int, default=None, help="timed repetitions, at least 7 (default 11; quick 3)")
    p.add_argument("--warmup", type=int, default=None, help="untimed warm-up runs (default 2; quick 1)")
    p.add_argument("--peers", default="all", help="'all' (default), 'none', or e.g. 'torch,autograd'")
    p.add_argument("--rounds", type=int, default=None,
                   help="fresh processes per group of cases for the MLP and tanh steps (default 5; quick 0: "
                        "all cases in this process); see bench/rounds.py")
    p.add_argument("--max-wait", type=float, default=None,
                   help="seconds to wait for a quiet machine before each workload (default 60; quick 0)")
    p.add_argument("--no-memory", action="store_true",
                   help="skip the peak-memory measurements of the tanh step (tracemalloc and RSS)")
    p.add_argument("--out", type=Path, default=None, help="directory for the results (default bench/results)")
    p.add_argument("--record", action="store_true", help="also rewrite bench/RESULTS.md")
    p.add_argument("--no-write", action="store_true", help="print only; write nothing")
    args = p.parse_args(argv)

    only = [s.strip() for s in args.only.split(",") if s.strip()]
    bad = [s for s in only if s not in WORKLOADS]
    if bad:
        p.error(f"unknown workload(s) {bad}; choose from {WORKLOADS}")
    reps = args.reps if args.reps is not None else (3 if args.quick else 11)
    warmup = args.warmup if args.warmup is not None else (1 if args.quick else 2)
    max_wait = args.max_wait if args.max_wait is not None else (0.0 if args.quick else 60.0)
    rounds = args.rounds if args.rounds is not None else (0 if args.quick else 5)
    if rounds < 0:
        p.error(f"--rounds must be >= 0, got {rounds}")
    if reps < 7 and not args.quick:
        p.error("--reps must be at least 7 (use --quick for a smoke run)")
    if args.record and (args.quick or set(only) != set(WORKLOADS) or args.peers == "none" or rounds < 3):
        p.error("--record needs the full run: all workloads, no --quick, peers on, --rounds >= 3")
    tuned = [v for v in OPENBLAS_TUNING_VARS if v in os.environ]
    if tuned:
        print(f"warning: {', '.join(tuned)} set; NumPy's BLAS kernels differ from the baseline's. "
              f"Run: env {' '.join('-u ' + v for v in tuned)} python -m bench ...", file=sys.stderr)

    from . import peers as peers_mod
    from .common import machine, machine_text, wait_quiet
    from .report import markdown, targets, write

    try:
        peers = peers_mod.load(peers_mod.parse(args.peers))
    except ValueError as e:
        p.error(str(e))
    mods = _modules()
    out = {"timestamp": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
           "command": "python -m bench " + " ".join(sys.argv[1:] if argv is None else argv),
           "quick": args.quick, "reps": reps, "warmup": warmup, "rounds": rounds, "machine": machine(),
           "quiet": {}, "workloads": {}}
    out["machine"]["peers"] = peers_mod.versions(peers)
    for i, name in enumerate(only):
        mod = mods[name]
        cfg = dict(mod.QUICK if args.quick else mod.FULL)
        # A workload that needs hardware this machine lacks (gpu) is skipped, with the reason.
        why = mod.unavailable() if hasattr(mod, "unavailable") else None
        if why is not None:
            print(f"[bench] {name}: skipped: {why}", file=sys.stderr, flush=True)
            out["workloads"][name] = mod.skipped(why)
            out["workloads"][name]["config"] = cfg
            continue
        out["quiet"][name] = wait_quiet(max_wait_s=max_wait, own_load=1.0 if i else 0.0)
        print(f"[bench] {name} {cfg} ...", file=sys.stderr, flush=True)
        kw = {"memory": not args.no_memory} if name == "tanh" else {}
        if name in ("mlp", "tanh"):
            kw["rounds"] = rounds
        out["workloads"][name] = mod.run(cfg, peers, reps, warmup, **kw)
        out["workloads"][name]["config"] = cfg
    out["targets"] = targets(out["workloads"])
    print(markdown(out))
    print()
    print(machine_text(out["machine"]))
    verdicts = [t["verdict"].split()[0] for t in out["targets"] if t["verdict"] != "not run"]
    print(f"\ntargets: {verdicts.count('PASS')} PASS, {verdicts.count('FAIL')} FAIL"
          + (" (--quick: not meaningful)" if args.quick else ""))
    if not args.no_write:
        for path in write(out, outdir=args.out, record=args.record):
            print(f"wrote {os.path.relpath(path)}")
    errors = [f"{w}/{s}: {r['error']}" for w, res in out["workloads"].items()
              for s, r in (res.get("steps") or {}).items() if "error" in r]
    if errors:
        print("errors (results of the other steps were written):\n  " + "\n  ".join(errors), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
