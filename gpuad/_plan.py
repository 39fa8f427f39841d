"""Planning ``checkpoint_sequential`` schedules: the report and the dry run.

:func:`plan_checkpoints` turns a strategy (and, for ``"optimal"``, a cost
model and a byte budget) into an action list (``gpuad._schedules``) and a
:class:`ScheduleReport` of what it predicts; ``gpuad._sequential`` runs it
and fills in what it measured.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from . import _schedules as S
from ._args import int_or_none

__all__ = ["plan_checkpoints", "ScheduleReport", "STRATEGIES"]

STRATEGIES = ("none", "uniform", "revolve", "bisection", "optimal", "auto")


@dataclass
class ScheduleReport:
    """What a schedule predicted and what its run measured.

    Attributes
    ----------
    strategy : str
        The strategy that ran (``"auto"`` resolves to ``"none"`` or ``"optimal"``).
    requested : str
        The strategy asked for.
    steps : int
        Length ``l`` of the chain.
    snapshots, segments : int or None
        Revolve's snapshots (including the input) / uniform's segments.
    predicted_advances, actual_advances : int
        Step calls that record nothing (``actual`` is ``None`` until run).
    minimal_advances : int or None
        For revolve, the proven minimum ``t(l, s)``.
    recorded_steps : int
        Step calls that record a tape (``l`` for every strategy).
    predicted_peak_bytes, actual_peak_bytes : int or None
        Peak of input, parameters, snapshots and step tapes, from the cost
        model (needs a profile: measured during the run if none was given)
        and as measured by ``gpuad.memory`` over the forward and backward.
    budget_bytes : int or None
    step_working_bytes : int or None
        The largest single step's input state plus its tape (the slack
        allowed above the budget; NOTE [block model] predicts within it).
    plan_info : dict
        For ``"optimal"``: whether the plan is exact (NOTE [optimal sizes]).
    debug : bool
        Whether predictions and recomputed values were checked.
    profile : StepCost or None
        The per-step cost model; pass it to ``plan_checkpoints``.
    """

    strategy: str
    steps: int
    snapshots: int | None = None
    segments: int | None = None
    predicted_advances: int = 0
    actual_advances: int | None = None
    minimal_advances: int | None = None
    recorded_steps: int = 0
    predicted_peak_bytes: int | None = None
    actual_peak_bytes: int | None = None
    budget_bytes: int | None = None
    requested: str | None = None
    step_working_bytes: int | None = None
    plan_info: dict = field(default_factory=dict)
    debug: bool = False
    profile: S.StepCost | None = field(default=None, repr=False)
    actions: list = field(default_factory=list, repr=False)


def _isqrt_segments(l):
    k = max(1, int(round(l ** 0.5)))
    return min(k, l)


def plan_checkpoints(steps, *, strategy="auto", segments=None, snapshots=None, budget_bytes=None,
                     profile=None):
    """Plan a schedule without running anything (a dry run).

    Parameters
    ----------
    steps : int
        Chain length ``l``.
    strategy : {"auto", "none", "uniform", "revolve", "bisection", "optimal"}
        ``"auto"`` is ``"none"`` when no budget is given or storing
        everything fits it, else ``"optimal"``.
    segments : int, optional
        Uniform: number of segments (default ``round(sqrt(l))``).
    snapshots : int, optional
        Revolve and bisection: snapshots including the input (default
        ``ceil(log2 l)``, at least 1).
    budget_bytes : int, optional
        Bound on the peak bytes (input, parameters, snapshots and tapes);
        ``"optimal"`` needs it, ``"auto"`` uses it, the other strategies
        refuse it.
    profile : StepCost, optional
        Cost model, e.g. ``report.profile`` of an earlier run; gives
        ``predicted_peak_bytes``.  ``"optimal"`` (and ``"auto"`` with a
        budget) need it.

    Returns
    -------
    ScheduleReport
        With the action list in ``report.actions`` and the predicted counts.

    Raises
    ------
    gpuad._optimal.BudgetError
        (a ``ValueError``) when no schedule fits ``budget_bytes``; it gives
        the smallest feasible budget.
    """
    l = int_or_none(steps)
    if l is None or l < 1:
        raise ValueError(f"plan_checkpoints: steps must be a positive int, got {steps!r}")
    if strategy not in STRATEGIES:
        raise ValueError(f"checkpoint_sequential: unknown strategy {strategy!r}; expected one of {STRATEGIES}")
    if budget_bytes is not None:
        given, budget_bytes = budget_bytes, int_or_none(budget_bytes)
        if budget_bytes is None or budget_bytes < 0:
            raise ValueError(f"checkpoint_sequential: budget_bytes must be a non-negative int, got {given!r}")
    if profile is not None and not isinstance(profile, S.StepCost):
        raise TypeError(f"checkpoint_sequential: profile must be a StepCost (report.profile of an earlier run), "
                        f"got {type(profile).__name__}")
    if segments is not None and strategy != "uniform":
        raise ValueError(f"checkpoint_sequential: segments={segments!r} is only used by strategy 'uniform', "
                         f"not {strategy!r}")
    if snapshots is not None and strategy not in ("revolve", "bisection"):
        raise ValueError(f"checkpoint_sequential: snapshots={snapshots!r} is only used by strategies 'revolve' "
                         f"and 'bisection', not {strategy!r}")
    if budget_bytes is not None and strategy not in ("optimal", "auto"):
        raise ValueError(f"checkpoint_sequential: budget_bytes={budget_bytes!r} is only used by strategies "
                         f"'optimal' and 'auto', not {strategy!r} (whose memory follows from its segments or "
                         "snapshots; see ScheduleReport.predicted_peak_bytes)")
    if profile is not None and len(profile.tape_bytes) != l:
        raise ValueError(f"plan_checkpoints: the profile has {len(profile.tape_bytes)} steps, the chain {l}")
    rep = ScheduleReport(strategy=strategy, steps=l, budget_bytes=budget_bytes, profile=profile,
                         requested=strategy)
    if strategy in ("optimal", "auto") and budget_bytes is not None and profile is None:
        raise ValueError(f"plan_checkpoints: strategy {strategy!r} with a budget needs a profile "
                         "(report.profile of an earlier run)")
    if strategy == "auto":
        fits = budget_bytes is None or S.simulate(S.none_actions(l), profile) <= budget_bytes
        strategy = rep.strategy = "none" if fits else "optimal"
    if strategy == "none":
        acts = S.none_actions(l)
    elif strategy == "uniform":
        k = _isqrt_segments(l) if segments is None else int_or_none(segments)
        if k is None or not 1 <= k <= l:
            raise ValueError(
                f"checkpoint_sequential: segments must be an int in [1, {l}] for {l} steps, got {segments!r}")
        rep.segments = k
        acts = S.uniform_actions(l, k)
    elif strategy in ("revolve", "bisection"):
        s = max(1, (l - 1).bit_length()) if snapshots is None else int_or_none(snapshots)
        if s is None or s < 1:
            raise ValueError(
                f"checkpoint_sequential: snapshots must be an int >= 1 (the input counts as one), got {snapshots!r}")
        rep.snapshots = s
        if strategy == "revolve":
            rep.minimal_advances = S.binomial_advances(l, s)
            acts = S.revolve_actions(l, s)
        else:
            acts = S.bisection_actions(l, s)
    else:  # optimal
        if budget_bytes is None:
            raise ValueError("checkpoint_sequential: strategy 'optimal' needs budget_bytes")
        acts, rep.plan_info = _optimal_plan(profile, budget_bytes)
    rep.actions = acts
    rep.predicted_advances, rep.recorded_steps = S.count(acts)
    if profile is not None:
        rep.predicted_peak_bytes = S.simulate(acts, profile)
        rep.step_working_bytes = max(b + t for b, t in zip(profile.state_bytes, profile.tape_bytes))
    return rep


def _optimal_plan(profile, budget):
    from . import _optimal

    plans = profile.__dict__.setdefault("_plans", {})
    if budget not in plans:
        plans[budget] = _optimal.optimal_actions(profile, budget)
    acts, info = plans[budget]
    return acts, dict(info)


