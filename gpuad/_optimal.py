"""The ``"optimal"`` checkpoint schedule: a dynamic program under a byte budget.

For a chain with a measured cost model (:class:`gpuad._schedules.StepCost`)
it chooses, step by step, to *store the input* of a sub-chain (a snapshot),
to *store the step's full tape* until backward reaches it, or to *recompute*
(advance over it from an earlier snapshot), minimising the time spent
advancing while the predicted peak (NOTE [block model] in
``gpuad._schedules``) stays within the budget.  This is the heterogeneous
chain dynamic program of Beaumont, Eyraud-Dubois, Herrmann, Joly and Shilova,
"Optimal checkpointing for heterogeneous chains" (2019), in gpuad's memory
model.

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
# * (snapshot states) advance to ``s'``, ``solve(s', t, N, m)``, restore
#   ``x_s``, ``solve(s, s', h, m)``.
#
# Every step is taped exactly once in every schedule, so only advances
# cost.  tests/test_optimal.py checks the optimum against an exhaustive
# search over *all* action sequences on random chains.

# NOTE [optimal sizes]: memory is counted in units of the gcd of every size
# (exact).  When the budget spans more than ``MAX_UNITS`` units the sizes are
# rounded *up* to coarser units (the plan stays within the budget, but may
# not be optimal), and chains longer than ``MAX_GENERAL_STEPS`` whose steps
# differ are planned over groups of consecutive steps.  Such inexact plans
# are compared with the best revolve and uniform plans under the same budget
# and the best is used (``info["exact"]`` says which case applied).
# Chains whose steps all have the same memory profile are planned exactly
# by a faster recursion on the length alone, with every step costing their
# mean time (timing noise should not steer the schedule).
"""

from __future__ import annotations

import math
from itertools import repeat
from operator import add

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
        return (len(set(self.kin)) == 1 and len(set(self.kout)) == 1 and len(set(self.own)) == 1
                and len(set(self.b[1:L])) <= 1 and self.kin[0] <= self.b[0])


# ---------------------------------------------------------------- the tables
#
# ``F(h, s, t, m)`` is the least advance cost of ``solve(s, t, h, m)``;
# ``m`` runs to ``Mx = M + max state size``: dropping an ancestor's snapshot
# may leave more room than the root had.  Larger indices are clamped (a
# conservative answer).

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
    """``F[h][s][t]``: per-budget lists (index ``m``) of least advance cost."""
    L = ch.L
    F = [[[None] * (L + 1) for _ in range(L + 1)] for _ in range(5)]
    FT, FN = F[T], F[N]
    inf_row = [INF] * (Mx + 1)
    idx = range(Mx + 1)

    def shifted(row, d):   # row'[m] = row[m - d] (clamped above, INF below 0)
        if d > Mx:
            return inf_row
        if d >= 0:
            return [INF] * d + row[:Mx + 1 - d]
        return row[-d:] + [row[-1]] * (-d)

    for n in range(1, L + 1):
        for s in range(0, L - n + 1):
            t = s + n
            for h in ((BASE,) if s == 0 else (SN, ST, T, N)):
                ta = ch.tape_add(s, h)
                if n == 1:
                    v = [0 if m >= ta else INF for m in idx]
                else:
                    v = shifted(FT[s + 1][t], ta)
                if h in SNAPS:
                    for sp in range(s + 1, t):
                        adv = ch.prefix[sp] - ch.prefix[s]
                        cand = map(add, map(add, FN[sp][t], F[h][s][sp]), repeat(adv))
                        v = list(map(min, v, cand))
                else:
                    v = list(map(min, v, shifted(F[SNAPPED[h]][s][t], ch.snap_add(s, h))))
                F[h][s][t] = v
    return lambda h, s, t, m: F[h][s][t][min(m, Mx)]


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
    Mx = M + max(ch.b)
    F = (_tables_homogeneous if homog else _tables_general)(ch, M, Mx)
    info = {"exact": not (grouped or quantized), "units": unit, "groups": ch.L, "homogeneous": homog}
    acts = _emit(ch, F, M) if F(BASE, 0, ch.L, M) < INF else None
    if not info["exact"]:
        secs = ch.secs if not grouped else (list(cost.seconds) if cost.seconds and any(cost.seconds) else [1.0] * l)
        # rounded sizes can misjudge what a dropped snapshot frees: check the plan
        best = [acts] if acts is not None and S.simulate(acts, cost) <= budget_bytes else []
        best += _classic_candidates(cost, budget_bytes, l)
        acts = min(best, key=lambda a: (S.advance_cost(a, secs), S.simulate(a, cost)))
    assert acts is not None and S.simulate(acts, cost) <= budget_bytes
    return acts, info
