"""bench.rounds: grouping of cases and timing in fresh processes."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench import rounds, tanhnet  # noqa: E402
from bench.report import _step_table, _timing_text  # noqa: E402


def test_peer_of_and_groups():
    assert rounds.peer_of("numpy") is None and rounds.peer_of("gpuad") is None
    assert rounds.peer_of("jax_jit") == "jax" and rounds.peer_of("mygrad") == "mygrad"
    cases = ["numpy", "gpuad", "torch", "jax", "jax_jit", "autograd"]
    assert rounds.groups_for(cases) == [("numpy", "gpuad"), ("numpy", "torch"), ("numpy", "jax", "jax_jit"),
                                        ("numpy", "autograd")]


def test_measure_in_fresh_processes_pairs_each_ratio_within_its_process():
    cfg = dict(tanhnet.QUICK)
    out = rounds.measure("tanh", cfg, ["numpy", "gpuad"], reps=3, warmup=1, rounds=2, timeout=120)
    g, n = out["gpuad"], out["numpy"]
    assert len(g["times"]) == len(n["times"]) == 6  # 3 repetitions x 2 processes
    v = g["vs_numpy"]
    assert len(v["rounds"]) == 2 and v["min"] <= v["median"] <= v["max"]
    assert v["rounds"] != [1.0, 1.0]  # a real ratio of two different steps, not the baseline against itself
    assert n["vs_numpy"]["rounds"] == [1.0, 1.0]
    assert v["of_min"] == pytest.approx(min(g["times"]) / min(n["times"]))
    assert g["cpu_per_wall"] is not None


def test_measure_rejects_zero_rounds():
    with pytest.raises(ValueError, match="rounds must be >= 1"):
        rounds.measure("tanh", dict(tanhnet.QUICK), ["numpy", "gpuad"], 3, 1, 0)


def test_run_with_rounds_reports_the_method_and_range():
    res = tanhnet.run(dict(tanhnet.QUICK), {}, 3, 1, memory=False, rounds=2)
    assert res["timing"]["rounds"] == 2
    assert res["results"]["gpuad"]["agrees"] is True
    assert "2 fresh processes per group" in _timing_text(res)
    table = _step_table(res)
    assert "range over processes" in table[0]
    v = res["results"]["gpuad"]["vs_numpy"]
    assert f"{v['min']:.3f}–{v['max']:.3f}" in next(line for line in table if "`gpuad`" in line)
