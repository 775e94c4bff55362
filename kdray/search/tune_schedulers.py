"""Ray Tune's schedulers as kdray runs them: ASHA with a grace period per selector kind
(`sweep.selector_grace`), and PBT without a race of its synchronous mode (`ExploitingPBT`).

ASHA compares trials at rungs (evaluation rounds 1, rf, rf², ... with grace period 1) and
stops those below the rung's top 1/rf. A learning selector (acks) explores in its first phases
and trails fixed ones there, though it may finish ahead; judged at the first rung it is
stopped before it has learned. `selector_grace: {acks: 3}` lets every trial whose
`selector.kind` is acks run 3 evaluation rounds before ASHA may stop it: its first rung is the
first one at or after round 3, and it is never recorded in the rungs below, so the cut-offs
other trials meet there are computed from first-round results only, as plain ASHA's are.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ray.tune.schedulers import AsyncHyperBandScheduler, PopulationBasedTraining, TrialScheduler
from ray.tune.schedulers.async_hyperband import _Bracket


class _GraceBracket(_Bracket):
    """ASHA's bracket, with the rungs below a trial's grace period left out for that trial."""

    _rungs: list[tuple[int, dict[str, float | None]]]  # Ray's: (milestone, trial id -> result)

    def __init__(self, grace_of: Callable[[Any], int], *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.grace_of = grace_of

    def on_result(self, trial: Any, cur_iter: int, cur_rew: float | None) -> str:
        grace = self.grace_of(trial)
        if cur_iter < grace:
            return TrialScheduler.CONTINUE
        if grace <= 1:
            return super().on_result(trial, cur_iter, cur_rew)
        full = self._rungs
        self._rungs = [(milestone, rec) for milestone, rec in full if milestone >= grace]
        try:
            return super().on_result(trial, cur_iter, cur_rew)
        finally:
            self._rungs = full


class SelectorGraceASHA(AsyncHyperBandScheduler):
    """`AsyncHyperBandScheduler` whose trials of the selector kinds in `grace` run that many
    evaluation rounds before a rung may stop them (others: the scheduler's grace_period).
    `base_kind`: the selector of trials whose config does not search `selector.kind`."""

    _brackets: list[Any]  # Ray's

    def __init__(self, grace: Mapping[str, int], base_kind: str, **options: Any) -> None:
        super().__init__(**options)
        self.grace = dict(grace)
        self.base_kind = base_kind
        first = self._brackets[0]
        min_t = first._rungs[-1][0]  # the lowest milestone of bracket 0 is the grace period
        self._brackets = [
            _GraceBracket(self.trial_grace, min_t, options.get("max_t", 100), first.rf, s=s,
                          stop_last_trials=first._stop_last_trials)
            for s in range(len(self._brackets))
        ]  # fmt: skip

    def trial_grace(self, trial: Any) -> int:
        return self.grace.get(trial.config.get("selector.kind", self.base_kind), 0)


class ExploitingPBT(PopulationBasedTraining):
    """`PopulationBasedTraining` whose exploited trials always run on to their end.

    Synchronous PBT pauses the first trials at a perturbation point, Tune saving each first.
    A trial exploited while that save is in flight is stopped again; Tune drops the save but
    keeps a STOP for when it resolves (Ray 2.60), which the trial's next save (its next
    report) fires: terminated mid-run, with no error and no results. Here the decisions Tune
    still holds for an exploited trial are dropped (tests/search/test_schedulers.py recreates it).
    """

    def _exploit(self, tune_controller: Any, trial: Any, trial_to_clone: Any) -> None:
        super()._exploit(tune_controller, trial, trial_to_clone)
        controller = getattr(tune_controller, "_tune_controller", tune_controller)
        getattr(controller, "_cached_trial_decisions", {}).pop(trial.trial_id, None)
