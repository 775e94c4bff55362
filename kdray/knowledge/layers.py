"""Layer-level knowledge: hidden states (FeaK), layer relations (RelK), attention maps."""

from __future__ import annotations

import torch
from torch import nn

from kdray.base.tensors import default_float
from kdray.knowledge.base import ExampleLoss, Knowledge, KnowledgeContext, projection
from kdray.knowledge.masked import masked_mse
from kdray.models.features import Features, Needs


class _Projected(Knowledge):
    """Shared by `hidden` and `relation`: student layers 0..N (or 1..N) projected to d_T."""

    def __init__(self, ctx: KnowledgeContext) -> None:
        super().__init__(ctx)
        first = 0 if ctx.cfg.hidden_include_embeddings else 1
        self.layers = list(range(first, ctx.student.layers + 1))
        self.proj = nn.ModuleList(
            projection(ctx.student.width, ctx.teacher.width) for _ in self.layers
        )
        self.student_needs = Needs(hidden=frozenset(self.layers))
        self.teacher_needs = Needs(hidden=frozenset(ctx.mapped(n) for n in self.layers))

    def projected(self, student: Features) -> list[torch.Tensor]:
        """H^S_n W_n for each layer, (B, T, d_T)."""
        hs = [default_float(student.hidden[n]) for n in self.layers]
        return [w(h) for w, h in zip(self.proj, hs, strict=True)]


class Hidden(_Projected):
    """`hidden` (FeaK): Σ_n MSE(H^S_n W_n, H^T_{g(n)}) over non-padding tokens.

    Per example: its squared errors over its tokens and the d_T units, summed over layers;
    mass = its tokens × d_T (the batch loss is the mean over every token of the batch).

    H_0 (embeddings) is included unless `knowledge.hidden_include_embeddings` is false.
    Source: TinyBERT (Jiao et al. 2020); docs/methods.md §1.
    """

    name = "hidden"

    def loss(
        self, student: Features, teacher: Features | None, batch: dict[str, torch.Tensor]
    ) -> ExampleLoss:
        assert teacher is not None
        mask = batch["attention_mask"].bool()  # (B, T)
        losses = [
            masked_mse(hs, default_float(teacher.hidden[self.ctx.mapped(n)]), mask)
            for hs, n in zip(self.projected(student), self.layers, strict=True)
        ]
        return sum(losses[1:], losses[0])


def gram_mse_chain(
    hs: list[torch.Tensor], ht: list[torch.Tensor], mask: torch.Tensor
) -> torch.Tensor:
    """Σ over consecutive pairs (n, n+1) of the per-example MSE(G(S_n, S_n+1), G(T_n, T_n+1)),
    G(x, y) = xᵀy / tokens per example over non-padding tokens, without forming the (d × d)
    Gram matrices.

    ‖AᵀB − CᵀD‖²_F = Σ(AAᵀ∘BBᵀ) − 2Σ(ACᵀ∘BDᵀ) + Σ(CCᵀ∘DDᵀ): every product is (T × T), and
    T (tokens) is far below d (width), so this costs O(T²d) instead of O(Td²) time and memory
    (5x faster than the direct form at T = 30, d = 384). Each layer's products (SSᵀ, TTᵀ,
    STᵀ) are formed once and serve both pairs it belongs to. The expansion loses relative
    precision only when the two Gram matrices nearly coincide (loss ~1e-7 of their norm).
    hs, ht: per layer (B, T, d) ; mask: (B, T) bool -> (B,).
    """
    m = mask.to(hs[0].dtype).unsqueeze(-1)  # (B, T, 1)
    tokens = m.sum((1, 2)).clamp_min(1)  # (B,)
    s = [x * m for x in hs]
    t = [x * m for x in ht]

    def gram(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.bmm(x, y.transpose(1, 2))  # (B, T, T)

    ss = [gram(x, x) for x in s]
    tt = [gram(x, x) for x in t]
    st = [gram(x, y) for x, y in zip(s, t, strict=True)]
    total = tokens.new_zeros(tokens.shape)
    for i in range(len(hs) - 1):
        sq = ((ss[i] * ss[i + 1]).sum((1, 2)) - 2 * (st[i] * st[i + 1]).sum((1, 2))
              + (tt[i] * tt[i + 1]).sum((1, 2)))  # fmt: skip
        width = s[i].shape[-1] * s[i + 1].shape[-1]
        total = total + sq.clamp_min(0) / (tokens**2 * width)
    return total


class Relation(_Projected):
    """`relation` (RelK, FSP/Gram): Σ over consecutive layer pairs (n, n+1) of
    MSE(G_S(n, n+1), G_T(g(n), g(n+1))), student states projected to the teacher width.
    Per example: its Gram matrices' MSE summed over pairs (mass 1: one value per example).

    Source: FSP (Yim et al. 2017) as used by Wang et al. 2022; docs/methods.md §1.
    """

    name = "relation"

    def loss(
        self, student: Features, teacher: Features | None, batch: dict[str, torch.Tensor]
    ) -> ExampleLoss:
        assert teacher is not None
        mask = batch["attention_mask"].bool()
        hs = self.projected(student)
        ht = [default_float(teacher.hidden[self.ctx.mapped(n)]) for n in self.layers]
        return ExampleLoss(gram_mse_chain(hs, ht, mask))


class Attention(Knowledge):
    """`attention` (TinyBERT): Σ_n MSE(A^S_n, A^T_{g(n)}) over valid (query, key) pairs.

    Needs equal head counts (checked at config time; otherwise use `attention_relation`).
    Per example: squared errors over its heads and valid pairs, summed over layers; mass =
    heads × valid pairs.
    """

    name = "attention"
    reads_attention = True
    needs_equal_heads = True

    def __init__(self, ctx: KnowledgeContext) -> None:
        super().__init__(ctx)
        self.layers = list(range(1, ctx.student.layers + 1))
        self.student_needs = Needs(attn_probs=frozenset(self.layers))
        self.teacher_needs = Needs(attn_probs=frozenset(ctx.mapped(n) for n in self.layers))

    def loss(
        self, student: Features, teacher: Features | None, batch: dict[str, torch.Tensor]
    ) -> ExampleLoss:
        assert teacher is not None
        m = batch["attention_mask"].bool()
        pairs = (m[:, :, None] & m[:, None, :]).unsqueeze(1)  # (B, 1, T, T)
        losses = []
        for n in self.layers:
            a_s = default_float(student.attn_probs[n])  # (B, H, T, T)
            a_t = default_float(teacher.attn_probs[self.ctx.mapped(n)])
            losses.append(masked_mse(a_s, a_t, pairs.expand_as(a_s)))
        return sum(losses[1:], losses[0])
