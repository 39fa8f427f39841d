"""gpuad: automatic differentiation for array-API programs on CuPy and NumPy.

Quick start::

    import gpuad
    from gpuad import xp

    f = lambda x: xp.sum(xp.tanh(x) ** 2)
    gpuad.grad(f)(x)
"""

from __future__ import annotations

import os as _os

# NOTE [backends layout]: the backend modules live in ``backends/`` at the top
# of the source tree and are installed as ``gpuad.backends`` (setuptools
# package-dir).  When gpuad is imported from a source checkout the installed
# mapping is absent, so the checkout's top directory is added to this
# package's search path, which makes ``gpuad.backends`` resolve to
# ``backends/`` there too.
_here = _os.path.dirname(__file__)
if not _os.path.isdir(_os.path.join(_here, "backends")):
    _top = _os.path.dirname(_here)
    if _os.path.isfile(_os.path.join(_top, "backends", "__init__.py")):
        __path__.append(_top)  # noqa: F821

__version__ = "0.1.0"

from . import _array  # noqa: E402,F401  (installs the array protocol on tracers)
from . import ops, xp  # noqa: E402,F401
from ._backend import get_backend, set_backend  # noqa: E402
from ._registry import PRIMITIVES  # noqa: E402
from ._tree import tree_flatten, tree_leaves, tree_map, tree_unflatten  # noqa: E402
from .transforms import (  # noqa: E402
    grad, hessian, hvp, jacfwd, jacrev, jvp, stop_gradient, value_and_grad, vjp,
)

__all__ = [
    "grad", "value_and_grad", "vjp", "jvp", "jacfwd", "jacrev", "hessian", "hvp",
    "stop_gradient", "custom_vjp", "custom_jvp", "set_backend", "get_backend", "xp", "nn",
    "testing", "tree_flatten", "tree_unflatten", "tree_map", "tree_leaves", "PRIMITIVES",
    "OutOfMemoryError",
]


# Names whose modules need more than the core, imported on first use so that
# ``import gpuad`` stays fast: attribute -> (module, attribute or None for the module).
_LAZY = {
    "nn": ("gpuad.nn", None),
    "testing": ("gpuad.testing", None),
    "random": ("gpuad.random", None),
    "optim": ("gpuad.optim", None),
    "memory": ("gpuad.memory", None),
    "distributed": ("gpuad.distributed", None),
    "checkpointing": ("gpuad.checkpointing", None),
    "serialization": ("gpuad.serialization", None),
    "loss_scaling": ("gpuad.loss_scaling", None),
    "training": ("gpuad.training", None),
    "training_gpt": ("gpuad.training_gpt", None),
    "gpt": ("gpuad.gpt", None),
    "data": ("gpuad.data", None),
    "sweep": ("gpuad.sweep", None),
    "custom_vjp": ("gpuad.custom", "custom_vjp"),
    "custom_jvp": ("gpuad.custom", "custom_jvp"),
    "checkpoint": ("gpuad.checkpointing", "checkpoint"),
    "checkpoint_sequential": ("gpuad.checkpointing", "checkpoint_sequential"),
    "plan_checkpoints": ("gpuad.checkpointing", "plan_checkpoints"),
    "OutOfMemoryError": ("gpuad._device_memory", "OutOfMemoryError"),
}


def __getattr__(name):
    try:
        module, attr = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'gpuad' has no attribute {name!r}") from None
    import importlib

    mod = importlib.import_module(module)
    return mod if attr is None else getattr(mod, attr)
