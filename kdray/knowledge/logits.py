"""Output-level knowledge: gold labels (FinK) and the teacher's soft labels (ResK)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kdray.base.errors import ConfigError
from kdray.base.tensors import default_float
from kdray.config import KnowledgeConfig
from kdray.knowledge.base import ExampleLoss, Knowledge
from kdray.models.features import Features


class Hard(Knowledge):
    """`hard` (FinK): CE(y, z_S) per example; squared error on the output for regression.
    Reads no teacher output."""

    name = "hard"
    zero_at_match = False
    needs_teacher = False

    def loss(
        self, student: Features, teacher: Features | None, batch: dict[str, torch.Tensor]
    ) -> ExampleLoss:
        z = default_float(student.logits)  # (B, C)
        if self.ctx.is_regression:
            return ExampleLoss((z.squeeze(-1) - default_float(batch["labels"])).pow(2))  # (B,)
        return ExampleLoss(F.cross_entropy(z, batch["labels"], reduction="none"))  # (B,)


class Soft(Knowledge):
    """`soft` (ResK): τ²·KL(softmax(z_T/τ) ‖ softmax(z_S/τ)) per example.

    Regression: squared error between the two outputs (mean over output units) per example.
    Source: Hinton et al. 2015; docs/methods.md §1.
    """

    name = "soft"
    policy_weighted = True

    @classmethod
    def check_options(cls, cfg: KnowledgeConfig) -> None:
        if cfg.temperature <= 0:
            raise ConfigError(f"'knowledge.temperature' must be > 0, got {cfg.temperature}")

    def loss(
        self, student: Features, teacher: Features | None, batch: dict[str, torch.Tensor]
    ) -> ExampleLoss:
        assert teacher is not None
        zs, zt = default_float(student.logits), default_float(teacher.logits)  # (B, C)
        if self.ctx.is_regression:
            return ExampleLoss((zs - zt).pow(2).mean(-1))  # (B,)
        tau = self.ctx.cfg.temperature
        log_ps = F.log_softmax(zs / tau, dim=-1)
        log_pt = F.log_softmax(zt / tau, dim=-1)
        kl = F.kl_div(log_ps, log_pt, log_target=True, reduction="none")  # (B, C)
        return ExampleLoss(tau**2 * kl)
