"""The knowledge-type interface, its registry and the context every loss is built from.

A knowledge type is an `nn.Module` (it may own learned projections) that turns student and
teacher `Features` of one batch into a scalar loss. It declares which outputs it reads from
each side (`student_needs`, `teacher_needs`), so the trainer computes, and the teacher cache
stores, only those. Teacher features arrive detached; padding never enters a loss.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, TypeVar

import torch
from torch import nn

from kdray.config import KnowledgeConfig
from kdray.models import Features, Needs


@dataclass(frozen=True)
class KnowledgeContext:
    """What a knowledge type needs to know about the pair of models and the task."""

    cfg: KnowledgeConfig
    is_regression: bool
    student_layers: int
    teacher_layers: int
    student_width: int
    teacher_width: int
    student_heads: int
    teacher_heads: int
    #: Teacher layer g(n) for student layers n = 1..N.
    layer_map: tuple[int, ...]

    def mapped(self, n: int) -> int:
        """g(n), with g(0) = 0 (embeddings map to embeddings)."""
        return 0 if n == 0 else self.layer_map[n - 1]


class Knowledge(nn.Module):
    """One kind of teacher knowledge and its loss.

    Subclasses set `name`, implement `loss`, and fill `student_needs` / `teacher_needs` in
    `__init__`. `zero_at_match` is False for losses that are not a discrepancy between the two
    models (gold labels, contrastive), so the contract test knows what to expect.
    """

    name: ClassVar[str]
    zero_at_match: ClassVar[bool] = True
    needs_teacher: ClassVar[bool] = True

    def __init__(self, ctx: KnowledgeContext) -> None:
        super().__init__()
        self.ctx = ctx
        self.student_needs = Needs()
        self.teacher_needs = Needs()

    def forward(
        self, student: Features, teacher: Features | None, batch: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        return self.loss(student, teacher.detached() if teacher is not None else None, batch)

    def loss(
        self, student: Features, teacher: Features | None, batch: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        raise NotImplementedError


def projection(d_in: int, d_out: int) -> nn.Module:
    """W_n of methods.md: learned when widths differ, identity otherwise."""
    return nn.Identity() if d_in == d_out else nn.Linear(d_in, d_out, bias=False)


K = TypeVar("K", bound=type[Knowledge])

#: name -> class, filled by @register.
REGISTRY: dict[str, type[Knowledge]] = {}


def register(cls: K) -> K:
    REGISTRY[cls.name] = cls
    return cls
