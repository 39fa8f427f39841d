"""Checkpoint schedules for a chain of ``l`` steps: plans, their cost and their memory.

A schedule is a list of *actions* on states ``x_0 .. x_l`` (``x_{k+1} =
step_k(x_k)``), executed by ``gpuad.checkpointing``:

``("advance", i, j)``
    run steps ``i .. j-1`` from the current state without recording (an
    *advance* each);
``("snapshot", i)`` / ``("restore", i)`` / ``("drop", i)``
    keep the current state ``x_i``, make a kept state current, forget it;
``("tape", i, j)``
    run steps ``i .. j-1`` recording a tape, which is kept on a stack;
``("reverse", i, j)``
    pull the cotangent of ``x_j`` back through the top tape (steps
    ``i .. j-1``) to ``x_i`` and free that tape.

The forward sweep is every action before the first ``reverse``.

# NOTE [snapshot count]: revolve's ``s`` snapshots include the chain's input
# ``x_0`` (which the tape node keeps anyway), as in Griewank and Walther's
# count ``t(l, s) = r*l - C(s+r, s+1)`` (``r`` the smallest integer with
# ``C(s+r, s) >= l``).  Advances exclude the ``l`` recorded steps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

__all__ = [
    "binomial_advances", "revolve_actions", "uniform_actions", "none_actions", "count",
    "StepCost", "simulate",
]


def _beta(s, r):
    return math.comb(s + r, s) if r >= 0 else 0


def _reps(l, s):
    r = 0
    while _beta(s, r) < l:
        r += 1
    return r


def binomial_advances(l, s):
    """The proven minimum number of advances to reverse ``l`` steps with ``s`` snapshots."""
    if l < 1 or s < 1:
        raise ValueError(f"binomial_advances: need l >= 1 and s >= 1, got l={l}, s={s}")
    r = _reps(l, s)
    return r * l - math.comb(s + r, s + 1)


def _revolve_split(l, s):
    # An optimal first checkpoint position: checked against the brute-force
    # recurrence T(l,s) = min_m m + T(l-m, s-1) + T(m, s) (tests/test_schedules.py).
    r = _reps(l, s)
    return max(1, _beta(s, r - 2), l - _beta(s - 1, r))


def revolve_actions(l, s):
    """Binomial checkpointing (Griewank and Walther, Algorithm 799 'revolve').

    Parameters
    ----------
    l : int
        Number of steps (>= 1).
    s : int
        Snapshots, including the input ``x_0`` (>= 1).

    Returns
    -------
    list of tuple
        Actions whose advances number exactly :func:`binomial_advances`.
    """
    if l < 1:
        raise ValueError(f"revolve: the chain needs at least one step, got {l}")
    if s < 1:
        raise ValueError(f"revolve: snapshots must be >= 1 (the input counts as one), got {s}")
    out = [("snapshot", 0)]
    # Iterative form of the recursion (no recursion limit for long chains):
    # a task is (start, end, s, first) with the state at `start` current
    # when first, else restored from its snapshot.
    stack = [("rev", 0, l, s)]
    while stack:
        task = stack.pop()
        if task[0] != "rev":
            out.append(task)
            continue
        _, start, end, ss = task
        n = end - start
        if n == 1:
            out += [("tape", start, end), ("reverse", start, end)]
            continue
        if ss == 1:
            for i in range(end - 1, start - 1, -1):
                if i < end - 1:
                    out.append(("restore", start))
                if i > start:
                    out.append(("advance", start, i))
                out += [("tape", i, i + 1), ("reverse", i, i + 1)]
            continue
        m = start + _revolve_split(n, ss)
        out += [("advance", start, m), ("snapshot", m)]
        # pushed in reverse order of execution
        stack += [("rev", start, m, ss), ("restore", start), ("drop", m), ("rev", m, end, ss - 1)]
    return out


def uniform_actions(l, k):
    """Chen et al.'s sqrt(l) scheme: ``k`` segments of (nearly) equal length.

    Forward advances to each segment start, keeping it; the last segment is
    recorded directly.  Backward re-records one segment at a time.
    """
    if l < 1:
        raise ValueError(f"uniform: the chain needs at least one step, got {l}")
    if not 1 <= k <= l:
        raise ValueError(f"uniform: segments must be between 1 and the number of steps {l}, got {k}")
    bounds = [round(i * l / k) for i in range(k + 1)]
    out = [("snapshot", 0)]
    pos = 0
    for a in bounds[1:-1]:
        out.append(("advance", pos, a))
        pos = a
        if a != bounds[-2]:
            out.append(("snapshot", a))
    out += [("tape", pos, l), ("reverse", pos, l)]
    for a, b in reversed(list(zip(bounds[:-2], bounds[1:-1]))):
        out += [("restore", a), ("tape", a, b), ("reverse", a, b)]
        if a != 0:
            out.append(("drop", a))
    return out


def none_actions(l):
    """Store everything: one tape of the whole chain."""
    return [("snapshot", 0), ("tape", 0, l), ("reverse", 0, l)]


def count(actions):
    """``(advances, recorded steps)`` of a schedule."""
    adv = rec = 0
    for a in actions:
        if a[0] == "advance":
            adv += a[2] - a[1]
        elif a[0] == "tape":
            rec += a[2] - a[1]
    return adv, rec


@dataclass
class StepCost:
    """Measured cost model of a chain (``gpuad.checkpointing`` profiles it).

    Attributes
    ----------
    state_bytes : list of int
        ``l + 1`` entries: bytes of ``x_0 .. x_l``.
    tape_bytes : list of int
        Per step: bytes its tape keeps, excluding its input state and
        parameters (its output state is included when kept).
    input_kept : list of int
        Per step: bytes of its input state that its tape keeps.
    output_kept : list of int
        Per step: bytes of its output state that its tape keeps.
    seconds : list of float
        Per step: time of one advance.
    base_bytes : int
        Bytes held throughout (the input and the parameters).
    """

    state_bytes: list
    tape_bytes: list
    input_kept: list
    output_kept: list
    seconds: list = field(default_factory=list)
    base_bytes: int = 0


def simulate(actions, cost):
    """Predicted peak bytes of a schedule under the cost model ``cost``.

    Counts the base bytes, kept snapshots (``x_0`` is part of the base) and
    kept tapes; a block shared between a snapshot and a tape counts once
    (NOTE [buffers counted once] in ``gpuad.memory``).
    """
    b, a, kin, kout = cost.state_bytes, cost.tape_bytes, cost.input_kept, cost.output_kept
    snaps = set()
    tapes = []  # (i, j, bytes)
    live = cost.base_bytes
    peak = live

    def held_by_tape_output(p):
        return bool(tapes) and tapes[-1][1] == p and kout[p - 1] > 0

    for act in actions:
        kind = act[0]
        if kind == "snapshot":
            i = act[1]
            if i != 0 and i not in snaps:
                snaps.add(i)
                if not held_by_tape_output(i):
                    live += b[i]
        elif kind == "drop":
            if act[1] in snaps:
                snaps.discard(act[1])
                live -= b[act[1]]
        elif kind == "tape":
            i, j = act[1], act[2]
            nb = sum(a[i:j])
            for k in range(i + 1, j):
                nb += max(kin[k] - kout[k - 1], 0)
            if not (i == 0 or i in snaps or held_by_tape_output(i)):
                nb += kin[i]
            tapes.append((i, j, nb))
            live += nb
        elif kind == "reverse":
            live -= tapes.pop()[2]
        peak = max(peak, live)
    return peak
