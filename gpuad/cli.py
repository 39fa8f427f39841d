"""The ``gpuad`` command line.

``gpuad info``
    The default backend and why it was chosen, the devices of every usable
    backend, and the versions of gpuad and the array libraries.
``gpuad train``
    The main job: trains a small CNN on scikit-learn's 8x8 digits (see
    :mod:`gpuad.training`).  Bad options exit with status 2 and one line.

Subcommands are registered in :func:`build_parser`; each is a function
``cmd_<name>(args) -> int``.  Nothing heavy is imported at module level, so
``import gpuad.cli`` stays as cheap as ``import gpuad``.
"""

from __future__ import annotations

import argparse
import math
import os
import sys

__all__ = ["main", "build_parser", "collect_info"]

PROG = "gpuad"


class CLIError(Exception):
    """A user-facing failure: printed as one line, exit status ``code``."""

    def __init__(self, message, code=1):
        super().__init__(message)
        self.code = code


def _dist_version(dist):
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None
    except Exception:  # noqa: BLE001 - broken metadata
        return None


def _module_version(module):
    import importlib

    try:
        mod = importlib.import_module(module)
    except ImportError:
        return None
    except Exception as e:  # noqa: BLE001 - installed but broken
        return f"fails to import ({type(e).__name__})"
    return str(getattr(mod, "__version__", "unknown"))


def _choose(backend):
    """Resolve the default backend, turning configuration errors into CLIError."""
    from . import _backend

    try:
        if backend is not None:
            return _backend.set_backend(backend)
        return _backend.get_backend()
    except ValueError as e:  # unknown name
        raise CLIError(str(e), code=2) from None
    except RuntimeError as e:  # e.g. cupy asked for without a usable GPU
        source = "--backend" if backend is not None else "GPUAD_BACKEND"
        raise CLIError(f"{e} (set by {source})", code=1) from None


def collect_info(backend=None):
    """Everything ``gpuad info`` reports, as a JSON-able dict."""
    import platform

    import gpuad

    from . import _backend

    choice = _choose(backend)
    backends = {}
    for name in _backend.BACKENDS:
        mod = _backend.backend_module(name)
        ok, reason = mod.probe()
        entry = {"usable": bool(ok), "reason": reason, "version": mod.version(), "devices": []}
        if ok:
            try:
                entry["devices"] = list(mod.devices())
            except Exception as e:  # noqa: BLE001 - keep reporting the rest
                entry["devices"] = [f"(device query failed: {type(e).__name__}: {e})"]
        if name == choice.name:
            try:
                entry["memory"] = dict(mod.memory_stats())
            except Exception as e:  # noqa: BLE001 - e.g. a GPUAD_GPU_MEMORY_LIMIT that does not parse
                entry["memory"] = {"error": f"{type(e).__name__}: {e}"}
        backends[name] = entry

    cupy_version = backends["cupy"]["version"]
    if cupy_version is None:
        from .backends import cupy as cupy_backend

        dist, v = cupy_backend._distribution_version()
        cupy_version = f"{dist} {v} installed but not importable" if dist else "not installed"

    versions = {
        "python": platform.python_version(),
        "gpuad": gpuad.__version__,
        "numpy": _module_version("numpy") or "not installed",
        "cupy": cupy_version,
        "array-api-compat": _dist_version("array-api-compat") or _module_version("array_api_compat")
        or "not installed",
        "array-api-strict": _dist_version("array-api-strict") or _module_version("array_api_strict")
        or "not installed",
    }
    env_keys = ("GPUAD_BACKEND", "GPUAD_GPU_MEMORY_LIMIT", "CUDA_VISIBLE_DEVICES", "OMP_NUM_THREADS")
    env = {k: os.environ[k] for k in env_keys if k in os.environ}
    return {
        "backend": choice.name,
        "requested": choice.requested,
        "reason": choice.reason,
        "fallbacks": dict(choice.fallbacks),
        "backends": backends,
        "versions": versions,
        "environment": env,
        "platform": platform.platform(),
    }


def _format_info(info):
    lines = [
        f"gpuad {info['versions']['gpuad']}",
        f"backend: {info['backend']} (requested: {info['requested']})",
        f"reason: {info['reason']}",
    ]
    for name, why in info["fallbacks"].items():
        lines.append(f"fallback: {name} not used: {why}")
    lines.append("backends:")
    width = max(len(n) for n in info["backends"])
    for name, b in info["backends"].items():
        state = "usable  " if b["usable"] else "unusable"
        lines.append(f"  {name:<{width}}  {state}  {b['reason']}")
        if b["devices"]:
            lines.append(f"  {'':<{width}}  devices: {', '.join(b['devices'])}")
        if b.get("memory"):
            mem = ", ".join(f"{k}={v}" for k, v in b["memory"].items())
            lines.append(f"  {'':<{width}}  memory: {mem}")
    lines.append("versions:")
    for k, v in info["versions"].items():
        lines.append(f"  {k}: {v}")
    if info["environment"]:
        lines.append("environment:")
        for k, v in info["environment"].items():
            lines.append(f"  {k}={v}")
    lines.append(f"platform: {info['platform']}")
    return "\n".join(lines)


def cmd_info(args):
    info = collect_info(args.backend)
    if args.json:
        import json

        print(json.dumps(info, indent=2, sort_keys=False))
    else:
        print(_format_info(info))
    return 0


def build_parser():
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--backend",
        choices=("auto", "numpy", "cupy", "array_api_strict"),
        default=None,
        help="default backend (overrides GPUAD_BACKEND; default: GPUAD_BACKEND or auto)",
    )

    parser = argparse.ArgumentParser(
        prog=PROG,
        description="gpuad: automatic differentiation for array-API programs on CuPy and NumPy.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_gpuad_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser(
        "info", parents=[common], help="show the chosen backend, devices and versions",
        description="Show the default backend and why it was chosen, the devices of each usable "
                    "backend, and library versions.",
    )
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    p.set_defaults(func=cmd_info)

    t = sub.add_parser(
        "train", parents=[common], help="train a small CNN on the 8x8 digits (the main job)",
        description="Train a small CNN on scikit-learn's 8x8 handwritten digits with a fixed "
                    "train/test split; prints backend, device, per-epoch loss/accuracy, samples/s "
                    "and peak tape memory; writes params.npz, optimizer.npz, metrics.json and "
                    "curves.png into --out.  Needs: pip install 'gpuad[train]'.",
    )
    t.add_argument("--model", default="cnn", help="model to train (default: cnn; available: cnn, gpt)")
    t.add_argument("--epochs", type=int, default=None, help="passes over the training set (default: 20; gpt: 3)")
    t.add_argument("--batch-size", type=int, default=None,
                   help="images (gpt: text windows) per step (default: 32)")
    t.add_argument("--lr", type=float, default=None, help="peak learning rate of AdamW (default: 3e-3)")
    t.add_argument("--seed", type=int, default=0, help="seed of the gpuad.random key (default: 0)")
    t.add_argument("--dtype", default="float32",
                   help="float32 or float64; gpt on cupy also float16 (default: float32)")
    t.add_argument("--out", default=None, help="output directory (default: runs/digits; gpt: runs/gpt)")
    t.add_argument("--no-progress", action="store_true", help="no tqdm progress bars")
    t.add_argument("--distributed", action="store_true",
                   help="data-parallel over the processes of an MPI or NCCL launch, e.g. "
                        "mpiexec -n 2 gpuad train --distributed (see gpuad.distributed)")
    g = t.add_argument_group("--model gpt", "a character-level transformer on Python's help topics "
                             "(see gpuad.training_gpt)")
    g.add_argument("--checkpoint", default="none", help="how the transformer blocks are checkpointed: none, block "
                   "(gpuad.checkpoint per block) or a checkpoint_sequential strategy such as uniform, revolve, "
                   "optimal (default: none)")
    g.add_argument("--budget-bytes", type=int, default=None,
                   help="checkpoint_sequential's budget_bytes: tape bytes allowed for the chain of blocks")
    g.add_argument("--segments", type=int, default=None, help="segments of --checkpoint uniform")
    for name, default, what in (("context", 64, "characters per window"), ("d-model", 64, "model width"),
                                ("layers", 4, "transformer blocks"), ("heads", 4, "attention heads"),
                                ("sample-chars", 300, "characters sampled at the end")):
        g.add_argument(f"--{name}", type=int, default=default, help=f"{what} (default: {default})")
    g.add_argument("--temperature", type=float, default=0.8, help="sampling temperature, 0 = greedy (default: 0.8)")
    g.add_argument("--prompt", default="The ", help="start of the sampled text (default: 'The ')")
    t.set_defaults(func=cmd_train)

    w = sub.add_parser(
        "sweep", parents=[common], help="peak memory vs time of each checkpoint strategy",
        description="Run a deep tanh MLP (one checkpoint_sequential chain) under each checkpoint "
                    "strategy at a range of byte budgets; print peak bytes, advances, time per step "
                    "and overhead vs 'none'; write sweep.csv, sweep.json and sweep.png into --out "
                    "(see gpuad.sweep).  The plot needs matplotlib.",
    )
    w.add_argument("--depth", type=int, default=256, help="layers (default: 256)")
    w.add_argument("--width", type=int, default=512, help="layer width (default: 512)")
    w.add_argument("--batch", type=int, default=128, help="batch size (default: 128)")
    w.add_argument("--dtype", default="float32", help="float32 or float64 (default: float32)")
    w.add_argument("--strategies", default="none,uniform,revolve,optimal",
                   help="comma-separated, from none, uniform, revolve, bisection, optimal "
                        "(default: none,uniform,revolve,optimal)")
    w.add_argument("--budgets", default="0.5,0.25,0.12,0.06,0.03",
                   help="budgets as fractions of the bytes 'none' stores beyond the input and "
                        "parameters (default: 0.5,0.25,0.12,0.06,0.03)")
    w.add_argument("--repeat", type=int, default=3, help="timed runs per point, best kept (default: 3)")
    w.add_argument("--out", default=os.path.join("runs", "sweep"), help="output directory (default: runs/sweep)")
    w.set_defaults(func=cmd_sweep)
    return parser


TRAIN_DEFAULTS = {"cnn": {"epochs": 20, "batch_size": 32, "lr": 3e-3, "out": os.path.join("runs", "digits")},
                  "gpt": {"epochs": 3, "batch_size": 32, "lr": 3e-3, "out": os.path.join("runs", "gpt")}}


def _check_writable(out):
    try:
        os.makedirs(out, exist_ok=True)
        probe = os.path.join(out, f".gpuad-write-test-{os.getpid()}")
        with open(probe, "w"):
            pass
        os.remove(probe)
    except OSError as e:
        raise CLIError(f"--out {out!r} is not a writable directory: {e.strerror or e}", code=2) from None


def cmd_train(args):
    from . import training

    for k, v in TRAIN_DEFAULTS.get(args.model, {}).items():  # an unknown model is refused just below
        if getattr(args, k) is None:
            setattr(args, k, v)
    extra = {}
    if args.model == "gpt":
        from .training_gpt import GPT_DEFAULTS

        extra = {k: getattr(args, k) for k in GPT_DEFAULTS if hasattr(args, k)}
    cfg = training.TrainConfig(model=args.model, backend=args.backend, epochs=args.epochs,
                               batch_size=args.batch_size, lr=args.lr, seed=args.seed, dtype=args.dtype,
                               out=args.out, progress=not args.no_progress, extra=extra,
                               distributed=args.distributed)
    try:
        training.validate_config(cfg, cli=True)  # the check train() runs, with the flags' names
    except training.ConfigError as e:
        raise CLIError(str(e), code=2) from None
    if args.model != "gpt":
        _refuse_gpt_options(args)
    _check_writable(args.out)
    try:
        training.check_dependencies(model=args.model)
    except training.MissingDependency as e:
        raise CLIError(str(e), code=2) from None
    if args.distributed:
        _check_distributed(args)
    choice = _choose(args.backend)  # a clear error for an unusable backend, before any work
    if args.model == "gpt":
        from . import training_gpt

        try:
            training_gpt.validate({**training_gpt.GPT_DEFAULTS, **extra}, choice.name, args.dtype, cli=True)
        except training_gpt.ConfigError as e:
            raise CLIError(str(e), code=2) from None
    try:
        training.train(cfg, log=lambda line: print(line, flush=True))
    except MemoryError as e:  # numpy's or gpuad.OutOfMemoryError: a model or batch too large for the device
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CLIError(f"out of memory: {first}; try a smaller --batch-size"
                       + (", --context or --d-model" if args.model == "gpt" else ""), code=1) from None
    except training.ConfigError as e:  # an option found unworkable once running (e.g. an infeasible budget)
        raise CLIError(str(e), code=2) from None
    return 0


#: The ``--model gpt`` options (argparse dest, flag) and their parser defaults.
GPT_OPTIONS = (("checkpoint", "--checkpoint", "none"), ("budget_bytes", "--budget-bytes", None),
               ("segments", "--segments", None), ("context", "--context", 64), ("d_model", "--d-model", 64),
               ("layers", "--layers", 4), ("heads", "--heads", 4), ("sample_chars", "--sample-chars", 300),
               ("temperature", "--temperature", 0.8), ("prompt", "--prompt", "The "))


def _refuse_gpt_options(args):
    """A ``--model gpt`` option given to another model is an error, not silently ignored."""
    given = [flag for dest, flag, default in GPT_OPTIONS if getattr(args, dest, default) != default]
    if given:
        raise CLIError(f"{', '.join(given)}: only used by --model gpt, not --model {args.model}", code=2)


def _check_distributed(args):
    """``--distributed``: the launch's package is installed and every rank gets part of each batch."""
    from . import distributed
    from .data import MissingDependency

    if args.model != "cnn":
        raise CLIError(f"--distributed: only --model cnn is data-parallel so far, not {args.model!r}", code=2)
    try:
        launch = distributed.check_available()
    except MissingDependency as e:
        raise CLIError(str(e), code=2) from None
    except (ValueError, distributed.DistributedError) as e:
        raise CLIError(f"--distributed: {e}", code=2) from None
    if launch.size is not None and args.batch_size < launch.size:
        raise CLIError(f"--distributed: {launch.size} processes need --batch-size of at least {launch.size}, "
                       f"got {args.batch_size}", code=2)


def cmd_sweep(args):
    from . import sweep

    strategies = tuple(x for x in args.strategies.split(",") if x)
    bad = [x for x in strategies if x not in sweep.STRATEGIES]
    if bad or not strategies:
        raise CLIError(f"--strategies: unknown {', '.join(bad) or '(none given)'}; "
                       f"available: {', '.join(sweep.STRATEGIES)}", code=2)
    try:
        fractions = tuple(float(x) for x in args.budgets.split(",") if x)
    except ValueError:
        raise CLIError(f"--budgets must be comma-separated numbers, got {args.budgets!r}", code=2) from None
    if not fractions or not all(0 < f and math.isfinite(f) for f in fractions):
        raise CLIError(f"--budgets must be positive finite fractions, got {args.budgets!r}", code=2)
    for name in ("depth", "width", "batch", "repeat"):
        if getattr(args, name) < 1:
            raise CLIError(f"--{name} must be a positive integer, got {getattr(args, name)}", code=2)
    if args.dtype not in ("float32", "float64"):
        raise CLIError(f"--dtype must be float32 or float64, got {args.dtype!r}", code=2)
    _check_writable(args.out)
    _choose(args.backend)
    cfg = sweep.SweepConfig(depth=args.depth, width=args.width, batch=args.batch, dtype=args.dtype,
                            strategies=strategies, fractions=fractions, repeat=args.repeat,
                            backend=args.backend, out=args.out)
    rows = sweep.run_sweep(cfg, log=lambda line: print(line, flush=True))
    print(sweep.format_table(rows))
    try:
        paths = sweep.write_outputs(rows, cfg, args.out)
    except ImportError as e:
        raise CLIError(f"the plot needs matplotlib ({e}); pip install matplotlib", code=1) from None
    print("wrote " + ", ".join(paths.values()))
    return 0


def _gpuad_version():
    from . import __version__

    return __version__


#: Exit status when the reader of stdout goes away (``gpuad info --json | head``): 128 + SIGPIPE,
#: what the shell reports for a command a closed pipe ended.
EXIT_BROKEN_PIPE = 141


def main(argv=None):
    """Entry point of the ``gpuad`` console script; returns the exit status.

    A closed stdout (``gpuad info | head -5``) ends the command quietly with
    status :data:`EXIT_BROKEN_PIPE`, not with a ``BrokenPipeError`` traceback.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # buffered output fails here, inside the handler, not at interpreter exit
        return code
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_BROKEN_PIPE
    except CLIError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return e.code
    except KeyboardInterrupt:
        return 130


def _silence_stdout():
    """Point stdout at ``os.devnull`` so that the interpreter's final flush cannot fail again.

    The standard idiom (Python's ``signal`` documentation, "Note on SIGPIPE").
    A ``sys.stdout`` that a caller replaced (``main`` run in-process, its
    output captured) is left alone.
    """
    if sys.stdout is not sys.__stdout__:
        return
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # stdout without a file descriptor (e.g. captured)
        pass


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
