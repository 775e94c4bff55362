"""Tokenised examples stored ragged: every example's token ids in one flat tensor with offsets
(no padding stored); `TokenizedSplit.batch` pads a batch dynamically."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from kdray.base.tensors import gather_padded, offsets_from_lengths

_STATE_KEYS = ("input_ids", "token_type_ids", "offsets", "labels")


@dataclass
class TokenizedSplit:
    """Tokenised examples stored ragged: row i is `input_ids[offsets[i]:offsets[i + 1]]`."""

    input_ids: torch.Tensor  # (total_tokens,) int64, all examples concatenated
    token_type_ids: torch.Tensor  # (total_tokens,) int64 (zeros if the tokenizer gives none)
    offsets: torch.Tensor  # (n + 1,) int64
    labels: torch.Tensor  # (n,) int64, or float32 for regression

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def lengths(self) -> torch.Tensor:
        """(n,) token count of every example."""
        return self.offsets[1:] - self.offsets[:-1]  # (n,)

    def subset(self, idx: torch.Tensor) -> TokenizedSplit:
        """The examples at row numbers `idx` (in that order), as a new compact split."""
        idx = torch.as_tensor(idx, dtype=torch.long)  # (m,)
        lengths = self.lengths[idx]  # (m,)
        offsets = offsets_from_lengths(lengths)  # (m + 1,)
        total = int(offsets[-1])
        # Source position of every output token: its row's old start + its place in the row.
        shift = torch.repeat_interleave(
            self.offsets[idx] - offsets[:-1], lengths, output_size=total
        )
        src = torch.arange(total) + shift  # (total,)
        return TokenizedSplit(
            input_ids=self.input_ids[src],  # (total,)
            token_type_ids=self.token_type_ids[src],  # (total,)
            offsets=offsets,
            labels=self.labels[idx],  # (m,)
        )

    def batch(self, idx: torch.Tensor) -> dict[str, torch.Tensor]:
        """Rows `idx` padded to their longest: the model inputs plus labels and row numbers.

        Returns input_ids (B, L) padded with id 0, attention_mask (B, L) int64,
        token_type_ids (B, L), labels (B,) and index (B,) = idx.
        """
        idx = torch.as_tensor(idx, dtype=torch.long)  # (B,)
        input_ids, mask = gather_padded(self.input_ids, self.offsets, idx, pad_value=0)  # (B, L)
        token_type_ids, _ = gather_padded(self.token_type_ids, self.offsets, idx)  # (B, L)
        return {
            "input_ids": input_ids,  # (B, L)
            "attention_mask": mask.long(),  # (B, L)
            "token_type_ids": token_type_ids,  # (B, L)
            "labels": self.labels[idx],  # (B,)
            "index": idx,  # (B,)
        }

    def to_state(self) -> dict[str, torch.Tensor]:
        """Plain dict of tensors (for `torch.save` / `torch.load(weights_only=True)`)."""
        return {k: getattr(self, k) for k in _STATE_KEYS}

    @classmethod
    def from_state(cls, state: dict[str, torch.Tensor]) -> TokenizedSplit:
        """Inverse of `to_state`; KeyError/ValueError when the dict is not one of ours."""
        split = cls(**{k: state[k] for k in _STATE_KEYS})
        n = len(split.labels)
        if split.offsets.shape != (n + 1,) or int(split.offsets[-1]) != len(split.input_ids):
            raise ValueError("inconsistent TokenizedSplit state (offsets vs tokens/labels)")
        if split.token_type_ids.shape != split.input_ids.shape:
            raise ValueError("inconsistent TokenizedSplit state (token_type_ids vs input_ids)")
        return split
