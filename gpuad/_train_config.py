"""The checks of ``gpuad train``'s options, shared by the command line and the library.

:func:`validate_config` checks a :class:`gpuad.training.TrainConfig` and
:func:`validate_gpt` the options of the gpt model (``TrainConfig.extra``),
before any data is loaded or any model built.  Both raise
:class:`ConfigError` with a one-line message.  ``cli=True`` names each
option by its flag (``--batch-size``), as ``gpuad train`` prints it;
otherwise by its field (``train: batch_size``), as
:func:`gpuad.training.train` raises it.
"""

from __future__ import annotations

import math
import numbers
import os

from ._args import int_or_none, short_repr

__all__ = ["ConfigError", "MODELS", "GPT_DEFAULTS", "CHECKPOINT_CHOICES", "BUDGET_STRATEGIES",
           "validate_config", "validate_gpt"]

#: The models ``gpuad train`` trains.
MODELS = ("cnn", "gpt")
#: Defaults of the gpt model's options (``TrainConfig.extra`` overrides them).
GPT_DEFAULTS = {"context": 64, "d_model": 64, "layers": 4,
                "heads": 4, "checkpoint": "none", "budget_bytes": None, "segments": None,
                "sample_chars": 300, "temperature": 0.8, "prompt": "The ", "val_fraction": 0.1}
#: Strategies ``--checkpoint`` names; those missing from ``gpuad.checkpointing`` get a clear refusal.
CHECKPOINT_CHOICES = ("none", "block", "uniform", "revolve", "bisection", "optimal", "auto")
#: The ``--checkpoint`` strategies that take ``--budget-bytes`` (``optimal`` needs it).
BUDGET_STRATEGIES = ("optimal", "auto")


class ConfigError(ValueError):
    """A bad option of ``gpuad train`` (or of a :class:`~gpuad.training.TrainConfig`): a one-line message.

    ``gpuad train`` prints it as one line, exit status 2.
    """


def _namer(cli):
    """``(name, prefix)``: ``name("batch_size")`` is ``--batch-size`` (cli) or ``batch_size``."""
    if cli:
        return (lambda f: "--" + f.replace("_", "-")), ""
    return (lambda f: f), "train: "


def _positive_int(v):
    n = int_or_none(v)
    return n is not None and n >= 1


def _positive_real(v):
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and v > 0 and math.isfinite(v)


def validate_config(cfg, *, cli=False):
    """Check the options of a training run before any work.

    Parameters
    ----------
    cfg : gpuad.training.TrainConfig
    cli : bool, default False
        Name the options by their ``gpuad train`` flags.

    Raises
    ------
    ConfigError
        For an unknown model, a non-positive (or non-integer) epoch count or
        batch size, a learning rate that is not positive and finite, an
        unknown dtype, a non-integer seed, a bad output path, CNN sizes that
        are not positive ints, or ``extra`` options the model does not have.
    """
    n, pre = _namer(cli)
    if cfg.model not in MODELS:
        raise ConfigError(f"{pre}{n('model')}: unknown model {cfg.model!r}; available: {', '.join(MODELS)}")
    for name in ("epochs", "batch_size"):
        v = getattr(cfg, name)
        if not _positive_int(v):
            raise ConfigError(f"{pre}{n(name)} must be a positive integer, got {short_repr(v)}")
    if not _positive_real(cfg.lr):
        raise ConfigError(f"{pre}{n('lr')} must be positive and finite, got {short_repr(cfg.lr)}")
    if cfg.dtype not in ("float32", "float64") and not (cfg.model == "gpt" and cfg.dtype == "float16"):
        also = " (or float16 on cupy)" if cfg.model == "gpt" else ""
        raise ConfigError(f"{pre}{n('dtype')} must be float32 or float64{also}, got {cfg.dtype!r}")
    if int_or_none(cfg.seed) is None:
        raise ConfigError(f"{pre}{n('seed')} must be an int, got {short_repr(cfg.seed)}")
    if not isinstance(cfg.out, (str, os.PathLike)) or not os.fspath(cfg.out):
        raise ConfigError(f"{pre}{n('out')} must be a directory path, got {short_repr(cfg.out)}")
    extra = cfg.extra
    if not isinstance(extra, dict):
        raise ConfigError(f"{pre}extra must be a dict of gpt options, got {type(extra).__name__}")
    if cfg.model == "gpt":
        unknown = sorted(set(extra) - set(GPT_DEFAULTS))
        if unknown:
            raise ConfigError(f"{pre}unknown gpt option(s) {', '.join(map(repr, unknown))} in extra; known: "
                              f"{', '.join(GPT_DEFAULTS)}")
        return
    if extra:
        raise ConfigError(f"{pre}extra options {', '.join(map(repr, sorted(extra)))} are only used by model "
                          f"'gpt', not {cfg.model!r}")
    ch = tuple(cfg.channels) if isinstance(cfg.channels, (tuple, list)) else None
    if ch is None or len(ch) != 2 or not all(_positive_int(c) for c in ch):
        raise ConfigError(f"{pre}channels must be two positive ints, got {short_repr(cfg.channels)}")
    if not _positive_int(cfg.hidden):
        raise ConfigError(f"{pre}hidden must be a positive integer, got {short_repr(cfg.hidden)}")


def validate_gpt(opts, backend_name, dtype, *, cli=False):
    """Check the gpt options before any work; raise :class:`ConfigError` with a one-line message.

    Parameters
    ----------
    opts : dict
        ``GPT_DEFAULTS`` keys (``TrainConfig.extra`` merged over the defaults).
    backend_name : str
        The chosen backend.
    dtype : str
    cli : bool, default False
        Name the options by their ``gpuad train`` flags.
    """
    from .gpt import available_strategies

    n, pre = _namer(cli)
    for name in ("context", "d_model", "layers", "heads"):
        if not _positive_int(opts[name]):
            raise ConfigError(f"{pre}{n(name)} must be a positive integer, got {short_repr(opts[name])}")
    if opts["d_model"] % opts["heads"]:
        raise ConfigError(f"{pre}{n('d_model')} {opts['d_model']} is not divisible by {n('heads')} {opts['heads']}")
    sc = int_or_none(opts["sample_chars"])
    if sc is None or sc < 0:
        raise ConfigError(f"{pre}{n('sample_chars')} must be >= 0, got {short_repr(opts['sample_chars'])}")
    temp = opts["temperature"]
    if isinstance(temp, bool) or not isinstance(temp, numbers.Real) or not (temp >= 0 and math.isfinite(temp)):
        raise ConfigError(f"{pre}{n('temperature')} must be a finite number >= 0, got {short_repr(temp)}")
    vf = opts["val_fraction"]
    if not (_positive_real(vf) and vf < 1):
        raise ConfigError(f"{pre}{n('val_fraction')} must be a number in (0, 1), got {short_repr(vf)}")
    n_val, n_train = _split_sizes(vf)
    # Training needs a window of context + 1 characters with room for a random offset, and the
    # validation loss at least one window of context + 1 characters.
    limit = min(n_val - 1, (n_train - 1) // 2 - 1)
    if opts["context"] > limit:
        raise ConfigError(f"{pre}{n('context')} {opts['context']} is too long for the corpus: its validation split "
                          f"has {n_val:,} characters and its training split {n_train:,}; the largest context is "
                          f"{limit:,}")
    _check_checkpointing(opts, available_strategies(), n, pre)
    if dtype == "float16" and backend_name != "cupy":
        raise ConfigError(f"{pre}{n('dtype')} float16 needs the cupy backend (with loss scaling); {backend_name} "
                          "has no fast float16 matmul: use float32 or float64")
    if dtype not in ("float16", "float32", "float64"):
        raise ConfigError(f"{pre}{n('dtype')} must be float32, float64 or float16 (cupy), got {dtype!r}")
    prompt = opts["prompt"]
    if not isinstance(prompt, str):
        raise ConfigError(f"{pre}{n('prompt')} must be a string, got {type(prompt).__name__}")
    missing = [c for c in prompt if c not in _corpus_chars()]
    if not prompt or missing:
        raise ConfigError(f"{pre}{n('prompt')} must be non-empty and use characters of the corpus; unknown: "
                          f"{missing!r}")


def _check_checkpointing(opts, avail, n, pre):
    """``checkpoint``, ``budget_bytes`` and ``segments``: a known strategy and only the options it uses."""
    ck, budget, segments = opts["checkpoint"], opts["budget_bytes"], opts["segments"]
    flag = n("checkpoint")
    if ck not in ("none", "block") and ck not in avail:
        if ck in CHECKPOINT_CHOICES:  # a strategy gpt knows of, missing from this build
            raise ConfigError(f"{pre}{flag} {ck}: the {ck!r} strategy is not available in this build of "
                              f"gpuad.checkpointing (checkpoint_sequential has: {', '.join(avail)})")
        choices = ["none", "block"] + [s for s in avail if s not in ("none", "block")]
        raise ConfigError(f"{pre}{flag} must be one of {', '.join(choices)}; got {short_repr(ck)}")
    if budget is not None:
        b = int_or_none(budget)
        if b is None or b < 1:
            raise ConfigError(f"{pre}{n('budget_bytes')} must be a positive integer, got {short_repr(budget)}")
        if ck not in BUDGET_STRATEGIES:
            raise ConfigError(f"{pre}{n('budget_bytes')} applies only to {flag} optimal and auto, not {flag} {ck}")
    elif ck == "optimal":
        raise ConfigError(f"{pre}{flag} optimal needs {n('budget_bytes')}: the bytes the chain of blocks may hold "
                          "(optimal plans the fastest schedule within it)")
    if segments is not None:
        if ck != "uniform":
            raise ConfigError(f"{pre}{n('segments')} {segments} is only used by {flag} uniform, not {flag} {ck}")
        s, layers = int_or_none(segments), opts["layers"]
        if s is None or not 1 <= s <= layers:
            raise ConfigError(f"{pre}{n('segments')} must be an int in [1, {layers}] (at most one segment per "
                              f"block of {n('layers')} {layers}), got {short_repr(segments)}")


def _split_sizes(val_fraction):
    """``(n_val, n_train)`` characters of the corpus's split, without building the corpus."""
    from pydoc_data.topics import topics

    n = sum(len(v) for v in topics.values())
    n_val = max(int(n * val_fraction), 2)
    return n_val, n - n_val


def _corpus_chars():
    from pydoc_data.topics import topics

    return set("".join(topics.values()))
