"""`sweep.scheduler` by name: one line per scheduler in `SCHEDULERS`, each a factory that
imports Ray Tune only when called (Ray Tune's own `SCHEDULER_IMPORT` works the same way).

Every factory gets the sweep and `sweep.scheduler_options` and returns a Tune scheduler whose
time axis is the trial's evaluation rounds (`training_iteration`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from kdray.base.errors import ConfigError, unknown
from kdray.config import is_mutable

if TYPE_CHECKING:
    from kdray.search.spec import SweepSpec

Factory = Callable[["SweepSpec", dict[str, Any]], Any]


def _fifo(spec: SweepSpec, opts: dict[str, Any]) -> Any:
    from ray.tune.schedulers import FIFOScheduler

    return FIFOScheduler(**opts)


def _asha(spec: SweepSpec, opts: dict[str, Any]) -> Any:
    rounds = spec.evaluation_rounds()
    if spec.sweep.selector_grace:
        from kdray.search.tune_schedulers import SelectorGraceASHA

        grace, kind = spec.sweep.selector_grace, spec.base_trial().selector.kind
        return SelectorGraceASHA(grace, kind, time_attr="training_iteration", max_t=rounds, **opts)
    from ray.tune.schedulers import ASHAScheduler

    return ASHAScheduler(time_attr="training_iteration", max_t=rounds, **opts)


def _median(spec: SweepSpec, opts: dict[str, Any]) -> Any:
    from ray.tune.schedulers import MedianStoppingRule

    return MedianStoppingRule(time_attr="training_iteration", **opts)


def _pbt(spec: SweepSpec, opts: dict[str, Any]) -> Any:
    """PBT explores the searched knobs a run may change mid-way (`MUTABLE_PATHS`)."""
    from kdray.search.tune_schedulers import ExploitingPBT

    mutations = {
        path: list(d.args) if d.kind == "grid" else d.to_tune()
        for path, d in spec.search.items()
        if is_mutable(path)
    }
    opts.setdefault("perturbation_interval", 1)
    return ExploitingPBT(time_attr="training_iteration", hyperparam_mutations=mutations, **opts)


#: `sweep.scheduler` -> its factory.
SCHEDULERS: dict[str, Factory] = {"fifo": _fifo, "asha": _asha, "median": _median, "pbt": _pbt}


def check_scheduler(name: str) -> None:
    """An unknown `sweep.scheduler` is a ConfigError naming the valid ones."""
    if name not in SCHEDULERS:
        raise unknown("scheduler", name, SCHEDULERS, "sweep.scheduler")


def create_scheduler(spec: SweepSpec) -> Any:
    """The Tune scheduler `sweep.scheduler` names, built with `sweep.scheduler_options`; an
    option the scheduler refuses is a ConfigError naming it."""
    s = spec.sweep
    check_scheduler(s.scheduler)
    opts = dict(s.scheduler_options)
    try:
        return SCHEDULERS[s.scheduler](spec, dict(opts))
    except (TypeError, ValueError, AssertionError) as exc:  # an unknown or out-of-range option
        raise ConfigError(
            f"'sweep.scheduler_options' for {s.scheduler}: {exc or 'a value out of range'} "
            f"(given: {opts}); see Ray Tune's {s.scheduler} scheduler for its options"
        ) from exc
