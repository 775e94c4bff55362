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

from kdray.config import SelectorConfig


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

    kind: ClassVar[str]
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
