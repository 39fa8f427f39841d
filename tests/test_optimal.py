"""The "optimal" and "auto" checkpoint strategies, budgets, debug mode, bisection.

The dynamic program is checked against an exhaustive (Dijkstra) search over
every action sequence on random heterogeneous chains: any snapshot may be
dropped at any time, and a step may be re-run while its tape is held.  The
search counts memory by the block model (NOTE [block model] in
gpuad._schedules): each state counts once, as the largest part any holder
keeps.  Recomputing a state while an earlier copy of it is held (by its
snapshot, or by the tape of a step re-run) makes a second copy, which the
executor counts apart: on such schedules the search undercounts, so it is a
relaxation and its optimum a lower bound.  The DP's schedules never hold two
copies of a state (``true_peak`` counts copies apart and must equal the
model's peak), so where the DP matches the search no schedule does better.
"""

import heapq
import itertools
import random

import numpy as np
import pytest

import gpuad
from gpuad import _optimal as O
from gpuad import _schedules as S
from gpuad import xp
from gpuad.checkpointing import checkpoint_sequential, last_report, plan_checkpoints, replayed

FREE = -1


def exhaustive(cost, budget, persistent=False):
    """Least advance time over all schedules whose live bytes never exceed ``budget``.

    A state is (cotangent position ``ct``, current position, snapshots, tape
    stack).  Three reductions lose nothing: a tape whose step is the next to
    reverse is reversed at once (that only frees memory); states from
    ``x_ct`` on are forgotten (never needed again); and being at ``x_0`` or
    at a snapshot is one state, ``FREE`` (each is a free restore away).
    ``persistent=True`` adds the two rules of schedules that keep every
    snapshot until its own step is recorded: a snapshot is dropped only to
    record its step right away, and no step is re-run while its tape is held.
    """
    l = len(cost.tape_bytes)
    c = cost.seconds or [1] * l

    def live(snaps, tapes):
        m = S._Memory(cost)
        m.snap = [i in snaps or i == 0 for i in range(l + 1)]
        m.taped = [k in tapes for k in range(l)]
        tot = cost.base_bytes - cost.state_bytes[0] + sum(m.held(i) for i in range(l + 1))
        return tot + sum(S.own_bytes(cost, k) for k in tapes)

    start = (l, FREE, frozenset(), ())
    dist = {start: 0}
    pq, n = [(0, 0, start)], 1
    while pq:
        d, _, st = heapq.heappop(pq)
        if dist[st] != d:
            continue
        ct, pos, snaps, tapes = st
        if ct == 0:
            return d
        nxt = []   # (advance time, state, whether it holds more)
        if tapes and tapes[-1] == ct - 1:
            nxt.append((0, (ct - 1, pos, snaps, tapes[:-1]), False))                     # reverse
        else:
            top = tapes[-1] if tapes else -1
            for i in ([0, *snaps] if pos == FREE else [pos]):                               # (restore and) ...
                if i + 1 < ct and not (persistent and i in tapes):
                    nxt.append((c[i], (ct, i + 1, snaps, tapes), False))                    # advance
                if top < i < ct:
                    nxt.append((0, (ct, i + 1, snaps, tapes + (i,)), True))                 # tape (kept)
                    if persistent and i in snaps:
                        nxt.append((0, (ct, i + 1, snaps - {i}, tapes + (i,)), True))       # drop, then tape
            if pos != FREE:
                nxt.append((0, (ct, FREE, snaps, tapes), False))                            # restore
                nxt.append((0, (ct, pos, snaps | {pos}, tapes), True))                      # snapshot
            if not persistent:
                for i in snaps:                                                             # drop (at FREE: x_i's)
                    nxt.append((0, (ct, i if pos == FREE else pos, snaps - {i}, tapes), False))
        for w, (ct2, pos2, snaps2, tapes2), grows in nxt:
            if grows and live(snaps2, tapes2) > budget:
                continue
            if ct2 < ct:
                snaps2 = frozenset(i for i in snaps2 if i < ct2)
            if pos2 >= ct2 or pos2 == 0 or pos2 in snaps2:
                pos2 = FREE
            s2 = (ct2, pos2, snaps2, tapes2)
            if d + w < dist.get(s2, float("inf")):
                dist[s2] = d + w
                n += 1
                heapq.heappush(pq, (d + w, n, s2))
    return None


def true_peak(actions, cost):
    """Peak live bytes of ``actions`` with every computation of a state a copy of its own."""
    b, kin, kout = cost.state_bytes, cost.input_kept, cost.output_kept
    fresh = itertools.count(1)
    pos, cur = 0, 0
    snaps, tapes = {0: 0}, []   # state -> copy; per tape: ([(state, copy, bytes)], own bytes)

    def live():
        held = {(i, cp): b[i] for i, cp in snaps.items()}
        for parts, _ in tapes:
            for i, cp, v in parts:
                held[i, cp] = max(held.get((i, cp), 0), v)
        return cost.base_bytes - b[0] + sum(held.values()) + sum(own for _, own in tapes)

    peak = live()
    for a in actions:
        if a[0] == "snapshot":
            assert pos == a[1]
            snaps[a[1]] = cur
        elif a[0] == "restore":
            pos, cur = a[1], snaps[a[1]]
        elif a[0] == "drop":
            if a[1]:
                del snaps[a[1]]
        elif a[0] == "advance":
            assert pos == a[1]
            pos, cur = a[2], next(fresh)
        elif a[0] == "tape":
            assert pos == a[1]
            parts = [(a[1], cur, kin[a[1]])]
            for k in range(a[1], a[2]):
                cur = next(fresh)
                parts.append((k + 1, cur, kout[k]))
                if k + 1 < a[2]:
                    parts.append((k + 1, cur, kin[k + 1]))
            tapes.append((parts, sum(S.own_bytes(cost, k) for k in range(a[1], a[2]))))
            pos = a[2]
        elif a[0] == "reverse":
            tapes.pop()
        peak = max(peak, live())
    return peak


def random_cost(rng, l):
    b = [rng.randint(1, 6) for _ in range(l + 1)]
    kin = [rng.randint(0, b[k]) for k in range(l)]
    kout = [rng.randint(0, b[k + 1]) for k in range(l)]
    tape = [kout[k] + rng.randint(0, 5) for k in range(l)]
    secs = [rng.randint(1, 9) for _ in range(l)]
    return S.StepCost(b, tape, kin, kout, secs, base_bytes=b[0] + rng.randint(0, 3))


def _check_against_exhaustive(seed, trials, lmin, lmax):
    rng = random.Random(seed)
    for _ in range(trials):
        l = rng.randint(lmin, lmax)
        cost = random_cost(rng, l)
        budget = S.min_feasible_peak(cost) + rng.randint(0, 15)
        acts, info = O.optimal_actions(cost, budget, exact=True)
        assert info["exact"]
        assert true_peak(acts, cost) == S.simulate(acts, cost) <= budget
        assert S.count(acts)[1] == l
        assert S.advance_cost(acts, cost.seconds) == exhaustive(cost, budget), (cost, budget)


def test_matches_exhaustive_search():
    _check_against_exhaustive(0, 80, 1, 8)


@pytest.mark.slow
def test_matches_exhaustive_search_up_to_12():
    _check_against_exhaustive(1, 40, 9, 12)


def test_a_snapshot_dropped_before_its_step_is_recorded():
    # the smallest chain found where keeping every snapshot until its own step is recorded
    # costs time (NOTE [optimal recursion]): the 1-byte x_1 saves re-running step 0 for
    # steps 3 and 2, but cannot stay while step 2's tape (4 bytes) is held in the 4 spare
    # bytes; it is dropped on its last restore and step 1 is re-run from x_0
    cost = S.StepCost([5, 1, 2, 3, 2], [4, 1, 4, 2], [0, 0, 0, 1], [1, 0, 3, 2], [2, 3, 2, 3], base_bytes=8)
    budget = S.min_feasible_peak(cost)
    assert budget == 12
    acts, _ = O.optimal_actions(cost, budget, exact=True)
    assert acts == [("snapshot", 0), ("advance", 0, 1), ("snapshot", 1), ("advance", 1, 3), ("tape", 3, 4),
                    ("reverse", 3, 4), ("restore", 1), ("drop", 1), ("advance", 1, 2), ("tape", 2, 3),
                    ("reverse", 2, 3), ("restore", 0), ("advance", 0, 1), ("tape", 1, 2), ("reverse", 1, 2),
                    ("restore", 0), ("tape", 0, 1), ("reverse", 0, 1)]
    assert S.advance_cost(acts, cost.seconds) == exhaustive(cost, budget) == 12
    assert exhaustive(cost, budget, persistent=True) == 14


def test_true_peak_counts_a_recomputed_state_apart():
    cost = S.StepCost([4, 4, 4, 4], [4, 4, 4], [4, 4, 4], [4, 4, 4], base_bytes=4)
    acts = S.uniform_actions(3, 3)
    assert true_peak(acts, cost) == S.simulate(acts, cost)
    # x_2 recomputed and taped while its snapshot is held: the tape keeps the new copy
    acts = [("snapshot", 0), ("advance", 0, 2), ("snapshot", 2), ("restore", 0), ("advance", 0, 2),
            ("tape", 2, 3), ("reverse", 2, 3)]
    assert true_peak(acts, cost) == S.simulate(acts, cost) + 4


def test_homogeneous_recursion_matches_the_general_one():
    # the recursion on the length alone has no early drops (NOTE [optimal recursion]);
    # on chains whose steps are alike they never pay
    rng = random.Random(4)
    for _ in range(40):
        l = rng.randint(2, 16)
        b, tape = rng.randint(1, 6), rng.randint(0, 5)
        kin, kout = rng.randint(0, b), rng.randint(0, b)
        b0 = rng.randint(1, 6)
        kin0 = rng.randint(0, b0)  # step 0 keeps part of x_0, which may differ from the other steps
        cost = S.StepCost([b0] + [b] * l, [kout + tape] * l, [kin0] + [kin] * (l - 1), [kout] * l,
                          base_bytes=b0 + rng.randint(0, 3))
        ch = O._Chain(cost, list(range(l + 1)))
        assert ch.homogeneous()
        ch.ticks(pooled=True)
        M = S.min_feasible_peak(cost) + rng.randint(0, 20) - cost.base_bytes
        general, _ = O._tables_general(ch, M, M)
        assert O._tables_homogeneous(ch, M, M)(O.BASE, 0, l, M) == general(O.BASE, 0, l, M)


def test_never_worse_than_revolve_or_uniform():
    rng = random.Random(3)
    for _ in range(60):
        l = rng.randint(2, 12)
        cost = random_cost(rng, l)
        classic = [S.revolve_actions(l, s) for s in range(1, l + 1)]
        classic += [S.uniform_actions(l, k) for k in range(1, l + 1)]
        for acts in classic:
            budget = S.simulate(acts, cost)
            opt, _ = O.optimal_actions(cost, budget, exact=True)
            assert S.simulate(opt, cost) <= budget
            assert S.advance_cost(opt, cost.seconds) <= S.advance_cost(acts, cost.seconds)


def _tanh_profile(l, unit=1024, base=10 ** 6):
    """A chain like x -> tanh(x @ w): tapes keep their input and output state."""
    return S.StepCost([unit] * (l + 1), [unit] * l, [unit] * l, [unit] * l, [], base_bytes=base)


def test_homogeneous_chain_beats_classics_at_their_budgets():
    l = 200
    cost = _tanh_profile(l)
    for acts in (S.uniform_actions(l, 14), S.revolve_actions(l, 8), S.revolve_actions(l, 3)):
        budget = S.simulate(acts, cost)
        opt, info = O.optimal_actions(cost, budget)
        assert info["exact"] and info["homogeneous"]
        assert S.simulate(opt, cost) <= budget
        assert S.count(opt)[0] < S.count(acts)[0]
    # the equal-memory comparison of the issue: fewer evaluations than revolve
    r = plan_checkpoints(l, strategy="revolve", snapshots=8, profile=cost)
    o = plan_checkpoints(l, strategy="optimal", budget_bytes=r.predicted_peak_bytes, profile=cost)
    assert o.predicted_advances < r.predicted_advances


def test_timing_noise_does_not_steer_a_homogeneous_plan():
    # Sizes with gcd 1 force coarse units (inexact), where the DP's plan is compared with the
    # classic ones; on alike steps that comparison must use the pooled time, as the DP does.
    import itertools

    u, l = 1_000_003, 4
    shape = ([u] * (l + 1), [2 * u + 1] * l, [u] * l, [u] * l)
    none = S.simulate(S.none_actions(l), S.StepCost(*shape, [1.0] * l, base_bytes=u))
    need = S.min_feasible_peak(S.StepCost(*shape, [1.0] * l, base_bytes=u))
    for frac in (0.3, 0.5, 0.7, 0.8):
        budget = int(need + frac * (none - need))
        plans = set()
        for secs in itertools.permutations([1.0, 1.2, 0.8, 1.1]):
            acts, info = O.optimal_actions(S.StepCost(*shape, list(secs), base_bytes=u), budget)
            assert info["homogeneous"] and not info["exact"]
            plans.add(repr(acts))
        assert len(plans) == 1, (frac, plans)


def test_budget_that_cannot_be_met():
    cost = _tanh_profile(8)
    need = S.min_feasible_peak(cost)
    assert need == cost.base_bytes + 2 * 1024
    with pytest.raises(ValueError, match=f"smallest feasible budget for this chain is {need} bytes") as e:
        plan_checkpoints(8, strategy="optimal", budget_bytes=need - 1, profile=cost)
    assert e.value.min_budget == need
    rep = plan_checkpoints(8, strategy="optimal", budget_bytes=need, profile=cost)
    assert rep.predicted_peak_bytes == need
    # revolve with one snapshot fits too; the optimum also keeps step 0's tape for step 1
    assert rep.predicted_advances == exhaustive(cost, need) == S.binomial_advances(8, 1) - 1


def test_auto_and_bad_arguments():
    cost = _tanh_profile(10)
    none_peak = S.simulate(S.none_actions(10), cost)
    assert plan_checkpoints(10).strategy == "none"
    assert plan_checkpoints(10, budget_bytes=none_peak, profile=cost).strategy == "none"
    rep = plan_checkpoints(10, budget_bytes=none_peak - 1, profile=cost)
    assert (rep.requested, rep.strategy) == ("auto", "optimal")
    with pytest.raises(ValueError, match="needs budget_bytes"):
        plan_checkpoints(10, strategy="optimal", profile=cost)
    with pytest.raises(ValueError, match="needs a profile"):
        plan_checkpoints(10, strategy="optimal", budget_bytes=10 ** 7)
    with pytest.raises(ValueError, match="budget_bytes must be a non-negative int"):
        plan_checkpoints(10, budget_bytes=1.5)
    for strategy in ("none", "uniform", "revolve", "bisection"):  # never silently ignored
        with pytest.raises(ValueError, match=f"budget_bytes=10 is only used by .* not '{strategy}'"):
            plan_checkpoints(10, strategy=strategy, budget_bytes=10, profile=cost)
        with pytest.raises(ValueError, match="only used by strategies 'optimal' and 'auto'"):
            gpuad.grad(lambda x: xp.sum(checkpoint_sequential([xp.tanh] * 3, x, strategy=strategy,
                                                              budget_bytes=10)))(np.ones(3))


def test_bisection_against_revolve():
    bis = plan_checkpoints(1024, strategy="bisection", snapshots=10)
    rev = plan_checkpoints(1024, strategy="revolve", snapshots=10)
    assert (bis.predicted_advances, rev.predicted_advances) == (5120, 3755)
    assert rev.predicted_advances <= 0.78 * bis.predicted_advances
    for l in (2, 7, 64, 100):   # bisection is a valid schedule, never better than revolve
        for s in (1, 2, 4, 8):
            acts = S.bisection_actions(l, s)
            assert S.count(acts)[1] == l
            assert S.count(acts)[0] >= S.binomial_advances(l, s)


# ---------------------------------------------------------------- real runs


def mlp(L=24, width=16, seed=0):
    rng = np.random.default_rng(seed)
    ws = [rng.normal(size=(width, width)) / np.sqrt(width) for _ in range(L)]
    return rng.normal(size=(8, width)), ws


def step(w, h):
    return xp.tanh(xp.matmul(h, w))


def _grads(x, ws, **kw):
    loss = lambda x, ws: xp.sum(checkpoint_sequential([(step, w) for w in ws], x, **kw) ** 2)  # noqa: E731
    return gpuad.tree_leaves(gpuad.grad(loss, (0, 1))(x, ws))


def test_runs_within_budget_bitwise_equal_and_debug_checked():
    x, ws = mlp()
    ref = _grads(x, ws, strategy="none")
    full = last_report()
    assert full.requested == "auto" or full.strategy == "none"
    base = full.profile.base_bytes
    state = x.nbytes
    for budget in (full.actual_peak_bytes, base + 12 * state, base + 5 * state, base + 2 * state):
        g = _grads(x, ws, budget_bytes=budget, debug=True)   # strategy="auto", the default
        rep = last_report()
        assert rep.strategy == ("none" if budget == full.actual_peak_bytes else "optimal")
        for a, b in zip(ref, g):
            np.testing.assert_array_equal(a, b)
        assert rep.actual_advances == rep.predicted_advances
        assert rep.actual_peak_bytes <= budget + rep.step_working_bytes
        assert abs(rep.actual_peak_bytes - rep.predicted_peak_bytes) <= 0.05 * rep.predicted_peak_bytes
    with pytest.raises(ValueError, match="smallest feasible budget"):
        _grads(x, ws, budget_bytes=base + state)


def test_runs_a_plan_that_drops_snapshots_early():
    # states of different widths: the plan drops x_4 and x_1 on their last restores and
    # re-runs the steps before them from x_1 and x_0 (9 advances; keeping every snapshot
    # until its step is recorded needs 11); the executor runs it as predicted
    rng = np.random.default_rng(0)
    widths = [32, 8, 24, 64, 8, 48, 16, 32, 8]
    ws = [rng.normal(size=(a, b)) / np.sqrt(a) for a, b in zip(widths, widths[1:])]
    x = rng.normal(size=(8, widths[0]))
    ref = _grads(x, ws, strategy="none")
    prof = last_report().profile
    budget = prof.base_bytes + 88 * x[:, 0].nbytes   # 5632 bytes: 88 columns of the states
    g = _grads(x, ws, strategy="optimal", budget_bytes=budget, profile=prof, debug=True)
    rep = last_report()
    for a, b in zip(ref, g):
        np.testing.assert_array_equal(a, b)
    i = rep.actions.index(("drop", 1))
    assert rep.actions[i - 1:i + 2] == [("restore", 1), ("drop", 1), ("advance", 1, 2)]
    assert rep.actual_advances == rep.predicted_advances == exhaustive(prof, budget) == 9
    assert exhaustive(prof, budget, persistent=True) == 11
    assert rep.actual_peak_bytes == rep.predicted_peak_bytes <= budget


def test_profile_is_cached_and_dropout_replays():
    draws = [0]

    def mask(shape):
        draws[0] += 1
        return np.random.default_rng(draws[0]).uniform(size=shape) > 0.3

    def drop_step(w, h):
        return xp.where(xp.asarray(replayed(mask, tuple(h.shape))), step(w, h), 0.0)

    x, ws = mlp(L=10)
    budget = x.nbytes * 4 + sum(w.nbytes for w in ws) + x.nbytes
    out = []
    for strategy in ("none", "optimal", "optimal"):
        draws[0] = 0
        b = None if strategy == "none" else budget
        loss = lambda x, ws: xp.sum(checkpoint_sequential(  # noqa: E731
            [(drop_step, w) for w in ws], x, strategy=strategy, budget_bytes=b, debug=True) ** 2)
        out.append(gpuad.tree_leaves(gpuad.grad(loss, (0, 1))(x, ws)))
        assert draws[0] == 10   # the profiling pass draws; the schedule replays
        assert last_report().actual_advances > 0 or strategy == "none"
    for g in out[1:]:
        for a, b in zip(out[0], g):
            np.testing.assert_array_equal(a, b)
    calls = [0]

    def counted(w, h):
        calls[0] += 1
        return step(w, h)

    fns = [(counted, w) for w in ws]
    f = lambda x: xp.sum(checkpoint_sequential(fns, x, strategy="optimal", budget_bytes=budget))  # noqa: E731
    gpuad.grad(f)(x)
    first = calls[0]
    calls[0] = 0
    gpuad.grad(f)(x)
    assert first - calls[0] == 10   # the second call reuses the profile: no profiling pass


def test_debug_catches_a_step_that_is_not_replayed():
    counter = [0]

    def noisy(w, h):
        counter[0] += 1
        return step(w, h) + counter[0] * 1e-3     # differs on every run

    x, ws = mlp(L=6)
    loss = lambda x: xp.sum(checkpoint_sequential(  # noqa: E731
        [(noisy, w) for w in ws], x, strategy="revolve", snapshots=2, debug=True))
    with pytest.raises(RuntimeError, match="differs from its first computation"):
        gpuad.grad(loss)(x)


def test_debug_catches_a_wrong_prediction():
    x, ws = mlp(L=6)
    fns = [(step, w) for w in ws]
    gpuad.grad(lambda x: xp.sum(checkpoint_sequential(fns, x, strategy="none")))(x)
    prof = last_report().profile
    wrong = S.StepCost(list(prof.state_bytes), [2 * t for t in prof.tape_bytes], list(prof.input_kept),
                       list(prof.output_kept), base_bytes=prof.base_bytes)
    loss = lambda x: xp.sum(checkpoint_sequential(fns, x, strategy="none", profile=wrong, debug=True))  # noqa: E731
    with pytest.raises(RuntimeError, match="peak bytes: predicted"):
        gpuad.grad(loss)(x)


def test_inexact_plans_fit_and_beat_the_classics():
    # long heterogeneous chains are planned over groups of steps, and budgets spanning
    # many memory units with coarser units (NOTE [optimal sizes]); the plan still fits
    # and is never worse than revolve's or uniform's best under the same budget
    rng = random.Random(5)
    l = 80
    cost = random_cost(rng, l)
    cost.state_bytes = [v * 1000 + rng.randint(0, 7) for v in cost.state_bytes]
    cost.input_kept = [min(v * 1000, cost.state_bytes[k]) for k, v in enumerate(cost.input_kept)]
    cost.output_kept = [min(v * 1000, cost.state_bytes[k + 1]) for k, v in enumerate(cost.output_kept)]
    cost.tape_bytes = [o + 1000 * rng.randint(0, 5) for o in cost.output_kept]
    for s in (2, 5):
        budget = S.simulate(S.revolve_actions(l, s), cost)
        acts, info = O.optimal_actions(cost, budget)
        assert not info["exact"] and info["groups"] <= O.MAX_GENERAL_STEPS
        assert S.simulate(acts, cost) <= budget
        assert S.advance_cost(acts, cost.seconds) <= S.advance_cost(S.revolve_actions(l, s), cost.seconds)
    with pytest.raises(ValueError, match="exact limit"):
        O.optimal_actions(cost, budget, exact=True)


def test_a_chain_whose_input_differs_is_still_planned_exactly():
    # x_0 (float32) is smaller than the states after it (float64 steps): the chain is still
    # homogeneous for the DP, which beats revolve at revolve's own measured peak.
    rng = np.random.default_rng(0)
    ws = [rng.standard_normal((8, 8)) / 3 for _ in range(120)]
    x = rng.standard_normal((2, 8)).astype(np.float32)

    def loss(ws, **kw):
        return xp.sum(checkpoint_sequential([(step, w) for w in ws], x, **kw))

    gpuad.grad(loss)(ws, strategy="revolve", snapshots=4)
    rev = last_report()
    g = gpuad.grad(loss)(ws, strategy="optimal", budget_bytes=rev.actual_peak_bytes, debug=True)
    opt = last_report()
    assert opt.plan_info["exact"] and opt.plan_info["homogeneous"]
    assert opt.actual_peak_bytes <= rev.actual_peak_bytes and opt.actual_advances < rev.actual_advances
    for a, b in zip(g, gpuad.grad(loss)(ws, strategy="none")):
        np.testing.assert_array_equal(a, b)
