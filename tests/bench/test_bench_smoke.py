"""The benchmark suite (``bench/``): a smoke run, and honest hand-written baselines.

The hand-written NumPy forward and backward passes are the floor gpuad is
measured against (issue 5), so they must compute the same gradients as gpuad
and as central finite differences.  No peer library (torch, jax, ...) is
needed: the smoke run passes ``--peers none``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import gpuad  # noqa: E402
from bench import hvp, mlp, report, tanhnet  # noqa: E402


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def test_quick_overhead_run_writes_json(tmp_path):
    t0 = time.monotonic()
    res = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--only", "overhead", "--peers", "none", "--out", str(tmp_path)],
        cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=60,
    )
    elapsed = time.monotonic() - t0
    assert res.returncode == 0, res.stderr[-2000:]
    assert elapsed < 20, f"the quick overhead run took {elapsed:.1f} s"
    out = json.loads((tmp_path / "bench-latest.json").read_text())
    assert {"timestamp", "command", "quick", "reps", "warmup", "machine", "quiet", "workloads", "targets"} <= set(out)
    assert out["quick"] is True
    m = out["machine"]
    assert {"cpu_model", "load_average", "threads", "blas", "openblas_tuning", "commit"} <= set(m)
    assert m["threads"]["OPENBLAS_NUM_THREADS"] == "1"
    rows = out["workloads"]["overhead"]["results"]
    assert {"numpy_forward", "gpuad_forward", "gpuad_grad", "numpy_tape_grad"} <= set(rows)
    g = rows["gpuad_grad"]
    assert g["agrees"] is True
    assert {"median", "min", "max", "n"} <= set(g["us_per_op"])
    assert g["us_per_op"]["min"] <= g["us_per_op"]["median"] <= g["us_per_op"]["max"]
    names = [t["name"] for t in out["targets"]]
    assert any("per-op" in n for n in names)
    per_op = next(t for t in out["targets"] if "per-op" in t["name"])
    assert per_op["verdict"].split()[0] in ("PASS", "FAIL")
    assert (tmp_path / "bench-latest.md").read_text().startswith("# gpuad benchmarks")


def _fd_check(loss, params, grads, rng, eps=1e-6):
    """Central difference along a random direction against <grads, direction> (float64)."""
    d = [rng.standard_normal(p.shape) for p in params]
    lp = loss([p + eps * u for p, u in zip(params, d)])
    lm = loss([p - eps * u for p, u in zip(params, d)])
    want = sum(float(np.sum(g * u)) for g, u in zip(grads, d))
    assert (lp - lm) / (2 * eps) == pytest.approx(want, rel=1e-6, abs=1e-9)


def _assert_same(got, want):
    assert len(got) == len(want)
    for a, b in zip(got, want):
        np.testing.assert_allclose(np.asarray(a), b, rtol=1e-9, atol=1e-12)


def test_handwritten_mlp_backward_matches_gpuad():
    params, x, y = mlp.setup((20, 16, 12, 5), batch=7)
    params = [p.astype(np.float64) for p in params]
    x = x.astype(np.float64)
    loss, grads = mlp.numpy_step(params, x, y)
    value, g = gpuad.value_and_grad(mlp.gpuad_loss)(params, x, y)
    assert float(value) == pytest.approx(float(loss), rel=1e-12)
    _assert_same(g, grads)
    _fd_check(lambda ps: mlp.numpy_step(ps, x, y)[0], params, grads, np.random.default_rng(1))


def test_handwritten_tanh_backward_matches_gpuad():
    params, x = tanhnet.setup(layers=6, width=9, batch=4)
    params = [p.astype(np.float64) for p in params]
    x = x.astype(np.float64)
    loss, grads = tanhnet.numpy_step(params, x)
    value, g = gpuad.value_and_grad(tanhnet.gpuad_loss)(params, x)
    assert float(value) == pytest.approx(float(loss), rel=1e-12)
    _assert_same(g, grads)
    _fd_check(lambda ps: tanhnet.numpy_step(ps, x)[0], params, grads, np.random.default_rng(2))


def test_handwritten_hvp_matches_gpuad():
    A, x, v = (a.astype(np.float64) for a in hvp.setup(8))
    from gpuad import xp

    def f(x):
        return xp.sum(xp.tanh(xp.matmul(A, x)) ** 2)

    np.testing.assert_allclose(np.asarray(gpuad.grad(f)(x)), hvp.numpy_grad(A, x), rtol=1e-10)
    np.testing.assert_allclose(np.asarray(gpuad.hvp(f, (x,), (v,))), hvp.numpy_hvp(A, x, v), rtol=1e-9)


def test_tanh_peak_memory_measurement_counts_numpy_buffers():
    params, x = tanhnet.setup(layers=4, width=64, batch=32)
    grads_mib = sum(p.nbytes for p in params) / tanhnet.MiB
    peak = tanhnet.peak_extra_bytes(lambda: tanhnet.numpy_step(params, x)) / tanhnet.MiB
    assert peak >= grads_mib  # the returned gradients are inside the peak


def test_target_verdicts():
    def step(med, of_min):
        return {"results": {"gpuad": {"vs_numpy": {"median": med, "of_min": of_min}, "peak_extra_MiB": 90.0},
                            "numpy": {"peak_extra_MiB": 100.0}}}

    w = {"mlp": step(1.04, 1.0), "tanh": step(1.2, 1.01)}
    rows = {t["name"].split(",")[0]: t for t in report.targets(w)}
    assert rows["MLP step"]["verdict"] == "PASS"
    assert rows["100-layer tanh step"]["verdict"] == "FAIL (min passes)"
    assert rows["peak extra memory of the tanh step"]["verdict"] == "PASS"
    assert rows["HVP"]["verdict"] == "not run"


# --- the GPU workload (bench/gpu.py), run here on NumPy with a perf_counter stand-in -----------
class _FakeResult:
    """What ``cupyx.profiler.benchmark`` returns: CPU times (n,) and GPU times (devices, n), seconds."""

    def __init__(self, cpu_times, gpu_times):
        self.cpu_times = np.asarray(cpu_times)
        self.gpu_times = np.asarray(gpu_times)[None, :]


def fake_benchmark(func, args=(), kwargs=None, n_repeat=10000, *, name=None, n_warmup=10, max_duration=None,
                   devices=None):
    """``cupyx.profiler.benchmark``'s signature and result, timed with ``perf_counter`` (GPU time = CPU time)."""
    fake_benchmark.calls.append((name, n_repeat, n_warmup))
    kwargs = kwargs or {}
    for _ in range(n_warmup):
        func(*args, **kwargs)
    ts = []
    for _ in range(n_repeat):
        t0 = time.perf_counter()
        func(*args, **kwargs)
        ts.append(time.perf_counter() - t0)
    return _FakeResult(ts, ts)


GPU_TINY = {"mlp": {"sizes": (12, 16, 8, 5), "batch": 6}, "tanh": {"layers": 4, "width": 8, "batch": 3},
            "overhead": {"n_ops": 40, "size": 4}, "n_repeat": 4, "n_warmup": 1, "rounds": 2}


def _gpu_run(**kw):
    from bench import gpu

    fake_benchmark.calls = []
    return gpu.run(GPU_TINY, {}, 1, 1, xp=np, benchmark=fake_benchmark, device={"name": "fake"}, **kw)


def test_gpu_workload_on_numpy_with_a_fake_timer():
    from bench import gpu

    res = _gpu_run()
    assert res["benchmark"] == "gpu" and "skipped" not in res
    assert res["device"] == {"name": "fake"} and res["timer"].endswith("fake_benchmark")
    assert (res["n_repeat"], res["n_warmup"], res["rounds"]) == (4, 1, 2)
    # 3 steps x 2 cases x 2 rounds, each round 2 calls; warm-up in full only in the first round.
    assert len(fake_benchmark.calls) == 12
    assert {c[1] for c in fake_benchmark.calls} == {2}
    assert [c[2] for c in fake_benchmark.calls[:2]] == [1, 1]
    assert set(res["steps"]) == set(gpu.STEPS)
    for step, s in res["steps"].items():
        assert "error" not in s, s
        assert set(s["results"]) == {"handwritten", "gpuad"}
        g = s["results"]["gpuad"]
        assert g["agrees"] is True, step
        assert "agrees" not in s["results"]["handwritten"]
        for r in s["results"].values():
            for what in ("gpu", "cpu"):
                t = r[what]
                assert t["n"] == 4 and 0 < t["min"] <= t["median"] <= t["max"]
                assert {"median", "of_min"} == set(r["vs_handwritten"][what])
        assert s["results"]["handwritten"]["vs_handwritten"]["gpu"]["median"] == pytest.approx(1.0)
    assert res["steps"]["overhead"]["unit"] == "µs per op"
    # The report: a GPU section, and target rows for the MLP and tanh GPU times.
    out = {"workloads": {"gpu": res}, "reps": 1, "warmup": 1, "quick": True}
    out["targets"] = report.targets(out["workloads"])
    gpu_rows = [t for t in out["targets"] if t["name"].startswith("GPU ")]
    assert len(gpu_rows) == 2 and all(t["verdict"].split()[0] in ("PASS", "FAIL") for t in gpu_rows)
    md = report.markdown(out)
    assert "### 6. GPU" in md and "Device: fake" in md and "hand-written numpy" in md
    assert md.count("| gpuad.") == 3 and "**NO**" not in md
    json.dumps(out)  # JSON-serialisable as written by bench/report.write


def test_gpu_workload_really_compares_the_gradients(monkeypatch):
    """A wrong hand-written gradient is caught (agreement is a real comparison)."""
    real = mlp.numpy_step

    def off(params, x, y, np=np):
        loss, grads = real(params, x, y, np=np)
        return loss, [g * 1.01 for g in grads]

    monkeypatch.setattr(mlp, "numpy_step", off)
    res = _gpu_run()
    assert res["steps"]["mlp"]["results"]["gpuad"]["agrees"] is False
    assert res["steps"]["tanh"]["results"]["gpuad"]["agrees"] is True
    rows = {t["name"]: t for t in report.targets({"gpu": res})}
    assert rows["GPU MLP step, GPU time × hand-written CuPy"]["verdict"] == "FAIL"
    assert "**NO**" in report.markdown({"workloads": {"gpu": res}, "targets": [], "reps": 1, "warmup": 1})


def test_gpu_workload_records_a_broken_step(monkeypatch):
    def boom(*a, **k):
        raise RuntimeError("no\nkernel")

    monkeypatch.setattr(tanhnet, "numpy_step", boom)
    res = _gpu_run()
    assert res["steps"]["tanh"] == {"error": "RuntimeError: no kernel"}
    assert res["steps"]["mlp"]["results"]["gpuad"]["agrees"] is True
    md = report.markdown({"workloads": {"gpu": res}, "targets": report.targets({"gpu": res}), "reps": 1,
                          "warmup": 1})
    assert "**error:** RuntimeError: no kernel" in md


def test_gpu_workload_skips_with_the_reason(monkeypatch):
    from bench import gpu
    from gpuad.backends import cupy as cupy_backend

    monkeypatch.setattr(cupy_backend, "_probe_result", (False, "no usable CUDA device: test"))
    assert gpu.unavailable() == "no usable CUDA device: test"
    assert gpu.run(gpu.QUICK, {}, 3, 1) == {"benchmark": "gpu", "skipped": "no usable CUDA device: test"}
    assert report.targets({"gpu": gpu.skipped("x")}) == report.targets({})
    md = report.markdown({"workloads": {"gpu": gpu.skipped("why")}, "targets": [], "reps": 1, "warmup": 1})
    assert "skipped: why" in md


def test_quick_gpu_run_without_cupy_is_skipped_not_failed(tmp_path):
    from gpuad.backends import cupy as cupy_backend

    ok, why = cupy_backend.probe()
    if ok:
        pytest.skip("CuPy is usable here: the gpu workload runs instead")
    res = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--only", "gpu", "--peers", "none", "--out", str(tmp_path)],
        cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=60,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert f"gpu: skipped: {why}" in res.stderr
    out = json.loads((tmp_path / "bench-latest.json").read_text())
    assert out["workloads"]["gpu"]["skipped"] == why
    assert out["quiet"] == {}  # no waiting for a quiet machine for a skipped workload
    assert f"skipped: {why}" in (tmp_path / "bench-latest.md").read_text()
