"""Targets of issue 5, markdown tables, and the files ``python -m bench`` writes."""

from __future__ import annotations

import json

from .common import HERE, machine_text

RESULTS_DIR = HERE / "results"
RESULTS_MD = HERE / "RESULTS.md"
COMMAND = "env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python -m bench --record"


def _get(res, *keys):
    for k in keys:
        if res is None or k not in res:
            return None
        res = res[k]
    return res


def targets(w):
    """One row per target of the issue: ``(name, target, median value, min-based value, verdict)``.

    The verdict uses the median (of per-repetition paired ratios where the
    target is a ratio); ``(min passes)`` marks a FAIL that the best
    repetitions would pass, which on a loaded machine points to noise.
    """
    rows = []

    def add(name, target, limit, med, at_min, extra_ok=True, note=""):
        if med is None:
            rows.append({"name": name, "target": target, "median": None, "at_min": None,
                         "verdict": "not run", "note": note})
            return
        ok = med <= limit and extra_ok
        verdict = "PASS" if ok else "FAIL"
        if not ok and extra_ok and at_min is not None and at_min <= limit:
            verdict += " (min passes)"
        rows.append({"name": name, "target": target, "median": med, "at_min": at_min,
                     "verdict": verdict, "note": note})

    r = _get(w, "mlp", "results", "gpuad", "vs_numpy")
    add("MLP step, × hand-written NumPy", "≤ ×1.05", 1.05, _get(r, "median"), _get(r, "of_min"))
    r = _get(w, "tanh", "results", "gpuad", "vs_numpy")
    add("100-layer tanh step, × hand-written NumPy", "≤ ×1.05", 1.05, _get(r, "median"), _get(r, "of_min"))
    r = _get(w, "overhead", "results", "gpuad_grad", "us_per_op")
    add("per-op overhead, fwd+bwd (µs/op)", "≤ 4 µs", 4.0, _get(r, "median"), _get(r, "min"))
    r = _get(w, "hvp", "results", "gpuad", "hvp_over_grad")
    add("HVP, × gpuad's own gradient", "≤ ×2.0", 2.0, _get(r, "median"), _get(r, "of_min"))
    g, n = _get(w, "tanh", "results", "gpuad", "peak_extra_MiB"), _get(w, "tanh", "results", "numpy", "peak_extra_MiB")
    if g is None or n is None:
        add("peak extra memory of the tanh step, × hand-written NumPy", "≤ ×1.0", 1.0, None, None)
    else:
        add("peak extra memory of the tanh step, × hand-written NumPy", "≤ ×1.0", 1.0, g / n, g / n,
            note=f"{g:.1f} MiB vs {n:.1f} MiB")
    r = _get(w, "import", "results", "gpuad")
    heavy = _get(r, "heavy_modules_loaded") or []
    add("`import gpuad`, × `import numpy`", "≤ ×1.5, no cupy/scipy/matplotlib", 1.5,
        _get(r, "vs_numpy", "median"), _get(r, "vs_numpy", "of_min"), extra_ok=not heavy,
        note=f"loaded {heavy}" if heavy else "")
    # GPU rows (issue 6) only when the gpu workload ran: a CPU-only run's table stays as it was.
    if _get(w, "gpu", "steps") is not None:
        for step, name in (("mlp", "MLP step"), ("tanh", "100-layer tanh step")):
            r = _get(w, "gpu", "steps", step, "results", "gpuad")
            ok = _get(r, "agrees") is not False
            add(f"GPU {name}, GPU time × hand-written CuPy", "≤ ×1.05", 1.05,
                _get(r, "vs_handwritten", "gpu", "median"), _get(r, "vs_handwritten", "gpu", "of_min"),
                extra_ok=ok, note="" if ok else "gradients disagree")
    return rows


def _f(v, fmt="{:.2f}"):
    return "—" if v is None else fmt.format(v)


def _agrees(r):
    a = r.get("agrees")
    return "" if a is None else ("yes" if a else "**NO**")


def _timing_text(res):
    """One sentence on how the step table was timed (fresh-process rounds or one process)."""
    t = res.get("timing") or {}
    n = t.get("rounds", 0)
    if not n:
        return "Timing: all cases interleaved in one process; × NumPy is the median per-repetition ratio."
    return (f"Timing (`bench/rounds.py`): {n} fresh processes per group of cases (hand-written NumPy with "
            "gpuad; hand-written NumPy with each peer on its own), the group's cases interleaved within a "
            "process; × NumPy is the median over the processes of each one's median per-repetition ratio, "
            "and the range column gives the lowest and highest of those.")


def _step_table(res, memory=False):
    rounds = bool((res.get("timing") or {}).get("rounds"))
    head = "| case | ms median | min | max | × NumPy (median) | × NumPy (of min) |"
    rule = "|---|---:|---:|---:|---:|---:|"
    if rounds:
        head, rule = head + " × NumPy range over processes |", rule + "---:|"
    if memory:
        head, rule = head + " peak extra MiB (tracemalloc) | peak extra MiB (RSS) |", rule + "---:|---:|"
    lines = [head + " CPU/wall | grads agree |", rule + "---:|---|"]
    for k, r in res["results"].items():
        ms, v = r["ms"], r["vs_numpy"]
        line = (f"| {r['label']} (`{k}`) | {ms['median']:.2f} | {ms['min']:.2f} | {ms['max']:.2f} | "
                f"×{v['median']:.3f} | ×{v['of_min']:.3f} |")
        if rounds:
            line += f" {v['min']:.3f}–{v['max']:.3f} |"
        if memory:
            line += f" {_f(r.get('peak_extra_MiB'), '{:.1f}')} | {_f(r.get('peak_extra_rss_MiB'), '{:.1f}')} |"
        lines.append(line + f" {_f(r.get('cpu_per_wall'))} | {_agrees(r)} |")
    return lines


def _gpu_section(g):
    head = "### 6. GPU: gpuad on CuPy against hand-written CuPy, float32, CUDA-event timing"
    if "skipped" in g:
        return [head, "", f"skipped: {g['skipped']}", ""]
    d = g["device"]
    dev = d.get("name", "unknown device")
    if d.get("compute_capability"):
        dev += f" (compute capability {d['compute_capability']}, {d.get('memory_GiB', '?')} GiB)"
    versions = (f"CuPy {d.get('cupy', '?')}, CUDA runtime {d.get('cuda_runtime', '?')}, "
                f"driver {d.get('cuda_driver', '?')}")
    env = ", ".join(f"{k}={v}" for k, v in (d.get("env") or {}).items())
    md = [head, "", f"Device: {dev}; {versions}" + (f"; {env}" if env else "") + ".", ""]
    titles = {"mlp": lambda wl: f"MLP step {'-'.join(map(str, wl['sizes']))}, batch {wl['batch']}",
              "tanh": lambda wl: f"{wl['layers']}-layer tanh net, width {wl['width']}, batch {wl['batch']}",
              "overhead": lambda wl: f"per-op overhead, {wl['n_ops']}-op chain on shape {tuple(wl['shape'])}"}
    for step, s in g["steps"].items():
        if "error" in s:
            md += [f"#### {step}", "", f"**error:** {s['error']}", ""]
            continue
        u = "µs/op" if s["unit"].startswith("µs") else "ms"
        md += [f"#### {titles[step](s['workload'])}", "",
               f"| case | GPU {u} median | min | max | CPU {u} median | × hand-written GPU (median) "
               "| × (of min) | × hand-written CPU (median) | grads agree |",
               "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
        for k, r in s["results"].items():
            t, c, v = r["gpu"], r["cpu"], r["vs_handwritten"]
            md.append(f"| {r['label']} (`{k}`) | {t['median']:.3f} | {t['min']:.3f} | {t['max']:.3f} | "
                      f"{c['median']:.3f} | ×{v['gpu']['median']:.3f} | ×{v['gpu']['of_min']:.3f} | "
                      f"×{v['cpu']['median']:.3f} | {_agrees(r)} |")
        md.append("")
    md += [f"{g['n_repeat']} timed calls per case after {g['n_warmup']} warm-up calls, in {g['rounds']} "
           f"interleaved rounds, timed by `{g['timer']}`: GPU time between CUDA events recorded before and "
           "after each call on the current stream; CPU time of the call on the host. Ratios are of the "
           "medians (and of the minima).", ""]
    return md


def markdown(out):
    w = out["workloads"]
    md = []
    if "mlp" in w:
        wl = w["mlp"]["workload"]
        md += [f"### 1. MLP step {'-'.join(map(str, wl['sizes']))}, batch {wl['batch']}, float32",
               "", *_step_table(w["mlp"]), "", f"Loss: {wl['loss']}. {_timing_text(w['mlp'])}", ""]
    if "tanh" in w:
        wl = w["tanh"]["workload"]
        md += [f"### 2. {wl['layers']}-layer tanh net, width {wl['width']}, batch {wl['batch']}, float32", "",
               *_step_table(w["tanh"], memory=True), "",
               f"{_timing_text(w['tanh'])} "
               f"Gradients alone: {wl['gradients_MiB']:.1f} MiB; saved activations: {wl['activations_MiB']:.1f} MiB. "
               "Peak extra memory: tracemalloc peak of one step above the level before it (the returned "
               "gradients included; torch and jax allocate outside tracemalloc's view: —), and as a "
               "cross-check the resident-set high-water mark of one step above the resident set before it, "
               "each case in a fresh process (`bench/rss.py`). The target uses tracemalloc. The hand-written "
               "NumPy step keeps its list of activations until the step ends.", ""]
    if "overhead" in w:
        wl = w["overhead"]["workload"]
        md += [f"### 3. Per-op overhead, {wl['n_ops']}-op chain on shape {tuple(wl['shape'])} {wl['dtype']}", "",
               "| case | µs/op median | min | max | × NumPy (median) | CPU/wall | grads agree |",
               "|---|---:|---:|---:|---:|---:|---|"]
        for k, r in w["overhead"]["results"].items():
            u = r["us_per_op"]
            md.append(f"| {r['label']} (`{k}`) | {u['median']:.2f} | {u['min']:.2f} | {u['max']:.2f} | "
                      f"×{r['vs_numpy']['median']:.1f} | {_f(r.get('cpu_per_wall'))} | {_agrees(r)} |")
        md += ["", "× NumPy: forwards against the raw NumPy forward; gradients against the hand-written "
               "NumPy tape.", ""]
    if "hvp" in w:
        wl = w["hvp"]["workload"]
        md += [f"### 4. HVP of {wl['f']}, A {wl['n']}×{wl['n']}, float32", "",
               "| library | grad ms (median) | HVP ms (median) | HVP / grad (median) | of min | range "
               "| CPU/wall | agrees |",
               "|---|---:|---:|---:|---:|---:|---:|---|"]
        for k, r in w["hvp"]["results"].items():
            q = r["hvp_over_grad"]
            md.append(f"| {r['label']} (`{k}`) | {r['grad_ms']['median']:.3f} | {r['hvp_ms']['median']:.3f} | "
                      f"×{q['median']:.2f} | ×{q['of_min']:.2f} | {q['min']:.2f}–{q['max']:.2f} | "
                      f"{_f(r.get('cpu_per_wall'))} | {_agrees(r)} |")
        md.append("")
    if "import" in w:
        md += ["### 5. Import time (fresh interpreter, the import statement alone)", "",
               "| import | ms median | min | max | × numpy (median) | heavy modules loaded |",
               "|---|---:|---:|---:|---:|---|"]
        for k, r in w["import"]["results"].items():
            ms = r["ms"]
            md.append(f"| `{r['label']}` (`{k}`) | {ms['median']:.1f} | {ms['min']:.1f} | {ms['max']:.1f} | "
                      f"×{r['vs_numpy']['median']:.2f} | {', '.join(r['heavy_modules_loaded']) or 'none'} |")
        md.append("")
    if "gpu" in w:
        md += _gpu_section(w["gpu"])
    gpu_ran = _get(w, "gpu", "steps") is not None
    md += ["### Targets (issue 5)" + (", GPU (issue 6)" if gpu_ran else ""), "",
           "| target | goal | median | at min | verdict |", "|---|---|---:|---:|---|"]
    for t in out["targets"]:
        note = f" ({t['note']})" if t["note"] else ""
        md.append(f"| {t['name']}{note} | {t['target']} | {_f(t['median'], '{:.3f}')} | "
                  f"{_f(t['at_min'], '{:.3f}')} | {t['verdict']} |")
    if out.get("quick"):
        md += ["", "**--quick run: small sizes and few repetitions; the verdicts above are not meaningful.**"]
    md += ["", f"{out['reps']} timed repetitions after {out['warmup']} warm-up runs, cases interleaved; "
           "ratios are medians of per-repetition ratios (\"of min\": ratio of the minima). CPU/wall: process "
           "CPU time over wall time while a case ran; above 1 it used more than one thread despite the pinning."]
    q = out.get("quiet", {})
    if q:
        md.append("Machine state before each workload: " + "; ".join(
            f"{k}: load {v['load_average']}, calibration spread ×{v['calibration_spread']}"
            f"{'' if v['quiet'] else ' (not quiet after ' + str(v['waited_s']) + ' s)'}" for k, v in q.items()) + ".")
    return "\n".join(md)


def write(out, outdir=None, record=False):
    outdir = RESULTS_DIR if outdir is None else outdir
    outdir.mkdir(parents=True, exist_ok=True)
    stamp = out["timestamp"].replace(":", "").replace("-", "").replace("+0000", "Z")
    body = markdown(out)
    md = f"# gpuad benchmarks, {out['timestamp']}\n\n{body}\n\n## Machine\n\n{machine_text(out['machine'])}\n"
    paths = []
    for name in (f"bench-{stamp}", "bench-latest"):
        (outdir / f"{name}.json").write_text(json.dumps(out, indent=2) + "\n")
        (outdir / f"{name}.md").write_text(md)
        paths += [outdir / f"{name}.json", outdir / f"{name}.md"]
    if record:
        # A hand-written "## Notes" section (analysis, profiles) survives re-recording.
        old = RESULTS_MD.read_text() if RESULTS_MD.exists() else ""
        notes = old[old.index("\n## Notes"):] if "\n## Notes" in old else ""
        RESULTS_MD.write_text(
            "# Benchmark results\n\n"
            "Latest full run of `python -m bench` (issue 5). Regenerate from the repository root with\n\n"
            f"```\n{COMMAND}\n```\n\n"
            "`OPENBLAS_CORETYPE` and `OPENBLAS_L2_SIZE` are unset for that one command because they change "
            "which kernels NumPy's OpenBLAS picks, and NumPy is the baseline. `python -m bench` pins "
            "OMP/OpenBLAS/MKL/NumExpr, torch and XLA to one thread. Without `--record` it writes only "
            "`bench/results/` (gitignored). Peers (torch, jax, HIPS autograd, mygrad) run when installed.\n\n"
            f"## Results ({out['timestamp']})\n\n{body}\n\n## Machine\n\n{machine_text(out['machine'])}\n"
            + notes
        )
        paths.append(RESULTS_MD)
    return paths
