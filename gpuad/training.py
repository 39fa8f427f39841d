"""``gpuad train``: train a small CNN on scikit-learn's 8x8 digits, on any backend.

Everything runs on the chosen backend's device: the data, the parameters,
the optimiser state, the shuffling (:func:`gpuad.random.permutation`) and
the metrics, which are accumulated as device arrays and brought to the host
once per epoch for printing.  The run writes into ``out``:

``params.npz``     trained parameters (:func:`gpuad.serialization.load` reads them)
``optimizer.npz``  the optimiser state
``metrics.json``   the configuration, per-epoch history and summary
``curves.png``     loss and accuracy curves (matplotlib, Agg)
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field

from . import nn, optim, random
from . import xp as gxp
from ._train_config import MODELS, ConfigError, validate_config
from .data import MissingDependency, load_digits, require
from .transforms import value_and_grad

__all__ = ["TrainConfig", "DigitsCNN", "train", "MissingDependency", "check_dependencies", "ConfigError",
           "validate_config", "MODELS"]


@dataclass
class TrainConfig:
    """Options of ``gpuad train`` (see ``gpuad train --help``).

    :func:`train` checks them first (:func:`validate_config`, which
    ``gpuad train`` runs too): ``model`` in :data:`MODELS`, ``epochs`` and
    ``batch_size`` positive ints, ``lr`` positive and finite, ``dtype``
    float32 or float64 (gpt on CuPy: also float16), ``extra`` only the gpt
    options (:data:`gpuad.training_gpt.GPT_DEFAULTS` keys).
    """

    model: str = "cnn"
    backend: str | None = None
    epochs: int = 20
    batch_size: int = 32
    lr: float = 3e-3
    seed: int = 0
    dtype: str = "float32"
    out: str = os.path.join("runs", "digits")
    channels: tuple = (16, 32)
    hidden: int = 64
    progress: bool = True
    distributed: bool = False  # gpuad train --distributed: data-parallel over gpuad.distributed.init()
    extra: dict = field(default_factory=dict)


class DigitsCNN:
    """conv3x3(1->c1) relu, conv3x3(c1->c2) relu, maxpool 2, linear(16 c2 -> hidden) relu, linear(-> 10).

    Parameters
    ----------
    channels : (int, int)
    hidden : int
    num_classes : int

    Notes
    -----
    ``init(key, dtype) -> params``; ``apply(params, x)`` maps images
    ``(N, 1, 8, 8)`` to logits ``(N, num_classes)``.
    """

    def __init__(self, channels=(16, 32), hidden=64, num_classes=10):
        c1, c2 = channels
        self.conv1 = nn.Conv2d(1, c1, 3, padding=1)
        self.conv2 = nn.Conv2d(c1, c2, 3, padding=1)
        self.fc1 = nn.Linear(c2 * 4 * 4, hidden, w_init=nn.he_normal)
        self.fc2 = nn.Linear(hidden, num_classes)

    def init(self, key, dtype="float32"):
        """Parameters ``{"conv1", "conv2", "fc1", "fc2"}`` on the key's device."""
        k1, k2, k3, k4 = random.split(key, 4)
        return {"conv1": self.conv1.init(k1, dtype), "conv2": self.conv2.init(k2, dtype),
                "fc1": self.fc1.init(k3, dtype), "fc2": self.fc2.init(k4, dtype)}

    def apply(self, params, x):
        """Images ``(N, 1, 8, 8)`` -> logits ``(N, 10)``."""
        h = nn.relu(self.conv1.apply(params["conv1"], x))
        h = nn.relu(self.conv2.apply(params["conv2"], h))
        h = nn.max_pool2d(h, 2)
        h = gxp.reshape(h, (h.shape[0], -1))
        h = nn.relu(self.fc1.apply(params["fc1"], h))
        return self.fc2.apply(params["fc2"], h)


def check_dependencies(plot=True, model="cnn"):
    """Import the optional packages ``gpuad train`` needs, or raise :class:`MissingDependency`."""
    if model != "gpt":  # the gpt model's corpus ships with Python (pydoc_data)
        require("sklearn", package="scikit-learn")
    require("tqdm")
    if plot:
        require("matplotlib")


def count_params(params):
    from ._tree import tree_leaves

    return sum(math.prod(p.shape) for p in tree_leaves(params))


def _device_of(choice, x):
    """A readable name for the device array ``x`` lives on."""
    from ._backend import backend_module

    if choice.name == "cupy":
        devs = backend_module("cupy").devices()
        return devs[0] if devs else str(x.device)
    return str(x.device)


def _host(x):
    """A 0-d device array as a Python float (once per epoch, for printing)."""
    return float(x)


def _memory_tracker():
    try:
        from . import memory
    except ImportError:  # gpuad.memory not available in this build
        return None
    return memory


def train(cfg, log=print):
    """Run the training described by ``cfg``; returns the summary dict.

    Parameters
    ----------
    cfg : TrainConfig
    log : callable
        Receives each line of the report.

    Returns
    -------
    dict
        ``config``, ``backend``, ``device``, ``history`` (per epoch: loss,
        train/test accuracy, seconds, samples/s), ``test_accuracy``,
        ``wall_seconds``, ``samples_per_second``, ``peak_tape_bytes`` and
        the paths written.

    Raises
    ------
    ConfigError
        A bad option (:func:`validate_config`), before any work.
    """
    from ._backend import get_backend, set_backend
    from .serialization import save

    validate_config(cfg)  # before any work: gpuad train checks the same, naming the flags
    if cfg.model == "gpt":  # character-level transformer: gpuad.training_gpt
        from .training_gpt import train_gpt

        return train_gpt(cfg, log)
    t_start = time.perf_counter()
    tqdm = require("tqdm").tqdm
    choice = set_backend(cfg.backend) if cfg.backend else get_backend()
    comm = _communicator(cfg)  # before any array: picks this rank's GPU; a no-op without --distributed
    if comm.rank != 0:  # progress and files on rank 0 only
        log = _quiet
    data = load_digits(choice.name, dtype=cfg.dtype)
    device = _device_of(choice, data.x_train)
    n_train, n_test = data.x_train.shape[0], data.x_test.shape[0]
    log(f"backend: {choice.name} on {device} ({choice.reason})")
    log(f"data: sklearn digits 8x8, {n_train} train / {n_test} test images (fixed stratified split), "
        f"dtype {cfg.dtype}")
    if cfg.distributed:
        if comm.size > min(cfg.batch_size, n_test):
            raise ValueError(f"--distributed: {comm.size} processes need a batch size of at least {comm.size}")
        log(f"distributed: {comm.size} process(es), {comm.backend} ({comm.launch.reason}); each rank takes "
            f"its shard of every batch of {cfg.batch_size}; gradients averaged in "
            f"{comm.bucket_bytes / 1e6:g} MB buckets")

    model = DigitsCNN(cfg.channels, cfg.hidden, data.num_classes)
    key = random.key(cfg.seed, like=data.x_train)
    k_init, k_data = random.split(key)
    params = comm.broadcast(model.init(k_init, cfg.dtype))  # same key on every rank; rank 0's values win
    steps_per_epoch = -(-n_train // cfg.batch_size)
    total_steps = steps_per_epoch * cfg.epochs
    warmup = min(steps_per_epoch, max(total_steps // 10, 1))
    schedule = (optim.warmup_cosine(cfg.lr, warmup, total_steps, final_value=cfg.lr * 0.01)
                if total_steps > warmup else optim.constant(cfg.lr))
    opt = optim.adamw(schedule, weight_decay=1e-4)
    opt_state = opt.init(params)
    log(f"model: DigitsCNN conv(1->{cfg.channels[0]})-conv(->{cfg.channels[1]})-maxpool-fc({cfg.hidden})-fc(10), "
        f"{count_params(params):,} parameters; AdamW lr {cfg.lr:g} (warm-up {warmup} steps, cosine), "
        f"batch {cfg.batch_size}, {cfg.epochs} epochs")

    def loss_fn(p, x, y):
        logits = model.apply(p, x)
        return nn.cross_entropy(logits, y), logits

    grad_fn = value_and_grad(loss_fn, has_aux=True)

    def evaluate(p, x, y, bs=512):
        hits = None
        for i in range(0, x.shape[0], bs):
            j = min(i + bs, x.shape[0])  # strict: no out-of-bounds slice stops
            logits = model.apply(p, x[i:j, ...])
            h = gxp.sum(gxp.astype(gxp.argmax(logits, axis=-1) == y[i:j], "int64"))
            hits = h if hits is None else hits + h
        return hits

    memory = _memory_tracker()
    history = []
    peak_tape = 0
    train_seconds = 0.0
    for epoch in range(1, cfg.epochs + 1):
        perm = random.permutation(random.fold_in(k_data, epoch), n_train)
        loss_sum = None
        hits = None
        bar = tqdm(total=n_train, desc=f"epoch {epoch}/{cfg.epochs}", unit="img", leave=False,
                   disable=not cfg.progress or comm.rank != 0, file=sys.stderr, dynamic_ncols=True)
        t0 = time.perf_counter()
        for s in range(0, n_train, cfg.batch_size):
            idx = perm[s:min(s + cfg.batch_size, n_train)]
            n_global = idx.shape[0]
            if n_global < comm.size:  # a last batch with fewer images than ranks is left out
                continue
            if comm.size > 1:  # this rank's shard of the global batch (shared key: same permutation)
                lo, hi = comm.shard(n_global)
                idx = idx[lo:hi]
            xb = gxp.take(data.x_train, idx, axis=0)
            yb = gxp.take(data.y_train, idx, axis=0)
            if memory is not None and epoch == 1 and s == 0:
                with memory.track() as rep:
                    (loss, logits), grads = grad_fn(params, xb, yb)
                peak_tape = rep.peak_bytes
            else:
                (loss, logits), grads = grad_fn(params, xb, yb)
            if comm.size > 1:  # mean over the global batch: shards weighted by their sizes
                grads = comm.allreduce_mean(grads, weight=idx.shape[0] * comm.size / n_global)
            params, opt_state = opt.step(params, grads, opt_state)
            nb = idx.shape[0]
            lsum = loss * nb
            h = gxp.sum(gxp.astype(gxp.argmax(logits, axis=-1) == yb, "int64"))
            loss_sum = lsum if loss_sum is None else loss_sum + lsum
            hits = h if hits is None else hits + h
            bar.update(n_global)
        if comm.size > 1:  # the epoch's sums over all ranks, one small collective
            loss_sum, hits = comm.allreduce_sum((loss_sum, hits))
        train_loss = _host(loss_sum) / n_train       # the one host transfer of the epoch's training
        dt = time.perf_counter() - t0
        train_seconds += dt
        bar.close()
        train_acc = _host(hits) / n_train
        test_acc = _host(_evaluate_sharded(comm, evaluate, params, data.x_test, data.y_test)) / n_test
        rate = n_train / dt
        history.append({"epoch": epoch, "loss": train_loss, "train_accuracy": train_acc,
                        "test_accuracy": test_acc, "seconds": dt, "samples_per_second": rate})
        log(f"epoch {epoch:3d}/{cfg.epochs}  loss {train_loss:.4f}  train acc {train_acc:.2%}  "
            f"test acc {test_acc:.2%}  {rate:,.0f} samples/s")

    os.makedirs(cfg.out, exist_ok=True)
    paths = {"params": os.path.join(cfg.out, "params.npz"), "optimizer": os.path.join(cfg.out, "optimizer.npz"),
             "metrics": os.path.join(cfg.out, "metrics.json"), "curves": os.path.join(cfg.out, "curves.png")}
    if comm.rank == 0:
        save(paths["params"], params)
        save(paths["optimizer"], opt_state)
    summary = {
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(cfg).items()},
        "backend": choice.name, "device": device, "reason": choice.reason,
        "history": history,
        "test_accuracy": history[-1]["test_accuracy"] if history else None,
        "final_loss": history[-1]["loss"] if history else None,
        "train_seconds": train_seconds,
        "samples_per_second": cfg.epochs * n_train / train_seconds if train_seconds else None,
        "peak_tape_bytes": peak_tape if memory is not None else None,
        "parameters": count_params(params),
        "files": paths,
    }
    summary["processes"] = comm.size
    if comm.rank == 0:
        _plot(history, paths["curves"], title=f"gpuad train: digits CNN on {choice.name} ({cfg.dtype})")
    summary["wall_seconds"] = time.perf_counter() - t_start
    if comm.rank == 0:
        with open(paths["metrics"], "w") as f:
            json.dump(summary, f, indent=2)
    mem = (f"peak tape memory {peak_tape / 2**20:.2f} MiB per step (batch {cfg.batch_size}, gpuad.memory)"
           if memory is not None else "peak tape memory: not measured (gpuad.memory is not available)")
    log(f"done: test accuracy {summary['test_accuracy']:.2%}, wall time {summary['wall_seconds']:.1f} s "
        f"(training {train_seconds:.1f} s), {summary['samples_per_second']:,.0f} samples/s, {mem}")
    log(f"wrote {paths['params']}, {paths['optimizer']}, {paths['metrics']}, {paths['curves']}")
    return summary


def _quiet(*args, **kwargs):
    """The log of ranks other than 0."""


def _communicator(cfg):
    """The run's :mod:`gpuad.distributed` communicator: single-process unless ``cfg.distributed``."""
    from . import distributed

    return distributed.init() if cfg.distributed else distributed.SingleProcessCommunicator()


def _evaluate_sharded(comm, evaluate, params, x, y):
    """Correct predictions on ``(x, y)``: each rank scores its shard, then one sum over ranks."""
    if comm.size == 1:
        return evaluate(params, x, y)
    lo, hi = comm.shard(x.shape[0])
    return comm.allreduce_sum(evaluate(params, x[lo:hi, ...], y[lo:hi]))


def _plot(history, path, title):
    """Loss and accuracy per epoch, side by side, as a PNG (matplotlib's Agg backend)."""
    matplotlib = require("matplotlib")
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    ep = [h["epoch"] for h in history]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.4))
    a1.plot(ep, [h["loss"] for h in history], marker="o", ms=3)
    a1.set_xlabel("epoch")
    a1.set_ylabel("training loss (cross-entropy)")
    a1.set_yscale("log")
    a1.grid(alpha=0.3)
    a2.plot(ep, [100 * h["train_accuracy"] for h in history], marker="o", ms=3, label="train")
    a2.plot(ep, [100 * h["test_accuracy"] for h in history], marker="s", ms=3, label="test")
    a2.set_xlabel("epoch")
    a2.set_ylabel("accuracy (%)")
    a2.grid(alpha=0.3)
    a2.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
