"""Output-level knowledge: gold labels (FinK) and the teacher's soft labels (ResK)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kdray.knowledge.base import Knowledge, register
from kdray.models import Features


@register
class Hard(Knowledge):
    """`hard` (FinK): CE(y, z_S); MSE on the output for regression. Reads no teacher output."""

    name = "hard"
    zero_at_match = False
    needs_teacher = False

    def loss(
        self, student: Features, teacher: Features | None, batch: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        z = student.logits.float()  # (B, C)
        if self.ctx.is_regression:
            return F.mse_loss(z.squeeze(-1), batch["labels"].float())
        return F.cross_entropy(z, batch["labels"])


@register
class Soft(Knowledge):
    """`soft` (ResK): τ²·KL(softmax(z_T/τ) ‖ softmax(z_S/τ)) per example, batch mean.

    Regression: MSE between the two outputs. Source: Hinton et al. 2015; methods.md §1.
    """

    name = "soft"

    def loss(
        self, student: Features, teacher: Features | None, batch: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        assert teacher is not None
        zs, zt = student.logits.float(), teacher.logits.float()  # (B, C)
        if self.ctx.is_regression:
            return F.mse_loss(zs, zt)
        tau = self.ctx.cfg.temperature
        log_ps = F.log_softmax(zs / tau, dim=-1)
        log_pt = F.log_softmax(zt / tau, dim=-1)
        return tau**2 * F.kl_div(log_ps, log_pt, log_target=True, reduction="batchmean")
