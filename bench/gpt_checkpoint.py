"""``python -m bench.gpt_checkpoint``: tape memory and step time of ``gpuad train --model gpt`` per ``--checkpoint``.

    python -m bench.gpt_checkpoint [--reps 11] [--budget-fractions 0.7,0.4] [--quick] [--out DIR]

The model, the first training batch and the step gradient are the run's
own (``gpuad.training_gpt``: ``_init_model``, ``_epoch_starts``,
``_windows``, ``_grad_fn_factory``), for the default options of
``gpuad train --model gpt`` (seed 0).  Each mode is first measured as the
run measures it (``_memory_trade``, the code behind the "memory: one step"
line, which is printed); then its peak tape bytes are measured with
``gpuad.memory.track()`` over one more forward and backward (with the cost
profile the first call measured, as the training loop runs), and its step
time (forward and backward, ``value_and_grad``) over ``--reps`` repetitions
with the modes interleaved (``bench.common.time_interleaved``).  The time
ratio to ``none`` is the median of the per-repetition ratios.  The gradients
of every mode are compared with those of ``none`` (largest absolute
difference; the schedules are exact, so 0).

Modes: ``none``, ``uniform`` (default segments), ``uniform --segments 4``,
``revolve`` (default snapshots), ``block`` and ``optimal`` with budgets that
are fractions of ``none``'s peak (rounded down to whole MiB).  BLAS runs on
one thread (the thread variables are set before NumPy is imported, and
threadpoolctl limits the pool when it is installed).  Prints a markdown table
and writes JSON to ``bench/results/`` (``gpt_checkpoint-latest.json``).
``--quick``: a small model and batch, 3 repetitions, no waiting for a quiet
machine (the smoke test).
"""

from __future__ import annotations

from .common import pin_threads

pin_threads(1)

import argparse  # noqa: E402
import contextlib  # noqa: E402
import datetime as _dt  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

from .common import HERE, machine, machine_text, paired_ratio, summarize, time_interleaved, wait_quiet  # noqa: E402

MIB = 2 ** 20
#: ``gpuad train --model gpt`` options of the quick (smoke) run; the full run uses the defaults.
QUICK_MODEL = {"layers": 4, "d_model": 16, "heads": 2, "context": 16}
QUICK_BATCH = 4


def _blas_one_thread():
    """threadpoolctl's limit of the BLAS pool to one thread, or a no-op when it is not installed."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def setup(quick=False, backend=None, seed=0):
    """The run's model, parameters, first batch and ``make_grad_fn`` (see ``gpuad.training_gpt``).

    Returns a dict: ``make_grad_fn``, ``params``, ``x``, ``y``, ``config``
    (the options as ``gpuad train`` would use them).
    """
    from gpuad import training_gpt as tg
    from gpuad._backend import get_backend, set_backend
    from gpuad.cli import TRAIN_DEFAULTS
    from gpuad.training import TrainConfig, count_params

    d = TRAIN_DEFAULTS["gpt"]
    cfg = TrainConfig(model="gpt", backend=backend, epochs=d["epochs"], lr=d["lr"], seed=seed,
                      batch_size=QUICK_BATCH if quick else d["batch_size"], out=d["out"], progress=False,
                      extra=dict(QUICK_MODEL) if quick else {})
    choice = set_backend(backend) if backend else get_backend()
    o = {**tg.GPT_DEFAULTS, **cfg.extra}
    tg.validate(o, choice.name, cfg.dtype)
    corpus = tg.load_corpus(choice.name, val_fraction=o["val_fraction"])
    model, params, k_data, _ = tg._init_model(cfg, o, corpus)
    t = o["context"]
    starts = tg._epoch_starts(k_data, 1, tg._n_windows(corpus.train.shape[0], t), t)
    w = tg._windows(corpus.train, starts[:cfg.batch_size], t)       # the run's first batch
    config = {"backend": choice.name, "seed": seed, "batch_size": cfg.batch_size, "dtype": cfg.dtype,
              "context": t, "d_model": o["d_model"], "layers": o["layers"], "heads": o["heads"],
              "vocab": len(corpus.chars), "parameters": count_params(params)}
    return {"make_grad_fn": tg._grad_fn_factory(model), "params": params,
            "x": w[:, :t], "y": w[:, 1:], "config": config}


def _label(mode, opts):
    return " ".join([mode] + [f"--{k.replace('_', '-')} {v}" for k, v in opts.items()])


def _budgets(none_peak, fractions):
    """Budgets as fractions of ``none_peak``, rounded down to whole MiB (KiB for a peak under 8 MiB)."""
    unit = MIB if none_peak >= 8 * MIB else 1024
    return [max(unit, int(f * none_peak) // unit * unit) for f in fractions]


def run(quick=False, reps=None, warmup=None, max_wait=None, fractions=(0.7, 0.4), backend=None, log=print):
    """Measure every mode; returns the results dict (also what goes to the JSON file)."""
    from gpuad import memory
    from gpuad import training_gpt as tg

    reps = reps if reps is not None else (3 if quick else 11)
    warmup = warmup if warmup is not None else 1 if quick else 2
    max_wait = max_wait if max_wait is not None else 0.0 if quick else 60.0
    with _blas_one_thread():
        s = setup(quick, backend)
        make_grad_fn, params, x, y = s["make_grad_fn"], s["params"], s["x"], s["y"]
        lines = []

        def measure(mode, opts):
            """The run's own measurement, then the steady-state peak and gradients."""
            so = dict(opts)      # _memory_trade adds the measured cost profile ("profile") to it
            try:
                mem = tg._memory_trade(make_grad_fn, params, x, y, mode, so, log)
            except tg.ConfigError as e:   # e.g. a budget no schedule meets
                return {"mode": mode, "options": opts, "label": _label(mode, opts), "error": str(e)}
            tg._log_memory(mem, x.shape, lines.append)
            fn = make_grad_fn(mode, so)
            with memory.track() as rep:
                out = fn(params, x, y)
            mem.pop("checkpoint", None)
            return {"mode": mode, "options": opts, "label": _label(mode, opts), "fn": fn, "grads": out[1],
                    "loss": float(out[0]), "peak_bytes": rep.peak_bytes, "run_measurement": mem,
                    "memory_line": lines[-1]}

        base = measure("none", {})
        budgets = _budgets(base["peak_bytes"], fractions)
        specs = [("uniform", {}), ("uniform", {"segments": 4}), ("revolve", {}), ("block", {})]
        specs += [("optimal", {"budget_bytes": b}) for b in budgets]
        rows = [base] + [measure(m, o) for m, o in specs]
        ok = [r for r in rows if "error" not in r]
        quiet = wait_quiet(max_wait_s=max_wait, own_load=0.0 if quick else 1.0)
        fns = {r["label"]: (lambda f=r["fn"]: float(f(params, x, y)[0])) for r in ok}
        times = time_interleaved(fns, reps, warmup)
        mach = machine()     # inside the limit: the BLAS thread count in use
    none_t = times[base["label"]]
    for r in ok:
        ts = times[r["label"]]
        r["step_seconds"] = summarize(ts)
        r["ratio_to_none"] = paired_ratio(ts, none_t)
        r["step_seconds_all"] = ts
        r["max_grad_difference"] = tg._max_abs_diff(base["grads"], r["grads"])
        r["loss_difference"] = abs(r["loss"] - base["loss"])
        r["saved_fraction"] = 1.0 - r["peak_bytes"] / base["peak_bytes"]
        sch = r["run_measurement"].get("schedule")
        # block: gpuad.checkpoint recomputes each block's forward once; the others: the schedule's advances
        r["recomputed_block_forwards"] = (s["config"]["layers"] if r["mode"] == "block"
                                          else (sch or {}).get("actual_advances", 0))
    for r in ok:
        del r["fn"], r["grads"]
    return {"timestamp": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "quick": quick, "reps": reps, "warmup": warmup, "budget_fractions": list(fractions),
            "budgets_bytes": budgets, "config": s["config"], "machine": mach,
            "quiet": quiet, "modes": rows}


def markdown(res):
    c = res["config"]
    head = (f"GPT {c['layers']} blocks, d_model {c['d_model']}, {c['heads']} heads, context {c['context']}, "
            f"{c['parameters']:,} parameters; batch {c['batch_size']} x {c['context']} (the run's first batch, "
            f"seed {c['seed']}); {c['backend']}, {c['dtype']}, BLAS threads "
            f"{res['machine']['blas'].get('threads', 'unknown')}; {res['reps']} interleaved repetitions "
            f"after {res['warmup']} warm-up")
    out = [head, "", "| `--checkpoint` | peak tape | saved | recomputed block forwards | step time median "
           "(min-max) | time / none: median (min-max) | max abs grad diff |", "|---|---|---|---|---|---|---|"]
    for r in res["modes"]:
        if "error" in r:
            out.append(f"| `{r['label']}` | {r['error']} | | | | | |")
            continue
        st, q = r["step_seconds"], r["ratio_to_none"]
        base = r["mode"] == "none"
        saved = "" if base else f"{r['saved_fraction']:.0%}"
        ratio = "" if base else f"{q['median']:.2f} ({q['min']:.2f}-{q['max']:.2f})"
        out.append(f"| `{r['label']}` | {r['peak_bytes'] / MIB:.2f} MiB | {saved} | {r['recomputed_block_forwards']} | "
                   f"{st['median'] * 1e3:.0f} ms ({st['min'] * 1e3:.0f}-{st['max'] * 1e3:.0f}) | {ratio} | "
                   f"{r['max_grad_difference']:.1e} |")
    return "\n".join(out)


def write(res, outdir=None):
    outdir = Path(outdir) if outdir is not None else HERE / "results"
    outdir.mkdir(parents=True, exist_ok=True)
    stamp = res["timestamp"].replace(":", "").replace("+0000", "Z")
    paths = [outdir / f"gpt_checkpoint-{'quick-' if res['quick'] else ''}{stamp}.json",
             outdir / "gpt_checkpoint-latest.json"]
    for p in paths:
        p.write_text(json.dumps(res, indent=2, default=str) + "\n")
    return paths


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m bench.gpt_checkpoint", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="small model and batch, 3 repetitions (smoke test)")
    p.add_argument("--reps", type=int, default=None, help="timed repetitions, at least 7 (default 11; quick 3)")
    p.add_argument("--warmup", type=int, default=None, help="untimed warm-up rounds (default 2; quick 1)")
    p.add_argument("--max-wait", type=float, default=None,
                   help="seconds to wait for a quiet machine before timing (default 60; quick 0)")
    p.add_argument("--budget-fractions", default="0.7,0.4",
                   help="optimal's budgets as fractions of none's peak tape (default 0.7,0.4)")
    p.add_argument("--backend", default=None)
    p.add_argument("--out", type=Path, default=None, help="directory for the JSON (default bench/results)")
    p.add_argument("--no-write", action="store_true", help="print only; write nothing")
    args = p.parse_args(argv)
    if args.reps is not None and args.reps < 7 and not args.quick:
        p.error("--reps must be at least 7 (use --quick for a smoke run)")
    try:
        fractions = tuple(float(v) for v in args.budget_fractions.split(",") if v.strip())
    except ValueError:
        p.error(f"--budget-fractions must be comma-separated numbers, got {args.budget_fractions!r}")
    res = run(args.quick, args.reps, args.warmup, args.max_wait, fractions, args.backend,
              log=lambda line: print(line, file=sys.stderr))
    res["command"] = "python -m bench.gpt_checkpoint " + " ".join(sys.argv[1:] if argv is None else argv)
    print("run's own measurement (best of 5, interleaved with none; as gpuad train prints it):")
    for r in res["modes"]:
        print("  " + r.get("memory_line", f"{r['label']}: {r.get('error')}"))
    print()
    print(markdown(res))
    print()
    print(machine_text(res["machine"]))
    print(f"- quiet machine before timing: {res['quiet']}")
    if not args.no_write:
        for path in write(res, args.out):
            print(f"wrote {path}")
    return res


if __name__ == "__main__":
    main()
