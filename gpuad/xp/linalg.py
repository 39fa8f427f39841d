"""``gpuad.xp.linalg``: the array API's linear-algebra extension, differentiable."""

from __future__ import annotations

import sys as _sys

from .. import ops as _ops

_NAMES = (
    "cholesky", "cross", "det", "diagonal", "eigh", "eigvalsh", "inv", "matmul", "matrix_norm",
    "matrix_power", "matrix_rank", "matrix_transpose", "outer", "pinv", "qr", "slogdet", "solve",
    "svd", "svdvals", "tensordot", "trace", "vecdot", "vector_norm", "norm",
)

# Names shared with gpuad.xp (tensordot, vecdot, matmul, ...) are gpuad.xp's own
# objects, so that ``xp.tensordot is xp.linalg.tensordot`` (NOTE [non-array arguments]).
_parent = _sys.modules[__package__]

for _name in _NAMES:
    _f = getattr(_ops, "linalg_" + _name, None) or getattr(_ops, _name, None)
    if _f is not None and _f is getattr(_ops, _name, None):  # the same op as gpuad.xp's: take that object
        _f = getattr(_parent, _name, _f)
    if _f is not None:
        globals()[_name] = _f
