"""Output-level knowledge: gold labels (FinK) and the teacher's soft labels (ResK); and the
label smoothing whose targets are as soft as a teacher's (`matched_smoothing`), the control
that tells a teacher's soft labels apart from soft labels."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from kdray.base.errors import ConfigError
from kdray.base.tensors import default_float
from kdray.config import KnowledgeConfig
from kdray.knowledge.base import ExampleLoss, Knowledge
from kdray.models.features import Features


class Hard(Knowledge):
    """`hard` (FinK): CE(y, z_S) per example, y smoothed by `knowledge.label_smoothing` ε
    ((1 − ε)·one-hot + ε/C); squared error on the output for regression (ε must be 0 there).
    Reads no teacher output."""

    name = "hard"
    zero_at_match = False
    needs_teacher = False

    @classmethod
    def check_options(cls, cfg: KnowledgeConfig) -> None:
        if not 0.0 <= cfg.label_smoothing < 1.0:
            raise ConfigError(
                f"'knowledge.label_smoothing' must be in [0, 1), got {cfg.label_smoothing}"
            )

    def loss(
        self, student: Features, teacher: Features | None, batch: dict[str, torch.Tensor]
    ) -> ExampleLoss:
        z = default_float(student.logits)  # (B, C)
        if self.ctx.is_regression:
            return ExampleLoss((z.squeeze(-1) - default_float(batch["labels"])).pow(2))  # (B,)
        eps = self.ctx.cfg.label_smoothing
        return ExampleLoss(F.cross_entropy(z, batch["labels"], reduction="none",
                                           label_smoothing=eps))  # (B,)  # fmt: skip


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


def mean_entropy(logits: torch.Tensor, temperature: float = 1.0) -> float:
    """Mean entropy (nats) of softmax(logits/τ) over the rows of (n, C) logits: how soft a
    teacher's soft labels are at the temperature they are taught with."""
    logp = F.log_softmax(default_float(logits) / temperature, dim=-1)  # (n, C)
    return float(-(logp.exp() * logp).sum(-1).mean())


def smoothed_entropy(eps: float, classes: int) -> float:
    """Entropy (nats) of an ε-smoothed one-hot target over C classes: 1 − ε + ε/C on the
    label, ε/C on each other class."""
    top, rest = 1.0 - eps + eps / classes, eps / classes
    return -(top * math.log(top) if top else 0.0) - (
        (classes - 1) * rest * math.log(rest) if rest else 0.0
    )


def matched_smoothing(entropy: float, classes: int) -> float:
    """The ε whose smoothed targets have `entropy` (nats), found by bisection on [0, 1], where
    the smoothed entropy rises from 0 (one-hot) to log C (uniform, ε = 1); ValueError outside
    [0, log C]."""
    if classes < 2 or not 0.0 <= entropy <= math.log(classes) + 1e-12:
        raise ValueError(
            f"an entropy for {classes} classes must be in [0, log {classes}], got {entropy}"
        )
    lo, hi = 0.0, 1.0
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if smoothed_entropy(mid, classes) < entropy else (lo, mid)
    return (lo + hi) / 2
