"""Selectors: which knowledge types a phase uses, and how much (docs/methods.md §2).

The table `SELECTORS` (`selector.kind` -> class), the checks of a config's `selector` section,
and construction. `base` holds the interface, `actor_critic` ACKS, `baselines` the fixed and
random selectors and the schedule.

May import: `kdray.base`, `kdray.config`.
"""

from __future__ import annotations

from kdray.base.errors import unknown
from kdray.base.registry import name_table
from kdray.config import KnowledgeConfig, SelectorConfig
from kdray.selector.actor_critic import ACKSSelector
from kdray.selector.base import MIN_REWARD_EXAMPLES, PhaseOutcome, PhaseState, Selector
from kdray.selector.baselines import (
    AllSelector,
    NoneSelector,
    RandomHardSelector,
    RandomSoftSelector,
    ScheduleSelector,
    VanillaSelector,
    load_schedule,
    validate_schedule,
)

__all__ = [
    "MIN_REWARD_EXAMPLES",
    "SELECTORS",
    "PhaseOutcome",
    "PhaseState",
    "Selector",
    "build_selector",
    "load_schedule",
    "measures_reward",
    "validate_schedule",
    "validate_selector",
]

#: `selector.kind` -> its class.
SELECTORS: dict[str, type[Selector]] = name_table(
    AllSelector,
    NoneSelector,
    VanillaSelector,
    RandomSoftSelector,
    RandomHardSelector,
    ScheduleSelector,
    ACKSSelector,
)


def measures_reward(cfg: SelectorConfig) -> bool:
    """Whether the trainer measures the reward-split loss around each phase."""
    needs = SELECTORS[cfg.kind].needs_reward_split
    return needs if cfg.measure_reward is None else cfg.measure_reward or needs


def validate_selector(cfg: SelectorConfig, knowledge: KnowledgeConfig) -> None:
    """Every selector check that needs no data or model: the kind, then its class's checks
    (`Selector.validate`). A schedule file must have been read into selector.schedule
    (`kdray.training.checks.read_schedule_file`)."""
    if cfg.kind not in SELECTORS:
        raise unknown("selector kind", cfg.kind, SELECTORS, "selector.kind")
    for cls in SELECTORS.values():  # each class owns its knobs' ranges
        cls.check_options(cfg)
    SELECTORS[cfg.kind].validate(cfg, knowledge)


def build_selector(cfg: SelectorConfig, types: tuple[str, ...]) -> Selector:
    """The selector `cfg.kind` names, over the run's knowledge `types`."""
    return SELECTORS[cfg.kind](cfg, types)
