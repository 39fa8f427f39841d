"""The ``"optimal"`` checkpoint schedule: a dynamic program under a byte budget.

For a chain with a measured cost model (:class:`gpuad._schedules.StepCost`)
it chooses, step by step, to *store the input* of a sub-chain (a snapshot),
to *store the step's full tape* until backward reaches it, or to *recompute*
(advance over it from an earlier snapshot), minimising the time spent
advancing while the predicted peak (NOTE [block model] in
``gpuad._schedules``) stays within the budget.  This is the heterogeneous
chain dynamic program of Beaumont, Eyraud-Dubois, Herrmann, Joly and Shilova,
"Optimal checkpointing for heterogeneous chains" (2019), in gpuad's memory
model, extended with snapshots that serve only a later part of the chain and
are dropped before their own step is recorded.

# NOTE [optimal recursion]: ``solve(s, t, h, m)`` reverses steps
# ``s .. t-1`` starting with ``x_s`` current, the cotangent of ``x_t``
# available once ``x_t`` is reached, and ``m`` bytes to spare beyond what is
# counted on entry.  ``h`` says how ``x_s`` is held: ``BASE`` (``x_0``),
# ``SN`` (a snapshot only), ``ST`` (a snapshot and the kept tape of step
# ``s-1``), ``T`` (that tape only: its ``output_kept`` part) or ``N``
# (reached by an advance, held by nothing).  The options:
#
# * tape step ``s`` and keep it (``t - s == 1``: reverse it at once), then
#   ``solve(s+1, t, T, ...)``, then reverse step ``s``.  From a snapshot
#   this is the snapshot's last use, so it is dropped first (its last
#   restore frees it, and the tape keeps only ``input_kept`` of ``x_s``);
# * (``T``, ``N``) snapshot ``x_s`` and ``solve(s, t, ST or SN, ...)``;
# * (snapshot states) ``R(s, w, t, m)``, restore ``x_s``,
#   ``solve(s, w, h, m)``, for ``s < w < t``.
#
# ``R(s, w, t, m)`` reverses steps ``w .. t-1`` from the snapshot ``x_s``
# (which the caller then restores): advance to ``w`` and
# ``solve(w, t, N, m)``, or advance to ``s2`` (``s < s2 < w``), snapshot
# ``x_s2`` and ``P(s2, w, t, m - its bytes)``.  ``P(s, u, t, m)`` reverses
# steps ``u .. t-1`` from the snapshot ``x_s`` and drops that snapshot on
# its last restore, before step ``s`` is recorded: steps ``s .. u-1`` are
# left to an earlier snapshot, which re-runs them.  Either drop it at once
# and ``R(s, u, t, m + its bytes)``, or ``R(s, w, t, m)``, restore ``x_s``
# and ``P(s, u, w, m)`` (``u < w < t``).  Only a snapshot of a state reached
# by an advance is dropped early: the steps before a state reached by a tape
# could be re-run only over that held tape (allowed by the executor and by
# the tests' search, never found to pay).  Without ``P`` (every snapshot
# kept until its step is recorded) the optimum can be worse: in
# tests/test_optimal.py::test_a_snapshot_dropped_before_its_step_is_recorded
# a 1-byte ``x_1`` spares re-running step 0 for steps 3 and 2, but cannot
# stay while step 2's tape is held, and the plan costs 12 time units, not 14.
#
# Every step is taped exactly once in every schedule, so only advances
# cost.  tests/test_optimal.py checks the optimum against an exhaustive
# search over all action sequences (any snapshot dropped at any time, steps
# re-run while their tape is held) on random chains.

# NOTE [optimal sizes]: memory is counted in units of the gcd of every size
# (exact).  When the budget spans more than ``MAX_UNITS`` units the sizes are
# rounded *up* to coarser units (the plan stays within the budget, but may
# not be optimal), and chains longer than ``MAX_GENERAL_STEPS`` whose steps
# differ are planned over groups of consecutive steps.  Such inexact plans
# are compared with the best revolve and uniform plans under the same budget
# and the best is used (``info["exact"]`` says which case applied).
# Chains whose steps all have the same memory profile are planned by a
# faster recursion on the length alone, with every step costing their mean
# time (timing noise should not steer the schedule).  It has no ``P``: on
# such chains early drops never paid where the tests compare it with the
# general recursion.
"""

from __future__ import annotations

import math
from operator import add

import numpy as np

from . import _schedules as S

__all__ = ["optimal_actions", "BudgetError", "MAX_UNITS", "MAX_GENERAL_STEPS"]

MAX_UNITS = 256
MAX_GENERAL_STEPS = 48
INF = float("inf")
BASE, SN, ST, T, N = range(5)
SNAPS = (BASE, SN, ST)


class BudgetError(ValueError):
    """A byte budget that no schedule meets; ``min_budget`` is the smallest that works."""

    def __init__(self, budget, min_budget):
        self.budget, self.min_budget = budget, min_budget
        super().__init__(
            f"checkpoint_sequential: budget_bytes={budget} cannot be met; the smallest feasible budget "
            f"for this chain is {min_budget} bytes (the input and parameters plus the largest single "
            f"step's tape)")


class _Chain:
    """The chain the DP sees: ``L`` units (steps, or groups of steps), sizes in memory units."""

    def __init__(self, cost, pos):
        self.pos = pos
        L = len(pos) - 1
        sb, kin, kout = cost.state_bytes, cost.input_kept, cost.output_kept
        self.b = [sb[p] for p in pos]
        self.kin = [kin[pos[g]] for g in range(L)]
        self.kout = [kout[pos[g + 1] - 1] for g in range(L)]
        own = []
        for g in range(L):
            a, z = pos[g], pos[g + 1]
            o = sum(S.own_bytes(cost, k) for k in range(a, z))
            o += sum(max(kout[k - 1], kin[k]) for k in range(a + 1, z))
            own.append(o)
        self.own = own
        secs = list(cost.seconds) if cost.seconds else []
        if len(secs) != len(cost.tape_bytes) or not any(secs):
            secs = [1.0] * len(cost.tape_bytes)
        self.secs = [sum(secs[pos[g]:pos[g + 1]]) for g in range(L)]
        self.L = L

    def scale(self, unit):
        up = lambda v: -(-v // unit)  # noqa: E731 - round up: the plan stays within budget
        self.b, self.kin, self.kout, self.own = ([up(v) for v in xs] for xs in (self.b, self.kin, self.kout, self.own))

    def ticks(self, pooled):
        if pooled:
            self.c = [1] * self.L
        else:
            top = max(self.secs) or 1.0
            self.c = [max(1, round(v * 1e6 / top)) for v in self.secs]
        self.prefix = [0]
        for v in self.c:
            self.prefix.append(self.prefix[-1] + v)

    def cur(self, s, h):
        """Bytes of ``x_s`` counted on entry, and those still counted once a snapshot is dropped."""
        b = self.b[s]
        if h == BASE:
            return b, b
        tape = self.kout[s - 1] if h in (ST, T) else 0
        return (max(b, tape) if h in (SN, ST) else tape), tape

    def tape_add(self, s, h):
        cur, under = self.cur(s, h)
        return max(under, self.kin[s]) - cur + self.own[s] + self.kout[s]

    def snap_add(self, s, h):
        cur, _ = self.cur(s, h)
        return max(self.b[s], cur) - cur

    def homogeneous(self):
        L = self.L
        # x_0 is held throughout (part of the base): step 0's input and what its tape keeps of it
        # may differ from the other steps' (a float32 input to float64 steps, say)
        return (len(set(self.kin[1:])) <= 1 and len(set(self.kout)) == 1 and len(set(self.own)) == 1
                and len(set(self.b[1:L])) <= 1 and self.kin[0] <= self.b[0])


# ---------------------------------------------------------------- the tables
#
# ``F(h, s, t, m)`` is the least advance cost of ``solve(s, t, h, m)``;
# ``m`` runs to ``Mx = M``: a drop frees only bytes that were counted below
# the root (a snapshot frees what taking it added; ``P`` frees the snapshot
# ``R`` took), so no state has more room than the root.  Larger indices
# would be clamped (a conservative answer).

SNAPPED = {T: ST, N: SN}


def _tables_homogeneous(ch, M, Mx):
    """``F[h][m][n]``: least advances to reverse ``n`` steps (all steps alike)."""
    L = ch.L
    s1 = 1 if L > 1 else 0
    ta = [ch.tape_add(0 if h == BASE else s1, h) if (h == BASE or L > 1) else INF for h in range(5)]
    sa = {h: ch.snap_add(s1, h) for h in (T, N)} if L > 1 else {}
    F = [[[INF] * (L + 1) for _ in range(Mx + 1)] for _ in range(5)]
    FT, FN = F[T], F[N]
    A = {h: [[INF] * (L + 1) for _ in range(Mx + 1)] for h in SNAPS}   # A[h][m][j] = j + F(h, j, m)
    order = (BASE, SN, ST, T, N)
    for n in range(1, L + 1):
        for m in range(Mx + 1):
            for h in order:
                v = INF
                d = ta[h]
                if d <= m:
                    v = 0 if n == 1 else FT[min(m - d, Mx)][n - 1]
                if h in SNAPS:
                    if n > 1 and v > 1:
                        fn = FN[m]
                        v = min(v, min(map(add, A[h][m][1:n], reversed(fn[1:n]))))
                    A[h][m][n] = n + v
                elif h in sa and sa[h] <= m and v > 0:
                    v = min(v, F[SNAPPED[h]][m - sa[h]][n])
                F[h][m][n] = v
    return lambda h, s, t, m: F[h][min(m, Mx)][t - s]


def _tables_general(ch, M, Mx):
    """``F(h, s, t, m)`` and the choices achieving it (NOTE [optimal recursion]).

    Rows over ``m`` are numpy arrays; ``s`` runs from the right.  For each
    ``s`` it computes ``R(s, w, t)`` for every ``w < t``, then ``P(s, u, t)``
    and ``F(h, s, t)``; ``Q[w, t]``, the least ``prefix[s2] + P(s2, w, t)``
    at ``m - b[s2]`` over the ``s2`` done so far, makes each ``R`` entry
    O(1).  Only ``F(T)`` and ``F(N)`` are kept for every ``s``; the choices
    (``int8``: ``L <= MAX_GENERAL_STEPS < 128``; per ``s`` and ``w`` for
    ``t > w``) drive :func:`_emit_general`.
    """
    L, W = ch.L, Mx + 1
    pre = np.array(ch.prefix, dtype=float)
    idx = np.arange(W)
    FT = np.full((L + 1, L + 1, W), INF)
    FN = np.full((L + 1, L + 1, W), INF)
    base = None
    CF = np.full((5, L + 1, L + 1, W), -1, dtype=np.int8)   # -1 tape, -2 snapshot, v: split at v
    CR, CP = {}, {}   # (s, w) -> choices for t > w: -1 advance to w / drop now, else s2 / the split
    Q = np.full((L + 1, L + 1, W), INF)
    QA = np.full((L + 1, L + 1, W), -1, dtype=np.int8)

    def shifted(a, d):   # a'[..., m] = a[..., m - d] (clamped above, INF below 0)
        out = np.full_like(a, INF)
        if d > Mx:
            return out
        if d >= 0:
            out[..., d:] = a[..., :W - d]
        else:
            d = max(d, -Mx)
            out[..., :W + d] = a[..., -d:]
            out[..., W + d:] = a[..., -1:]
        return out

    for s in range(L - 1, -1, -1):
        lo = s + 1
        R = np.full((L + 1, L + 1, W), INF)       # R(s, w, t) at [w, t]
        for w in range(lo, L):
            direct = FN[w, w + 1:] + (pre[w] - pre[s])
            via = Q[w, w + 1:] - pre[s]
            R[w, w + 1:] = np.minimum(direct, via)
            CR[s, w] = np.where(via < direct, QA[w, w + 1:], np.int8(-1))
        if s > 0 and lo < L:
            P = np.full((L + 1, L + 1, W), INF)   # P(s, u, t) at [u, t]
            C = np.full((L + 1, L + 1, W), -1, dtype=np.int8)
            for t in range(s + 2, L + 1):
                best = shifted(R[lo:t, t], -ch.b[s])
                if t - lo >= 2:
                    X = R[lo + 1:t, t][None] + P[lo:t, lo + 1:t]
                    j = X.argmin(axis=1)
                    xm = np.take_along_axis(X, j[:, None], axis=1)[:, 0]
                    better = xm < best
                    C[lo:t, t] = np.where(better, j + lo + 1, -1)
                    best = np.where(better, xm, best)
                P[lo:t, t] = best
            for u in range(lo, L):
                CP[s, u] = C[u, u + 1:].copy()
            cand = shifted(P, ch.b[s])
            cand += pre[s]
            better = cand < Q
            np.copyto(Q, cand, where=better)
            QA[better] = s
            del P, C, cand, better
        cur = {}
        for h in ((BASE,) if s == 0 else (SN, ST, T, N)):
            row = cur[h] = np.full((L + 1, W), INF)
            ta = ch.tape_add(s, h)
            for t in range(lo, L + 1):
                v = np.where(idx >= ta, 0.0, INF) if t == lo else shifted(FT[lo, t], ta)
                c = CF[h, s, t]
                if h in SNAPS:
                    if t - s >= 2:
                        X = R[lo:t, t] + row[lo:t]
                        j = X.argmin(axis=0)
                        xm = X[j, idx]
                        better = xm < v
                        c[better] = (j + lo)[better]
                        v = np.where(better, xm, v)
                else:
                    sv = shifted(cur[SNAPPED[h]][t], ch.snap_add(s, h))
                    better = sv < v
                    c[better] = -2
                    v = np.where(better, sv, v)
                row[t] = v
        if s == 0:
            base = cur[BASE]
        else:
            FT[s], FN[s] = cur[T], cur[N]

    def value(h, s, t, m):
        assert (h, s, t) == (BASE, 0, L)
        return base[t, min(m, Mx)]
    return value, (CF, CR, CP, Mx)


# ---------------------------------------------------------------- the schedule


def _emit(ch, F, M):
    """The action list achieving ``F(BASE, 0, L, M)`` (iterative: chains may be long)."""
    pos = ch.pos
    out = [("snapshot", 0)]
    stack = [("solve", 0, ch.L, BASE, M)]
    while stack:
        item = stack.pop()
        if item[0] != "solve":
            out.append(item)
            continue
        _, s, t, h, m = item
        target = F(h, s, t, m)
        ta = ch.tape_add(s, h)
        if ta <= m and (0 if t - s == 1 else F(T, s + 1, t, m - ta)) == target:
            if h in (SN, ST):
                out.append(("drop", pos[s]))
            out.append(("tape", pos[s], pos[s + 1]))
            stack.append(("reverse", pos[s], pos[s + 1]))
            if t - s > 1:
                stack.append(("solve", s + 1, t, T, m - ta))
            continue
        if h not in SNAPS:
            sa = ch.snap_add(s, h)
            assert sa <= m and F(SNAPPED[h], s, t, m - sa) == target, (s, t, h, m)
            out.append(("snapshot", pos[s]))
            stack.append(("solve", s, t, SNAPPED[h], m - sa))
            continue
        for sp in range(s + 1, t):
            adv = ch.prefix[sp] - ch.prefix[s]
            if (F(N, sp, t, m) + F(h, s, sp, m)) + adv == target:
                break
        else:  # pragma: no cover - the tables are consistent
            raise AssertionError(f"optimal: no split reproduces the table at {(s, t, h, m)}")
        out.append(("advance", pos[s], pos[sp]))
        stack += [("solve", s, sp, h, m), ("restore", pos[s]), ("solve", sp, t, N, m)]
    return _merge_tapes(out)


def _emit_general(ch, choices, M):
    """The action list of the general tables (:func:`_tables_general`), from their choices."""
    CF, CR, CP, Mx = choices
    pos, b = ch.pos, ch.b
    out = [("snapshot", 0)]
    stack = [("F", BASE, 0, ch.L, M)]
    while stack:
        item = stack.pop()
        kind = item[0]
        if kind == "F":
            _, h, s, t, m = item
            c = int(CF[h, s, t, m])
            if c == -1:
                if h in (SN, ST):
                    out.append(("drop", pos[s]))
                out.append(("tape", pos[s], pos[s + 1]))
                stack.append(("reverse", pos[s], pos[s + 1]))
                if t - s > 1:
                    stack.append(("F", T, s + 1, t, min(m - ch.tape_add(s, h), Mx)))
            elif c == -2:
                out.append(("snapshot", pos[s]))
                stack.append(("F", SNAPPED[h], s, t, m - ch.snap_add(s, h)))
            else:
                stack += [("F", h, s, c, m), ("restore", pos[s]), ("R", s, c, t, m)]
        elif kind == "R":          # x_s current and snapshotted; reverse w .. t-1
            _, s, w, t, m = item
            c = int(CR[s, w][t - w - 1, m])
            if c == -1:
                out.append(("advance", pos[s], pos[w]))
                stack.append(("F", N, w, t, m))
            else:
                out += [("advance", pos[s], pos[c]), ("snapshot", pos[c])]
                stack.append(("P", c, w, t, m - b[c]))
        elif kind == "P":          # the same, dropping the snapshot of x_s on its last restore
            _, s, u, t, m = item
            c = int(CP[s, u][t - u - 1, m])
            if c == -1:
                out.append(("drop", pos[s]))
                stack.append(("R", s, u, t, min(m + b[s], Mx)))
            else:
                stack += [("P", s, u, c, m), ("restore", pos[s]), ("R", s, c, t, m)]
        else:
            out.append(item)
    return _merge_tapes(out)


def _merge_tapes(acts):
    """Fuse adjacent one-step tapes (and their adjacent reverses) into one tape.

    Kept tapes of consecutive steps are recorded back to back and reversed
    back to back (NOTE [optimal recursion]); one trace for the run saves a
    backward call per step and holds the same blocks.
    """
    out = []
    fused = {}   # (a, b) reverse to drop -> (i, j) reverse that replaces the run
    i = 0
    while i < len(acts):
        a = acts[i]
        if a[0] == "tape":
            j = i
            while j + 1 < len(acts) and acts[j + 1][0] == "tape" and acts[j + 1][1] == acts[j][2]:
                j += 1
            if j > i:
                lo, hi = a[1], acts[j][2]
                out.append(("tape", lo, hi))
                for k in range(i, j + 1):
                    fused[(acts[k][1], acts[k][2])] = (lo, hi)
                i = j + 1
                continue
        elif a[0] == "reverse" and (a[1], a[2]) in fused:
            lo, hi = fused.pop((a[1], a[2]))
            if a[2] == hi:       # the first reverse of the run stands for all of it
                out.append(("reverse", lo, hi))
            i += 1
            continue
        out.append(a)
        i += 1
    return out


def _groups(cost, n_groups):
    """Boundaries of ``n_groups`` runs of consecutive steps of about equal advance time."""
    l = len(cost.tape_bytes)
    secs = list(cost.seconds) if cost.seconds and any(cost.seconds) else [1.0] * l
    total = sum(secs)
    pos, acc = [0], 0.0
    for k in range(l):
        acc += secs[k]
        if acc >= total * len(pos) / n_groups and k + 1 < l and len(pos) < n_groups:
            pos.append(k + 1)
    pos.append(l)
    return pos


def _classic_candidates(cost, budget, l):
    """The best revolve and uniform plans that fit ``budget``."""
    out = []
    lo, hi = 1, l
    while lo < hi:   # the most snapshots that fit (revolve's peak grows with s)
        mid = (lo + hi + 1) // 2
        if S.simulate(S.revolve_actions(l, mid), cost) <= budget:
            lo = mid
        else:
            hi = mid - 1
    acts = S.revolve_actions(l, lo)
    if S.simulate(acts, cost) <= budget:
        out.append(acts)
    for k in range(1, l + 1):
        acts = S.uniform_actions(l, k)
        if S.simulate(acts, cost) <= budget:
            out.append(acts)
    return out


def optimal_actions(cost, budget_bytes, *, exact=False):
    """The least-advance-time schedule whose predicted peak fits ``budget_bytes``.

    Parameters
    ----------
    cost : StepCost
        The chain's cost model (``seconds`` may be empty: then advances count).
    budget_bytes : int
        Bound on the predicted peak, base (input and parameters) included.
    exact : bool
        Refuse to plan inexactly (NOTE [optimal sizes]): raise instead.

    Returns
    -------
    actions : list of tuple
    info : dict
        ``exact`` (bool), ``units`` (bytes per memory unit), ``groups``
        (units of the DP) and ``homogeneous`` (bool).

    Raises
    ------
    BudgetError
        No schedule fits; the error gives the smallest feasible budget.
    """
    l = len(cost.tape_bytes)
    need = S.min_feasible_peak(cost)
    if budget_bytes < need:
        raise BudgetError(budget_bytes, need)
    ch = _Chain(cost, list(range(l + 1)))
    homog = ch.homogeneous()
    grouped = False
    if not homog and l > MAX_GENERAL_STEPS:
        if exact:
            raise ValueError(f"optimal: {l} heterogeneous steps exceed the exact limit {MAX_GENERAL_STEPS}")
        ch = _Chain(cost, _groups(cost, MAX_GENERAL_STEPS))
        grouped = True
    sizes = [v for xs in (ch.b, ch.kin, ch.kout, ch.own) for v in xs if v > 0]
    unit = math.gcd(*sizes) if sizes else 1
    spare = budget_bytes - cost.base_bytes
    quantized = spare // unit > MAX_UNITS
    if quantized:
        if exact:
            raise ValueError(f"optimal: the budget spans {spare // unit} units, over the exact limit {MAX_UNITS}")
        unit = -(-spare // MAX_UNITS)
    M = spare // unit
    ch.scale(unit)
    ch.ticks(pooled=homog)
    Mx = M
    if homog:
        F = _tables_homogeneous(ch, M, Mx)
        emit = lambda: _emit(ch, F, M)  # noqa: E731
    else:
        F, choices = _tables_general(ch, M, Mx)
        emit = lambda: _emit_general(ch, choices, M)  # noqa: E731
    info = {"exact": not (grouped or quantized), "units": unit, "groups": ch.L, "homogeneous": homog}
    acts = emit() if F(BASE, 0, ch.L, M) < INF else None
    if not info["exact"]:
        # at the times the DP used: pooled (all equal) for a homogeneous chain, so that timing
        # noise does not pick among equally long plans (ties go to the smaller peak)
        if homog:
            secs = [1.0] * l
        elif grouped:
            secs = list(cost.seconds) if cost.seconds and any(cost.seconds) else [1.0] * l
        else:
            secs = ch.secs
        # rounded sizes can misjudge what a dropped snapshot frees: check the plan
        best = [acts] if acts is not None and S.simulate(acts, cost) <= budget_bytes else []
        best += _classic_candidates(cost, budget_bytes, l)
        acts = min(best, key=lambda a: (S.advance_cost(a, secs), S.simulate(a, cost)))
    assert acts is not None and S.simulate(acts, cost) <= budget_bytes
    return acts, info
