"""MLKD-BERT relation knowledge (Zhang et al. 2024): token, attention, sample and contrastive."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from kdray.base.errors import ConfigError
from kdray.base.tensors import default_float
from kdray.config import KnowledgeConfig
from kdray.knowledge.base import ExampleLoss, Knowledge, KnowledgeContext, projection
from kdray.knowledge.masked import row_kl
from kdray.models.features import Features, Needs


def self_similarity(x: torch.Tensor) -> torch.Tensor:
    """x xᵀ / √d over the last two dims: (..., R, d) -> (..., R, R)."""
    return x @ x.transpose(-1, -2) / math.sqrt(x.shape[-1])


class EmbeddingRelation(Knowledge):
    """`embedding_relation` (L_EMB): row-wise KL(softmax(E_T E_Tᵀ/√d_T) ‖ softmax(E_S E_Sᵀ/√d_S))
    over the non-padding tokens of each example, E the embedding-layer output. Per example:
    the KL summed over its token rows; mass = its tokens (the batch mean is over all rows)."""

    name = "embedding_relation"

    def __init__(self, ctx: KnowledgeContext) -> None:
        super().__init__(ctx)
        self.student_needs = Needs(hidden=frozenset({0}))
        self.teacher_needs = Needs(hidden=frozenset({0}))

    def loss(
        self, student: Features, teacher: Features | None, batch: dict[str, torch.Tensor]
    ) -> ExampleLoss:
        assert teacher is not None
        mask = batch["attention_mask"].bool()  # (B, T)
        r_s = self_similarity(default_float(student.hidden[0]))  # (B, T, T)
        r_t = self_similarity(default_float(teacher.hidden[0]))
        return row_kl(r_t, r_s, mask)


def split_heads(x: torch.Tensor, groups: int) -> torch.Tensor:
    """(B, T, d) -> (B, groups, T, d / groups)."""
    b, t, d = x.shape
    return x.view(b, t, groups, d // groups).transpose(1, 2)


class AttentionRelation(Knowledge):
    """`attention_relation` (L_MHA): for each mapped layer, the attention context vectors (the
    self-attention output before its output projection) are split into A_S groups along the
    width (A_S = student heads); R = softmax(O Oᵀ/√(d/A_S)) per group; KL(R_T ‖ R_S) per row,
    averaged over groups and non-padding rows, summed over layers. Any head counts. Per
    example: the KL summed over its groups and token rows; mass = groups × its tokens."""

    name = "attention_relation"
    reads_attention = True

    def __init__(self, ctx: KnowledgeContext) -> None:
        super().__init__(ctx)
        self.layers = list(range(1, ctx.student.layers + 1))
        self.student_needs = Needs(attn_context=frozenset(self.layers))
        self.teacher_needs = Needs(attn_context=frozenset(ctx.mapped(n) for n in self.layers))

    def loss(
        self, student: Features, teacher: Features | None, batch: dict[str, torch.Tensor]
    ) -> ExampleLoss:
        assert teacher is not None
        a = self.ctx.student.heads
        key_mask = batch["attention_mask"].bool().unsqueeze(1)  # (B, 1, T)
        losses = []
        for n in self.layers:
            o_s = default_float(student.attn_context[n])
            r_s = self_similarity(split_heads(o_s, a))  # (B, A, T, T)
            o_t = default_float(teacher.attn_context[self.ctx.mapped(n)])
            r_t = self_similarity(split_heads(o_t, a))
            losses.append(row_kl(r_t, r_s, key_mask))
        return sum(losses[1:], losses[0])


def cls_vectors(features: Features, layer: int) -> torch.Tensor:
    """[CLS] of the last layer: (B, d)."""
    return default_float(features.hidden[layer][:, 0])


class _LastCls(Knowledge):
    """Knowledge read from the last layer's [CLS] vector of both models."""

    def __init__(self, ctx: KnowledgeContext) -> None:
        super().__init__(ctx)
        self.student_needs = Needs(hidden=frozenset({ctx.student.layers}))
        self.teacher_needs = Needs(hidden=frozenset({ctx.teacher.layers}))


class SampleRelation(_LastCls):
    """`sample_relation` (L_SS): KL(softmax(C_T C_Tᵀ/√d_T) ‖ softmax(C_S C_Sᵀ/√d_S)) over the
    rows of the batch, C the last layer's [CLS] vectors. Per example: the KL of its own row
    (its similarities to the batch); mass 1."""

    name = "sample_relation"

    def loss(
        self, student: Features, teacher: Features | None, batch: dict[str, torch.Tensor]
    ) -> ExampleLoss:
        assert teacher is not None
        c_s = cls_vectors(student, self.ctx.student.layers)  # (B, d_S)
        c_t = cls_vectors(teacher, self.ctx.teacher.layers)  # (B, d_T)
        return row_kl(self_similarity(c_t), self_similarity(c_s))


class Contrastive(_LastCls):
    """`contrastive` (L_SC): supervised InfoNCE over the 2B student and teacher [CLS] vectors
    (student projected to the teacher width when widths differ), L2-normalised, temperature t
    (`knowledge.contrastive_temperature`); positives are the other vectors with the same label.
    Not defined for regression (dropped with a warning at build time). Per example j: the
    mean of its two anchors' losses (student j and teacher j); mass 1."""

    name = "contrastive"
    zero_at_match = False
    needs_labels = True

    @classmethod
    def check_options(cls, cfg: KnowledgeConfig) -> None:
        if cfg.contrastive_temperature <= 0:
            raise ConfigError(
                f"'knowledge.contrastive_temperature' must be > 0, got "
                f"{cfg.contrastive_temperature}"
            )

    def __init__(self, ctx: KnowledgeContext) -> None:
        super().__init__(ctx)
        self.proj = projection(ctx.student.width, ctx.teacher.width)

    def loss(
        self, student: Features, teacher: Features | None, batch: dict[str, torch.Tensor]
    ) -> ExampleLoss:
        assert teacher is not None
        c_s = self.proj(cls_vectors(student, self.ctx.student.layers))  # (B, d_T)
        c_t = cls_vectors(teacher, self.ctx.teacher.layers)
        z = F.normalize(torch.cat([c_s, c_t]), dim=-1)  # (2B, d_T)
        y = torch.cat([batch["labels"], batch["labels"]])  # (2B,)
        sim = z @ z.T / self.ctx.cfg.contrastive_temperature  # (2B, 2B)
        self_mask = torch.eye(len(z), dtype=torch.bool, device=z.device)
        log_prob = sim.masked_fill(self_mask, -1e9).log_softmax(dim=-1)
        pos = (y[:, None] == y[None, :]) & ~self_mask  # (2B, 2B); >= 1 per row (own twin)
        per_anchor = -(log_prob * pos).sum(-1) / pos.sum(-1)  # (2B,)
        return ExampleLoss(per_anchor.view(2, -1).mean(0))  # (B,): student and teacher anchor
