"""Selectors: name -> class table, validation and construction (methods.md §2)."""

from __future__ import annotations

from kdray.config import KnowledgeConfig, SelectorConfig
from kdray.errors import ConfigError, unknown
from kdray.selector.actor_critic import ACKSSelector
from kdray.selector.base import PhaseOutcome, PhaseState, Selector
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
    "SELECTORS",
    "PhaseOutcome",
    "PhaseState",
    "Selector",
    "build_selector",
    "measures_reward",
]

SELECTORS: dict[str, type[Selector]] = {
    cls.kind: cls
    for cls in (
        AllSelector,
        NoneSelector,
        VanillaSelector,
        RandomSoftSelector,
        RandomHardSelector,
        ScheduleSelector,
        ACKSSelector,
    )
}

#: Smallest reward split (examples) on which a selector's reward is measured.
MIN_REWARD_EXAMPLES = 32


def _check(ok: bool, key: str, rule: str, value: object) -> None:
    if not ok:
        raise ConfigError(f"'selector.{key}' must be {rule}, got {value!r}")


def measures_reward(cfg: SelectorConfig) -> bool:
    """Whether the trainer measures the reward-split loss around each phase."""
    needs = SELECTORS[cfg.kind].needs_reward_split
    return needs if cfg.measure_reward is None else cfg.measure_reward or needs


def validate_selector(cfg: SelectorConfig, knowledge: KnowledgeConfig) -> None:
    """Every selector check that needs no data or model."""
    if cfg.kind not in SELECTORS:
        raise unknown("selector kind", cfg.kind, SELECTORS, "selector.kind")
    cls = SELECTORS[cfg.kind]
    _check(cfg.phase_length > 0, "phase_length", "> 0", cfg.phase_length)
    missing = [k for k in cls.requires if k not in knowledge.types]
    if missing:
        raise ConfigError(
            f"selector '{cfg.kind}' uses {', '.join(cls.requires)}; add {', '.join(missing)} to "
            f"knowledge.types"
        )
    if cfg.measure_reward is False and cls.needs_reward_split:
        raise ConfigError(
            f"selector '{cfg.kind}' is rewarded on the reward split, so "
            f"'selector.measure_reward' cannot be false; leave it unset"
        )
    if cfg.kind == "schedule":
        validate_schedule(load_schedule(cfg), knowledge.types)
    elif cfg.schedule is not None or cfg.schedule_file is not None:
        raise ConfigError(
            f"'selector.schedule' is only read by selector.kind: schedule (kind is {cfg.kind})"
        )
    if cfg.mode == "two_stage":
        if cfg.kind != "acks":
            raise ConfigError(
                f"'selector.mode: two_stage' trains a learning selector in episodes; it needs "
                f"selector.kind: acks, not {cfg.kind}"
            )
        _check(cfg.episodes >= 1, "episodes", ">= 1 for mode two_stage (use mode: online "
               "for E = 0)", cfg.episodes)  # fmt: skip
    if cfg.episode_steps is not None:
        _check(cfg.episode_steps > 0, "episode_steps", "> 0", cfg.episode_steps)
    _check(0.0 <= cfg.alpha <= 1.0, "alpha", "in [0, 1]", cfg.alpha)
    _check(0.0 < cfg.threshold < 1.0, "threshold", "in (0, 1)", cfg.threshold)
    _check(0.0 <= cfg.gamma < 1.0, "gamma", "in [0, 1)", cfg.gamma)
    _check(0.0 < cfg.target_update <= 1.0, "target_update", "in (0, 1]", cfg.target_update)
    for key in ("actor_lr", "critic_lr", "reward_scale"):
        _check(getattr(cfg, key) > 0, key, "> 0", getattr(cfg, key))
    for key in ("feature_size", "hidden_size", "buffer_size", "update_batch_size"):
        _check(getattr(cfg, key) > 0, key, "> 0", getattr(cfg, key))
    _check(cfg.exploration_noise >= 0, "exploration_noise", ">= 0", cfg.exploration_noise)
    _check(cfg.beta >= 0, "beta", ">= 0", cfg.beta)
    _check(cfg.logit_penalty >= 0, "logit_penalty", ">= 0", cfg.logit_penalty)
    if cfg.reward_examples is not None:
        _check(
            cfg.reward_examples >= MIN_REWARD_EXAMPLES,
            "reward_examples",
            f">= {MIN_REWARD_EXAMPLES} (a smaller reward split cannot measure a loss drop)",
            cfg.reward_examples,
        )


def build_selector(cfg: SelectorConfig, types: tuple[str, ...]) -> Selector:
    return SELECTORS[cfg.kind](cfg, types)
