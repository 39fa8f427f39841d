"""Per-structure flattening and rebuilding of pytrees, compiled once and reused.

A data-parallel step reduces the same gradient pytree again and again.
Flattening it generically (:func:`gpuad._tree.tree_flatten`) and looking its
plan up by every leaf's type, shape and dtype costs a few microseconds per
node and leaf, which is a fair part of a small allreduce.  For a structure
that comes back, :func:`compile_tree` writes two straight-line functions:

``extract(tree)``
    The leaves of ``tree``, in :func:`tree_flatten`'s order, if ``tree`` has
    exactly the compiled structure (container types, lengths, dict keys,
    ``None`` subtrees) and every leaf the compiled type, shape and dtype (and
    device, for arrays other than NumPy's); otherwise ``None``.  It may raise
    (a missing dict key): callers treat that as ``None`` too.
``build(leaves)``
    The pytree of the compiled structure holding ``leaves`` (as
    :func:`tree_unflatten`).
``rebuild(views, like)``
    Only where ``sources`` was given: the same pytree with leaf ``i`` a new
    view ``views[i].view()`` where ``sources[i] == "view"`` and ``like[i]``
    where it is ``"like"`` (a plan's kept views of its buckets and the
    caller's size-0 leaves): unpacking and rebuilding in one expression.

A match therefore implies that generic flattening would give the same
leaves and the same plan key, so using the compiled functions never changes
what a collective does, only how fast it gets there.
"""

from __future__ import annotations

from .._tree import tree_unflatten

__all__ = ["compile_tree", "MAX_LEAVES"]

#: Structures with more leaves than this are not compiled (generic flattening).
MAX_LEAVES = 20_000
#: Deeper structures are rebuilt by :func:`tree_unflatten` (one nested expression per level otherwise).
MAX_BUILD_DEPTH = 48


def _depth(td):
    return 1 + max((_depth(c) for c in td.children), default=0)


def compile_tree(td, leaves, sources=None):
    """``(extract, build, rebuild)`` for pytrees of structure ``td`` with leaves like ``leaves``.

    Parameters
    ----------
    td : gpuad._tree.TreeDef
    leaves : list of arrays
        One flattening of such a tree: their types, shapes and dtypes (and
        devices, except NumPy's) are what ``extract`` accepts.
    sources : list of {"view", "like"}, optional
        Per leaf, where ``rebuild`` takes it from; without it (or with any
        other entry) ``rebuild`` is None.

    Returns
    -------
    (callable, callable, callable or None) or None
        None when the structure is too large to compile.
    """
    if len(leaves) > MAX_LEAVES:
        return None
    consts = {}

    def const(value):
        name = f"_c{len(consts)}"
        consts[name] = value
        return name

    lines = ["def extract(t0):"]
    names = []
    counter = [0]

    def walk(node, var):
        kind = node.kind
        if kind == "leaf":
            x = leaves[len(names)]
            names.append(var)
            test = (f"type({var}) is not {const(type(x))} or {var}.shape != {const(tuple(x.shape))} "
                    f"or {var}.dtype != {const(x.dtype)}")
            if type(x).__module__ != "numpy":  # a NumPy array is always on "cpu"
                test += f" or {var}.device != {const(x.device)}"
            lines.append(f"    if {test}: return None")
            return
        if kind == "none":
            lines.append(f"    if {var} is not None: return None")
            return
        cls = kind if kind in ("tuple", "list", "dict") else const(node.keys)  # namedtuple: its class
        lines.append(f"    if type({var}) is not {cls} or len({var}) != {len(node.children)}: return None")
        for j, child in enumerate(node.children):
            counter[0] += 1
            sub = f"t{counter[0]}"
            lines.append(f"    {sub} = {var}[{const(node.keys[j]) if kind == 'dict' else j}]")
            walk(child, sub)

    walk(td, "t0")
    lines.append(f"    return [{', '.join(names)}]")
    scope = dict(consts)
    exec(compile("\n".join(lines), "<gpuad.distributed extract>", "exec"), scope)  # noqa: S102 - generated here
    extract = scope["extract"]

    if _depth(td) > MAX_BUILD_DEPTH:
        return extract, lambda out: tree_unflatten(td, out), None

    def expr(node, leaf, index):
        kind = node.kind
        if kind == "leaf":
            index[0] += 1
            return leaf(index[0] - 1)
        if kind == "none":
            return "None"
        items = [expr(c, leaf, index) for c in node.children]
        if kind == "tuple":
            return "(" + ", ".join(items) + ("," if len(items) == 1 else "") + ")"
        if kind == "list":
            return "[" + ", ".join(items) + "]"
        if kind == "namedtuple":
            return f"{const(node.keys)}({', '.join(items)})"
        return "{" + ", ".join(f"{const(k)}: {v}" for k, v in zip(node.keys, items)) + "}"

    source = f"def build(L):\n    return {expr(td, lambda i: f'L[{i}]', [0])}\n"
    rebuild = None
    if sources is not None and len(sources) == len(leaves) and all(k in ("view", "like") for k in sources):
        def leaf(i):
            return f"V[{i}].view()" if sources[i] == "view" else f"E[{i}]"

        source += f"def rebuild(V, E):\n    return {expr(td, leaf, [0])}\n"
    scope = dict(consts)
    exec(compile(source, "<gpuad.distributed build>", "exec"), scope)  # noqa: S102 - generated here
    if sources is not None and "rebuild" in scope:
        rebuild = scope["rebuild"]
    return extract, scope["build"], rebuild
