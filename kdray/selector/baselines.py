"""Baseline selectors behind the same interface as ACKS (docs/methods.md §2, "Baselines")."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from kdray.base.errors import ConfigError
from kdray.base.strict import _coerce
from kdray.base.yamlio import read_yaml
from kdray.config import KnowledgeConfig, ScheduleBucket, SelectorConfig, tiles_progress
from kdray.selector.base import PhaseState, Selector, check_option


class AllSelector(Selector):
    """`all`: every chosen knowledge type at action 1 (weights are knowledge.weights)."""

    name = "all"

    def start_phase(self, state: PhaseState) -> dict[str, float]:
        return dict.fromkeys(self.types, 1.0)


class NoneSelector(Selector):
    """`none`: hard labels only, i.e. fine-tuning the student."""

    name = "none"
    requires = ("hard",)

    def start_phase(self, state: PhaseState) -> dict[str, float]:
        return {k: float(k == "hard") for k in self.types}


class VanillaSelector(Selector):
    """`vanilla` KD: (1 - α)·hard + α·soft, fixed α (selector.alpha) and τ (knowledge)."""

    name = "vanilla"
    requires = ("hard", "soft")

    @classmethod
    def check_options(cls, cfg: SelectorConfig) -> None:
        check_option(0.0 <= cfg.alpha <= 1.0, "alpha", "in [0, 1]", cfg.alpha)

    def start_phase(self, state: PhaseState) -> dict[str, float]:
        alpha = self.cfg.alpha
        return {k: {"hard": 1 - alpha, "soft": alpha}.get(k, 0.0) for k in self.types}


class _Random(Selector):
    """Seeded random actions, one draw per phase; the generator is checkpointed."""

    def __init__(self, cfg: SelectorConfig, types: tuple[str, ...]) -> None:
        super().__init__(cfg, types)
        self.rng = torch.Generator().manual_seed(self.seed)

    def uniform(self) -> torch.Tensor:
        return torch.rand(len(self.types), generator=self.rng)  # (K,)

    def state_dict(self) -> dict[str, Any]:
        return {"rng": self.rng.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rng.set_state(state["rng"])


class RandomSoftSelector(_Random):
    """`random_soft`: a_k ~ U[0, 1] independently per phase."""

    name = "random_soft"

    def start_phase(self, state: PhaseState) -> dict[str, float]:
        return dict(zip(self.types, self.uniform().tolist(), strict=True))


class RandomHardSelector(_Random):
    """`random_hard`: a_k ~ Bernoulli(0.5) per phase, redrawn until at least one is on."""

    name = "random_hard"

    def start_phase(self, state: PhaseState) -> dict[str, float]:
        while True:
            on = self.uniform() < 0.5
            if bool(on.any()):
                return {k: float(v) for k, v in zip(self.types, on.tolist(), strict=True)}


def load_schedule(cfg: SelectorConfig) -> tuple[ScheduleBucket, ...]:
    """The inline schedule, or the one in selector.schedule_file (YAML or JSON list), read
    with the config's own strict reader. Called when the config is checked
    (`kdray.training.checks.read_schedule_file`), never by a selector."""
    if cfg.schedule_file is None:
        return cfg.schedule or ()
    path = Path(cfg.schedule_file).expanduser()
    if not path.is_file():
        raise ConfigError(
            f"'selector.schedule_file' {path} not found; export one with kdray.analysis or "
            f"give the buckets inline in selector.schedule"
        )
    raw = read_yaml(path.read_text(), str(path))
    if isinstance(raw, dict):
        raw = raw.get("schedule", raw.get("buckets"))
    return _coerce(tuple[ScheduleBucket, ...], raw, f"schedule in {path}")


def validate_schedule(buckets: tuple[ScheduleBucket, ...], types: tuple[str, ...]) -> None:
    """Buckets must tile [0, 1] in order and name only chosen knowledge types."""
    if not buckets:
        raise ConfigError(
            "'selector.kind: schedule' needs 'selector.schedule' (a list of {start, end, "
            "weights}) or 'selector.schedule_file'"
        )
    edges = [(b.start, b.end) for b in buckets]
    if not tiles_progress(edges):
        raise ConfigError(
            f"schedule buckets must cover [0, 1] without gaps or overlaps, in order; got "
            f"{', '.join(f'[{s}, {e})' for s, e in edges)}"
        )
    for b in buckets:
        for name, w in b.weights.items():
            if name not in types:
                raise ConfigError(
                    f"schedule bucket [{b.start}, {b.end}) names '{name}', which is not in "
                    f"knowledge.types ({', '.join(types)}); add it or drop it from the schedule"
                )
            if w < 0:
                raise ConfigError(f"schedule weight {name}={w} must be >= 0")


class ScheduleSelector(Selector):
    """`schedule`: fixed weights per training-progress bucket (types not named get 0).

    Reads the buckets from `selector.schedule` only: a schedule file is read into it when the
    config is checked (`kdray.training.checks.check_trial`).
    """

    name = "schedule"

    def __init__(self, cfg: SelectorConfig, types: tuple[str, ...]) -> None:
        super().__init__(cfg, types)
        if cfg.schedule is None and cfg.schedule_file is not None:
            raise ConfigError(
                f"'selector.schedule_file' {cfg.schedule_file} was not read into "
                f"selector.schedule; pass the config through "
                f"kdray.training.checks.check_trial first"
            )
        self.buckets = cfg.schedule or ()
        validate_schedule(self.buckets, types)

    @classmethod
    def validate(cls, cfg: SelectorConfig, knowledge: KnowledgeConfig) -> None:
        """The base checks, then the schedule (read from its file by check_trial)."""
        super().validate(dataclasses.replace(cfg, schedule=None, schedule_file=None), knowledge)
        validate_schedule(cfg.schedule or (), knowledge.types)

    def start_phase(self, state: PhaseState) -> dict[str, float]:
        bucket = next(
            (b for b in self.buckets if b.start <= state.progress < b.end), self.buckets[-1]
        )
        return {k: float(bucket.weights.get(k, 0.0)) for k in self.types}
