"""Pytrees: tuples, namedtuples, lists, dicts and None."""

from collections import namedtuple

import numpy as np
import pytest

import gpuad
from gpuad import tree_flatten, tree_map, tree_unflatten, xp

Pair = namedtuple("Pair", "a b")


def test_roundtrip_and_structure():
    tree = {"z": [1, (2, None)], "a": Pair(3, {"k": 4})}
    leaves, td = tree_flatten(tree)
    assert leaves == [3, 4, 1, 2]  # dict keys sorted
    back = tree_unflatten(td, leaves)
    assert back == tree and isinstance(back["a"], Pair)
    assert tree_flatten({"a": Pair(0, {"k": 0}), "z": [0, (0, None)]})[1] == td
    assert tree_flatten((1, 2))[1] != tree_flatten([1, 2])[1]


def test_tree_map_checks_structure():
    assert tree_map(lambda a, b: a + b, (1, [2]), (10, [20])) == (11, [22])
    with pytest.raises(ValueError, match="structures differ"):
        tree_map(lambda a, b: a, (1, 2), [1, 2])


def test_namedtuple_outputs_through_transforms():
    x = np.array([0.3, 0.6])
    out, vjp_fn = gpuad.vjp(lambda x: Pair(xp.sin(x), xp.cos(x)), x)
    assert isinstance(out, Pair)
    (g,) = vjp_fn(Pair(np.ones(2), np.zeros(2)))
    np.testing.assert_allclose(g, np.cos(x))
