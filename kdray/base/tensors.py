"""Ragged storage: variable-length rows kept flat with offsets, gathered into padded batches.

Tokenised examples and cached teacher outputs share this layout: row i is
`flat[offsets[i]:offsets[i + 1]]`. `gather_padded` builds a padded batch with one indexing
operation (no per-example Python loop), so batches and cached features line up by construction.
"""

from __future__ import annotations

import torch


def offsets_from_lengths(lengths: torch.Tensor) -> torch.Tensor:
    """(n,) lengths -> (n + 1,) int64 offsets starting at 0."""
    return torch.cat([lengths.new_zeros(1), lengths.cumsum(0)]).long()


def padded_index(offsets: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat positions of rows `idx` laid out right-padded.

    Returns (where (B, L) int64 positions into the flat tensor, 0 at padding; mask (B, L) bool),
    L = the longest of the rows. `flat[where]` gathers a batch; `flat[where[mask]] = x[mask]`
    scatters one back.
    """
    starts = offsets[idx]  # (B,)
    lengths = offsets[idx + 1] - starts  # (B,)
    width = int(lengths.max()) if len(idx) else 0
    pos = torch.arange(width, device=offsets.device)  # (L,)
    mask = pos[None, :] < lengths[:, None]  # (B, L)
    where = torch.where(mask, starts[:, None] + pos[None, :], 0)  # (B, L)
    return where, mask


def gather_padded(
    flat: torch.Tensor, offsets: torch.Tensor, idx: torch.Tensor, pad_value: float = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows `idx` of a ragged tensor, right-padded to the longest of them.

    flat: (total, *feature); offsets: (n + 1,); idx: (B,) row numbers.
    Returns (padded (B, L, *feature), mask (B, L) bool).
    """
    where, mask = padded_index(offsets, idx)
    out = flat[where]  # (B, L, *feature)
    fill = ~mask.view(*mask.shape, *([1] * (out.dim() - 2)))
    out = out & ~fill if out.dtype == torch.bool else out.masked_fill(fill, pad_value)
    return out, mask


def default_float(x: torch.Tensor) -> torch.Tensor:
    """`x` in torch's default floating dtype: float32 unless the caller set another. Losses,
    evaluation and the agents compute in it whatever the features came in (bf16 under autocast,
    float16 from the teacher cache); `torch.set_default_dtype(torch.float64)` runs a whole
    trial in float64 (the regression scores aside, read as float32), which the golden-run
    tests use to pin behaviour on any CPU."""
    return x.to(torch.get_default_dtype())
