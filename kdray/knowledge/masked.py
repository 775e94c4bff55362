"""Masked per-example reductions shared by the knowledge losses (padding never counts)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kdray.base.tensors import default_float
from kdray.knowledge.base import ExampleLoss

NEG = -1e9  # a finite -inf: masked logits vanish in softmax without producing NaN


def masked_mse(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor) -> ExampleLoss:
    """(a - b)^2 over the positions where `mask` is true, per example: the sum and the number
    of valid entries of each (so the batch mean is the mean over every valid entry).

    a, b: (B, T, ...) ; mask: broadcastable to a's leading dims, e.g. (B, T) or (B, 1, T, T).
    """
    m = mask.to(a.dtype)
    while m.dim() < a.dim():
        m = m.unsqueeze(-1)
    m = m.expand_as(a)
    dims = tuple(range(1, a.dim()))
    return ExampleLoss(((a - b).pow(2) * m).sum(dims), m.sum(dims))


def row_kl(
    t_logits: torch.Tensor, s_logits: torch.Tensor, key_mask: torch.Tensor | None = None
) -> ExampleLoss:
    """KL(softmax(t) || softmax(s)) of each valid row, softmax over the last dim, summed per
    example (dim 0) with its number of valid rows as mass: the batch mean is the mean over
    every valid row of the batch.

    t_logits, s_logits: (B, ..., R, R') ; key_mask: (B, ..., R') bool, broadcast over rows; a
    row is valid when its own index is a valid key (square relations), or always when no mask
    is given.
    """
    if key_mask is not None:
        km = key_mask.unsqueeze(-2)  # (B, ..., 1, R')
        t_logits = t_logits.masked_fill(~km, NEG)
        s_logits = s_logits.masked_fill(~km, NEG)
    log_pt = F.log_softmax(default_float(t_logits), dim=-1)
    log_ps = F.log_softmax(default_float(s_logits), dim=-1)
    kl = (log_pt.exp() * (log_pt - log_ps)).sum(-1).clamp_min(0)  # (B, ..., R); >= 0 up to rounding
    dims = tuple(range(1, kl.dim()))
    if key_mask is None:
        rows = kl.new_full((kl.shape[0],), float(kl[0].numel()))
        return ExampleLoss(kl.sum(dims) if dims else kl, rows if dims else None)
    valid = key_mask.expand(kl.shape).to(kl.dtype)
    return ExampleLoss((kl * valid).sum(dims), valid.sum(dims))
