"""What a forward pass of a model yields, what a loss asks of it, and a model's shape.

`Needs` names the outputs a set of knowledge types reads, `Features` holds them for one
batch, `Shape` is the few numbers of an encoder that distillation cares about. No model code
here: `kdray.models.classifier` produces these, `kdray.knowledge` consumes them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from transformers import PretrainedConfig


@dataclass(frozen=True)
class Needs:
    """Which outputs of a model a set of knowledge types reads.

    hidden: hidden-state layers (0 = embedding output); attn_probs / attn_context: transformer
    layers counted from 1. Logits are always produced.
    """

    hidden: frozenset[int] = frozenset()
    attn_probs: frozenset[int] = frozenset()
    attn_context: frozenset[int] = frozenset()

    def __or__(self, other: Needs) -> Needs:
        return Needs(
            self.hidden | other.hidden,
            self.attn_probs | other.attn_probs,
            self.attn_context | other.attn_context,
        )


@dataclass
class Features:
    """Outputs of one forward pass. Tensors are (B, T, ...) over the batch's padded length."""

    logits: torch.Tensor  # (B, C)
    hidden: dict[int, torch.Tensor] = field(default_factory=dict)  # layer -> (B, T, d)
    attn_probs: dict[int, torch.Tensor] = field(default_factory=dict)  # layer -> (B, H, T, T)
    attn_context: dict[int, torch.Tensor] = field(default_factory=dict)  # layer -> (B, T, d)

    def detached(self) -> Features:
        return Features(
            self.logits.detach(),
            {k: v.detach() for k, v in self.hidden.items()},
            {k: v.detach() for k, v in self.attn_probs.items()},
            {k: v.detach() for k, v in self.attn_context.items()},
        )


@dataclass(frozen=True)
class Shape:
    """The few numbers of an encoder that distillation cares about."""

    layers: int
    width: int
    heads: int
    intermediate: int
    architecture: str  # "bert" | "distilbert"

    @staticmethod
    def of(config: PretrainedConfig) -> Shape:
        if config.model_type == "distilbert":
            return Shape(
                config.n_layers, config.dim, config.n_heads, config.hidden_dim, "distilbert"
            )
        return Shape(
            config.num_hidden_layers,
            config.hidden_size,
            config.num_attention_heads,
            config.intermediate_size,
            "bert" if config.model_type == "bert" else config.model_type,
        )
