"""The fixed teacher policies: the RL-KD paper's baselines (see kdray.teacher_policy.base)."""

from __future__ import annotations

import torch

from kdray.config import TeacherPolicyConfig
from kdray.teacher_policy.base import (
    BatchView,
    PolicyContext,
    TeacherPolicy,
    batch_size,
    gold_loss,
    one_hot,
)


class Single(TeacherPolicy):
    """`single`: one teacher of the pool (`teacher_policy.teacher`, else the first) teaches
    every example."""

    name = "single"

    def __init__(self, cfg: TeacherPolicyConfig, ctx: PolicyContext, seed: int) -> None:
        super().__init__(cfg, ctx, seed)
        self.index = ctx.names.index(cfg.teacher) if cfg.teacher else 0

    def batch_weights(self, view: BatchView) -> torch.Tensor:
        return one_hot(torch.full((batch_size(view),), self.index), self.n)


class Average(TeacherPolicy):
    """`average`: every teacher of the pool at the same weight."""

    name = "average"

    def batch_weights(self, view: BatchView) -> torch.Tensor:
        return torch.full((batch_size(view), self.n), 1.0 / self.n)


class Weighted(TeacherPolicy):
    """Fixed weights ∝ each teacher's validation score (main metric, on the run's validation
    split; scores at or below 0 count as 0, all 0: equal weights)."""

    name = "weighted"

    def __init__(self, cfg: TeacherPolicyConfig, ctx: PolicyContext, seed: int) -> None:
        super().__init__(cfg, ctx, seed)
        scores = ctx.scores or dict.fromkeys(ctx.names, 1.0)  # one teacher: not evaluated
        s = torch.tensor([max(0.0, scores[k]) for k in ctx.names])
        self.fixed = s / s.sum() if s.sum() > 0 else torch.full((self.n,), 1.0 / self.n)

    def batch_weights(self, view: BatchView) -> torch.Tensor:
        return self.fixed.expand(batch_size(view), -1).clone()


class RandSingle(TeacherPolicy):
    """`rand_single`: one teacher, drawn at random for each batch (seeded), teaches it."""

    name = "rand_single"

    def batch_weights(self, view: BatchView) -> torch.Tensor:
        k = torch.randint(self.n, (1,), generator=self.generator)
        return one_hot(k.expand(batch_size(view)), self.n)


class BestSingle(TeacherPolicy):
    """`best_single`: each example is taught by the teacher with the lowest loss on its gold
    label."""

    name = "best_single"
    reads_teachers = True

    def batch_weights(self, view: BatchView) -> torch.Tensor:
        labels = view.batch["labels"].cpu()
        losses = torch.stack(
            [gold_loss(view.teachers[k].logits.cpu(), labels, self.ctx.is_regression)
             for k in self.ctx.names], 1
        )  # fmt: skip
        return one_hot(losses.argmin(1), self.n)
