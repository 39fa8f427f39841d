"""``gpuad sweep``: a tiny sweep writes its table, CSV, JSON and plot; bad options exit 2."""

import csv
import json

import pytest

from gpuad import cli


def test_tiny_sweep_writes_everything(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    out = tmp_path / "sweep"
    rc = cli.main(["sweep", "--backend", "numpy", "--depth", "8", "--width", "8", "--batch", "2", "--repeat", "1",
                   "--strategies", "none,uniform,revolve,bisection,optimal", "--budgets", "0.5,0.25",
                   "--out", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "strategy" in text and "overhead" in text and "wrote" in text
    rows = list(csv.DictReader(open(out / "sweep.csv")))
    data = json.load(open(out / "sweep.json"))
    assert len(rows) == len(data["rows"]) >= 3
    assert data["config"]["depth"] == 8 and data["config"]["backend"] == "numpy"
    assert (out / "sweep.png").stat().st_size > 1000
    by = {(r["strategy"], r["budget_fraction"]): r for r in data["rows"]}
    none = by[("none", None)]
    for (strategy, frac), r in by.items():
        if strategy == "none":
            continue
        assert r["peak_bytes"] <= r["budget_bytes"]
        assert r["peak_bytes"] == r["predicted_peak_bytes"]
        assert r["peak_bytes"] < none["peak_bytes"]
    for frac in (0.5, 0.25):   # optimal never advances more than the classics at its budget
        opt = by.get(("optimal", frac))
        for strategy in ("uniform", "revolve", "bisection"):
            other = by.get((strategy, frac))
            if opt and other:
                assert opt["advances"] <= other["advances"]


@pytest.mark.parametrize("args,msg", [
    (["--strategies", "none,fast"], "--strategies: unknown fast"),
    (["--budgets", "half"], "--budgets must be comma-separated numbers"),
    (["--budgets", "0,-1"], "--budgets must be positive"),
    (["--depth", "0"], "--depth must be a positive integer"),
    (["--dtype", "int8"], "--dtype must be float32 or float64"),
])
def test_bad_options(args, msg, capsys, tmp_path):
    assert cli.main(["sweep", "--out", str(tmp_path)] + args) == 2
    assert msg in capsys.readouterr().err
