"""``gpuad sweep``: peak memory against time for each checkpoint strategy.

The workload is a deep tanh MLP, ``h <- tanh(h @ W_k + b_k)``, run as one
``checkpoint_sequential`` chain (by default 256 layers of width 512, batch
128, float32).  The sweep first runs ``"none"`` (everything stored), whose
report gives the chain's measured cost model; then, for every budget (a
fraction of the bytes ``"none"`` stores beyond the input and parameters),
each strategy runs in its fastest configuration that fits:

* ``uniform``: the segment count with the fewest advances that fits;
* ``revolve`` / ``bisection``: the most snapshots that fit;
* ``optimal``: the budget itself.

Each run reports its measured peak bytes, advances, best time per gradient
step and overhead against ``"none"``.  Results go to ``sweep.csv``,
``sweep.json`` and ``sweep.png`` (matplotlib, imported only here, with the
Agg backend): peak memory against time overhead, one curve per strategy.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass

__all__ = ["SweepConfig", "SweepRow", "run_sweep", "write_outputs", "format_table", "plot"]

STRATEGIES = ("none", "uniform", "revolve", "bisection", "optimal")
DEFAULT_FRACTIONS = (0.5, 0.25, 0.12, 0.06, 0.03)


@dataclass
class SweepConfig:
    """Options of ``gpuad sweep`` (see ``gpuad sweep --help``)."""

    depth: int = 256
    width: int = 512
    batch: int = 128
    dtype: str = "float32"
    strategies: tuple = ("none", "uniform", "revolve", "optimal")
    fractions: tuple = DEFAULT_FRACTIONS
    repeat: int = 3
    backend: str | None = None
    out: str = os.path.join("runs", "sweep")


@dataclass
class SweepRow:
    """One run: a strategy at a budget (``None`` for ``"none"``)."""

    strategy: str
    budget_fraction: float | None
    budget_bytes: int | None
    setting: str
    peak_bytes: int
    predicted_peak_bytes: int
    tape_peak_bytes: int
    advances: int
    seconds: float
    overhead: float


def _workload(cfg):
    import gpuad

    ns = gpuad.get_backend().namespace
    dt = getattr(ns, cfg.dtype)
    n = cfg.width
    # Near-identity weights keep tanh active over hundreds of layers.
    eye = ns.eye(n, dtype=dt)
    params = [{"w": eye * 0.9 + 0.05 / n, "b": ns.full((n,), 0.01, dtype=dt)} for _ in range(cfg.depth)]
    x = ns.full((cfg.batch, n), 0.5, dtype=dt)
    return x, params


def _step(p, h):
    from gpuad import xp

    return xp.tanh(xp.add(xp.matmul(h, p["w"]), p["b"]))


def _time_run(x, params, repeat, **kw):
    import gpuad
    from gpuad import xp
    from gpuad.checkpointing import checkpoint_sequential, last_report

    fns = [(_step, p) for p in params]

    def loss(x, params):
        return xp.sum(checkpoint_sequential(fns, x, **kw))

    g = gpuad.grad(loss, (0, 1))
    g(x, params)   # warm-up (and planning, cached on the profile)
    best = float("inf")
    for _ in range(max(1, repeat)):
        t0 = time.perf_counter()
        out = g(x, params)
        float(xp.sum(out[0]))   # synchronise: one host read of a scalar
        best = min(best, time.perf_counter() - t0)
    return last_report(), best


def _fastest_fitting(strategy, l, budget, profile):
    """The setting of ``strategy`` with the fewest advances whose predicted peak fits."""
    from gpuad.checkpointing import plan_checkpoints

    if strategy == "uniform":
        options = [{"segments": k} for k in range(1, l + 1)]
    else:   # revolve, bisection: more snapshots, fewer advances
        options = [{"snapshots": s} for s in range(1, l + 1)]
    best = None
    for kw in options:
        rep = plan_checkpoints(l, strategy=strategy, profile=profile, **kw)
        if rep.predicted_peak_bytes <= budget and (best is None or rep.predicted_advances < best[1]):
            best = (kw, rep.predicted_advances)
        if strategy != "uniform" and rep.predicted_peak_bytes > budget:
            break
    return None if best is None else best[0]


def run_sweep(cfg, log=print):
    """Run every strategy at every budget; returns the list of :class:`SweepRow`."""
    import gpuad

    if cfg.backend:
        gpuad.set_backend(cfg.backend)
    x, params = _workload(cfg)
    l = cfg.depth
    rep, t_none = _time_run(x, params, cfg.repeat, strategy="none")
    profile = rep.profile
    base = profile.base_bytes
    rows = [SweepRow("none", None, None, "-", rep.actual_peak_bytes, rep.predicted_peak_bytes,
                     rep.actual_peak_bytes - base, rep.actual_advances, t_none, 1.0)]
    log(f"none: peak {rep.actual_peak_bytes / 2**20:.2f} MiB, {t_none:.4f} s per step")
    stored = rep.actual_peak_bytes - base
    for frac in cfg.fractions:
        budget = base + int(frac * stored)
        for strategy in cfg.strategies:
            if strategy == "none":
                continue
            if strategy == "optimal":
                kw = {"budget_bytes": budget}
            else:
                kw = _fastest_fitting(strategy, l, budget, profile)
                if kw is None:
                    log(f"{strategy} at {frac:g}: no setting fits {budget} bytes; skipped")
                    continue
            try:
                r, t = _time_run(x, params, cfg.repeat, strategy=strategy, profile=profile, **kw)
            except ValueError as e:   # a budget below the smallest feasible one
                log(f"{strategy} at {frac:g}: {e}")
                continue
            setting = ", ".join(f"{k}={v}" for k, v in kw.items() if k != "budget_bytes") or "-"
            rows.append(SweepRow(strategy, frac, budget, setting, r.actual_peak_bytes, r.predicted_peak_bytes,
                                 r.actual_peak_bytes - base, r.actual_advances, t, t / t_none))
            log(f"{strategy} at {frac:g} ({setting}): peak {r.actual_peak_bytes / 2**20:.2f} MiB, "
                f"{r.actual_advances} advances, {t / t_none:.2f}x")
    # NOTE [sweep baseline]: "none" is timed again at the end and the faster
    # of its two timings is the baseline, so that a burst of load on a
    # shared machine during the first run does not skew every ratio.
    _, t_again = _time_run(x, params, cfg.repeat, strategy="none")
    if t_again < t_none:
        t_none = rows[0].seconds = t_again
        for r in rows:
            r.overhead = r.seconds / t_none
    return rows


def format_table(rows):
    """The results as an aligned text table."""
    head = (f"{'strategy':10} {'budget':>7} {'setting':>13} {'peak MiB':>9} {'tape MiB':>9} "
            f"{'advances':>8} {'s/step':>8} {'overhead':>8}")
    lines = [head]
    for r in rows:
        frac = "-" if r.budget_fraction is None else f"{r.budget_fraction:g}"
        lines.append(f"{r.strategy:10} {frac:>7} {r.setting:>13} {r.peak_bytes / 2**20:9.2f} "
                     f"{r.tape_peak_bytes / 2**20:9.2f} {r.advances:8d} {r.seconds:8.4f} {r.overhead:7.2f}x")
    return "\n".join(lines)


def write_outputs(rows, cfg, out):
    """Write ``sweep.csv``, ``sweep.json`` and ``sweep.png`` into ``out``; returns their paths."""
    import csv

    os.makedirs(out, exist_ok=True)
    paths = {k: os.path.join(out, f"sweep.{k}") for k in ("csv", "json", "png")}
    fields = list(SweepRow.__dataclass_fields__)
    with open(paths["csv"], "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        for r in rows:
            w.writerow(asdict(r))
    import gpuad

    meta = {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(cfg).items()}
    meta["backend"] = gpuad.get_backend().name
    with open(paths["json"], "w") as f:
        json.dump({"config": meta, "rows": [asdict(r) for r in rows]}, f, indent=2)
    plot(rows, cfg, paths["png"])
    return paths


def plot(rows, cfg, path):
    """Peak memory (MiB, log scale) against time overhead, one curve per strategy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for strategy in STRATEGIES:
        pts = sorted((r.overhead, r.peak_bytes / 2**20) for r in rows if r.strategy == strategy)
        if not pts:
            continue
        xs, ys = zip(*pts)
        style = "*" if strategy == "none" else "o-"
        ax.plot(xs, ys, style, label=strategy, markersize=10 if strategy == "none" else 5)
    base = next((r.peak_bytes - r.tape_peak_bytes for r in rows), 0) / 2**20
    ax.axhline(base, color="grey", lw=0.8, ls=":", label="input + parameters")
    ax.set_yscale("log")
    ax.set_xlabel('time per gradient step / time of "none"')
    ax.set_ylabel("peak bytes held (MiB, log)")
    ax.set_title(f"{cfg.depth}-layer tanh MLP, width {cfg.width}, batch {cfg.batch}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
