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
    "StepCost", "simulate", "bisection_actions", "advance_cost", "min_feasible_peak", "own_bytes",
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
    return _split_reversal(l, s, _revolve_split)


def bisection_actions(l, s):
    """Recursive bisection with ``s`` snapshots (including the input).

    Halves the chain, keeps the midpoint, reverses the right half with one
    snapshot less, then the left half; with one snapshot left it re-advances
    from the start for every step.  ``(l/2) log2 l`` advances for
    ``l = 2**k`` and ``s >= k`` (the comparison point for revolve).
    """
    if l < 1 or s < 1:
        raise ValueError(f"bisection: need l >= 1 and s >= 1, got l={l}, s={s}")
    return _split_reversal(l, s, lambda n, ss: n // 2)


def _split_reversal(l, s, split):
    """Actions of a recursive split reversal: revolve or bisection, by ``split(n, s)``.

    The chain ``[start, end)`` is advanced to ``start + split(n, s)``, that
    state snapshotted, the right part reversed with one snapshot less, then
    the left part with ``s``; with one snapshot left every step is re-advanced
    from the start.  Iterative (no recursion limit for long chains): a task is
    ``("rev", start, end, s)`` or an action, pushed in reverse order of
    execution.
    """
    out = [("snapshot", 0)]
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
        m = start + split(n, ss)
        out += [("advance", start, m), ("snapshot", m)]
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
    same_block : list of bool
        ``l + 1`` entries (or empty: none): ``same_block[i]`` when every
        array of ``x_i`` lives in a memory block of ``x_{i-1}`` (a step
        returning its input, a view or reshape of it): NOTE [aliased states].
    """

    state_bytes: list
    tape_bytes: list
    input_kept: list
    output_kept: list
    seconds: list = field(default_factory=list)
    base_bytes: int = 0
    same_block: list = field(default_factory=list)


def simulate(actions, cost):
    """Predicted peak bytes of a schedule under the cost model ``cost``.

    Counts the base bytes (the input ``x_0`` and the parameters), kept
    snapshots and kept tapes, per memory block (NOTE [block model]).
    """
    return _Memory(cost).run(actions)


# NOTE [block model]: the accountant counts a block once however many
# holders it has (NOTE [buffers counted once] in ``gpuad.memory``).  The
# model mirrors that per state: ``x_i`` counts the largest part of it that
# any live holder keeps -- a snapshot (all of ``x_i``; ``x_0`` is part of the
# base), the tape of step ``i-1`` (``output_kept``) or the tape of step ``i``
# (``input_kept``) -- and each taped step adds its own intermediates
# (``tape_bytes - output_kept``).  Holders keep nested parts of a state (the
# whole of it, or the arrays a rule keeps), so the largest part is the
# union.  ``gpuad._optimal`` plans with the same model.


# NOTE [aliased states]: a step may return its input's memory (itself, a
# view, a reshape).  The accountant then sees one block where the model has
# two states, so states are grouped: ``x_i`` joins ``x_{i-1}``'s group when
# ``same_block[i]``, and a group counts the largest part any holder of any
# of its states keeps, once.  (A state that shares only part of its memory
# with the previous one is still counted apart: over-counted, never under.)


class _Memory:
    """Live bytes of a schedule's holders (NOTE [block model], NOTE [aliased states])."""

    def __init__(self, cost):
        self.c = cost
        n = len(cost.tape_bytes)
        self.snap = [False] * (n + 1)
        self.snap[0] = True
        self.taped = [False] * n
        self.live = cost.base_bytes
        self.tapes = []
        same = list(cost.same_block) or [False] * (n + 1)
        self.group = list(range(n + 1))   # the first state of each state's group
        for i in range(1, n + 1):
            if same[i]:
                self.group[i] = self.group[i - 1]
        self.members = {}
        for i, g in enumerate(self.group):
            self.members.setdefault(g, []).append(i)

    def _state(self, i):
        c = self.c
        h = c.state_bytes[i] if self.snap[i] else 0
        if i > 0 and self.taped[i - 1]:
            h = max(h, c.output_kept[i - 1])
        if i < len(self.taped) and self.taped[i]:
            h = max(h, c.input_kept[i])
        return h

    def held(self, *states):
        """Bytes held of the groups of ``states`` (each group once)."""
        groups = {self.group[i] for i in states}
        return sum(max(self._state(m) for m in self.members[g]) for g in groups)

    def _set(self, arr, i, k, value):
        before = self.held(i)
        arr[k] = value
        self.live += self.held(i) - before

    def run(self, actions):
        c = self.c
        peak = self.live
        for act in actions:
            kind = act[0]
            if kind == "snapshot" and act[1] != 0:
                self._set(self.snap, act[1], act[1], True)
            elif kind == "drop" and act[1] != 0:
                self._set(self.snap, act[1], act[1], False)
            elif kind == "tape":
                i, j = act[1], act[2]
                for k in range(i, j):
                    before = self.held(k, k + 1)
                    self.taped[k] = True
                    self.live += self.held(k, k + 1) - before + own_bytes(c, k)
                self.tapes.append((i, j))
            elif kind == "reverse":
                i, j = self.tapes.pop()
                for k in range(j - 1, i - 1, -1):
                    before = self.held(k, k + 1)
                    self.taped[k] = False
                    self.live += self.held(k, k + 1) - before - own_bytes(c, k)
            if self.live > peak:
                peak = self.live
        return peak


def own_bytes(cost, k):
    """Bytes the tape of step ``k`` keeps besides its input and output states."""
    return max(cost.tape_bytes[k] - cost.output_kept[k], 0)


def advance_cost(actions, seconds):
    """Seconds spent advancing (running steps without a tape) under ``actions``."""
    t = 0.0
    for a in actions:
        if a[0] == "advance":
            t += sum(seconds[a[1]:a[2]])
    return t


def min_feasible_peak(cost):
    """The smallest peak any schedule can have: one step's tape beside the base.

    Every step must be recorded once; while step ``k``'s tape is the only
    thing held (revolve with one snapshot) the peak is the base plus that
    tape, and no schedule does better.
    """
    out = cost.base_bytes
    for k in range(len(cost.tape_bytes)):
        cur = cost.state_bytes[0] if k == 0 else 0
        extra = max(cost.input_kept[k] - cur, 0) + own_bytes(cost, k) + cost.output_kept[k]
        out = max(out, cost.base_bytes + extra)
    return out
