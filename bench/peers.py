"""Optional peer libraries: torch (CPU), jax (with and without jit), HIPS autograd, mygrad.

None of them is required: :func:`load` imports what is installed (pinning
torch and jax to one thread) and skips the rest.  ``--peers none`` or a
comma-separated list on the command line restricts which are tried.
"""

from __future__ import annotations

import os

ALL = ("torch", "jax", "autograd", "mygrad")


def load(wanted=ALL):
    """Return ``{name: module_or_namespace}`` for the installed peers among ``wanted``."""
    out = {}
    if "torch" in wanted:
        try:
            import torch
        except ImportError:
            pass
        else:
            torch.set_num_threads(1)
            try:
                torch.set_num_interop_threads(1)
            except RuntimeError:  # already set by an earlier call
                pass
            out["torch"] = torch
    if "jax" in wanted:
        # One intra-op thread for XLA's CPU client; set before jax is imported.
        flags = os.environ.get("XLA_FLAGS", "")
        if "xla_cpu_multi_thread_eigen" not in flags:
            os.environ["XLA_FLAGS"] = (flags + " --xla_cpu_multi_thread_eigen=false").strip()
        os.environ.setdefault("JAX_PLATFORMS", "cpu")
        try:
            import jax
        except ImportError:
            pass
        else:
            out["jax"] = jax
    if "autograd" in wanted:
        try:
            import autograd
            import autograd.numpy  # noqa: F401
        except ImportError:
            pass
        else:
            out["autograd"] = autograd
    if "mygrad" in wanted:
        try:
            import mygrad
        except ImportError:
            pass
        else:
            out["mygrad"] = mygrad
    return out


def versions(peers):
    v = {}
    for name, mod in peers.items():
        try:
            from importlib.metadata import version

            v[name] = version(name)
        except Exception:
            v[name] = getattr(mod, "__version__", "?")
        if name == "torch":
            v[name] += f" ({mod.get_num_threads()} thread)"
    return v


def parse(spec):
    """``--peers`` value: 'all', 'none' or a comma-separated list of names."""
    if spec in (None, "all"):
        return ALL
    if spec == "none":
        return ()
    names = tuple(s.strip() for s in spec.split(",") if s.strip())
    bad = [n for n in names if n not in ALL]
    if bad:
        raise ValueError(f"unknown peer(s) {bad}; choose from {ALL}")
    return names
