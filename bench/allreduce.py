"""``python -m bench.allreduce``: gpuad.distributed against raw mpi4py, and ``gpuad train`` scaling.

Part 1 (``mpiexec -n 2``): the time of ``comm.allreduce_mean(grads)`` and
``comm.allreduce_sum(grads)`` on a gradient pytree of 1, 10 and 100 MB
(float32, eight weight matrices and their biases, as a network's gradients)
against mpi4py's own ``Allreduce`` on one preallocated flat buffer of the
same size (out of place, the usual idiom; in place too, for reference, on
ordinary memory and on the huge-page memory gpuad's own buckets come from), and
the mean against that ``Allreduce`` followed by the ``* 1/size`` pass that a
mean costs on mpi4py.  The cases run interleaved, in a new order each
repetition (the same on every rank), each after a ``Barrier``; a repetition's time is the slowest rank's;
the table shows medians.  Throughput is bytes reduced per second.

Part 2: ``gpuad train`` (digits CNN, NumPy) on 1 process and under
``mpiexec -n 2 ... --distributed``, BLAS and OpenMP threads pinned to 1,
with samples/s and final test accuracy of each.

Results are printed as markdown and written to ``bench/results/``.
"""

from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import argparse  # noqa: E402
import datetime as _dt  # noqa: E402
import json  # noqa: E402
import random  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SIZES_MB = (1, 10, 100)
#: mpi4py's in-place ``Allreduce`` on a buffer of the memory gpuad allocates its buckets from
#: (``backends/numpy.py``'s ``comm_empty``: huge pages from 256 KiB): how much of gpuad's lead is the memory.
HUGE = "mpi4py Allreduce(IN_PLACE, flat on huge pages)"
#: gpuad's mean while the previous call's result is still referenced (the usual training loop).
HELD = "gpuad allreduce_mean(tree), previous result held"


def grad_tree(mb, np):
    """Eight ``(d, d)`` float32 weights and ``(d,)`` biases totalling about ``mb`` megabytes."""
    d = int((mb * 1e6 / 4 / 8) ** 0.5)
    rng = np.random.default_rng(0)
    return [{"w": rng.standard_normal((d, d), dtype=np.float32), "b": rng.standard_normal(d, dtype=np.float32)}
            for _ in range(8)]


def worker(args):
    """Runs on every rank under mpiexec; rank 0 prints one JSON line."""
    import numpy as np
    from mpi4py import MPI

    sys.path.insert(0, str(ROOT))
    from gpuad import distributed
    from gpuad._backend import backend_module
    from gpuad._tree import tree_leaves

    comm = distributed.init(bucket_mb=args.bucket_mb, timeout=600)
    mpi = comm.mpi_comm
    rows = []
    for mb in args.sizes:
        tree = grad_tree(mb, np)
        n = sum(x.size for x in tree_leaves(tree))
        flat = np.ones(n, np.float32)
        recv = np.empty_like(flat)
        inplace = np.ones(n, np.float32)
        huge = backend_module("numpy").comm_empty(n, "float32")  # the memory gpuad's own buckets get
        huge[:] = 1
        calls0 = comm.collective_calls
        comm.allreduce_mean(tree)
        buckets = comm.collective_calls - calls0
        scale = np.float32(1 / comm.size)

        def mpi_mean():  # what a mean costs on mpi4py: the sum, then one pass to scale it
            mpi.Allreduce(flat, recv, op=MPI.SUM)
            np.multiply(recv, scale, out=recv)

        comm.allreduce_sum(tree)
        held = {}

        def mean_holding():  # ``grads = comm.allreduce_mean(grads)`` in a loop: the previous result lives on
            held["grads"] = comm.allreduce_mean(tree)

        cases = {
            "gpuad allreduce_mean(tree)": lambda: comm.allreduce_mean(tree),
            HELD: mean_holding,
            "gpuad allreduce_sum(tree)": lambda: comm.allreduce_sum(tree),
            "mpi4py Allreduce(flat, out)": lambda: mpi.Allreduce(flat, recv, op=MPI.SUM),
            "mpi4py Allreduce(flat, out) * 1/size": mpi_mean,
            "mpi4py Allreduce(IN_PLACE, flat)": lambda: mpi.Allreduce(MPI.IN_PLACE, inplace, op=MPI.SUM),
            HUGE: lambda: mpi.Allreduce(MPI.IN_PLACE, huge, op=MPI.SUM),
        }
        reps = args.reps or (300 if mb <= 1 else 100 if mb <= 10 else 21)
        times = {k: [] for k in cases}
        for _ in range(2):  # warm-up: page in the buffers, plan the tree
            for fn in cases.values():
                fn()
        names = list(cases)
        for rep in range(reps):
            # A case finds in cache what the cases before it left there: a fresh order per repetition
            # (the same on every rank) gives every case the same mix of warm and cold starts.
            random.Random(rep).shuffle(names)
            for k in names:
                fn = cases[k]
                mpi.Barrier()
                t0 = time.perf_counter()
                fn()
                dt = time.perf_counter() - t0
                times[k].append(mpi.allreduce(dt, op=MPI.MAX))
        med = {k: statistics.median(v) for k, v in times.items()}
        rows.append({"mb": mb, "bytes": 4 * n, "leaves": len(tree_leaves(tree)), "buckets": buckets,
                     "reps": reps, "median_s": med, "min_s": {k: min(v) for k, v in times.items()}})
    if comm.rank == 0:
        print(json.dumps({"processes": comm.size, "bucket_mb": args.bucket_mb, "rows": rows}), flush=True)


def _mpiexec():
    local = Path(sys.executable).parent / "mpiexec"
    return str(local) if local.exists() else shutil.which("mpiexec")


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["GPUAD_BACKEND"] = "numpy"
    return env


def _run(cmd, timeout):
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=_env(), timeout=timeout)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout


def bench_allreduce(args):
    """One ``mpiexec -n 2`` job per round; returns the rounds' results (see :func:`worker`)."""
    cmd = [_mpiexec(), "-n", "2", sys.executable, "-m", "bench.allreduce", "--worker",
           "--bucket-mb", str(args.bucket_mb), "--sizes", ",".join(map(str, args.sizes))]
    if args.reps:
        cmd += ["--reps", str(args.reps)]
    rounds = []
    for _ in range(args.rounds):
        out = _run(cmd, timeout=1800)
        rounds.append(json.loads([line for line in out.splitlines() if line.startswith("{")][-1]))
    return rounds


def bench_train(args):
    """Per round, ``gpuad train`` on 1 process then on 2; returns ``[{1: metrics, 2: metrics}, ...]``."""
    rounds = []
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(args.rounds):
            out = {}
            for procs in (1, 2):
                run_dir = os.path.join(tmp, f"{k}-{procs}")
                common = ["train", "--epochs", str(args.epochs), "--batch-size", str(args.batch_size),
                          "--no-progress", "--backend", "numpy", "--out", run_dir]
                if procs == 1:
                    cmd = [sys.executable, "-m", "gpuad", *common]
                else:
                    cmd = [_mpiexec(), "-n", "2", sys.executable, "-m", "gpuad", *common, "--distributed"]
                t0 = time.perf_counter()
                _run(cmd, timeout=3600)
                wall = time.perf_counter() - t0
                m = json.loads(Path(run_dir, "metrics.json").read_text())
                out[procs] = {"samples_per_second": m["samples_per_second"], "train_seconds": m["train_seconds"],
                              "test_accuracy": m["test_accuracy"], "final_loss": m["final_loss"],
                              "wall_seconds": wall}
            rounds.append(out)
    return rounds


def _spread(values, fmt):
    """``"median (min-max)"`` of ``values``, or the one value."""
    if len(values) == 1:
        return fmt.format(values[0])
    return f"{fmt.format(statistics.median(values))} ({fmt.format(min(values))}-{fmt.format(max(values))})"


def markdown(ar, tr, args):
    """The tables: per size (allreduce) and per process count (train), medians over the rounds."""
    n = args.rounds
    lines = [f"# gpuad.distributed benchmarks ({_dt.datetime.now(_dt.timezone.utc):%Y-%m-%d %H:%M} UTC)", ""]
    if ar:
        g, gs = "gpuad allreduce_mean(tree)", "gpuad allreduce_sum(tree)"
        o, om = "mpi4py Allreduce(flat, out)", "mpi4py Allreduce(flat, out) * 1/size"
        i = "mpi4py Allreduce(IN_PLACE, flat)"
        first = ar[0]
        lines += [f"## allreduce, {first['processes']} processes, float32, buckets of {first['bucket_mb']:g} MB", "",
                  "Ratios: gpuad's mean and sum of the tree against mpi4py's out-of-place `Allreduce` of one flat "
                  "buffer (the issue's yardstick), and the mean against that `Allreduce` followed by the "
                  "scaling pass a mean needs. gpuad allocates buckets of 256 KiB and more on huge pages, "
                  "which MPI reduces faster; the in-place column on huge pages shows that memory on its own. "
                  "'previous held': the mean while the last such call's result is still referenced, as in "
                  "`grads = comm.allreduce_mean(...)` in a training loop.",
                  f"Each round is a fresh `mpiexec -n 2` job ({n} round{'s' if n > 1 else ''}); times are the "
                  "medians of its repetitions, and with several rounds each cell shows the median over the "
                  "rounds (min-max).", "",
                  "| size | leaves | buckets | gpuad mean(tree) | gpuad mean, previous held | gpuad sum(tree) "
                  "| mpi4py flat out-of-place | mpi4py flat mean (sum, then scale) | mpi4py flat in-place "
                  "| mpi4py flat in-place, huge pages | gpuad mean GB/s | mean / out-of-place "
                  "| mean (previous held) / out-of-place | sum / out-of-place | mean / mpi4py mean |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for j, r in enumerate(first["rows"]):
            meds = [rnd["rows"][j]["median_s"] for rnd in ar]

            def ms(key, meds=meds):
                return _spread([m[key] * 1e3 for m in meds], "{:.2f}") + " ms"

            def ratio(a, b, meds=meds):
                return _spread([m[a] / m[b] for m in meds], "{:.2f}")

            gbs = _spread([r["bytes"] / m[g] / 1e9 for m in meds], "{:.2f}")
            lines.append(f"| {r['bytes'] / 1e6:.1f} MB | {r['leaves']} | {r['buckets']} | {ms(g)} | {ms(HELD)} | "
                         f"{ms(gs)} | {ms(o)} | {ms(om)} | {ms(i)} | {ms(HUGE)} | {gbs} | {ratio(g, o)} | "
                         f"{ratio(HELD, o)} | {ratio(gs, o)} | {ratio(g, om)} |")
        lines.append("")
    if tr:
        lines += [f"## gpuad train (digits CNN, NumPy, {args.epochs} epochs, batch {args.batch_size}, "
                  f"threads pinned to 1; {n} round{'s' if n > 1 else ''}, 1 then 2 processes each)", "",
                  "| processes | samples/s | training s | speed-up | test accuracy | final loss |",
                  "|---|---|---|---|---|---|"]
        for p in (1, 2):
            runs = [rnd[p] for rnd in tr]
            speed = _spread([rnd[p]["samples_per_second"] / rnd[1]["samples_per_second"] for rnd in tr], "{:.2f}x")
            acc = sorted({f"{r['test_accuracy']:.2%}" for r in runs})
            loss = sorted({f"{r['final_loss']:.4f}" for r in runs})
            lines.append(f"| {p} | {_spread([r['samples_per_second'] for r in runs], '{:,.0f}')} | "
                         f"{_spread([r['train_seconds'] for r in runs], '{:.2f}')} | {speed} | "
                         f"{', '.join(acc)} | {', '.join(loss)} |")
        lines.append("")
    lines.append(f"machine: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m bench.allreduce", description=__doc__.split("\n\n")[0])
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--sizes", default=",".join(map(str, SIZES_MB)), help="gradient sizes in MB (default 1,10,100)")
    p.add_argument("--bucket-mb", type=float, default=25.0, help="gpuad bucket size in MB (default 25)")
    p.add_argument("--reps", type=int, default=None, help="timed repetitions per size")
    p.add_argument("--only", default="allreduce,train", help="allreduce, train or both (default)")
    p.add_argument("--epochs", type=int, default=20, help="gpuad train epochs (default 20)")
    p.add_argument("--batch-size", type=int, default=32, help="gpuad train batch size (default 32)")
    p.add_argument("--rounds", type=int, default=3,
                   help="fresh mpiexec jobs (and train pairs) to take the median over (default 3)")
    p.add_argument("--no-write", action="store_true", help="print only")
    args = p.parse_args(argv)
    if args.rounds < 1:
        p.error(f"--rounds must be at least 1, got {args.rounds}")
    args.sizes = [float(s) if "." in s else int(s) for s in args.sizes.split(",") if s]
    if args.worker:
        return worker(args)
    if _mpiexec() is None:
        raise SystemExit("mpiexec not found: pip install 'gpuad[distributed]'")
    only = set(args.only.split(","))
    ar = bench_allreduce(args) if "allreduce" in only else None
    tr = bench_train(args) if "train" in only else None
    md = markdown(ar, tr, args)
    print(md)
    if not args.no_write:
        out = ROOT / "bench" / "results"
        out.mkdir(parents=True, exist_ok=True)
        stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        (out / f"allreduce-{stamp}.json").write_text(json.dumps({"rounds": args.rounds, "allreduce": ar, "train": tr},
                                                                 indent=2))
        (out / f"allreduce-{stamp}.md").write_text(md + "\n")
        (out / "allreduce-latest.md").write_text(md + "\n")


if __name__ == "__main__":
    main()
