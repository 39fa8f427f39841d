"""The array-object protocol for tracers: operators, attributes, indexing.

Tracers behave like arrays of the standard: operators and ``@`` call gpuad's
differentiable ops, comparisons return plain boolean arrays, and
``float()``/``bool()``/``int()`` read the value for control flow (not
differentiated).  Converting a tracer to NumPy raises: a traced value must not
silently leave the graph (or the device).
"""

from __future__ import annotations

from . import ops
from ._core import Tracer, full_unbox

__all__ = []


def _swap(f):
    return lambda self, other: f(other, self)


def _xp(self, api_version=None):
    from . import xp

    return xp


def _no_numpy(self, *args, **kwargs):
    raise TypeError(
        f"a traced gpuad value (shape {tuple(self.shape)}, dtype {self.dtype}) cannot be converted to "
        "a NumPy array inside a transform; use gpuad.xp functions on it, or gpuad.stop_gradient(x) "
        "to take its value without derivatives"
    )


def _no_dlpack(self, *args, **kwargs):
    raise TypeError("a traced gpuad value cannot be exported through DLPack; use gpuad.stop_gradient(x) first")


# NOTE [no silent stores]: ``float(t)`` reads a traced value for control flow
# and is not differentiated.  NumPy uses the same ``__float__`` when a tracer
# is written into an element of a plain array (``z = np.zeros(3); z[0] =
# t``), which would silently drop the derivative; so a floating tracer
# refuses ``__float__``/``__complex__`` when the calling Python frame is
# executing a subscript store.  (``co_code`` is the unspecialised bytecode and
# ``f_lasti`` the byte offset of the current instruction on 3.10-3.13.)
_STORES = None


def _storing(frame):
    global _STORES
    if _STORES is None:
        import dis

        _STORES = frozenset(dis.opmap[n] for n in ("STORE_SUBSCR", "STORE_SLICE") if n in dis.opmap)
    code = frame.f_code.co_code
    i = frame.f_lasti
    return 0 <= i < len(code) and code[i] in _STORES


def _to_python(convert, name):
    def method(self):
        import sys

        from ._dtypes import is_floating

        value = full_unbox(self)
        if is_floating(self.dtype) and _storing(sys._getframe(1)):
            raise TypeError(
                f"a traced gpuad value (shape {tuple(self.shape)}, dtype {self.dtype}) is being stored into "
                f"an element of a plain array through {name}(), which would drop its derivative; write into a "
                "traced array instead (y = x * 0.0, then y[i] = ...), build the array with gpuad.xp.stack, "
                "concat or where, or store gpuad.stop_gradient(value) to drop the derivative on purpose"
            )
        return convert(value)

    method.__name__ = f"__{name}__"
    return method


def _setitem(self, key, value):
    # NOTE [functional setitem]: ``x[k] = v`` rebinds this tracer to a new
    # value, index_set(x, v); arrays recorded earlier (residuals of other
    # nodes) are never mutated, so derivatives stay correct.
    new = ops.index_set(self, value, key=ops.normalize_key(key))
    if not isinstance(new, Tracer) or type(new) is not type(self) or new._trace is not self._trace:
        raise TypeError(
            "__setitem__: the value written is traced by an inner transform than the array; "
            "build the array with gpuad.xp.where or concat instead"
        )
    for slot in type(self).__slots__:
        setattr(self, slot, getattr(new, slot))
    self._primal = new._primal


def _iter(self):
    if self.ndim == 0:
        raise TypeError("iteration over a 0-d traced array")
    for i in range(self.shape[0]):
        yield self[i]


def _len(self):
    if self.ndim == 0:
        raise TypeError("len() of a 0-d traced array")
    return self.shape[0]


def _repr(self):
    return f"{type(self).__name__}(shape={tuple(self.shape)}, dtype={self.dtype}, level={self._trace.level})"


def _to_device(self, device, /, *, stream=None):
    if device == self.device:
        return self
    raise ValueError(f"to_device: moving a traced value from {self.device} to {device} is not differentiable")


_methods = {
    "__array_namespace__": _xp,
    "__array__": _no_numpy,
    "__dlpack__": _no_dlpack,
    "__dlpack_device__": lambda self: full_unbox(self).__dlpack_device__(),
    "__array_ufunc__": None,
    "__array_priority__": 1000,
    "__hash__": None,
    "shape": property(lambda self: tuple(self._primal.shape)),
    "dtype": property(lambda self: self._primal.dtype),
    "device": property(lambda self: self._primal.device),
    "ndim": property(lambda self: len(self._primal.shape)),
    "size": property(lambda self: ops._reductions_size(self.shape)),
    "T": property(lambda self: ops.permute_dims(self, tuple(reversed(range(self.ndim))))),
    "mT": property(lambda self: ops.matrix_transpose(self)),
    "to_device": _to_device,
    "__add__": ops.add, "__radd__": _swap(ops.add),
    "__sub__": ops.subtract, "__rsub__": _swap(ops.subtract),
    "__mul__": ops.multiply, "__rmul__": _swap(ops.multiply),
    "__truediv__": ops.divide, "__rtruediv__": _swap(ops.divide),
    "__pow__": ops.pow, "__rpow__": _swap(ops.pow),
    "__mod__": ops.remainder, "__rmod__": _swap(ops.remainder),
    "__floordiv__": ops.floor_divide, "__rfloordiv__": _swap(ops.floor_divide),
    "__matmul__": ops.matmul, "__rmatmul__": _swap(ops.matmul),
    "__neg__": ops.negative, "__pos__": ops.positive, "__abs__": ops.abs,
    "__invert__": ops.bitwise_invert,
    "__and__": ops.bitwise_and, "__rand__": _swap(ops.bitwise_and),
    "__or__": ops.bitwise_or, "__ror__": _swap(ops.bitwise_or),
    "__xor__": ops.bitwise_xor, "__rxor__": _swap(ops.bitwise_xor),
    "__lshift__": ops.bitwise_left_shift, "__rshift__": ops.bitwise_right_shift,
    "__eq__": ops.equal, "__ne__": ops.not_equal,
    "__lt__": ops.less, "__le__": ops.less_equal, "__gt__": ops.greater, "__ge__": ops.greater_equal,
    "__getitem__": ops.getitem, "__setitem__": _setitem,
    "__float__": _to_python(float, "float"),
    "__int__": lambda self: int(full_unbox(self)),
    "__bool__": lambda self: bool(full_unbox(self)),
    "__index__": lambda self: full_unbox(self).__index__(),
    "__complex__": _to_python(complex, "complex"),
    "__iter__": _iter, "__len__": _len, "__repr__": _repr,
}

def _as_method(f):
    # Primitives are callable objects, not functions: they do not bind as
    # methods, so wrap them.  ``self`` is a tracer, so a differentiable
    # primitive can go straight to ``bind`` (Primitive.__call__ would only
    # look for the tracer again).
    from ._core import bind
    from ._registry import Primitive

    if isinstance(f, Primitive) and not f.nondiff:
        def method(*args):
            return bind(f, args, {})
    else:
        def method(*args):
            return f(*args)

    method.__name__ = getattr(f, "__name__", getattr(f, "name", "method"))
    return method


for _name, _value in _methods.items():
    if callable(_value) and not isinstance(_value, (property, type(_as_method))) and _name.startswith("__"):
        _value = _as_method(_value)
    setattr(Tracer, _name, _value)
