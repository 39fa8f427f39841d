"""``gpuad train --model gpt``: a character-level GPT on Python's own help topics.

The corpus is :data:`pydoc_data.topics.topics` (it ships with CPython): the
topics are concatenated in sorted key order, the vocabulary is the set of
characters, and the last 10% of the text is the validation split.  The
model is :class:`gpuad.gpt.GPT`; the loop follows :mod:`gpuad.training`:
data, parameters, optimiser state, shuffling and metrics stay on the
device, and the host sees a few numbers per epoch.

One epoch is one pass over the training text cut into non-overlapping
windows of ``context + 1`` characters (a random offset and order each
epoch).  Validation loss is the mean next-character cross-entropy over the
whole validation split in nats per character, reported against the uniform
baseline ``ln(vocab)``.  ``--checkpoint`` runs the transformer blocks under
:func:`gpuad.checkpoint_sequential` (or :func:`gpuad.checkpoint` per block);
the run measures one step with and one without it (``gpuad.memory.track``)
and reports the tape memory saved and the time it cost.  The run writes
into ``out``: ``params.npz``, ``optimizer.npz``, ``metrics.json``,
``curves.png``, ``sample.txt`` and ``vocab.json``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import time
from dataclasses import dataclass

from . import memory, nn, optim, random
from . import xp as gxp
from ._train_config import CHECKPOINT_CHOICES, GPT_DEFAULTS, ConfigError, validate_config
from ._train_config import validate_gpt as validate
from ._tree import tree_leaves, tree_map
from .data import require
from .gpt import GPT, GPTConfig, sample
from .loss_scaling import init_loss_scale, loss_scaled_step
from .transforms import value_and_grad

__all__ = ["GPT_DEFAULTS", "CHECKPOINT_CHOICES", "ConfigError", "Corpus", "load_corpus", "validate", "train_gpt",
           "loss_scaled_step", "init_loss_scale"]


@dataclass
class Corpus:
    """The pydoc topics as token ids on one backend and device.

    Attributes
    ----------
    train, val : int64 arrays, shape ``(N_train,)`` and ``(N_val,)``
    chars : str
        The vocabulary: ``chars[i]`` is the character of id ``i`` (sorted).
    n_chars : int
        Length of the whole text.
    sha256 : str
        First 12 hex digits of the text's SHA-256 (the topics change between
        Python versions).
    unigram_nats : float
        Entropy of the training split's character frequencies (a context-free
        baseline, below ``ln(vocab)``).
    """

    train: object
    val: object
    chars: str
    n_chars: int
    sha256: str
    unigram_nats: float


def load_corpus(backend="numpy", device=None, val_fraction=0.1):
    """Python's help topics (``pydoc_data``), character-level, with a fixed split.

    Parameters
    ----------
    backend : {"numpy", "cupy", "array_api_strict"}
    device : device of that backend, optional
    val_fraction : float
        The last ``val_fraction`` of the text is the validation split.

    Returns
    -------
    Corpus
    """
    from collections import Counter
    from pydoc_data.topics import topics  # the standard library's help text

    from ._backend import backend_module

    text = "".join(topics[k] for k in sorted(topics))
    chars = "".join(sorted(set(text)))
    stoi = {c: i for i, c in enumerate(chars)}
    n_val = max(int(len(text) * val_fraction), 2)
    cut = len(text) - n_val
    counts = Counter(text[:cut])
    unigram = -sum(c / cut * math.log(c / cut) for c in counts.values())
    ns = backend_module(backend).namespace()
    kw = {"device": device} if device is not None else {}
    ids = ns.asarray([stoi[c] for c in text], dtype=ns.int64, **kw)
    return Corpus(ids[:cut], ids[cut:], chars, len(text), hashlib.sha256(text.encode()).hexdigest()[:12], unigram)


# --- the loop ------------------------------------------------------------------------------
def _windows(ids, starts, t):
    """Rows ``ids[s : s + t + 1]`` for each start: ``(n,)`` starts -> ``(n, t + 1)`` int64."""
    ar = gxp.arange(t + 1, device=ids.device)
    flat = gxp.reshape(gxp.reshape(starts, (-1, 1)) + gxp.reshape(ar, (1, -1)), (-1,))
    return gxp.reshape(gxp.take(ids, flat, axis=0), (starts.shape[0], t + 1))


def _init_model(cfg, o, corpus):
    """The run's model and initial parameters, and its data and sample keys (from ``cfg.seed``).

    Returns ``(model, params, k_data, k_sample)``; ``o`` is the gpt options
    (:data:`GPT_DEFAULTS` merged with ``cfg.extra``).  Also used by
    ``bench/gpt_checkpoint.py``.
    """
    model = GPT(GPTConfig(vocab_size=len(corpus.chars), context=o["context"], d_model=o["d_model"],
                          n_layers=o["layers"], n_heads=o["heads"]))
    key = random.key(cfg.seed, like=corpus.train)
    k_init, k_data, k_sample = random.split(key, 3)
    params = model.init(k_init, "float32" if cfg.dtype == "float16" else cfg.dtype)
    return model, params, k_data, k_sample


def _n_windows(n_train, t):
    """Training windows per epoch (room left for a random offset)."""
    return (n_train - 1) // (t + 1) - 1


def _epoch_starts(k_data, epoch, n_win, t):
    """Start of each of the ``n_win`` windows of ``epoch``: a random offset and order, shape ``(n_win,)``."""
    ke = random.fold_in(k_data, epoch)
    offset = random.randint(random.fold_in(ke, 1), (1,), 0, t + 1)
    return random.permutation(random.fold_in(ke, 2), n_win) * (t + 1) + offset


def _grad_fn_factory(model, half=False, scale=None):
    """``make_grad_fn(checkpoint, options)``: the run's step gradient under a checkpointing mode.

    ``make_grad_fn(ck, so)`` returns ``grads(p, x, y) -> (loss, gradients)``
    of ``model.loss(p, x, y, ck, **so)``; with ``half``, the loss is computed
    in float16 and the gradients are of ``loss * scale()`` (the current loss
    scale).  Also used by ``bench/gpt_checkpoint.py``.
    """
    def make_grad_fn(ck, so):
        def loss_fn(p, x, y, s):
            if half:
                p = tree_map(lambda a: gxp.astype(a, "float16"), p)
            loss = model.loss(p, x, y, ck, **so)
            return loss * s if half else loss, loss
        g = value_and_grad(loss_fn, has_aux=True)

        def grads(p, x, y):
            """``(loss, gradients of loss * scale)``; the scale is the current one."""
            (_, loss), gr = g(p, x, y, scale() if half else 1.0)
            return loss, gr
        return grads
    return make_grad_fn


def _timed_grads(fns, args, repeat):
    """Best wall time of ``repeat`` calls of each of ``fns`` on ``args``, interleaved.

    Returns ``(times, outputs)``: one best time and the last result per
    function (each result forced to finish: CuPy is asynchronous).
    """
    best, outs = [math.inf] * len(fns), [None] * len(fns)
    for _ in range(repeat):
        for i, fn in enumerate(fns):
            t0 = time.perf_counter()
            outs[i] = fn(*args)
            float(outs[i][0])
            best[i] = min(best[i], time.perf_counter() - t0)
    return best, outs


def _max_abs_diff(a, b):
    return max(float(gxp.max(gxp.abs(gxp.astype(x, "float64") - gxp.astype(y, "float64"))))
               for x, y in zip(tree_leaves(a), tree_leaves(b)))


def _memory_trade(make_grad_fn, params, x, y, mode, sched_opts, log):
    """Peak tape bytes and step time of one step without and with checkpointing."""
    base_fn = make_grad_fn("none", {})
    with memory.track() as rep0:
        base_fn(params, x, y)
    res = {"peak_bytes_none": rep0.peak_bytes, "checkpoint": mode}
    if mode == "none":
        return res
    ck_fn = make_grad_fn(mode, sched_opts)
    try:
        with memory.track() as rep1:
            ck_out = ck_fn(params, x, y)
    except ValueError as e:  # e.g. a budget the strategy cannot meet
        raise ConfigError(f"--checkpoint {mode}: {e}") from None
    if mode not in ("none", "block"):
        from .checkpointing import last_report

        r = last_report()
        res["schedule"] = {k: getattr(r, k, None) for k in ("strategy", "steps", "segments", "snapshots",
                                                          "actual_advances", "predicted_peak_bytes",
                                                          "actual_peak_bytes", "budget_bytes")}
        if getattr(r, "profile", None) is not None:  # the measured cost model: later runs skip measuring
            sched_opts["profile"] = r.profile
            ck_fn = make_grad_fn(mode, sched_opts)
    (t0, t1), (base_out, ck_out) = _timed_grads((base_fn, ck_fn), (params, x, y), 5)
    res.update(peak_bytes_checkpoint=rep1.peak_bytes, saved_bytes=rep0.peak_bytes - rep1.peak_bytes,
               step_seconds_none=t0, step_seconds_checkpoint=t1, time_cost=t1 / t0 - 1.0,
               max_grad_difference=_max_abs_diff(base_out[1], ck_out[1]))
    return res


def train_gpt(cfg, log=print):
    """Train the character-level GPT described by ``cfg``; returns the summary dict.

    Parameters
    ----------
    cfg : gpuad.training.TrainConfig
        ``model == "gpt"``; ``cfg.extra`` holds the gpt options
        (:data:`GPT_DEFAULTS` keys).  ``epochs``, ``batch_size`` (windows
        per step) and ``lr`` are used as given.
    log : callable
        Receives each line of the report.

    Returns
    -------
    dict
        ``config``, ``backend``, ``device``, ``history`` (per epoch: train
        and validation loss in nats/char, seconds, chars/s),
        ``val_nats_per_char``, ``uniform_nats_per_char`` (``ln(vocab)``),
        ``memory`` (the checkpointing trade-off), ``sample``,
        ``wall_seconds`` and the paths written.
    """
    from ._backend import backend_module, get_backend, set_backend
    from .serialization import save
    from .training import _device_of, count_params

    t_start = time.perf_counter()
    validate_config(cfg)  # before any work (gpuad train checks the same, naming the flags)
    o = {**GPT_DEFAULTS, **cfg.extra}
    tqdm = require("tqdm").tqdm
    choice = set_backend(cfg.backend) if cfg.backend else get_backend()
    validate(o, choice.name, cfg.dtype)
    host = backend_module(choice.name).to_numpy
    corpus = load_corpus(choice.name, val_fraction=o["val_fraction"])
    device = _device_of(choice, corpus.train)
    vocab = len(corpus.chars)
    n_train, n_val = corpus.train.shape[0], corpus.val.shape[0]
    uniform = math.log(vocab)
    log(f"backend: {choice.name} on {device} ({choice.reason})")
    log(f"data: pydoc_data help topics of Python {sys.version.split()[0]} ({corpus.n_chars:,} chars, sha256 "
        f"{corpus.sha256}), vocab {vocab} chars; {n_train:,} train / {n_val:,} validation chars (fixed split: "
        f"the last {o['val_fraction']:.0%}); uniform baseline ln({vocab}) = {uniform:.3f} nats/char, "
        f"unigram {corpus.unigram_nats:.3f}")

    t = o["context"]
    half = cfg.dtype == "float16"
    model, params, k_data, k_sample = _init_model(cfg, o, corpus)
    n_win = _n_windows(n_train, t)
    steps_per_epoch = -(-n_win // cfg.batch_size)
    total = steps_per_epoch * cfg.epochs
    warmup = min(100, max(total // 10, 1))
    schedule = (optim.warmup_cosine(cfg.lr, warmup, total, final_value=cfg.lr * 0.1)
                if total > warmup else optim.constant(cfg.lr))
    opt = optim.adamw(schedule, weight_decay=1e-2, clip_norm=1.0)
    opt_state = opt.init(params)
    mode = o["checkpoint"]
    sched_opts = {k: o[k] for k in ("budget_bytes", "segments") if o[k] is not None}
    log(f"model: GPT {o['layers']} blocks, d_model {o['d_model']}, {o['heads']} heads, context {t}, "
        f"{count_params(params):,} parameters; AdamW lr {cfg.lr:g} (warm-up {warmup} steps, cosine), "
        f"batch {cfg.batch_size} x {t} chars, {cfg.epochs} epochs of {steps_per_epoch} steps, dtype {cfg.dtype}"
        f"{' (float32 master weights, dynamic loss scaling)' if half else ''}, checkpoint {mode}"
        + (f" {sched_opts}" if sched_opts else ""))

    make_grad_fn = _grad_fn_factory(model, half, lambda: ls["scale"])  # the current scale (``ls``)
    ls = init_loss_scale(corpus.train) if half else None
    grad_fn = make_grad_fn(mode, sched_opts)

    def evaluate(p, bs=128):
        nv = (n_val - 1) // t
        total_nats = None
        for i in range(0, nv, bs):
            starts = gxp.arange(i, min(i + bs, nv), device=corpus.val.device) * t
            w = _windows(corpus.val, starts, t)
            pe = tree_map(lambda a: gxp.astype(a, "float16"), p) if half else p
            logits = gxp.astype(model.apply(pe, w[:, :t]), "float32")
            s = nn.cross_entropy(logits, w[:, 1:], reduction="sum")
            total_nats = s if total_nats is None else total_nats + s
        return float(total_nats) / (nv * t)

    history, mem = [], None
    train_seconds = 0.0
    for epoch in range(1, cfg.epochs + 1):
        starts_all = _epoch_starts(k_data, epoch, n_win, t)
        bar = tqdm(total=steps_per_epoch, desc=f"epoch {epoch}/{cfg.epochs}", unit="step", leave=False,
                   disable=not cfg.progress, file=sys.stderr, dynamic_ncols=True)
        losses = []
        t0 = time.perf_counter()
        for s in range(0, n_win, cfg.batch_size):
            w = _windows(corpus.train, starts_all[s:min(s + cfg.batch_size, n_win)], t)
            x, y = w[:, :t], w[:, 1:]
            if mem is None:
                mem = _memory_trade(make_grad_fn, params, x, y, mode, sched_opts, log)  # may add a profile
                _log_memory(mem, x.shape, log)
                grad_fn = make_grad_fn(mode, sched_opts)
                t0 = time.perf_counter()
            loss, grads = grad_fn(params, x, y)
            if half:
                params, opt_state, ls = loss_scaled_step(opt, params, grads, opt_state, ls)
            else:
                params, opt_state = opt.step(params, grads, opt_state)
            losses.append(loss)
            bar.update(1)
        step_losses = host(gxp.stack(losses)).tolist()  # the epoch's one transfer of the losses
        dt = time.perf_counter() - t0
        train_seconds += dt
        bar.close()
        val = evaluate(params)
        rate = n_win * t / dt
        history.append({"epoch": epoch, "loss": sum(step_losses) / len(step_losses), "val_loss": val,
                        "step_losses": step_losses, "seconds": dt, "chars_per_second": rate})
        log(f"epoch {epoch:3d}/{cfg.epochs}  train loss {history[-1]['loss']:.4f}  val loss {val:.4f} nats/char "
            f"({val / math.log(2):.3f} bits/char; uniform {uniform:.3f})  {rate:,.0f} chars/s")

    prompt = gxp.asarray([corpus.chars.index(c) for c in o["prompt"]], dtype=corpus.train.dtype,
                         device=corpus.train.device)
    pe = tree_map(lambda a: gxp.astype(a, "float16"), params) if half else params
    ids = sample(model, pe, prompt, o["sample_chars"], k_sample, o["temperature"])
    text = "".join(corpus.chars[i] for i in host(ids).tolist())   # one transfer of the sampled ids
    how = "greedy" if o["temperature"] == 0 else f"temperature {o['temperature']:g}"
    log(f"sample ({how}, key from seed {cfg.seed}, prompt {o['prompt']!r}):")
    for line in text.splitlines() or [""]:
        log(f"  | {line}".rstrip())

    os.makedirs(cfg.out, exist_ok=True)
    paths = {k: os.path.join(cfg.out, f) for k, f in (("params", "params.npz"), ("optimizer", "optimizer.npz"),
                                                      ("metrics", "metrics.json"), ("curves", "curves.png"),
                                                      ("sample", "sample.txt"), ("vocab", "vocab.json"))}
    save(paths["params"], params)
    save(paths["optimizer"], opt_state)
    with open(paths["sample"], "w", encoding="utf-8") as f:
        f.write(text + "\n")
    with open(paths["vocab"], "w", encoding="utf-8") as f:
        json.dump({"chars": corpus.chars, "config": vars(model.config)}, f, ensure_ascii=False)
    _plot(history, uniform, paths["curves"],
              title=f"gpuad train --model gpt on {choice.name} ({cfg.dtype}, checkpoint {mode})")
    val = history[-1]["val_loss"]
    summary = {
        "config": {**{k: v for k, v in vars(cfg).items() if k not in ("extra", "channels", "hidden")}, **o},
        "backend": choice.name, "device": device, "reason": choice.reason, "history": history,
        "vocab_size": vocab, "corpus_chars": corpus.n_chars, "corpus_sha256": corpus.sha256,
        "train_chars": n_train, "val_chars": n_val,
        "val_nats_per_char": val, "val_bits_per_char": val / math.log(2),
        "uniform_nats_per_char": uniform, "unigram_nats_per_char": corpus.unigram_nats,
        "final_loss": history[-1]["loss"], "train_seconds": train_seconds,
        "chars_per_second": cfg.epochs * n_win * t / train_seconds, "parameters": count_params(params),
        "memory": mem, "sample": text, "files": paths,
    }
    if half:
        summary["loss_scale"] = {"scale": float(ls["scale"]), "skipped_steps": int(ls["skipped"])}
    summary["wall_seconds"] = time.perf_counter() - t_start
    with open(paths["metrics"], "w") as f:
        json.dump(summary, f, indent=2)
    log(f"done: val loss {val:.4f} nats/char vs uniform ln({vocab}) = {uniform:.4f} ({uniform - val:.3f} nats "
        f"below, {val / uniform:.1%} of it), wall time {summary['wall_seconds']:.1f} s (training "
        f"{train_seconds:.1f} s), {summary['chars_per_second']:,.0f} chars/s")
    log(f"wrote {', '.join(paths.values())}")
    return summary


def _log_memory(mem, shape, log):
    mib = 2.0 ** 20
    if mem["checkpoint"] == "none":
        log(f"memory: peak tape {mem['peak_bytes_none'] / mib:.2f} MiB per step (batch {shape[0]} x {shape[1]}, "
            "gpuad.memory; --checkpoint uniform|revolve|optimal|block trades it for recomputation)")
        return
    sch = mem.get("schedule") or {}
    extra = ", ".join([f"{k} {sch[k]}" for k in ("segments", "snapshots", "budget_bytes") if sch.get(k)]
                      + ([f"{sch['actual_advances']} block forwards recomputed"] if sch else []))
    log(f"memory: one step (batch {shape[0]} x {shape[1]}): peak tape {mem['peak_bytes_none'] / mib:.2f} MiB "
        f"without checkpointing, {mem['peak_bytes_checkpoint'] / mib:.2f} MiB with --checkpoint "
        f"{mem['checkpoint']}{f' ({extra})' if extra else ''}: saved {mem['saved_bytes'] / mib:.2f} MiB "
        f"({mem['saved_bytes'] / max(mem['peak_bytes_none'], 1):.0%}); step time {mem['step_seconds_none']:.3f} s "
        f"-> {mem['step_seconds_checkpoint']:.3f} s ({mem['time_cost']:+.0%}); gradients differ by at most "
        f"{mem['max_grad_difference']:.1e}")


def _plot(history, uniform, path, title):
    """Training loss per step and validation loss per epoch against ``ln(vocab)`` (PNG, Agg)."""
    matplotlib = require("matplotlib")
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 3.8))
    losses = [v for h in history for v in h["step_losses"]]
    ax.plot(range(1, len(losses) + 1), losses, lw=0.8, alpha=0.8, label="training loss (per step)")
    ends = [sum(len(h["step_losses"]) for h in history[:i + 1]) for i in range(len(history))]
    ax.plot(ends, [h["val_loss"] for h in history], marker="o", label="validation loss (end of epoch)")
    ax.axhline(uniform, color="grey", ls="--", lw=1, label=f"uniform ln(vocab) = {uniform:.2f}")
    ax.set_xlabel("step")
    ax.set_ylabel("nats per character")
    ax.set_ylim(0, uniform * 1.15)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
