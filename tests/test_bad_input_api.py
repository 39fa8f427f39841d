"""Bad input to the higher-level API gets a clear error naming the function, the argument and the value.

The CLI (``gpuad train``, ``gpuad sweep``), ``gpuad.nn``, ``gpuad.optim``,
``gpuad.random``, ``gpuad.serialization``, checkpointing, ``gpuad.memory``
and ``gpuad.distributed`` in one process: never a silent wrong answer, an
option silently ignored, or a traceback from deep inside NumPy.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

import gpuad
from gpuad import cli, distributed, nn, optim, random, serialization, xp
from gpuad.checkpointing import checkpoint_sequential, on_forward_only, plan_checkpoints, replayed, save_only

F = nn.functional


# --- the command line ------------------------------------------------------------------
def _cli_error(capsys, argv, code=2):
    """Run ``gpuad argv`` in-process; it must fail with ``code`` and one line on stderr."""
    assert cli.main(argv) == code
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith("gpuad: error: ")
    return err


@pytest.mark.parametrize("args,message", [
    (["--lr", "inf"], "--lr must be positive and finite, got inf"),
    (["--lr", "nan"], "--lr must be positive and finite, got nan"),
    (["--checkpoint", "uniform"], "--checkpoint: only used by --model gpt, not --model cnn"),
    (["--budget-bytes", "100"], "--budget-bytes: only used by --model gpt"),
    (["--context", "0", "--segments", "2"], "--segments, --context: only used by --model gpt"),
])
def test_train_cnn_refuses_bad_or_ignored_options(args, message, capsys, tmp_path):
    err = _cli_error(capsys, ["train", "--backend", "numpy", "--epochs", "1", "--out", str(tmp_path)] + args)
    assert message in err


@pytest.mark.parametrize("args,message", [
    (["--temperature", "nan"], "--temperature must be a finite number >= 0, got nan"),
    (["--temperature", "inf"], "--temperature must be a finite number >= 0, got inf"),
    (["--sample-chars", "-1"], "--sample-chars must be >= 0, got -1"),
    (["--checkpoint", "revolve", "--segments", "2"],
     "--segments 2 is only used by --checkpoint uniform, not --checkpoint revolve"),
    (["--segments", "2"], "--segments 2 is only used by --checkpoint uniform, not --checkpoint none"),
    (["--context", "100000"], "--context 100000 is too long for the corpus"),
])
def test_train_gpt_refuses_bad_options_before_any_work(args, message, capsys, tmp_path):
    err = _cli_error(capsys, ["train", "--model", "gpt", "--backend", "numpy", "--epochs", "1",
                              "--out", str(tmp_path)] + args)
    assert message in err


def _no_data(*args, **kwargs):
    raise AssertionError("the data was loaded before the options were checked")


def _checkpoint_choices():
    from gpuad.gpt import available_strategies

    return ", ".join(["none", "block"] + [s for s in available_strategies() if s not in ("none", "block")])


@pytest.mark.parametrize("args,message", [
    (["--checkpoint", "optimal"], "--checkpoint optimal needs --budget-bytes: the bytes the chain of blocks may hold"),
    (["--checkpoint", "uniform", "--segments", "0"],
     "--segments must be an int in [1, 4] (at most one segment per block of --layers 4), got 0"),
    (["--checkpoint", "uniform", "--segments", "5"], "--segments must be an int in [1, 4]"),
    (["--checkpoint", "uniform", "--segments", "3", "--layers", "2"], "--segments must be an int in [1, 2]"),
    (["--checkpoint", "uniform", "--budget-bytes", "1000000"],
     "--budget-bytes applies only to --checkpoint optimal and auto, not --checkpoint uniform"),
    (["--checkpoint", "revolve", "--budget-bytes", "1000000"],
     "--budget-bytes applies only to --checkpoint optimal and auto, not --checkpoint revolve"),
    (["--checkpoint", "bisection", "--budget-bytes", "1000000"],
     "--budget-bytes applies only to --checkpoint optimal and auto, not --checkpoint bisection"),
    (["--checkpoint", "block", "--budget-bytes", "1000000"],
     "--budget-bytes applies only to --checkpoint optimal and auto, not --checkpoint block"),
    (["--checkpoint", "optimal", "--budget-bytes", "0"], "--budget-bytes must be a positive integer, got 0"),
    (["--checkpoint", "bogus"], None),  # the choices, each named once
])
def test_train_gpt_checkpoint_options_are_checked_before_loading_data(args, message, capsys, monkeypatch, tmp_path):
    from gpuad import training_gpt

    monkeypatch.setattr(training_gpt, "load_corpus", _no_data)
    err = _cli_error(capsys, ["train", "--model", "gpt", "--backend", "numpy", "--epochs", "1",
                              "--out", str(tmp_path)] + args)
    if message is None:
        message = f"--checkpoint must be one of {_checkpoint_choices()}; got 'bogus'"
        assert err.count("none") == 1, err
    assert message in err


@pytest.mark.parametrize("kw,message", [
    ({"epochs": 0}, "train: epochs must be a positive integer, got 0"),
    ({"epochs": 2.0}, "train: epochs must be a positive integer, got 2.0"),
    ({"batch_size": 0}, "train: batch_size must be a positive integer, got 0"),
    ({"lr": -1.0}, "train: lr must be positive and finite, got -1.0"),
    ({"lr": float("nan")}, "train: lr must be positive and finite, got nan"),
    ({"dtype": "int8"}, "train: dtype must be float32 or float64, got 'int8'"),
    ({"dtype": "float16"}, "train: dtype must be float32 or float64, got 'float16'"),
    ({"model": "resnet"}, "train: model: unknown model 'resnet'; available: cnn, gpt"),
    ({"seed": 1.5}, "train: seed must be an int, got 1.5"),
    ({"channels": (16, 0)}, r"train: channels must be two positive ints, got \(16, 0\)"),
    ({"extra": {"segments": 2}}, "train: extra options 'segments' are only used by model 'gpt', not 'cnn'"),
    ({"model": "gpt", "extra": {"segmets": 2}}, "train: unknown gpt option\\(s\\) 'segmets' in extra; known: context"),
    ({"model": "gpt", "epochs": 0}, "train: epochs must be a positive integer, got 0"),
    ({"model": "gpt", "extra": {"checkpoint": "optimal"}}, "train: checkpoint optimal needs budget_bytes"),
    ({"model": "gpt", "extra": {"checkpoint": "uniform", "segments": 9}},
     r"train: segments must be an int in \[1, 4\] \(at most one segment per block of layers 4\), got 9"),
    ({"model": "gpt", "extra": {"checkpoint": "revolve", "budget_bytes": 10**6}},
     "train: budget_bytes applies only to checkpoint optimal and auto, not checkpoint revolve"),
    ({"model": "gpt", "extra": {"context": "64"}}, "train: context must be a positive integer, got '64'"),
    ({"model": "gpt", "extra": {"val_fraction": 1.0}}, r"train: val_fraction must be a number in \(0, 1\), got 1.0"),
])
def test_train_checks_its_config_before_any_work(kw, message, monkeypatch, tmp_path):
    """``training.train`` refuses what ``gpuad train`` refuses (one shared check), before loading data."""
    from gpuad import _backend, training, training_gpt

    monkeypatch.setattr(_backend, "_choice", _backend.get_backend())  # restored afterwards
    monkeypatch.setattr(training, "load_digits", _no_data)
    monkeypatch.setattr(training_gpt, "load_corpus", _no_data)
    out = tmp_path / "run"
    cfg = training.TrainConfig(out=str(out), progress=False, **kw)
    with pytest.raises(training.ConfigError, match=message):
        training.train(cfg)
    if cfg.model == "gpt":  # called directly too
        with pytest.raises(training.ConfigError, match=message):
            training_gpt.train_gpt(cfg)
    assert not out.exists()


def test_train_out_of_memory_is_one_line(capsys, monkeypatch, tmp_path):
    from gpuad import training

    def boom(cfg, log):
        raise MemoryError("Unable to allocate 113. GiB for an array with shape (7, 2, 46496, 46496)")

    monkeypatch.setattr(training, "train", boom)
    err = _cli_error(capsys, ["train", "--backend", "numpy", "--out", str(tmp_path)], code=1)
    assert "out of memory: Unable to allocate 113. GiB" in err and "--batch-size" in err


def test_sweep_refuses_infinite_budget(capsys, tmp_path):
    err = _cli_error(capsys, ["sweep", "--backend", "numpy", "--out", str(tmp_path), "--budgets", "0.5,inf"])
    assert "--budgets must be positive finite fractions, got '0.5,inf'" in err


# --- gpuad.nn ----------------------------------------------------------------------------
def test_bias_and_parameter_shapes_are_checked():
    with pytest.raises(ValueError, match=r"conv2d: the bias must have shape \(2,\) \(weight of shape "
                                         r"\(2, 1, 3, 3\)\), got \(3,\)"):
        F.conv2d(np.zeros((1, 1, 4, 4)), np.zeros((2, 1, 3, 3)), np.zeros(3))
    with pytest.raises(ValueError, match=r"linear: the bias must have shape \(4,\) .*got \(5,\)"):
        F.linear(np.zeros((2, 3)), np.zeros((3, 4)), np.zeros(5))
    with pytest.raises(ValueError, match=r"layer_norm: gamma of shape \(4,\) does not broadcast to x of shape "
                                         r"\(2, 3\)"):
        F.layer_norm(np.zeros((2, 3)), np.ones(4), np.zeros(3))
    with pytest.raises(ValueError, match="layer_norm: eps must be a finite number >= 0, got -1"):
        F.layer_norm(np.zeros((2, 3)), eps=-1)
    with pytest.raises(ValueError, match=r"batch_norm: running_var must have shape \(3,\) \(x of shape \(2, 3\), "
                                         r"features on axis 1\), got \(4,\)"):
        F.batch_norm(np.zeros((2, 3)), np.ones(3), np.zeros(3), np.zeros(3), np.ones(4), training=True)
    x = np.zeros((1, 2, 4))
    with pytest.raises(ValueError, match=r"causal_self_attention: wo must have shape \(4, 4\) \(x of shape "
                                         r"\(1, 2, 4\)\), got \(4, 3\)"):
        F.causal_self_attention(x, np.zeros((4, 12)), np.zeros((4, 3)), 2)
    with pytest.raises(ValueError, match="causal_self_attention: num_heads must be a positive int, got 0"):
        F.causal_self_attention(x, np.zeros((4, 12)), np.zeros((4, 4)), 0)


def test_loss_shapes_name_the_loss():
    with pytest.raises(ValueError, match=r"mse: pred of shape \(2, 4\) and target of shape \(3, 4\) do not "
                                         "broadcast"):
        F.mse(np.zeros((2, 4)), np.zeros((3, 4)))
    # (N, 1) logits against (N,) targets would silently broadcast to an (N, N) loss.
    with pytest.raises(ValueError, match=r"binary_cross_entropy_with_logits: targets of shape \(3,\) does not "
                                         r"broadcast to logits of shape \(3, 1\)"):
        F.binary_cross_entropy_with_logits(np.zeros((3, 1)), np.zeros(3))


@pytest.mark.parametrize("bad", [4, -1])
def test_labels_and_ids_out_of_range(bad):
    with pytest.raises(ValueError, match=rf"cross_entropy: labels must be in \[0, 4\) \(class ids for logits "
                                         rf"of shape \(2, 4\)\), got {bad}"):
        F.cross_entropy(np.zeros((2, 4)), np.asarray([0, bad]))
    with pytest.raises(ValueError, match=rf"embedding: ids must be in \[0, 4\) \(the table has shape \(4, 3\)\), "
                                         rf"got {bad}"):
        nn.Embedding(4, 3).apply({"table": np.zeros((4, 3))}, np.asarray([[0, bad]]))


def test_label_and_id_dtypes():
    with pytest.raises(TypeError, match="cross_entropy: labels must be integers, got dtype bool"):
        F.cross_entropy(np.zeros((2, 4)), np.asarray([True, False]))
    with pytest.raises(TypeError, match="embedding: ids must be an integer array, got dtype float64"):
        F.embedding(np.zeros((4, 3)), np.asarray([0.0, 1.0]))


def test_in_range_labels_still_differentiate():
    logits = np.random.default_rng(0).standard_normal((3, 4))
    g = gpuad.grad(lambda z: F.cross_entropy(z, np.asarray([0, 3, 1])))(logits)
    assert g.shape == (3, 4)


def test_layer_params_of_another_layer():
    with pytest.raises(KeyError, match=r"Linear.apply: params has no 'w'; expected the keys of Linear.init: "
                                       r"'w', 'b', got 'gamma', 'beta'"):
        nn.Linear(3, 4).apply({"gamma": np.ones(3), "beta": np.zeros(3)}, np.zeros((2, 3)))
    with pytest.raises(TypeError, match="Conv2d.apply: params must be the dict made by Conv2d.init, got list"):
        nn.Conv2d(1, 2, 3).apply([np.zeros((2, 1, 3, 3))], np.zeros((1, 1, 4, 4)))
    with pytest.raises(KeyError, match="BatchNorm.apply: state must be the dict made by BatchNorm.init_state"):
        nn.BatchNorm(3).apply({"gamma": np.ones(3), "beta": np.zeros(3)}, {"m": 0}, np.zeros((2, 3)), True)


# --- gpuad.optim -------------------------------------------------------------------------
@pytest.mark.parametrize("make,message", [
    (lambda: optim.adam(float("nan")), "adam: the learning rate must be a finite non-negative float"),
    (lambda: optim.sgd(float("inf")), "sgd: the learning rate must be a finite non-negative float"),
    (lambda: optim.adam(0.1, eps=-1), r"adam: eps must be a finite number in \[0, inf\), got -1"),
    (lambda: optim.adamw(0.1, weight_decay=float("nan")), "adamw: weight_decay must be a finite number"),
    (lambda: optim.adamw(0.1, weight_decay=-0.1), r"adamw: weight_decay .* got -0.1"),
    (lambda: optim.adam(0.1, b2="x"), r"adam: b2 must be a finite number in \[0, 1\), got 'x'"),
    (lambda: optim.sgd(0.1, momentum=-0.5), r"sgd: momentum must be a finite number in \[0, inf\), got -0.5"),
    (lambda: optim.adam(0.1, clip_norm=0), r"adam: clip_norm must be a finite number in \(0, inf\), got 0"),
    (lambda: optim.constant(float("nan")), r"constant: lr must be a finite number in \[0, inf\), got nan"),
    (lambda: optim.warmup_cosine(float("nan"), 1, 10), r"warmup_cosine: peak must be a finite number in \[0, inf\), "
                                                        "got nan"),
    # A learning rate is never negative, in a schedule as in the optimisers (adamw(-1.0) is refused).
    (lambda: optim.warmup_cosine(-1.0, 1, 10), r"warmup_cosine: peak must be a finite number in \[0, inf\), got -1.0"),
    (lambda: optim.warmup_cosine(1.0, 1, 10, final_value=float("inf")), "warmup_cosine: final_value must be a finite"),
    (lambda: optim.linear_warmup(1.0, 2, init_value=-0.5), r"linear_warmup: init_value .* got -0.5"),
    (lambda: optim.cosine_decay(-0.1, 5), r"cosine_decay: init_value must be a finite number in \[0, inf\), got -0.1"),
    (lambda: optim.constant(-3e-4), r"constant: lr .* got -0.0003"),
    (lambda: optim.clip_by_global_norm({"w": np.ones(2)}, "1"),
     r"clip_by_global_norm: max_norm must be a finite number in \(0, inf\), got '1'"),
    (lambda: optim.clip_by_global_norm({"w": np.ones(2)}, float("inf")), "clip_by_global_norm: max_norm must be"),
    (lambda: optim.clip_by_global_norm({"w": np.ones(2)}, 0.0), "clip_by_global_norm: max_norm must be"),
    (lambda: optim.cosine_decay(0.1, 2.5), "cosine_decay: decay_steps must be an int >= 1, got 2.5"),
    (lambda: optim.linear_warmup(0.1, "3"), "linear_warmup: warmup_steps must be an int >= 0, got '3'"),
])
def test_optimizer_hyperparameters(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_schedules_accept_numpy_integers():
    sched = optim.warmup_cosine(np.float32(0.1), np.int64(2), np.int64(10))
    assert float(sched(np.asarray(2))) == pytest.approx(0.1)


@pytest.mark.parametrize("name", ["adam", "sgd"])
def test_state_made_for_other_parameters(name):
    opt = optim.adam(0.1) if name == "adam" else optim.sgd(0.1, momentum=0.9)
    key = "m" if name == "adam" else "velocity"
    p = {"w": np.ones((2, 2))}
    g = {"w": np.ones((2, 2))}
    # Same structure, other shapes: would broadcast silently.
    with pytest.raises(ValueError, match=rf"{name}.step: leaf 0: state\['{key}'\] shape \(2,\) != parameter "
                                         r"shape \(2, 2\): the state was made for other parameters"):
        opt.step(p, g, opt.init({"w": np.ones(2)}))
    # More leaves in the state: zip would silently drop them.
    with pytest.raises(ValueError, match=rf"{name}.step: state\['{key}'\] has structure .*'b'.*params have"):
        opt.step(p, g, opt.init({"w": np.ones((2, 2)), "b": np.ones(2)}))
    with pytest.raises(ValueError, match=rf"{name}.step: the optimiser state has no '{key}' \(got \['step'\]\)"):
        opt.step(p, g, {"step": np.asarray(0)})


# --- gpuad.random ------------------------------------------------------------------------
def test_random_arguments():
    k = random.key(0)
    with pytest.raises(TypeError, match=r"random.uniform: shape must be a tuple of ints, got \(2.5,\)"):
        random.uniform(k, (2.5,))
    with pytest.raises(TypeError, match=r"random.normal: shape must be a tuple of ints, got \(True, 2\)"):
        random.normal(k, (True, 2))
    with pytest.raises(ValueError, match=r"random.uniform: need minval < maxval, got \[1.0, 0.0\)"):
        random.uniform(k, (3,), minval=1.0, maxval=0.0)
    with pytest.raises(ValueError, match="random.uniform: maxval must be finite, got inf"):
        random.uniform(k, (3,), maxval=float("inf"))
    with pytest.raises(ValueError, match="random.normal: stddev must be >= 0, got -1.0"):
        random.normal(k, (3,), stddev=-1.0)
    with pytest.raises(ValueError, match="random.normal: mean must be finite, got nan"):
        random.normal(k, (3,), mean=float("nan"))
    with pytest.raises(ValueError, match=r"random.truncated_normal: need lower < upper, got \[2.0, -2.0\]"):
        random.truncated_normal(k, (3,), lower=2.0, upper=-2.0)
    with pytest.raises(TypeError, match="random.randint: minval must be an int, got float: 0.5"):
        random.randint(k, (3,), 0.5, 3)
    with pytest.raises(TypeError, match="random.permutation: x must be an int or an array with at least one "
                                        "axis, got float: 3.0"):
        random.permutation(k, 3.0)
    # NumPy integers are ints.
    assert random.uniform(k, (np.int64(2),)).shape == (2,)
    assert random.permutation(k, np.int64(4)).shape == (4,)
    assert random.randint(k, (2,), np.int64(0), np.int64(3)).shape == (2,)


# --- gpuad.serialization -----------------------------------------------------------------
@pytest.mark.parametrize("content,why", [
    (b"not a zip file at all", "ValueError"),
    (b"", "EOFError"),
    (None, "BadZipFile"),  # a truncated save
])
def test_load_corrupted_file(content, why, tmp_path):
    path = tmp_path / "bad.npz"
    if content is None:
        serialization.save(tmp_path / "good.npz", {"a": np.ones(100)})
        raw = (tmp_path / "good.npz").read_bytes()
        content = raw[:len(raw) // 2]
    path.write_bytes(content)
    with pytest.raises(ValueError, match=rf"load: .*bad.npz is not a readable .npz file written by "
                                         rf"gpuad.serialization.save \({why}"):
        serialization.load(path)


def test_load_malformed_metadata(tmp_path):
    meta = json.dumps({"format": serialization.FORMAT, "tree": {"dict": {"a": {"x": 1, "y": 2}}}})
    np.savez(tmp_path / "m.npz", __metadata__=np.asarray(meta))
    with pytest.raises(ValueError, match=r"load: .*m.npz: malformed metadata \(a tree node is dict"):
        serialization.load(tmp_path / "m.npz")
    np.savez(tmp_path / "n.npz", __metadata__=np.asarray(json.dumps({"format": serialization.FORMAT})))
    with pytest.raises(ValueError, match="n.npz was not written by gpuad.serialization.save"):
        serialization.load(tmp_path / "n.npz")
    with pytest.raises(FileNotFoundError, match="missing.npz"):
        serialization.load(tmp_path / "missing.npz")
    with pytest.raises(TypeError, match="load: like must be an array .*got int"):
        serialization.load(tmp_path / "m.npz", like=3)


def test_save_refuses_what_load_cannot_read(tmp_path):
    with pytest.raises(TypeError, match="save: the key '__metadata__' at the top of the tree is reserved"):
        serialization.save(tmp_path / "a.npz", {"__metadata__": np.ones(2)})
    with pytest.raises(TypeError, match="save: cannot save an object array at a"):
        serialization.save(tmp_path / "b.npz", {"a": np.asarray([None], dtype=object)})
    with pytest.raises(IsADirectoryError, match="save: .* is a directory; give a file path"):
        serialization.save(tmp_path, {"a": np.ones(2)})
    with pytest.raises(FileNotFoundError, match="save: the directory .*nowhere.* does not exist"):
        serialization.save(tmp_path / "nowhere" / "c.npz", {"a": np.ones(2)})
    assert not list(tmp_path.iterdir())
    # Nested keys of that name are fine.
    serialization.save(tmp_path / "d.npz", {"x": {"__metadata__": np.ones(2)}})
    assert serialization.load(tmp_path / "d.npz", backend="numpy")["x"]["__metadata__"].shape == (2,)


# --- checkpointing -----------------------------------------------------------------------
def test_schedule_options_of_another_strategy_are_refused():
    x = np.ones(3)
    fns = [xp.tanh] * 3
    with pytest.raises(ValueError, match="segments=2 is only used by strategy 'uniform', not 'revolve'"):
        checkpoint_sequential(fns, x, strategy="revolve", segments=2)
    with pytest.raises(ValueError, match="snapshots=2 is only used by strategies 'revolve' and 'bisection', "
                                         "not 'uniform'"):
        checkpoint_sequential(fns, x, strategy="uniform", snapshots=2)
    with pytest.raises(ValueError, match="segments=2 is only used by strategy 'uniform', not 'auto'"):
        plan_checkpoints(3, segments=2)
    with pytest.raises(TypeError, match="checkpoint_sequential: profile must be a StepCost .*got str"):
        checkpoint_sequential(fns, x, strategy="optimal", budget_bytes=10**6, profile="fast")


def test_checkpoint_helpers_check_their_arguments():
    with pytest.raises(TypeError, match="replayed: fn must be callable, got int: 3"):
        replayed(3)
    with pytest.raises(TypeError, match="on_forward_only: fn must be callable, got int: 3"):
        on_forward_only(3)
    with pytest.raises(ValueError, match="save_only: no primitive is named 'matmull'; did you mean 'matmul'"):
        save_only("matmull")
    with pytest.raises(TypeError, match="save_only: primitive names must be strings, got int: 3"):
        save_only(3)
    with pytest.raises(TypeError, match="nbytes_of: x must be an array, got int"):
        gpuad.memory.nbytes_of(3)


# --- gpuad.distributed, one process ------------------------------------------------------
def test_communicator_arguments():
    with pytest.raises(ValueError, match="bucket_mb must be a positive finite number of megabytes, got inf"):
        distributed.SingleProcessCommunicator(bucket_mb=float("inf"))
    with pytest.raises(ValueError, match="bucket_mb must be a positive finite number of megabytes, got 'abc'"):
        distributed.SingleProcessCommunicator(bucket_mb="abc")
    comm = distributed.SingleProcessCommunicator()
    tree = {"w": np.ones(3)}
    for w in (float("nan"), float("inf"), -1.0):
        with pytest.raises(ValueError, match=rf"allreduce_mean: weight must be a finite number >= 0 .*got {w}"):
            comm.allreduce_mean(tree, weight=w)
    with pytest.raises(TypeError, match="allreduce_mean: weight must be a number, got str: 'half'"):
        comm.allreduce_mean(tree, weight="half")
    assert comm.allreduce_mean(tree, weight=0.0)["w"].tolist() == [0.0, 0.0, 0.0]
    with pytest.raises(TypeError, match="allreduce_mean: leaf 0 has dtype int64"):
        comm.allreduce_mean({"n": np.ones(2, dtype=np.int64)})
    with pytest.raises(ValueError, match="shard: n must be a non-negative int .*got -1"):
        comm.shard(-1)
    with pytest.raises(ValueError, match="shard: n must be a non-negative int .*got 2.5"):
        comm.shard(2.5)
    with pytest.raises(ValueError, match=r"broadcast: root must be in \[0, 1\), got 0.5"):
        comm.broadcast(tree, root=0.5)
    with pytest.raises(TypeError, match="run_local: fn must be callable"):
        distributed.run_local(2, 3)


@pytest.mark.parametrize("value,message", [
    ("abc", "GPUAD_BUCKET_MB='abc': the bucket size must be a number of megabytes"),
    ("inf", "GPUAD_BUCKET_MB='inf': the bucket size must be a positive finite number"),
])
def test_bucket_size_from_the_environment(value, message, monkeypatch):
    monkeypatch.setattr(distributed, "_current", None)
    with pytest.raises(ValueError, match=message):
        distributed.init("none", environ={"GPUAD_BUCKET_MB": value})
