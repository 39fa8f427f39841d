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
            except Exception:  # noqa: BLE001
                entry["memory"] = {}
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
    env = {k: os.environ[k] for k in ("GPUAD_BACKEND", "CUDA_VISIBLE_DEVICES", "OMP_NUM_THREADS")
           if k in os.environ}
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
    t.add_argument("--model", default="cnn", help="model to train (default: cnn; available: cnn)")
    t.add_argument("--epochs", type=int, default=20, help="passes over the training set (default: 20)")
    t.add_argument("--batch-size", type=int, default=32, help="images per step (default: 32)")
    t.add_argument("--lr", type=float, default=3e-3, help="peak learning rate of AdamW (default: 3e-3)")
    t.add_argument("--seed", type=int, default=0, help="seed of the gpuad.random key (default: 0)")
    t.add_argument("--dtype", default="float32", help="float32 or float64 (default: float32)")
    t.add_argument("--out", default=os.path.join("runs", "digits"),
                   help="output directory (default: runs/digits)")
    t.add_argument("--no-progress", action="store_true", help="no tqdm progress bars")
    t.set_defaults(func=cmd_train)
    return parser


MODELS = ("cnn",)


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
    if args.model not in MODELS:
        raise CLIError(f"--model: unknown model {args.model!r}; available: {', '.join(MODELS)}", code=2)
    if args.epochs < 1:
        raise CLIError(f"--epochs must be a positive integer, got {args.epochs}", code=2)
    if args.batch_size < 1:
        raise CLIError(f"--batch-size must be a positive integer, got {args.batch_size}", code=2)
    if not args.lr > 0:
        raise CLIError(f"--lr must be positive, got {args.lr}", code=2)
    if args.dtype not in ("float32", "float64"):
        raise CLIError(f"--dtype must be float32 or float64, got {args.dtype!r}", code=2)
    _check_writable(args.out)
    from . import training

    try:
        training.check_dependencies()
    except training.MissingDependency as e:
        raise CLIError(str(e), code=2) from None
    _choose(args.backend)  # a clear error for an unusable backend, before any work
    cfg = training.TrainConfig(model=args.model, backend=args.backend, epochs=args.epochs,
                               batch_size=args.batch_size, lr=args.lr, seed=args.seed, dtype=args.dtype,
                               out=args.out, progress=not args.no_progress)
    training.train(cfg, log=lambda line: print(line, flush=True))
    return 0


def _gpuad_version():
    from . import __version__

    return __version__


def main(argv=None):
    """Entry point of the ``gpuad`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except CLIError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return e.code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
