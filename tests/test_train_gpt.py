"""``gpuad train --model gpt``: the model, its checkpointing, loss scaling and the job end to end."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import gpuad
from gpuad import random
from gpuad.gpt import GPT, GPTConfig, available_strategies, sample

ROOT = Path(__file__).resolve().parent.parent
TINY = GPTConfig(vocab_size=11, context=8, d_model=8, n_layers=4, n_heads=2)


def _ids(backend, shape, seed=0, vocab=11):
    return backend.asarray(np.random.default_rng(seed).integers(0, vocab, shape), dtype="int64")


def _leaves_np(backend, tree):
    return [backend.to_numpy(x) for x in gpuad.tree_leaves(tree)]


# --- the model ---------------------------------------------------------------------------
def test_shapes_and_causality(backend):
    model = GPT(TINY)
    ids = _ids(backend, (3, 8))
    params = model.init(random.key(0, like=ids))
    logits = model.apply(params, ids)
    assert tuple(logits.shape) == (3, 8, 11)
    # Changing the last token leaves the logits of every earlier position unchanged.
    other = backend.to_numpy(ids).copy()
    other[:, -1] = (other[:, -1] + 1) % 11
    logits2 = model.apply(params, backend.asarray(other, dtype="int64"))
    a, b = backend.to_numpy(logits), backend.to_numpy(logits2)
    np.testing.assert_array_equal(a[:, :-1], b[:, :-1])
    assert not np.array_equal(a[:, -1], b[:, -1])
    with pytest.raises(ValueError, match="longer than the context"):
        model.apply(params, _ids(backend, (1, 9)))


def test_config_is_checked():
    with pytest.raises(ValueError, match="not divisible"):
        GPTConfig(vocab_size=10, d_model=10, n_heads=4)
    with pytest.raises(ValueError, match="n_layers must be a positive int"):
        GPTConfig(vocab_size=10, n_layers=0)


def test_checkpoint_modes_give_the_same_gradients_with_less_tape(cpu_backend):
    backend = cpu_backend
    model = GPT(TINY)
    ids, tgt = _ids(backend, (2, 8), 1), _ids(backend, (2, 8), 2)
    params = model.init(random.key(3, like=ids), "float64")
    results = {}
    for mode in ("none", "block", "uniform", "revolve"):
        with gpuad.memory.track() as rep:
            v, g = gpuad.value_and_grad(lambda p, mode=mode: model.loss(p, ids, tgt, checkpoint=mode))(params)
        results[mode] = (float(v), _leaves_np(backend, g), rep.peak_bytes)
    v0, g0, peak0 = results["none"]
    for mode, (v, g, peak) in results.items():
        assert v == pytest.approx(v0, rel=1e-12), mode
        for a, b in zip(g, g0):
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12, err_msg=mode)
        if mode != "none":
            assert peak < peak0, (mode, peak, peak0)


def test_unknown_strategy_is_a_clear_error(backend):
    model = GPT(TINY)
    ids = _ids(backend, (1, 4))
    params = model.init(random.key(0, like=ids))
    with pytest.raises(ValueError, match="'no-such' is not available"):
        model.apply(params, ids, checkpoint="no-such")
    assert {"none", "uniform", "revolve"} <= set(available_strategies())


def test_sampling_is_reproducible(backend):
    model = GPT(TINY)
    prompt = _ids(backend, (3,), 4)
    params = model.init(random.key(5, like=prompt))
    key = random.key(7, like=prompt)
    a = backend.to_numpy(sample(model, params, prompt, 12, key, temperature=0.8))
    b = backend.to_numpy(sample(model, params, prompt, 12, key, temperature=0.8))
    g = backend.to_numpy(sample(model, params, prompt, 12, key, temperature=0.0))
    assert a.shape == (15,) and g.shape == (15,)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a[:3], backend.to_numpy(prompt))
    assert ((a >= 0) & (a < 11)).all()


# --- data and loss scaling -------------------------------------------------------------------
def test_corpus_is_pydoc_topics_in_sorted_order():
    from pydoc_data.topics import topics

    from gpuad.training_gpt import load_corpus

    c = load_corpus("numpy", val_fraction=0.1)
    text = "".join(topics[k] for k in sorted(topics))
    assert c.chars == "".join(sorted(set(text))) and c.n_chars == len(text)
    n_val = int(len(text) * 0.1)
    assert c.val.shape[0] == n_val and c.train.shape[0] == len(text) - n_val
    decoded = "".join(c.chars[i] for i in np.asarray(c.val[:200]).tolist())
    assert decoded == text[len(text) - n_val:][:200]
    assert 0 < c.unigram_nats < math.log(len(c.chars))


def test_float16_compute_with_float32_masters():
    """The float16 path of the loop (half-precision forward, float32 gradients), on NumPy."""
    backend_ids = np.random.default_rng(0).integers(0, 11, (2, 8))
    model = GPT(TINY)
    params = model.init(random.key(0, like=np.zeros(1)), "float32")

    def loss(p):
        half = gpuad.tree_map(lambda a: gpuad.xp.astype(a, "float16"), p)
        return model.loss(half, backend_ids, backend_ids) * 64.0

    v, g = gpuad.value_and_grad(loss)(params)
    assert v.dtype == np.float32 and math.isfinite(float(v))
    assert all(x.dtype == np.float32 and np.isfinite(x).all() for x in gpuad.tree_leaves(g))


# --- the command -------------------------------------------------------------------------------
pytest.importorskip("tqdm")
pytest.importorskip("matplotlib")


def run_gpuad(*args, timeout=300):
    env = {k: v for k, v in os.environ.items() if k != "GPUAD_BACKEND"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-m", "gpuad", "train", "--model", "gpt", *args], check=False,
                          capture_output=True,
                          text=True, cwd=ROOT, env=env, timeout=timeout)


TINY_ARGS = ("--epochs", "1", "--context", "16", "--d-model", "16", "--layers", "2", "--heads", "2",
             "--batch-size", "512", "--lr", "2e-2", "--sample-chars", "40", "--backend", "numpy")


def test_tiny_run_end_to_end(tmp_path):
    out = tmp_path / "gpt"
    proc = run_gpuad(*TINY_ARGS, "--checkpoint", "uniform", "--segments", "2", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    assert "data: pydoc_data help topics" in text and "uniform baseline ln(" in text
    assert "nats/char" in text and "sample (temperature 0.8" in text
    assert "without checkpointing" in text and "with --checkpoint uniform" in text
    for name in ("params.npz", "optimizer.npz", "metrics.json", "curves.png", "sample.txt", "vocab.json"):
        assert (out / name).stat().st_size > 0, name
    m = json.loads((out / "metrics.json").read_text())
    assert m["uniform_nats_per_char"] == pytest.approx(math.log(m["vocab_size"]))
    assert m["val_nats_per_char"] < m["uniform_nats_per_char"] - 1.0
    assert f"val loss {m['val_nats_per_char']:.4f} nats/char vs uniform ln({m['vocab_size']})" in text
    mem = m["memory"]
    assert mem["peak_bytes_checkpoint"] < mem["peak_bytes_none"] and mem["saved_bytes"] > 0
    assert mem["max_grad_difference"] < 1e-5 and mem["schedule"]["segments"] == 2
    sample_text = (out / "sample.txt").read_text(encoding="utf-8")
    assert sample_text.startswith("The ") and len(sample_text) == len("The ") + 40 + 1
    from gpuad import serialization

    params = serialization.load(out / "params.npz", backend="array_api_strict")
    assert tuple(params["tok"]["table"].shape) == (m["vocab_size"], 16)


@pytest.mark.parametrize("args,message", [
    (["--checkpoint", "bogus"], "--checkpoint must be one of"),
    (["--budget-bytes", "1000"], "--budget-bytes applies only to --checkpoint optimal and auto, not --checkpoint none"),
    (["--d-model", "30", "--heads", "4"], "--d-model 30 is not divisible by --heads 4"),
    (["--dtype", "float16", "--backend", "numpy"], "--dtype float16 needs the cupy backend"),
    (["--dtype", "int8"], "--dtype must be float32 or float64"),
    (["--prompt", "\u00e9t\u00e9"], "--prompt must be non-empty"),
])
def test_bad_gpt_options_are_one_line_errors(args, message, tmp_path):
    proc = run_gpuad(*args, "--out", str(tmp_path))
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_optimal_strategy_is_used_or_refused_clearly(tmp_path):
    if "optimal" not in available_strategies():
        proc = run_gpuad(*TINY_ARGS, "--checkpoint", "optimal", "--budget-bytes", "1000000", "--out", str(tmp_path))
        assert proc.returncode == 2
        assert "--checkpoint optimal: the 'optimal' strategy is not available" in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1
        return
    # In process: the blocks under a budget, exact gradients, less tape.
    model = GPT(TINY)
    ids = np.random.default_rng(0).integers(0, 11, (4, 8))
    params = model.init(random.key(0, like=np.zeros(1)), "float64")
    with pytest.raises(ValueError, match="smallest feasible budget for this chain is") as e:
        model.loss(params, ids, ids, "optimal", budget_bytes=1)
    smallest = int(str(e.value).split("chain is ")[1].split()[0])
    peaks, grads = [], []
    for mode, opts in (("none", {}), ("optimal", {"budget_bytes": 10**9}), ("optimal", {"budget_bytes": smallest})):
        with gpuad.memory.track() as rep:
            g = gpuad.grad(lambda p, mode=mode, opts=opts: model.loss(p, ids, ids, mode, **opts))(params)
        peaks.append(rep.peak_bytes)
        grads.append([np.asarray(x) for x in gpuad.tree_leaves(g)])
    assert peaks[2] < peaks[0] and peaks[1] <= peaks[0] + 2**20
    for a, b, c in zip(*grads):
        np.testing.assert_allclose(b, a, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(c, a, rtol=1e-12, atol=1e-14)
    # On the command line, an infeasible budget is a one-line error.
    proc = run_gpuad(*TINY_ARGS, "--checkpoint", "optimal", "--budget-bytes", "1000", "--out", str(tmp_path))
    assert proc.returncode == 2, proc.stderr
    assert "--checkpoint optimal: " in proc.stderr and "budget" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_default_run_beats_the_uniform_baseline(tmp_path):
    proc = run_gpuad("--backend", "numpy", "--no-progress", "--checkpoint", "uniform", "--out", str(tmp_path),
                     timeout=900)
    assert proc.returncode == 0, proc.stderr
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m["val_nats_per_char"] < 0.5 * m["uniform_nats_per_char"]
    assert m["memory"]["saved_bytes"] > 0
