"""What a run shows the modules that checkpoint, probe and finish it.

`kdray.training.trainer.Run` is the one implementation; `checkpoint`, `probes` and `finish`
read (and, restoring, set) a run only through `RunState`, so they need not import the trainer,
which imports them.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel

    from kdray.base.results import Reporter
    from kdray.config import TrialConfig
    from kdray.selector import Selector
    from kdray.teacher_policy import TeacherPolicy
    from kdray.training.build import Setup
    from kdray.training.phaselog import PhaseLog
    from kdray.training.stages import Stage


class Saved(Protocol):
    """A part of a run whose state a checkpoint holds and that writes its own file."""

    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state: dict[str, Any]) -> None: ...
    def write(self, out_dir: Path) -> None: ...
    def summary(self, steps: int, wall_s: float) -> dict[str, Any] | None: ...


#: The counters a checkpoint saves and restores one by one (`RunState`'s progress fields).
RUN_FIELDS = ("step", "phase", "action", "phase_sums", "phase_steps", "last_losses",
              "reward_loss", "phase_val", "history", "best")  # fmt: skip


class RunState(Protocol):
    """One run of the trainer, as the modules around it see it."""

    allow_mutation: bool
    stage: Stage
    #: the fresh student (and projections) every segment starts from
    initial: dict[str, dict[str, torch.Tensor]]
    teacher_gap: dict[str, Any] | None

    cfg: TrialConfig
    s: Setup
    out_dir: Path
    reporter: Reporter
    stages: tuple[Stage, ...]
    static: dict[str, float]  # the config's knowledge weights
    selector: Selector
    policy: TeacherPolicy
    log: PhaseLog

    # read only here: a run holds narrower types (AdamW, LambdaLR, its Prober)
    @property
    def optimizer(self) -> torch.optim.Optimizer: ...
    @property
    def lr_schedule(self) -> torch.optim.lr_scheduler.LRScheduler: ...
    @property
    def prober(self) -> Saved: ...

    # set by a restore
    wall_before: float
    t0: float
    resumed_from: int
    # progress (RUN_FIELDS)
    step: int
    phase: int
    action: dict[str, float]
    phase_sums: dict[str, float]
    phase_steps: int
    last_losses: dict[str, float]
    reward_loss: float | None
    phase_val: float
    history: list[dict[str, Any]]
    best: dict[str, float]

    def enter_stage(self, i: int, restoring: bool = False) -> None: ...
    def batch(self, step: int) -> dict[str, torch.Tensor]: ...
    def weights(self) -> dict[str, float]: ...
    def progress_frac(self) -> float: ...
    def steps_done(self) -> int: ...
    def measure_reward_loss(self, model: PreTrainedModel | None = None) -> float: ...
