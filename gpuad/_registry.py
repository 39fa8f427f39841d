"""The op registry: each primitive is declared once, with its rules beside it.

A primitive has

* an implementation ``impl(xp, *args, **params)`` written against the array
  namespace ``xp`` of its inputs (a backend may override it per namespace);
* one VJP rule per positional argument, ``vjp_i(g, ans, *args, **params)``,
  returning the cotangent of argument ``i`` (``None`` for a symbolic zero);
* either one JVP rule per argument, ``jvp_i(t, ans, *args, **params)``,
  returning argument ``i``'s contribution to the output tangent, or one joint
  rule ``jvp(tangents, ans, *args, **params)``.

Rules are written with gpuad's own differentiable ops, so they can be
differentiated again.  Positional arguments may be traced; keyword ``params``
are static (axes, keys, flags).

# NOTE [what a node keeps]: a primitive declares which of its inputs
# (``keep_args``) and whether its output (``keep_ans``) the VJP rules read.
# The reverse tape keeps exactly those; every other argument is replaced by a
# :class:`Spec` (shape, dtype, device) before the rule sees it.  This is what
# makes the tape's memory predictable.
"""

from __future__ import annotations

from ._args import short_repr
from ._backend import namespace_of, single_device
from ._core import Tracer, bind, full_unbox

__all__ = [
    "Primitive",
    "Spec",
    "defop",
    "deflinear",
    "defunary",
    "defnondiff",
    "deffused",
    "override",
    "PRIMITIVES",
]

#: name -> Primitive, for every registered primitive.
PRIMITIVES: dict = {}

_SEVERAL = object()  # Primitive.__call__: tracers of more than one trace among the arguments

# NOTE [dispatch memo]: with one or two arguments, namespace_of's answer
# depends on their types alone when at most one of them is an array, or when
# both are arrays of a namespace whose arrays all live on one device (no
# devices to compare: NOTE [dispatch fast path] in _backend); array types map
# to namespaces once and for good (NOTE [namespace cache]).  ``_ns_memo``
# remembers those answers, keyed by ``type(a)`` for one argument and
# ``(type(a), type(b))`` for two, so the commonest dispatches skip the call.
# Calls without an array are never memoised: the default backend answers
# them, and it can change.
_ns_memo: dict = {}


def dispatch_namespace(args, opname):
    """``namespace_of(args, opname)``, memoised where NOTE [dispatch memo] allows."""
    xp = namespace_of(args, opname)
    if 1 <= len(args) <= 2:
        arrays = sum(1 for a in args if hasattr(a, "shape"))
        if arrays == 1 or (arrays == 2 and single_device(xp)):
            _ns_memo[type(args[0]) if len(args) == 1 else (type(args[0]), type(args[1]))] = xp
    return xp


class Spec:
    """Shape, dtype and device of an argument the tape did not keep."""

    __slots__ = ("shape", "dtype", "device")

    def __init__(self, x):
        self.shape = x.shape  # a tuple for every backend, and for tracers
        self.dtype = x.dtype
        self.device = x.device

    @property
    def ndim(self):
        return len(self.shape)

    @property
    def size(self):
        n = 1
        for s in self.shape:
            n *= s
        return n

    def __repr__(self):
        return f"Spec(shape={self.shape}, dtype={self.dtype})"


class Primitive:
    """A differentiable operation.  Call it like a function.

    Attributes
    ----------
    name : str
    impl_default : callable
        ``impl(xp, *args, **params)``.
    impls : dict
        Backend overrides, namespace module -> implementation.
    vjps : tuple
        One rule (or ``None`` if undefined) per positional argument.
    jvps : tuple or None
        One rule per positional argument, or ``None`` if ``jvp_joint`` is used.
    jvp_joint : callable or None
    keep_args : tuple of int
        Arguments the VJP rules read (see NOTE [what a node keeps]).
    keep_prefix : int
        How many leading arguments are all in ``keep_args`` (derived from it):
        a call with no more arguments than that keeps them as they are.
    keep_ans : bool
        Whether the VJP rules read the output.
    multiple_results : bool
        The implementation returns a tuple of arrays.
    nondiff : bool
        Outputs carry no derivative: tracers are stripped before the call.
    custom : object or None
        For user-defined rules (``gpuad.custom``): the object whose
        ``process_vjp``/``backward``/``process_jvp`` the engine calls instead.
    composite : callable or None
        For fused primitives (:func:`deffused`): the same function written
        with gpuad ops, run instead of ``impl`` whenever an argument is traced.
    """

    __slots__ = (
        "name", "impl_default", "impls", "vjps", "jvps", "jvp_joint",
        "_keep_args", "keep_prefix", "keep_ans", "multiple_results", "nondiff", "custom", "vjp_variadic",
        "composite", "doc",
    )

    def __init__(self, name, impl, *, vjps=(), jvps=None, jvp_joint=None, keep_args=None,
                 keep_ans=True, multiple_results=False, nondiff=False, vjp_variadic=None, doc=None):
        self.name = name
        self.vjp_variadic = vjp_variadic
        self.impl_default = impl
        self.impls = {}
        self.vjps = tuple(vjps)
        self.jvps = None if jvps is None else tuple(jvps)
        self.jvp_joint = jvp_joint
        self.keep_args = tuple(range(len(self.vjps))) if keep_args is None else tuple(keep_args)
        self.keep_ans = keep_ans
        self.multiple_results = multiple_results
        self.nondiff = nondiff
        self.custom = None  # set for custom_vjp / custom_jvp functions (gpuad.custom)
        self.composite = None  # set by deffused
        self.doc = doc or getattr(impl, "__doc__", None)

    @property
    def keep_args(self):
        return self._keep_args

    @keep_args.setter
    def keep_args(self, keep):
        self._keep_args = keep = tuple(keep)
        n = 0
        while n in keep:
            n += 1
        self.keep_prefix = n

    def __call__(self, *args, **params):
        # NOTE [plain fast path]: with no tracer among the arguments the
        # implementation runs at once; this is the common case inside rules
        # at first order, so it is kept to one loop and one dispatch.
        # NOTE [one-trace fast path]: when every tracer among the arguments
        # belongs to one live trace, that trace is the innermost one and there
        # is nothing for ``bind`` to decide, so it processes the op directly.
        trace = None
        for a in args:
            if isinstance(a, Tracer):
                if trace is None:
                    trace = a._trace
                elif a._trace is not trace:
                    trace = _SEVERAL  # let bind find the innermost
        if trace is None:  # the plain path (see impl)
            # NOTE [star calls]: f(*args) costs CPython 3.11 about four times
            # f(a, b) -- a list, a tuple and a slower call protocol -- so the
            # hot calls spell out the common arities.
            # NOTE [explained failures]: only the implementation calls are in
            # ``try`` (free when nothing is raised); dispatch errors already
            # name the op and the arrays.
            n = len(args)
            if n == 1:
                xp = _ns_memo.get(type(args[0])) or dispatch_namespace(args, self.name)  # NOTE [dispatch memo]
                if not params:
                    try:
                        return self.impls.get(xp, self.impl_default)(xp, args[0])
                    except EXPLAINED as e:
                        explain_failure(self, args, params, e)
                        raise
            elif n == 2:
                xp = _ns_memo.get((type(args[0]), type(args[1]))) or dispatch_namespace(args, self.name)
                if not params:
                    try:
                        return self.impls.get(xp, self.impl_default)(xp, args[0], args[1])
                    except EXPLAINED as e:
                        explain_failure(self, args, params, e)
                        raise
            else:
                xp = namespace_of(args, self.name)
            try:
                return self.impls.get(xp, self.impl_default)(xp, *args, **params)
            except EXPLAINED as e:
                explain_failure(self, args, params, e)
                raise
        if self.nondiff:
            return self.impl(tuple(full_unbox(a) for a in args), params)
        if trace is not _SEVERAL and self.composite is None and trace.alive:
            return trace.process(self, args, params)
        return bind(self, args, params)

    def impl(self, args, params):
        """Run the implementation on plain arrays (no tracers): ``__call__``'s plain path.

        ``args`` hold no tracer, so ``__call__`` takes its plain path; that
        path is written out there, not here, because plain calls inside
        rules are the hottest ones.
        """
        return self(*args, **params)

    def vjp_rule(self, i):
        if self.vjp_variadic is not None:
            return lambda *a, **p: self.vjp_variadic(i, *a, **p)
        rule = self.vjps[i] if i < len(self.vjps) else None
        if rule is None:
            raise NotImplementedError(
                f"{self.name}: no VJP rule for argument {i}; reverse mode cannot differentiate "
                f"'{self.name}' with respect to that argument"
            )
        return rule

    def jvp_rule(self, i):
        rule = self.jvps[i] if self.jvps is not None and i < len(self.jvps) else None
        if rule is None:
            raise NotImplementedError(
                f"{self.name}: no JVP rule for argument {i}; forward mode cannot differentiate "
                f"'{self.name}' with respect to that argument"
            )
        return rule

    def __repr__(self):
        return f"<gpuad primitive {self.name}>"


# NOTE [explained failures]: an implementation that raises on bad input
# (shapes that do not broadcast, an index out of bounds, a non-array
# argument) raises from inside the backend, in the backend's words, which
# name neither the op nor the shapes.  The engine catches these few exception
# types around each implementation call -- free in CPython 3.11 unless
# something is raised -- and raises one of the same type whose message starts
# with the op's name and ends with the shapes, dtypes and devices of the
# arguments and the static parameters; the backend's exception is its cause.
# User code run as an implementation (custom rules, checkpointed segments) is
# left alone, and so is an error already explained by an inner op.
EXPLAINED = (ValueError, TypeError, IndexError, AttributeError, ZeroDivisionError)


def _describe_arg(a):
    if hasattr(a, "shape") and hasattr(a, "dtype"):
        try:
            dev = a.device
        except Exception:  # noqa: BLE001 - a description must not fail the error it explains
            dev = "?"
        return f"{type(a).__module__.split('.')[0]} array of shape {tuple(a.shape)} and dtype {a.dtype} on {dev}"
    return f"{type(a).__name__} {short_repr(a)}"


def _describe_param(v):
    if hasattr(v, "shape") and hasattr(v, "dtype"):
        return f"<array of shape {tuple(v.shape)} and dtype {v.dtype}>"
    if isinstance(v, tuple):
        return "(" + ", ".join(_describe_param(x) for x in v) + ("," if len(v) == 1 else "") + ")"
    return short_repr(v)


def explain_failure(prim, args, params, exc):
    """Raise a clearer error for ``exc``, raised by ``prim``'s implementation on ``args``.

    Returns (and the caller re-raises ``exc``) when there is nothing to add:
    see NOTE [explained failures].
    """
    if prim.custom is not None or getattr(exc, "_gpuad_explained", False):
        return
    described = "; ".join(f"argument {i}: {_describe_arg(a)}" for i, a in enumerate(args))
    if params:
        described += "; " + ", ".join(f"{k}={_describe_param(v)}" for k, v in params.items())
    name = prim.name.removesuffix("_nondiff")  # the op the user called (astype_nondiff: astype)
    text = str(exc)
    if text.startswith(name + ":"):  # NumPy's gufuncs name themselves ("matmul: Input operand ...")
        text = text[len(name) + 1:].lstrip()
    reraise_as(exc, f"{name}: {text} ({described})")


def reraise_as(exc, msg):
    """Raise an exception like ``exc`` (same type where possible) with message ``msg``, caused by ``exc``."""
    cls = type(exc)
    new = None
    if cls is AttributeError:  # an argument of the wrong kind, e.g. a Python scalar where an array is needed
        new = TypeError(msg)
    elif cls in (ValueError, TypeError, IndexError, ZeroDivisionError):
        new = cls(msg)
    else:  # keep the backend's type (LinAlgError, AxisError, ...) when it takes a message
        try:
            new = cls(msg)
            if str(new) != msg:
                new = None
        except Exception:  # noqa: BLE001
            new = None
        if new is None:
            base = next(b for b in (IndexError, ValueError, TypeError, ZeroDivisionError, AttributeError)
                        if isinstance(exc, b))
            new = (TypeError if base is AttributeError else base)(msg)
    new._gpuad_explained = True
    raise new from exc


def _register(prim):
    if prim.name in PRIMITIVES:
        raise ValueError(f"primitive {prim.name!r} is already registered")
    PRIMITIVES[prim.name] = prim
    return prim


def defop(name, impl, *, vjp=(), jvp=None, jvp_joint=None, keep_args=None, keep_ans=True,
          multiple_results=False, doc=None):
    """Declare a primitive with explicit rules; see the module docstring."""
    return _register(Primitive(name, impl, vjps=vjp, jvps=jvp, jvp_joint=jvp_joint, keep_args=keep_args,
                               keep_ans=keep_ans, multiple_results=multiple_results, doc=doc))


def deflinear(name, impl, *, vjp=(), vjp_variadic=None, doc=None):
    """Declare a primitive that is jointly linear in its positional arguments.

    ``vjp`` holds one rule per argument; ``vjp_variadic(i, g, ans, *args)``
    serves ops with any number of arguments (``concat``).

    Its JVP is the primitive itself applied to the tangents (symbolic zeros are
    materialised only when some, but not all, tangents are zero).  The VJP rules
    receive only :class:`Spec` for the arguments: a linear map needs none of them.
    """
    prim = None

    def jvp_joint(tangents, ans, *args, **params):
        ts = [t if t is not None else _zeros_like(a) for t, a in zip(tangents, args)]
        return prim(*ts, **params)

    prim = _register(Primitive(name, impl, vjps=vjp, jvp_joint=jvp_joint, keep_args=(), keep_ans=False,
                               vjp_variadic=vjp_variadic, doc=doc))
    return prim


def defunary(name, impl, deriv, *, uses="x", fused=None, doc=None):
    """Declare an elementwise function of one argument from its derivative.

    ``deriv(ans, x)`` returns f'(x), written with gpuad ops; ``uses`` says
    which of ``"x"``, ``"ans"`` or ``"both"`` it reads, so the tape keeps only
    that (the other is passed as ``None``).  VJP: ``g * f'(x)``; JVP:
    ``t * f'(x)``.

    ``fused(xp, g, v)`` (``v`` being ``ans`` or ``x`` as ``uses`` says;
    ``fused(xp, g, ans, x)`` for ``"both"``) may give ``g * f'(x)`` as one
    expression on plain arrays.  It becomes the primitive ``<name>_grad``
    (see :func:`deffused`), which backends may replace with a fused kernel.
    """
    keep_args = (0,) if uses in ("x", "both") else ()
    keep_ans = uses in ("ans", "both")
    if fused is None:
        def rule(g, ans, x):
            return _multiply(g, deriv(ans, x))
    elif uses == "ans":
        grad_p = deffused(f"{name}_grad", fused, lambda g, ans: _multiply(g, deriv(ans, None)))

        def rule(g, ans, x):
            return grad_p(g, ans)
    elif uses == "x":
        grad_p = deffused(f"{name}_grad", fused, lambda g, x: _multiply(g, deriv(None, x)))

        def rule(g, ans, x):
            return grad_p(g, x)
    else:
        grad_p = deffused(f"{name}_grad", fused, lambda g, ans, x: _multiply(g, deriv(ans, x)))

        def rule(g, ans, x):
            return grad_p(g, ans, x)
    return _register(Primitive(
        name, impl, vjps=(rule,), jvps=(rule,), keep_args=keep_args, keep_ans=keep_ans, doc=doc,
    ))


def deffused(name, impl, composite, doc=None):
    """Declare a fused primitive: one dispatch on plain arrays, a composite under transforms.

    ``impl(xp, *args, **params)`` computes the result on plain arrays in one
    go (and a backend may override it with a single GPU kernel).  Whenever an
    argument is traced, ``composite(*args, **params)`` -- the same function
    written with gpuad ops -- runs instead, so the primitive needs no rules of
    its own and is differentiable to any order.

    # NOTE [fused primitives]: impl and composite must agree (a test compares
    # them for every fused primitive on every backend).
    """
    prim = Primitive(name, impl, doc=doc)
    prim.composite = composite
    return _register(prim)


def defnondiff(name, impl, doc=None):
    """Declare an op whose output has zero derivative (comparisons, argmax, floor, ...).

    Tracers are stripped from its arguments, and its result is a plain array.
    """
    return _register(Primitive(name, impl, nondiff=True, doc=doc))


def override(name, xp, impl):
    """Replace primitive ``name``'s implementation for namespace ``xp`` only.

    Used by backends for fused kernels; the primitive's rules are untouched.
    """
    try:
        prim = PRIMITIVES[name]
    except KeyError:
        raise KeyError(f"override: no primitive named {name!r}") from None
    prim.impls[xp] = impl


_ops = None


def _multiply(a, b):
    global _ops
    if _ops is None:  # gpuad.ops imports this module, so bind late
        from . import ops as _ops_module

        _ops = _ops_module
    return _ops.multiply(a, b)


def _zeros_like(a):
    if not hasattr(a, "shape"):
        return a if a is None else 0.0 * a  # Python scalar argument
    from .ops import zeros_like

    return zeros_like(a)
