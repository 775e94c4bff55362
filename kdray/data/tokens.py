"""Tokenised examples stored ragged: every example's token ids in one flat tensor with offsets
(no padding stored); `TokenizedSplit.batch` pads a batch dynamically. `tokenize_split` fills
one from a `datasets.Dataset` (your own data) through `Dataset.map` and Arrow."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from kdray.base.tensors import gather_padded, offsets_from_lengths

if TYPE_CHECKING:
    import datasets

    from kdray.data.tasks import TaskSpec

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


# ------------------------------------------------------------- your own data, through Arrow


def batch_encoder(tokenizer: Any, max_length: int) -> Any:
    """texts (one list per text column) -> (token ids per row, token type ids per row or None):
    the fast tokenizer's Rust `encode_batch_fast` where there is one (the same ids as the
    tokenizer's own call, without its per-row Python conversions), else the tokenizer."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None and hasattr(backend, "encode_batch_fast"):
        fast = copy.deepcopy(backend)
        fast.enable_truncation(max_length=max_length, strategy="longest_first")
        fast.no_padding()

        def rust(texts: list[list[str]]) -> tuple[list[list[int]], list[list[int]] | None]:
            encs = fast.encode_batch_fast(
                list(zip(*texts, strict=True)) if len(texts) == 2 else texts[0]
            )
            return [e.ids for e in encs], [e.type_ids for e in encs]

        return rust

    def python(texts: list[list[str]]) -> tuple[list[list[int]], list[list[int]] | None]:
        enc = tokenizer(*texts, truncation=True, max_length=max_length, padding=False,
                        return_attention_mask=False)  # fmt: skip
        return enc["input_ids"], enc.get("token_type_ids")

    return python


def tokenize_split(
    ds: datasets.Dataset, spec: TaskSpec, tokenizer: Any, max_length: int, batch_size: int = 2000
) -> TokenizedSplit:
    """Tokenise `ds` with `Dataset.map(batched=True)` into Arrow (int32 token ids), labels as
    ids (or floats), then take the flat token ids and offsets from the Arrow lists (no Python
    list per row of the whole split)."""
    import datasets
    import numpy as np
    import pyarrow as pa
    import torch

    ids = {name: i for i, name in enumerate(spec.labels)}
    feature = ds.features[spec.label_column]
    to_y: Any
    if spec.is_regression:
        to_y = float
    elif isinstance(feature, datasets.ClassLabel):
        # a ClassLabel holds indices into its own names, whose order `spec.labels` may change
        to_y = {i: ids[n] for i, n in enumerate(feature.names)}.__getitem__
    else:
        to_y = lambda v: ids[str(v)]  # noqa: E731 - labels are named by their text
    columns, label = spec.text_columns, spec.label_column
    encoder = batch_encoder(tokenizer, max_length)
    tokens = datasets.Sequence(datasets.Value("int32"))
    y_type = datasets.Value("float32" if spec.is_regression else "int64")
    features = datasets.Features({"input_ids": tokens, "token_type_ids": tokens, "y": y_type})

    def encode(batch: dict[str, list[Any]]) -> dict[str, Any]:
        texts = [[t if isinstance(t, str) else str(t) for t in batch[c]] for c in columns]
        input_ids, token_types = encoder(texts)
        values = batch[label]
        return {
            "input_ids": input_ids,
            "token_type_ids": token_types or [[0] * len(row) for row in input_ids],
            "y": [to_y(v) for v in values],
        }  # fmt: skip

    if len(ds) == 0:
        empty = torch.zeros(0, dtype=torch.long)
        dtype = torch.float32 if spec.is_regression else torch.long
        return TokenizedSplit(empty, empty.clone(), torch.zeros(1, dtype=torch.long),
                              torch.zeros(0, dtype=dtype))  # fmt: skip
    mapped = ds.map(encode, batched=True, batch_size=batch_size, remove_columns=ds.column_names,
                    features=features, keep_in_memory=True, load_from_cache_file=False)  # fmt: skip
    table = mapped.data.table
    del mapped
    n = table.num_rows

    def flat(column: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
        """A list column as (values int64, lengths), chunk by chunk: no combined copy."""
        chunks = column.chunks
        values = np.empty(sum(len(c.flatten()) for c in chunks), dtype=np.int64)
        lengths = np.empty(n, dtype=np.int64)
        pos = row = 0
        for c in chunks:
            v = c.flatten().to_numpy(zero_copy_only=False)
            values[pos : pos + len(v)] = v
            ln = np.diff(c.offsets.to_numpy())
            lengths[row : row + len(ln)] = ln
            pos, row = pos + len(v), row + len(ln)
        return values, lengths

    input_ids, lengths = flat(table.column("input_ids"))
    token_types = flat(table.column("token_type_ids"))[0]
    y = table.column("y").to_numpy()
    del table
    return TokenizedSplit(
        input_ids=torch.from_numpy(input_ids),  # (total,)
        token_type_ids=torch.from_numpy(token_types),  # (total,)
        offsets=offsets_from_lengths(torch.from_numpy(lengths)),  # (n + 1,)
        labels=torch.from_numpy(y.astype(np.float32 if spec.is_regression else np.int64)),
    )
