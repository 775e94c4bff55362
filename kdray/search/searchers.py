"""`sweep.searcher` by name: one line per searcher in `SEARCHERS`, each a factory that imports
what it needs only when called. `random` and `grid` are Tune's own variant generator (no
search algorithm object); `optuna` is Tune's OptunaSearch with a seeded TPE sampler.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from kdray.base.errors import ConfigError, unknown

if TYPE_CHECKING:
    from kdray.search.spec import SweepSpec


def _variants(spec: SweepSpec) -> None:
    """Tune's variant generator: samples (random) and crosses grid values (grid)."""
    return None


def _optuna(spec: SweepSpec) -> Any:
    s = spec.sweep
    if any(d.kind == "grid" for d in spec.search.values()):
        raise ConfigError(
            "'sweep.searcher: optuna' samples; give grid dimensions as {choice: [...]} or use "
            "searcher: random (grid values are then crossed with the samples)"
        )
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    sampler = optuna.samplers.TPESampler(seed=s.seed)
    return OptunaSearch(metric=s.metric, mode=s.mode, sampler=sampler)


#: `sweep.searcher` -> its factory (None: Tune's variant generator).
SEARCHERS: dict[str, Callable[[SweepSpec], Any]] = {
    "optuna": _optuna,
    "random": _variants,
    "grid": _variants,
}


def check_searcher(name: str) -> None:
    """An unknown `sweep.searcher` is a ConfigError naming the valid ones."""
    if name not in SEARCHERS:
        raise unknown("searcher", name, SEARCHERS, "sweep.searcher")


def create_searcher(spec: SweepSpec) -> Any:
    """Tune's search algorithm for `sweep.searcher` (None for random and grid)."""
    check_searcher(spec.sweep.searcher)
    return SEARCHERS[spec.sweep.searcher](spec)
