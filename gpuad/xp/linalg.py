"""``gpuad.xp.linalg``: the array API's linear-algebra extension, differentiable."""

from __future__ import annotations

from .. import ops as _ops

_NAMES = (
    "cholesky", "cross", "det", "diagonal", "eigh", "eigvalsh", "inv", "matmul", "matrix_norm",
    "matrix_power", "matrix_rank", "matrix_transpose", "outer", "pinv", "qr", "slogdet", "solve",
    "svd", "svdvals", "tensordot", "trace", "vecdot", "vector_norm", "norm",
)

for _name in _NAMES:
    _f = getattr(_ops, "linalg_" + _name, None) or getattr(_ops, _name, None)
    if _f is not None:
        globals()[_name] = _f
