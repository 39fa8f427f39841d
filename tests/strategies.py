"""Hypothesis strategies and helpers shared by the op tests.

Shapes include size-0 and size-1 dimensions; ``broadcast_shapes`` yields
pairs (or more) of shapes that broadcast together.  Values come from NumPy's
generator seeded by hypothesis, then move to the backend under test.
"""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

dims = st.integers(min_value=0, max_value=3)
small_dims = st.integers(min_value=1, max_value=3)


def shapes(min_dims=0, max_dims=3, min_side=0, max_side=3):
    """Array shapes, size-0 and size-1 dimensions included when ``min_side == 0``."""
    return st.lists(st.integers(min_side, max_side), min_size=min_dims, max_size=max_dims).map(tuple)


@st.composite
def broadcast_shapes(draw, n=2, min_dims=0, max_dims=3, min_side=0, max_side=3):
    """``n`` shapes that broadcast together: some dims dropped, some set to 1."""
    base = draw(shapes(min_dims, max_dims, min_side, max_side))
    out = []
    for _ in range(n):
        drop = draw(st.integers(0, len(base)))
        s = list(base[drop:])
        for i in range(len(s)):
            if draw(st.booleans()) and draw(st.booleans()):
                s[i] = 1
        out.append(tuple(s))
    return out


seeds = st.integers(min_value=0, max_value=2**31 - 1)


def random_array(backend, shape, seed, low=-2.0, high=2.0, dtype="float64", away_from=None, margin=0.1):
    """Uniform values in ``[low, high)`` on ``backend``.

    ``away_from``: a list of points the values keep ``margin`` away from
    (kinks such as 0 for abs), so finite differences stay valid.
    """
    rng = np.random.default_rng(seed)
    x = rng.uniform(low, high, size=shape)
    if away_from is not None:
        for p in away_from:
            close = np.abs(x - p) < margin
            x = np.where(close, p + np.where(x >= p, margin, -margin) * 2, x)
    return backend.asarray(x, dtype=dtype)
