"""RL-KD's reinforced teacher selection (Yuan et al. 2021, docs/methods.md §3).

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
  computed by hand. η = teacher_policy.lr, 32 by default: the mean over every (example,
  teacher) makes the gradient small (~0.05 per weight), and at this η a near-chance teacher's
  share fell from 1/4 to ~0.1 within 12 phases on SST-2 (benchmarks/multi_teacher.py's pool;
  η = 4 left it at ~0.2 after 18). Adam was tried and rejected: its per-weight steps grow the
  weights on the student's [CLS] (shared by every teacher of an example) to a norm of ~30,
  which saturates π for all teachers together and flattens the soft weights.
- Rewards of r1 / r2 are measured per example with the student at the phase's end, the student
  that learned from the selections, on up to teacher_policy.reward_examples of the phase's
  examples (a seeded draw): one no-grad forward of those examples per phase, nothing per step.
  r1 = −CE(y_j, p_S); r2 = r1 − mean over the selected teachers of τ²·KL(p_k^τ ‖ p_S^τ) (the most
  probable teacher when none was selected); r3 = −(reward-split loss after the phase), one
  value for every action of the phase.
- Soft weights (default): the student learns from the probabilities, never from the sampled
  actions, so only r2's mean over the selected teachers depends on them; r1 and r3 would be
  noise to the policy and are refused with soft weights. The baseline of example j is its r2
  had every teacher been selected (a function of the student after the phase, which no sample
  changed, so the gradient stays unbiased): the advantage is then exactly what the selection
  changed, −(mean KD over the selected − mean KD over all), without the noise of how much the
  example's gold loss moved.
- Hard weights: the sampled selection is what the student learns from. The baseline of example
  j is its own −CE(y_j, p_S) at the step its actions were taken (read from that step's forward
  pass: the student before it learned from them, so a function of the state and the gradient
  stays unbiased; none for r3). Without it, the difficulty of the examples drowns the effect
  of the teachers chosen for them.
- Either way b, an exponential moving average of the phase's mean remaining gain (its first
  phase's own mean starts it), is subtracted too, and the advantage A_j = (R_j − baseline_j − b)
  is divided by its spread over the phase (standard deviation), so the step size does not
  depend on the reward's scale.
- The student's [CLS] enters the state at unit length: its d_S dimensions would otherwise
  outweigh the teacher's probabilities and loss in W·s.
- The first teacher_policy.warmup_phases phases select every teacher (equal weights) and do
  not update the policy; by default the first quarter of the segment's phases (at least one).
  r2 compares each teacher with the student's own predictions, and an untrained student's
  are flat, so early on a flat (near-chance) teacher looks best: learning from those phases
  drove one seed of three to select every teacher with π ≈ 1, where the gradient vanishes
  and the policy never recovers (benchmarks/multi_teacher.py, 300 steps, one warm-up phase);
  with a quarter of the phases as warm-up the same seed learned like the others.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from kdray.base.errors import ConfigError
from kdray.base.tensors import default_float
from kdray.config import TeacherPolicyConfig, TrialConfig
from kdray.selector.base import PhaseOutcome
from kdray.teacher_policy.base import (
    BatchView,
    PolicyContext,
    Rescore,
    TeacherPolicy,
    batch_size,
    gold_loss,
    kd_loss,
    one_hot,
)

#: The default warm-up: this fraction of the segment's phases (teacher_policy.warmup_phases).
WARMUP_FRACTION = 0.25


class RL(TeacherPolicy):
    """RL-KD's reinforced teacher selection (see the module doc for the kdray decisions)."""

    name = "rl"
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
        self.segment_phases = 0  # the segment's phases, known from the first phase's end
        #: per step: (train indices (B,), states (B, n, d), actions (B, n), rewards before (B,))
        self._buffer: list[tuple[torch.Tensor, ...]] = []

    @property
    def warming_up(self) -> bool:
        return self.learning and self.phase < self.warmup_phases()

    def warmup_phases(self) -> int:
        if self.cfg.warmup_phases is not None:
            return self.cfg.warmup_phases
        return max(1, math.ceil(WARMUP_FRACTION * self.segment_phases))

    def states(self, view: BatchView) -> torch.Tensor:
        """(B, n, d) s_jk = [student [CLS]; teacher k's probabilities; its gold loss]."""
        cls = default_float(view.student.hidden[max(view.student.hidden)][:, 0]).cpu()  # (B, d_S)
        cls = F.normalize(cls, dim=-1)  # unit length: its d_S dims do not drown the teacher's
        labels = view.batch["labels"].cpu()
        parts = []
        for k in self.ctx.names:
            z = default_float(view.teachers[k].logits).cpu()
            p = z if self.ctx.is_regression else z.softmax(-1)
            loss = gold_loss(z, labels, self.ctx.is_regression)
            parts.append(torch.cat([cls, p, loss[:, None]], 1))
        return torch.stack(parts, 1)

    def probabilities(self, s: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net(s).squeeze(-1))

    def batch_weights(self, view: BatchView) -> torch.Tensor:
        b = batch_size(view)
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
            chosen = default_float(p > 0.5) if self.cfg.weights == "hard" else p
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
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(m,) reward of each scored example (see the module doc), and for r2 (m,) the reward
        had every teacher been selected (the soft weights' per-example baseline)."""
        if self.cfg.reward == "r3":
            assert outcome.reward_loss_after is not None, "r3 needs the reward-split loss"
            return torch.full((len(idx),), -outcome.reward_loss_after), None
        zs, teachers, labels = rescore(idx)
        r = -gold_loss(zs, labels, self.ctx.is_regression)
        if self.cfg.reward != "r2":
            return r, None
        tau, regression = self.ctx.temperature, self.ctx.is_regression
        kd = torch.stack([kd_loss(zs, teachers[k], tau, regression) for k in self.ctx.names], 1)
        sel = a.clone()
        empty = sel.sum(1) == 0
        if empty.any():  # the most probable teacher taught these examples
            with torch.no_grad():
                p = self.probabilities(s)
            sel[empty] = one_hot(p[empty].argmax(1), self.n)
        return r - (kd * sel).sum(1) / sel.sum(1), r - kd.mean(1)

    def end_phase(self, outcome: PhaseOutcome, rescore: Rescore) -> None:
        buffer, self._buffer = self._buffer, []
        self.last_log = {"tp_reward": math.nan, "tp_baseline": math.nan}
        self.phase += 1  # phases seen over the whole run (warm-up counts these)
        self.segment_phases = outcome.phases
        if not self.learning or not buffer:
            return
        idx, s, a, before = (torch.cat([b[i] for b in buffer]) for i in range(4))
        m = self.cfg.reward_examples
        if self.cfg.reward != "r3" and m is not None and len(idx) > m:
            keep = torch.randperm(len(idx), generator=self.generator)[:m]
            idx, s, a, before = idx[keep], s[keep], a[keep], before[keep]
        r, every = self.rewards(outcome, idx, s, a, rescore)
        if self.cfg.weights == "soft":  # the samples taught nothing: only r2's choice varies
            assert every is not None, "validate() allows soft weights with r2 only"
            before = every
        elif self.cfg.reward == "r3":  # one value for the phase: no per-example baseline
            before = torch.zeros_like(r)
        gain = r - before  # what the example's actions gained over its own baseline
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
            "segment_phases": self.segment_phases,
            "buffer": [tuple(t.clone() for t in b) for b in self._buffer],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.net.load_state_dict(state["net"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.baseline = None if math.isnan(state["baseline"]) else state["baseline"]
        self.phase = state["phase"]
        self.segment_phases = state["segment_phases"]
        self._buffer = [tuple(b) for b in state["buffer"]]

    @classmethod
    def validate(cls, cfg: TrialConfig) -> None:
        tp = cfg.teacher_policy
        if tp.weights == "soft" and tp.reward != "r2":
            raise ConfigError(
                f"'teacher_policy.reward: {tp.reward}' with weights soft: the student learns "
                f"from the selection probabilities, not from the sampled selections, so "
                f"{tp.reward} says nothing about them; use reward r2 or weights hard"
            )
        if tp.reward == "r3" and cfg.data.reward_fraction <= 0:
            raise ConfigError(
                "'teacher_policy.reward: r3' is the loss on the reward split, and "
                "data.reward_fraction is 0; raise it (e.g. 0.05) or use reward r1 / r2"
            )
