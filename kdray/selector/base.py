"""The selector interface: who decides how much of each knowledge type a phase uses.

Lifecycle (one run): the trainer splits training into phases of `selector.phase_length`
student steps. At the start of a phase it calls `start_phase(state)` and gets an action a_k in
[0, 1] per active knowledge type; every step of the phase minimises Σ_k a_k·w_k·L_k (w_k the
static `knowledge.weights`), and a type whose a_k·w_k is 0 is not computed at all. At the end
of the phase it calls `end_phase(outcome)` with what happened (per-knowledge losses and, for
selectors that ask, the reward-split loss before and after). Two-stage selectors also hear
`end_episode()` after each stage-A episode and `freeze()` before stage B. `state_dict` /
`load_state_dict` round-trip everything the selector learned or drew (torch tensors and plain
values only, so checkpoints load with weights_only=True), so a resumed run continues the same
policy. `diagnostics` is reported with each evaluation; `log_fields` adds to the phase log.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from kdray.base.errors import ConfigError
from kdray.config import KnowledgeConfig, SelectorConfig

#: Smallest reward split (examples) on which a selector's reward is measured.
MIN_REWARD_EXAMPLES = 32


def check_option(ok: bool, key: str, rule: str, value: object) -> None:
    """ConfigError "'selector.<key>' must be <rule>, got <value>" unless `ok`."""
    if not ok:
        raise ConfigError(f"'selector.{key}' must be {rule}, got {value!r}")


@dataclass
class PhaseState:
    """What a selector may look at when a phase starts."""

    phase: int
    step: int
    #: Training progress t/T in [0, 1] within the current episode.
    progress: float
    #: Mean loss per knowledge type over the previous phase (empty for the first).
    last_losses: dict[str, float] = field(default_factory=dict)
    #: Mean [CLS] vector of the student and the teacher over the phase's first batch, (d,).
    student_cls: torch.Tensor | None = None
    teacher_cls: torch.Tensor | None = None


@dataclass
class PhaseOutcome:
    """What happened during a phase."""

    phase: int
    step: int
    progress: float
    #: Action used during the phase.
    action: dict[str, float]
    #: Mean loss per computed knowledge type over the phase's steps.
    losses: dict[str, float]
    #: Selector loss (CE, MSE for regression) on the reward split before and after the phase.
    reward_loss_before: float | None = None
    reward_loss_after: float | None = None
    #: True for the last phase of an episode (or of the run).
    last: bool = False
    #: Phases in this episode (P of the hard-mode exploration bonus).
    phases: int = 1


class Selector(ABC):
    """Chooses the per-phase action over the active knowledge types."""

    #: The `selector.kind` that names it (its key in `kdray.selector.SELECTORS`).
    name: ClassVar[str]
    #: Knowledge types that must be chosen for this selector to make sense.
    requires: ClassVar[tuple[str, ...]] = ()
    #: Rewarded on the reward split: the trainer measures its loss around each phase (also
    #: done for any selector with selector.measure_reward; see measures_reward()).
    needs_reward_split: ClassVar[bool] = False
    #: The trainer passes mean [CLS] vectors in PhaseState only when this is True.
    needs_cls: ClassVar[bool] = False

    def __init__(self, cfg: SelectorConfig, types: tuple[str, ...]) -> None:
        self.cfg = cfg
        self.types = types
        #: the trainer passes trainer.seed when selector.seed is unset
        self.seed = 0 if cfg.seed is None else cfg.seed

    @abstractmethod
    def start_phase(self, state: PhaseState) -> dict[str, float]:
        """The action a_k for each active knowledge type, for the phase starting now."""

    def end_phase(self, outcome: PhaseOutcome) -> None:  # noqa: B027 - optional hook
        """Learn from the finished phase (fixed selectors ignore it)."""

    def end_episode(self) -> None:  # noqa: B027 - optional hook
        """A stage-A episode ended; the next phase starts from a fresh student."""

    def freeze(self) -> None:  # noqa: B027 - optional hook
        """Stop learning and exploring (stage B)."""

    def log_fields(self) -> dict[str, float]:
        """Extra columns for the phase log row of the phase that just ended."""
        return {}

    def diagnostics(self) -> dict[str, float]:
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:  # noqa: B027 - optional hook
        pass

    @classmethod
    def check_options(cls, cfg: SelectorConfig) -> None:
        """Ranges of the knobs this class owns (none here). Checked whatever the kind, since
        one config carries every knob and a sweep may switch kinds between trials."""
        del cfg  # the base class owns no knob

    @classmethod
    def validate(cls, cfg: SelectorConfig, knowledge: KnowledgeConfig) -> None:
        """Check `cfg` for this kind, before any data or model (ConfigError naming the key).

        The base checks what every kind reads (phase length, required knowledge, the reward
        measurement) and refuses options that only another kind reads; a kind with options of
        its own checks them in an override, after passing the base `cfg` without them.
        """
        check_option(cfg.phase_length > 0, "phase_length", "> 0", cfg.phase_length)
        missing = [k for k in cls.requires if k not in knowledge.types]
        if missing:
            raise ConfigError(
                f"selector '{cfg.kind}' uses {', '.join(cls.requires)}; add "
                f"{', '.join(missing)} to knowledge.types"
            )
        if cfg.measure_reward is False and cls.needs_reward_split:
            raise ConfigError(
                f"selector '{cfg.kind}' is rewarded on the reward split, so "
                f"'selector.measure_reward' cannot be false; leave it unset"
            )
        if cfg.schedule is not None or cfg.schedule_file is not None:
            raise ConfigError(
                f"'selector.schedule' is only read by selector.kind: schedule (kind is {cfg.kind})"
            )
        if cfg.mode == "two_stage":
            raise ConfigError(
                f"'selector.mode: two_stage' trains a learning selector in episodes; it needs "
                f"selector.kind: acks, not {cfg.kind}"
            )
        if cfg.reward_examples is not None:  # any kind measures rewards with measure_reward
            check_option(
                cfg.reward_examples >= MIN_REWARD_EXAMPLES,
                "reward_examples",
                f">= {MIN_REWARD_EXAMPLES} (a smaller reward split cannot measure a loss drop)",
                cfg.reward_examples,
            )
