"""Teacher policies: how much each teacher of a pool teaches each example (RL-KD, issue 14).

The trainer asks the run's policy for the weights w_jk of teacher k on example j of every
step's batch (`weights(view) -> (B, n_teachers)`, rows summing to one); the soft-label loss is
then Σ_j Σ_k w_jk·τ²·KL(p_k^τ ‖ p_S^τ) / B, the per-example weights applied before the batch
mean (`kdray.build.Setup.losses`). Around the steps the policy hears the phases: `start_phase`,
`end_phase` (where `rl` learns) and `freeze` (a frozen stage). Every policy records the mean
weight of each teacher per phase (phase-log columns `tw_<teacher>`) and, per evaluation, each
teacher's mean weight and the AUROC of w_jk against "teacher k is right on example j" (a direct
check that the weights prefer correct teachers). With one teacher there is nothing to weigh:
every kind gives it weight 1 and records nothing, so the run is exactly a one-teacher run.

Kinds (the paper's baselines and its method; Yuan et al. 2021, methods.md §3):

    single        one named teacher (teacher_policy.teacher; default the first)
    average       equal weights ("U-Ensemble")
    weighted      fixed weights ∝ each teacher's validation score ("W-Ensemble")
    rand_single   one teacher drawn per mini-batch
    best_single   per example, the teacher with the lowest loss on the gold label (an oracle
                  on training labels, as the paper's Best-Single)
    rl            RL-KD, below

`rl`: state s_jk = [the student's last-layer [CLS] of example j (detached); teacher k's
probability vector; teacher k's CE against the gold label] (regression: the teacher's output
and its squared error). Policy π(a=1|s) = σ(W·s + b), shared by all teachers (an MLP with
teacher_policy.hidden_size > 0). While learning, actions a_jk ~ Bernoulli(π); the weights are
the probabilities renormalised over teachers ("soft", default) or the sampled selection
renormalised ("hard"; none selected: the most probable teacher teaches). Frozen: the
probabilities (soft) or the selection π > 0.5 (hard), no sampling.

kdray decisions where the paper is silent:
- One REINFORCE update per phase over the phase's sampled actions,
  θ ← θ + η·mean_jk A_j·∇ log π(a_jk | s_jk) — plain gradient ascent, so one step can be
  computed by hand.
- Rewards of r1 / r2 are measured per example with the student at the phase's end, the student
  that learned from the selections, on up to teacher_policy.reward_examples of the phase's
  examples (a seeded draw): one no-grad forward of those examples per phase, nothing per step.
  r1 = −CE(y_j, p_S); r2 = r1 − mean over the selected teachers of τ²·KL(p_k^τ ‖ p_S^τ) (the most
  probable teacher when none was selected); r3 = −(reward-split loss after the phase), one
  value for every action of the phase.
- The baseline of example j is its own −CE(y_j, p_S) at the step its actions were taken (read
  from that step's forward pass: the student before it learned from them, so a function of the
  state and the gradient stays unbiased; none for r3) plus b, an exponential moving average of
  the phase's mean remaining gain (its first phase's own mean starts it). The advantage
  A_j = (R_j − before_j − b) is divided by its spread over the phase (standard deviation), so
  the step size does not depend on the reward's scale. Without the per-example baseline, the
  difficulty of the examples drowns the effect of the teachers chosen for them.
- The student's [CLS] enters the state at unit length: its d_S dimensions would otherwise
  outweigh the teacher's probabilities and loss in W·s.
- The first teacher_policy.warmup_phases phases select every teacher (equal weights) and do
  not update the policy.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from kdray.config import TeacherPolicyConfig, TrialConfig
from kdray.errors import ConfigError, unknown
from kdray.features import Features
from kdray.results import TEACHER_PREFIX
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
    z = logits.float()
    if regression:
        return (z.squeeze(-1) - labels.float()).pow(2)
    return F.cross_entropy(z, labels, reduction="none")


def kd_loss(
    student: torch.Tensor, teacher: torch.Tensor, tau: float, regression: bool
) -> torch.Tensor:
    """(B,) τ²·KL(p_T^τ ‖ p_S^τ) per example (regression: mean squared difference), as the soft
    knowledge type computes it."""
    zs, zt = student.float(), teacher.float()
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

    kind: ClassVar[str]
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
        w = self.batch_weights(view).float().cpu()
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


def _batch_size(view: BatchView) -> int:
    return len(view.batch["labels"])


def one_hot(index: torch.Tensor, n: int) -> torch.Tensor:
    return F.one_hot(index, n).float()


class Single(TeacherPolicy):
    kind = "single"

    def __init__(self, cfg: TeacherPolicyConfig, ctx: PolicyContext, seed: int) -> None:
        super().__init__(cfg, ctx, seed)
        self.index = ctx.names.index(cfg.teacher) if cfg.teacher else 0

    def batch_weights(self, view: BatchView) -> torch.Tensor:
        return one_hot(torch.full((_batch_size(view),), self.index), self.n)


class Average(TeacherPolicy):
    kind = "average"

    def batch_weights(self, view: BatchView) -> torch.Tensor:
        return torch.full((_batch_size(view), self.n), 1.0 / self.n)


class Weighted(TeacherPolicy):
    """Fixed weights ∝ each teacher's validation score (main metric, on the run's validation
    split; scores at or below 0 count as 0, all 0: equal weights)."""

    kind = "weighted"

    def __init__(self, cfg: TeacherPolicyConfig, ctx: PolicyContext, seed: int) -> None:
        super().__init__(cfg, ctx, seed)
        scores = ctx.scores or dict.fromkeys(ctx.names, 1.0)  # one teacher: not evaluated
        s = torch.tensor([max(0.0, scores[k]) for k in ctx.names])
        self.fixed = s / s.sum() if s.sum() > 0 else torch.full((self.n,), 1.0 / self.n)

    def batch_weights(self, view: BatchView) -> torch.Tensor:
        return self.fixed.expand(_batch_size(view), -1).clone()


class RandSingle(TeacherPolicy):
    kind = "rand_single"

    def batch_weights(self, view: BatchView) -> torch.Tensor:
        k = torch.randint(self.n, (1,), generator=self.generator)
        return one_hot(k.expand(_batch_size(view)), self.n)


class BestSingle(TeacherPolicy):
    kind = "best_single"
    reads_teachers = True

    def batch_weights(self, view: BatchView) -> torch.Tensor:
        labels = view.batch["labels"].cpu()
        losses = torch.stack(
            [gold_loss(view.teachers[k].logits.cpu(), labels, self.ctx.is_regression)
             for k in self.ctx.names], 1
        )  # fmt: skip
        return one_hot(losses.argmin(1), self.n)


class RL(TeacherPolicy):
    """RL-KD's reinforced teacher selection (see the module doc for the kdray decisions)."""

    kind = "rl"
    reads_teachers = True
    reads_student_cls = True

    def __init__(self, cfg: TeacherPolicyConfig, ctx: PolicyContext, seed: int) -> None:
        super().__init__(cfg, ctx, seed)
        out = 1 if ctx.is_regression else ctx.num_labels
        d = ctx.student_width + out + 1
        # initialised from the policy's seed on the CPU generator only: the student's random
        # streams (dropout, data) are left as they were
        with torch.random.fork_rng(devices=[]):
            torch.random.default_generator.manual_seed(seed)
            if cfg.hidden_size > 0:
                self.net: nn.Module = nn.Sequential(
                    nn.Linear(d, cfg.hidden_size), nn.Tanh(), nn.Linear(cfg.hidden_size, 1)
                )
            else:  # the paper's logistic policy, starting at π = 0.5 for every teacher
                self.net = nn.Linear(d, 1)
                nn.init.zeros_(self.net.weight)
                nn.init.zeros_(self.net.bias)
        self.optimizer = torch.optim.SGD(self.net.parameters(), lr=cfg.lr)
        self.baseline: float | None = None
        self.phase = 0
        #: per step: (train indices (B,), states (B, n, d), actions (B, n), rewards before (B,))
        self._buffer: list[tuple[torch.Tensor, ...]] = []

    @property
    def warming_up(self) -> bool:
        return self.learning and self.phase < self.cfg.warmup_phases

    def states(self, view: BatchView) -> torch.Tensor:
        """(B, n, d) s_jk = [student [CLS]; teacher k's probabilities; its gold loss]."""
        cls = view.student.hidden[max(view.student.hidden)][:, 0].float().cpu()  # (B, d_S)
        cls = F.normalize(cls, dim=-1)  # unit length: its d_S dims do not drown the teacher's
        labels = view.batch["labels"].cpu()
        parts = []
        for k in self.ctx.names:
            z = view.teachers[k].logits.float().cpu()
            p = z if self.ctx.is_regression else z.softmax(-1)
            loss = gold_loss(z, labels, self.ctx.is_regression)
            parts.append(torch.cat([cls, p, loss[:, None]], 1))
        return torch.stack(parts, 1)

    def probabilities(self, s: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net(s).squeeze(-1))

    def batch_weights(self, view: BatchView) -> torch.Tensor:
        b = _batch_size(view)
        if self.warming_up:
            return torch.full((b, self.n), 1.0 / self.n)
        s = self.states(view)
        with torch.no_grad():
            p = self.probabilities(s)  # (B, n)
        if self.learning:
            a = torch.bernoulli(p, generator=self.generator)
            labels = view.batch["labels"].cpu()
            before = -gold_loss(view.student.logits.cpu(), labels, self.ctx.is_regression)
            self._buffer.append((view.batch["index"].cpu(), s, a, before))
            chosen = a if self.cfg.weights == "hard" else p
        else:
            chosen = (p > 0.5).float() if self.cfg.weights == "hard" else p
        if self.cfg.weights == "hard":  # none selected: the most probable teacher teaches
            empty = chosen.sum(1) == 0
            chosen[empty] = one_hot(p[empty].argmax(1), self.n)
        return chosen / chosen.sum(1, keepdim=True).clamp_min(1e-12)

    def start_phase(self) -> None:
        self._buffer = []

    def rewards(
        self,
        outcome: PhaseOutcome,
        idx: torch.Tensor,
        s: torch.Tensor,
        a: torch.Tensor,
        rescore: Rescore,
    ) -> torch.Tensor:
        """(m,) reward of each scored example (see the module doc)."""
        if self.cfg.reward == "r3":
            assert outcome.reward_loss_after is not None, "r3 needs the reward-split loss"
            return torch.full((len(idx),), -outcome.reward_loss_after)
        zs, teachers, labels = rescore(idx)
        r = -gold_loss(zs, labels, self.ctx.is_regression)
        if self.cfg.reward == "r2":
            tau, regression = self.ctx.temperature, self.ctx.is_regression
            kd = torch.stack([kd_loss(zs, teachers[k], tau, regression) for k in self.ctx.names], 1)
            sel = a.clone()
            empty = sel.sum(1) == 0
            if empty.any():  # the most probable teacher taught these examples
                with torch.no_grad():
                    p = self.probabilities(s)
                sel[empty] = one_hot(p[empty].argmax(1), self.n)
            r = r - (kd * sel).sum(1) / sel.sum(1)
        return r

    def end_phase(self, outcome: PhaseOutcome, rescore: Rescore) -> None:
        buffer, self._buffer = self._buffer, []
        self.last_log = {"tp_reward": math.nan, "tp_baseline": math.nan}
        self.phase += 1  # phases seen over the whole run (warm-up counts these)
        if not self.learning or not buffer:
            return
        idx, s, a, before = (torch.cat([b[i] for b in buffer]) for i in range(4))
        m = self.cfg.reward_examples
        if self.cfg.reward != "r3" and m is not None and len(idx) > m:
            keep = torch.randperm(len(idx), generator=self.generator)[:m]
            idx, s, a, before = idx[keep], s[keep], a[keep], before[keep]
        r = self.rewards(outcome, idx, s, a, rescore).float()
        if self.cfg.reward == "r3":  # one value for the phase: no per-example baseline
            before = torch.zeros_like(r)
        gain = r - before  # what the example gained after its step (its own baseline)
        mean = float(gain.mean())
        b = mean if self.baseline is None else self.baseline
        spread = float(gain.std(unbiased=False))
        # (m, 1): one advantage per example, for every teacher, in units of the phase's spread
        advantage = ((gain - b) / (spread if spread > 1e-8 else 1.0))[:, None]
        p = self.probabilities(s).clamp(1e-6, 1 - 1e-6)
        log_pi = a * p.log() + (1 - a) * (1 - p).log()
        self.optimizer.zero_grad(set_to_none=True)
        (-(advantage * log_pi).mean()).backward()
        self.optimizer.step()
        d = self.cfg.baseline_decay
        self.baseline = mean if self.baseline is None else d * self.baseline + (1 - d) * mean
        self.last_log = {"tp_reward": float(r.mean()), "tp_baseline": float(before.mean()) + b}

    def state_dict(self) -> dict[str, Any]:
        return {
            **super().state_dict(),
            "net": {k: v.clone() for k, v in self.net.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "baseline": math.nan if self.baseline is None else self.baseline,
            "phase": self.phase,
            "buffer": [tuple(t.clone() for t in b) for b in self._buffer],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.net.load_state_dict(state["net"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.baseline = None if math.isnan(state["baseline"]) else state["baseline"]
        self.phase = state["phase"]
        self._buffer = [tuple(b) for b in state["buffer"]]

    @classmethod
    def validate(cls, cfg: TrialConfig) -> None:
        tp = cfg.teacher_policy
        if tp.reward == "r3" and cfg.data.reward_fraction <= 0:
            raise ConfigError(
                "'teacher_policy.reward: r3' is the loss on the reward split, and "
                "data.reward_fraction is 0; raise it (e.g. 0.05) or use reward r1 / r2"
            )


POLICIES: dict[str, type[TeacherPolicy]] = {
    c.kind: c for c in (Single, Average, Weighted, RandSingle, BestSingle, RL)
}


def validate_teacher_policy(cfg: TrialConfig) -> None:
    """Every teacher-policy check that needs no data or model."""
    tp = cfg.teacher_policy
    if tp.kind not in POLICIES:
        raise unknown("teacher policy kind", tp.kind, POLICIES, "teacher_policy.kind")
    if tp.teacher is not None and tp.kind != "single":
        raise ConfigError(
            f"'teacher_policy.teacher' is only read by teacher_policy.kind: single (kind is "
            f"{tp.kind}); drop it or use kind single"
        )
    if tp.lr <= 0:
        raise ConfigError(f"'teacher_policy.lr' must be > 0, got {tp.lr}")
    if not 0.0 <= tp.baseline_decay < 1.0:
        raise ConfigError(
            f"'teacher_policy.baseline_decay' must be in [0, 1), got {tp.baseline_decay}"
        )
    if tp.warmup_phases < 0:
        raise ConfigError(f"'teacher_policy.warmup_phases' must be >= 0, got {tp.warmup_phases}")
    if tp.hidden_size < 0:
        raise ConfigError(f"'teacher_policy.hidden_size' must be >= 0, got {tp.hidden_size}")
    if tp.reward_examples is not None and tp.reward_examples <= 0:
        raise ConfigError(
            f"'teacher_policy.reward_examples' must be > 0 or unset, got {tp.reward_examples}"
        )
    POLICIES[tp.kind].validate(cfg)


def build_policy(cfg: TrialConfig, ctx: PolicyContext) -> TeacherPolicy:
    seed = cfg.teacher_policy.seed if cfg.teacher_policy.seed is not None else cfg.trainer.seed
    return POLICIES[cfg.teacher_policy.kind](cfg.teacher_policy, ctx, seed)


def measures_reward_split(cfg: TrialConfig) -> bool:
    """The policy is rewarded on the reward split (r3): the trainer measures it each phase."""
    tp = cfg.teacher_policy
    return tp.kind == "rl" and tp.reward == "r3" and len(cfg.teacher_list()) > 1
