"""The "optimal" and "auto" checkpoint strategies, budgets, debug mode, bisection.

The dynamic program is checked against an exhaustive (Dijkstra) search over
every action sequence on random heterogeneous chains, in the model both
share (NOTE [block model] in gpuad._schedules), with two rules the DP's
schedules follow: a step is not re-run while its tape is held, and a
snapshot is dropped only to record its own step right away.
"""

import heapq
import random

import numpy as np
import pytest

import gpuad
from gpuad import _optimal as O
from gpuad import _schedules as S
from gpuad import xp
from gpuad.checkpointing import checkpoint_sequential, last_report, plan_checkpoints, replayed


def exhaustive(cost, budget):
    """Least advance time over all schedules whose live bytes never exceed ``budget``."""
    l = len(cost.tape_bytes)
    c = cost.seconds or [1] * l

    def live(snaps, tapes):
        m = S._Memory(cost)
        m.snap = [i in snaps or i == 0 for i in range(l + 1)]
        m.taped = [k in tapes for k in range(l)]
        tot = cost.base_bytes - cost.state_bytes[0] + sum(m.held(i) for i in range(l + 1))
        return tot + sum(S.own_bytes(cost, k) for k in tapes)

    start = (0, frozenset([0]), (), l)   # (current state, snapshots, tape stack, cotangent position)
    dist = {start: 0}
    pq, n = [(0, 0, start)], 1
    while pq:
        d, _, st = heapq.heappop(pq)
        if dist[st] != d:
            continue
        pos, snaps, tapes, ct = st
        if ct == 0:
            return d
        nxt = []
        can_tape = pos < ct and (not tapes or tapes[-1] < pos)
        if pos < ct and pos not in tapes:
            nxt.append((c[pos], (pos + 1, snaps, tapes, ct)))              # advance
        if can_tape:
            nxt.append((0, (pos + 1, snaps, tapes + (pos,), ct)))          # tape (kept)
            if pos in snaps and pos != 0:
                nxt.append((0, (pos + 1, snaps - {pos}, tapes + (pos,), ct)))   # drop, then tape
        if pos not in snaps:
            nxt.append((0, (pos, snaps | {pos}, tapes, ct)))               # snapshot
        for i in snaps:
            if i != pos:
                nxt.append((0, (i, snaps, tapes, ct)))                     # restore
        if tapes and tapes[-1] == ct - 1:
            nxt.append((0, (pos, snaps, tapes[:-1], ct - 1)))              # reverse
        for w, s2 in nxt:
            if (s2[1] != snaps or s2[2] != tapes) and live(s2[1], s2[2]) > budget:
                continue
            if d + w < dist.get(s2, float("inf")):
                dist[s2] = d + w
                n += 1
                heapq.heappush(pq, (d + w, n, s2))
    return None


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
        assert S.simulate(acts, cost) <= budget
        assert S.count(acts)[1] == l
        assert S.advance_cost(acts, cost.seconds) == exhaustive(cost, budget), (cost, budget)


def test_matches_exhaustive_search():
    _check_against_exhaustive(0, 80, 1, 8)


@pytest.mark.slow
def test_matches_exhaustive_search_up_to_12():
    _check_against_exhaustive(1, 20, 9, 12)


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
