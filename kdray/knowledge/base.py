"""The knowledge-type interface, its registry and the context every loss is built from.

A knowledge type is an `nn.Module` (it may own learned projections) that turns student and
teacher `Features` of one batch into a per-example loss (`ExampleLoss`): one value per
example and that example's share of the batch mean (its mass: 1 for output- and [CLS]-level
types, its tokens, token pairs or rows for token-level ones). The trainer reduces, so that
per-example teacher weights can enter the reduction. Each type declares which outputs it reads
from each side (`student_needs`, `teacher_needs`), so the trainer computes, and the teacher
cache stores, only those. Teacher features arrive detached; padding never enters a loss.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from kdray.config import KnowledgeConfig
from kdray.models.features import Features, Needs, Shape


@dataclass(frozen=True)
class KnowledgeContext:
    """What a knowledge type needs to know about the pair of models and the task."""

    cfg: KnowledgeConfig
    is_regression: bool
    student: Shape
    teacher: Shape
    #: Teacher layer g(n) for student layers n = 1..N.
    layer_map: tuple[int, ...]

    def mapped(self, n: int) -> int:
        """g(n), with g(0) = 0 (embeddings map to embeddings)."""
        return 0 if n == 0 else self.layer_map[n - 1]


@dataclass
class ExampleLoss:
    """A loss per example: `sums[j]` is example j's summed loss, `mass[j]` what it is summed
    over (tokens, pairs, rows; none for one value per example), so example j's loss is
    sums[j] / mass[j] and the batch loss is Σ_j w_j·sums[j] / Σ_j mass[j] (w_j = 1: the batch
    mean over every token, pair or row of the batch; without mass, the mean over examples).

    sums: (B, ...) ; mass: the same shape, or None. Trailing dims are summed per example; they
    are kept so that the batch loss sums the elements in the order a plain batch loss would.
    """

    sums: torch.Tensor
    mass: torch.Tensor | None = None

    def _per_example(self, x: torch.Tensor) -> torch.Tensor:
        return x.sum(tuple(range(1, x.dim()))) if x.dim() > 1 else x

    @property
    def values(self) -> torch.Tensor:
        """(B,) the loss of each example."""
        sums = self._per_example(self.sums)
        return sums if self.mass is None else sums / self._per_example(self.mass).clamp_min(1e-12)

    def mean(self, weights: torch.Tensor | None = None) -> torch.Tensor:
        """The batch loss; `weights` (B,) scales each example's share (None: all 1)."""
        sums = self.sums
        if weights is not None:
            sums = sums * weights.view(-1, *([1] * (sums.dim() - 1)))
        if self.mass is None:
            return sums.sum() / len(sums)
        return sums.sum() / self.mass.sum().clamp_min(1)

    def __add__(self, other: ExampleLoss) -> ExampleLoss:
        """Sum of two losses over the same examples and the same mass (e.g. over layers)."""
        return ExampleLoss(self.sums + other.sums, self.mass)


class Knowledge(nn.Module):
    """One kind of teacher knowledge and its loss.

    Subclasses set `name`, implement `loss`, and fill `student_needs` / `teacher_needs` in
    `__init__`. `zero_at_match` is False for losses that are not a discrepancy between the two
    models (gold labels, contrastive), so the contract test knows what to expect.
    """

    name: ClassVar[str]
    zero_at_match: ClassVar[bool] = True
    #: Reads a teacher output (False: gold labels only; computed once whatever the teachers).
    needs_teacher: ClassVar[bool] = True
    #: Reads attention internals (probabilities or context), captured from BERT models only.
    reads_attention: ClassVar[bool] = False
    #: Compares attention maps head by head: student and teacher head counts must be equal.
    needs_equal_heads: ClassVar[bool] = False
    #: Needs class labels (undefined for regression: skipped there with a warning).
    needs_labels: ClassVar[bool] = False
    #: With several teachers, every teacher teaches it, weighted per example by the teacher
    #: policy (soft labels, RL-KD's multi-teacher loss); other types come from
    #: knowledge.feature_teacher.
    policy_weighted: ClassVar[bool] = False

    @classmethod
    def check_options(cls, cfg: KnowledgeConfig) -> None:
        """Ranges of the `knowledge.*` knobs this type owns (none here). Checked whatever the
        chosen types, since a sweep may switch them between trials."""
        del cfg  # the base class owns no knob

    def __init__(self, ctx: KnowledgeContext) -> None:
        super().__init__()
        self.ctx = ctx
        self.student_needs = Needs()
        self.teacher_needs = Needs()

    def forward(
        self, student: Features, teacher: Features | None, batch: dict[str, torch.Tensor]
    ) -> ExampleLoss:
        return self.loss(student, teacher.detached() if teacher is not None else None, batch)

    def loss(
        self, student: Features, teacher: Features | None, batch: dict[str, torch.Tensor]
    ) -> ExampleLoss:
        raise NotImplementedError


def projection(d_in: int, d_out: int) -> nn.Module:
    """W_n of docs/methods.md: learned when widths differ, identity otherwise."""
    return nn.Identity() if d_in == d_out else nn.Linear(d_in, d_out, bias=False)
