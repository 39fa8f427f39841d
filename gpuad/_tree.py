"""Pytrees: nested tuples, lists and dicts whose leaves are arrays.

``None`` is an empty subtree (it has no leaves), as in JAX.  Dict keys are
visited in sorted order so that two dicts with the same keys flatten alike.
"""

from __future__ import annotations

__all__ = ["tree_flatten", "tree_unflatten", "tree_map", "tree_leaves", "TreeDef"]


class TreeDef:
    """The structure of a pytree with its leaves taken out.

    Attributes
    ----------
    kind : {"leaf", "none", "tuple", "namedtuple", "list", "dict"}
    children : tuple of TreeDef
    keys : tuple or type
        Sorted dict keys for ``"dict"``; the class for ``"namedtuple"``.
    num_leaves : int
    """

    __slots__ = ("kind", "children", "keys", "num_leaves")

    def __init__(self, kind, children=(), keys=()):
        self.kind = kind
        self.children = children
        self.keys = keys
        if kind == "leaf":
            self.num_leaves = 1
        else:
            self.num_leaves = sum(c.num_leaves for c in children)

    def __eq__(self, other):
        return (
            isinstance(other, TreeDef)
            and self.kind == other.kind
            and self.keys == other.keys
            and self.children == other.children
        )

    def __hash__(self):
        return hash((self.kind, self.keys, self.children))

    def __repr__(self):
        if self.kind == "leaf":
            return "*"
        if self.kind == "none":
            return "None"
        inner = ", ".join(repr(c) for c in self.children)
        if self.kind == "namedtuple":
            return f"{self.keys.__name__}({inner})"
        if self.kind == "tuple":
            return f"({inner}{',' if len(self.children) == 1 else ''})"
        if self.kind == "list":
            return f"[{inner}]"
        return "{" + ", ".join(f"{k!r}: {c!r}" for k, c in zip(self.keys, self.children)) + "}"


_LEAF = TreeDef("leaf")
_NONE = TreeDef("none")


def tree_flatten(tree):
    """Return ``(leaves, treedef)`` for a pytree."""
    leaves = []
    return leaves, _flatten(tree, leaves)


def _flatten(tree, leaves):
    t = type(tree)
    if t is tuple:
        return TreeDef("tuple", tuple(_flatten(c, leaves) for c in tree))
    if isinstance(tree, tuple) and hasattr(t, "_fields"):  # namedtuple: keep its type
        return TreeDef("namedtuple", tuple(_flatten(c, leaves) for c in tree), t)
    if t is list:
        return TreeDef("list", tuple(_flatten(c, leaves) for c in tree))
    if t is dict:
        keys = tuple(sorted(tree))
        return TreeDef("dict", tuple(_flatten(tree[k], leaves) for k in keys), keys)
    if tree is None:
        return _NONE
    leaves.append(tree)
    return _LEAF


def tree_unflatten(treedef, leaves):
    """Rebuild the pytree described by ``treedef`` from an iterable of leaves."""
    it = iter(leaves)
    out = _unflatten(treedef, it)
    return out


def _unflatten(td, it):
    k = td.kind
    if k == "leaf":
        return next(it)
    if k == "none":
        return None
    children = [_unflatten(c, it) for c in td.children]
    if k == "tuple":
        return tuple(children)
    if k == "list":
        return children
    if k == "namedtuple":
        return td.keys(*children)
    return dict(zip(td.keys, children))


def tree_leaves(tree):
    """The leaves of a pytree, in flattening order."""
    return tree_flatten(tree)[0]


def tree_map(fn, tree, *rest):
    """Apply ``fn`` leafwise to one or more pytrees of identical structure."""
    leaves, td = tree_flatten(tree)
    others = []
    for r in rest:
        rl, rtd = tree_flatten(r)
        if rtd != td:
            raise ValueError(f"tree_map: pytree structures differ: {td!r} vs {rtd!r}")
        others.append(rl)
    return tree_unflatten(td, [fn(*xs) for xs in zip(leaves, *others)])
