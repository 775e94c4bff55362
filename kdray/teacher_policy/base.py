"""Teacher policies: how much each teacher of a pool teaches each example (RL-KD).

The trainer asks the run's policy for the weights w_jk of teacher k on example j of every step's
batch (`weights(view) -> (B, n_teachers)`, rows summing to one); the soft-label loss is then Σ_j Σ_k
w_jk·τ²·KL(p_k^τ ‖ p_S^τ) / B, the per-example weights applied before the batch mean
(`kdray.training.build.Setup.losses`). Around the steps the policy hears the phases: `start_phase`,
`end_phase` (where `rl` learns) and `freeze` (a frozen stage). Every policy records the mean weight
of each teacher per phase (phase-log columns `tw_<teacher>`) and, per evaluation, each teacher's
mean weight and the AUROC of w_jk against "teacher k is right on example j" (a direct check that the
weights prefer correct teachers). With one teacher there is nothing to weigh: every kind gives it
weight 1 and records nothing, so the run is exactly a one-teacher run.

Kinds (the paper's baselines and its method; Yuan et al. 2021, docs/methods.md §3):

    single        one named teacher (teacher_policy.teacher; default the first)
    average       equal weights ("U-Ensemble")
    weighted      fixed weights ∝ each teacher's validation score ("W-Ensemble")
    rand_single   one teacher drawn per mini-batch
    best_single   per example, the teacher with the lowest loss on the gold label (an oracle
                  on training labels, as the paper's Best-Single)
    rl            RL-KD, below

`rl` is documented in `kdray.teacher_policy.rl`.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from kdray.base.results import TEACHER_PREFIX
from kdray.base.tensors import default_float
from kdray.config import TeacherPolicyConfig, TrialConfig
from kdray.models.features import Features
from kdray.selector.base import PhaseOutcome

#: (student logits, teacher name -> logits, labels) of the examples with these train indices,
#: the student in eval mode at the end of a phase (what r1 / r2 are measured on).
Rescore = Callable[[torch.Tensor], tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]]


@dataclass
class BatchView:
    """What a teacher policy sees of one training step (everything detached)."""

    step: int
    batch: dict[str, torch.Tensor]
    #: The student's features of this step (logits, and what the stage's knowledge reads).
    student: Features
    #: Teacher name -> its features of this batch, in pool order.
    teachers: dict[str, Features]


@dataclass(frozen=True)
class PolicyContext:
    """What a policy knows of the run: the pool, the task and the student."""

    names: tuple[str, ...]
    is_regression: bool
    num_labels: int
    student_width: int
    temperature: float
    #: teacher name -> validation score (main metric), for `weighted`.
    scores: Mapping[str, float] | None = None


def gold_loss(logits: torch.Tensor, labels: torch.Tensor, regression: bool) -> torch.Tensor:
    """(B,) loss of each example's output against its gold label: CE, or squared error."""
    z = default_float(logits)
    if regression:
        return (z.squeeze(-1) - default_float(labels)).pow(2)
    return F.cross_entropy(z, labels, reduction="none")


def kd_loss(
    student: torch.Tensor, teacher: torch.Tensor, tau: float, regression: bool
) -> torch.Tensor:
    """(B,) τ²·KL(p_T^τ ‖ p_S^τ) per example (regression: mean squared difference), as the soft
    knowledge type computes it."""
    zs, zt = default_float(student), default_float(teacher)
    if regression:
        return (zs - zt).pow(2).mean(-1)
    kl = F.kl_div(F.log_softmax(zs / tau, -1), F.log_softmax(zt / tau, -1), log_target=True,
                  reduction="none")  # fmt: skip
    return tau**2 * kl.sum(-1)


def correct(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(B,) whether a teacher's prediction is the gold label."""
    return logits.argmax(-1) == labels


def auroc(scores: torch.Tensor, positive: torch.Tensor) -> float:
    """Area under the ROC curve of `scores` for the binary `positive` (ties count half);
    NaN when one class is missing."""
    pos, neg = scores[positive], scores[~positive]
    if len(pos) == 0 or len(neg) == 0:
        return math.nan
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(positive.numpy(), scores.numpy()))


class TeacherPolicy(ABC):
    """Per-example teacher weights, and the records every kind keeps (see the module doc)."""

    #: The `teacher_policy.kind` that names it (its key in `kdray.teacher_policy.POLICIES`).
    name: ClassVar[str]
    #: The weights read the teachers' outputs on the batch (their logits).
    reads_teachers: ClassVar[bool] = False
    #: The weights read the student's last-layer [CLS] (its forward must return it).
    reads_student_cls: ClassVar[bool] = False

    def __init__(self, cfg: TeacherPolicyConfig, ctx: PolicyContext, seed: int) -> None:
        self.cfg, self.ctx = cfg, ctx
        self.n = len(ctx.names)
        self.learning = True
        self.generator = torch.Generator().manual_seed(seed)
        self._phase_sum = torch.zeros(self.n, dtype=torch.float64)
        self._phase_count = 0
        self._eval_sum = torch.zeros(self.n, dtype=torch.float64)
        self._eval_count = 0
        self._eval_w: list[torch.Tensor] = []  # (B, n) weights since the last evaluation
        self._eval_right: list[torch.Tensor] = []  # (B, n) teacher k right on example j
        self.last_log: dict[str, float] = {}

    # ----------------------------------------------------------------------------- per step

    @property
    def active(self) -> bool:
        """Anything to weigh (a pool of two or more)."""
        return self.n > 1

    def weights(self, view: BatchView) -> torch.Tensor | None:
        """(B, n) weights of this step's batch (rows sum to 1); None for one teacher."""
        if not self.active:
            return None
        w = default_float(self.batch_weights(view)).cpu()
        self._phase_sum += w.sum(0).double()
        self._phase_count += len(w)
        self._eval_sum += w.sum(0).double()
        self._eval_count += len(w)
        if view.teachers and not self.ctx.is_regression:
            labels = view.batch["labels"].cpu()
            right = torch.stack(
                [correct(view.teachers[k].logits.cpu(), labels) for k in self.ctx.names], 1
            )
            self._eval_w.append(w)
            self._eval_right.append(right)
        return w

    @abstractmethod
    def batch_weights(self, view: BatchView) -> torch.Tensor:
        """(B, n) weights for this batch; `view.teachers` holds every teacher's outputs when
        `reads_teachers`, else it may be empty."""

    # ---------------------------------------------------------------------------- per phase

    def start_phase(self) -> None:  # noqa: B027 - optional hook
        """A phase starts."""

    def end_phase(self, outcome: PhaseOutcome, rescore: Rescore) -> None:  # noqa: B027
        """Learn from the finished phase (fixed kinds ignore it)."""

    def freeze(self) -> None:
        """Stop learning and sampling (a frozen stage)."""
        self.learning = False

    def log_fields(self) -> dict[str, float]:
        """Phase-log columns of the phase that just ended: tw_<teacher> (mean weight over
        the phase's examples; NaN when no step read the teachers) and the kind's own."""
        if not self.active:
            return {}
        mean = self._phase_sum / max(1, self._phase_count)
        out = {
            f"{TEACHER_PREFIX}{k}": float(v) if self._phase_count else math.nan
            for k, v in zip(self.ctx.names, mean, strict=True)
        }
        self._phase_sum.zero_()
        self._phase_count = 0
        return {**out, **self.last_log}

    def diagnostics(self) -> dict[str, float]:
        """Reported with each evaluation: each teacher's mean weight since the last one and
        the AUROC of the weights against teacher correctness (NaN when undefined: constant
        weights, or every teacher right or wrong everywhere)."""
        if not self.active or not self._eval_count:
            return {}
        mean = self._eval_sum / self._eval_count
        out = {f"teacher/weight_{k}": float(v) for k, v in zip(self.ctx.names, mean, strict=True)}
        if self._eval_w:
            w, right = torch.cat(self._eval_w), torch.cat(self._eval_right)
            out["teacher/weight_auroc"] = auroc(w.flatten(), right.flatten())
        self._eval_sum.zero_()
        self._eval_count = 0
        self._eval_w, self._eval_right = [], []
        return out

    # ------------------------------------------------------------------------ checkpointing

    def state_dict(self) -> dict[str, Any]:
        return {
            "generator": self.generator.get_state(),
            "learning": self.learning,
            "phase_sum": self._phase_sum.clone(),
            "phase_count": self._phase_count,
            "eval_sum": self._eval_sum.clone(),
            "eval_count": self._eval_count,
            "eval_w": [t.clone() for t in self._eval_w],
            "eval_right": [t.clone() for t in self._eval_right],
            "last_log": dict(self.last_log),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])
        self.learning = state["learning"]
        self._phase_sum = state["phase_sum"].clone()
        self._phase_count = state["phase_count"]
        self._eval_sum = state["eval_sum"].clone()
        self._eval_count = state["eval_count"]
        self._eval_w = list(state["eval_w"])
        self._eval_right = list(state["eval_right"])
        self.last_log = dict(state["last_log"])

    @classmethod
    def validate(cls, cfg: TrialConfig) -> None:
        """Kind-specific checks of the config (ConfigError naming the key); none here."""
        del cfg


def batch_size(view: BatchView) -> int:
    """The number of examples in a batch view."""
    return len(view.batch["labels"])


def one_hot(index: torch.Tensor, n: int) -> torch.Tensor:
    """(B, n) rows with a 1 at each example's chosen teacher."""
    return default_float(F.one_hot(index, n))
