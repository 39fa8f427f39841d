"""``python -m bench.gpt_checkpoint --quick``: every ``--checkpoint`` mode of the GPT, measured and exact."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import gpt_checkpoint  # noqa: E402

LABELS = ["none", "uniform", "uniform --segments 4", "revolve", "block"]


def test_quick_run_measures_every_mode(tmp_path, capsys):
    t0 = time.monotonic()
    res = gpt_checkpoint.main(["--quick", "--out", str(tmp_path)])
    elapsed = time.monotonic() - t0
    assert elapsed < 20, f"the quick run took {elapsed:.1f} s"

    assert {"timestamp", "command", "quick", "reps", "warmup", "config", "machine", "quiet", "budgets_bytes",
            "modes"} <= set(res)
    assert res["quick"] is True and res["reps"] == 3
    assert res["config"]["layers"] == gpt_checkpoint.QUICK_MODEL["layers"]
    modes = res["modes"]
    budgets = res["budgets_bytes"]
    assert len(budgets) == 2 and budgets[0] > budgets[1] > 0
    assert [r["label"] for r in modes] == LABELS + [f"optimal --budget-bytes {b}" for b in budgets]
    none = modes[0]
    for r in modes:
        assert "error" not in r, r
        assert r["max_grad_difference"] == 0.0, r["label"]
        assert r["loss_difference"] == 0.0, r["label"]
        st = r["step_seconds"]
        assert st["n"] == res["reps"] and 0 < st["min"] <= st["median"] <= st["max"]
        q = r["ratio_to_none"]
        assert q["min"] <= q["median"] <= q["max"]
        assert r["memory_line"].startswith("memory: ")
        if r is not none:
            assert r["peak_bytes"] < none["peak_bytes"], r["label"]
            assert 0 < r["saved_fraction"] < 1
            assert r["run_measurement"]["max_grad_difference"] == 0.0
            assert r["recomputed_block_forwards"] > 0
    assert none["ratio_to_none"]["median"] == 1.0 and none["recomputed_block_forwards"] == 0
    for r, b in zip(modes[-2:], budgets):    # the budget reached the strategy
        assert r["run_measurement"]["schedule"]["strategy"] == "optimal"
        assert r["run_measurement"]["schedule"]["budget_bytes"] == b

    on_disk = json.loads((tmp_path / "gpt_checkpoint-latest.json").read_text())
    assert [r["label"] for r in on_disk["modes"]] == [r["label"] for r in modes]
    table = capsys.readouterr().out
    assert "| `--checkpoint` | peak tape |" in table
    assert all(f"| `{r['label']}` |" in table for r in modes)
