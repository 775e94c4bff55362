"""Masked reductions shared by the knowledge losses (padding never counts)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

NEG = -1e9  # a finite -inf: masked logits vanish in softmax without producing NaN


def masked_mse(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of (a - b)^2 over the positions where `mask` is true.

    a, b: (B, T, ...) ; mask: broadcastable to a's leading dims, e.g. (B, T) or (B, 1, T, T).
    """
    m = mask.to(a.dtype)
    while m.dim() < a.dim():
        m = m.unsqueeze(-1)
    m = m.expand_as(a)
    return ((a - b).pow(2) * m).sum() / m.sum().clamp_min(1)


def row_kl(
    t_logits: torch.Tensor, s_logits: torch.Tensor, key_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean over valid rows of KL(softmax(t) || softmax(s)), softmax over the last dim.

    t_logits, s_logits: (..., R, R') ; key_mask: (..., R') bool, broadcast over rows; a row is
    valid when its own index is a valid key (square relations), or always when no mask is given.
    """
    if key_mask is not None:
        km = key_mask.unsqueeze(-2)  # (..., 1, R')
        t_logits = t_logits.masked_fill(~km, NEG)
        s_logits = s_logits.masked_fill(~km, NEG)
    log_pt = F.log_softmax(t_logits.float(), dim=-1)
    log_ps = F.log_softmax(s_logits.float(), dim=-1)
    kl = (log_pt.exp() * (log_pt - log_ps)).sum(-1).clamp_min(0)  # (..., R); >= 0 up to rounding
    if key_mask is None:
        return kl.mean()
    rows = key_mask.expand(kl.shape).to(kl.dtype)
    return (kl * rows).sum() / rows.sum().clamp_min(1)
