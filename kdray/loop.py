"""Stateless pieces of a training loop: the seeded batch order, evaluation and prediction,
autocast."""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from transformers import PreTrainedModel

from kdray.data import TokenizedSplit
from kdray.features import Needs
from kdray.metrics import compute_metrics
from kdray.models import encode
from kdray.tasks import TaskSpec


def autocast(device: torch.device, bf16: bool) -> contextlib.AbstractContextManager[Any]:
    """bf16 autocast on CUDA when asked; nothing elsewhere."""
    if device.type == "cuda" and bf16:
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


class BatchOrder:
    """Seeded reshuffle every epoch; the batch of any step is known without replaying."""

    def __init__(self, n: int, batch_size: int, seed: int) -> None:
        self.n, self.batch_size, self.seed = n, min(batch_size, n), seed
        self.per_epoch = max(1, n // self.batch_size)
        self._epoch, self._perm = -1, torch.empty(0, dtype=torch.long)

    def __call__(self, step: int) -> torch.Tensor:
        epoch, b = divmod(step, self.per_epoch)
        if epoch != self._epoch:
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._epoch, self._perm = epoch, torch.randperm(self.n, generator=gen)
        return self._perm[b * self.batch_size : (b + 1) * self.batch_size]


def _sorted_logits(
    model: PreTrainedModel,
    split: TokenizedSplit,
    device: torch.device,
    batch_size: int,
    bf16: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits of `model` on `split` in longest-first order (eval mode, restored after):
    (logits (N, C) float32 on CPU, order (N,)), row i of the logits being example order[i]."""
    was_training = model.training
    model.eval()
    order = torch.argsort(split.lengths, descending=True)  # (N,)
    logits = []
    for start in range(0, len(split), batch_size):
        idx = order[start : start + batch_size]
        batch = {k: v.to(device) for k, v in split.batch(idx).items()}
        with autocast(device, bf16):
            logits.append(encode(model, batch, Needs()).logits.float().cpu())
    model.train(was_training)
    return torch.cat(logits), order  # (N, C), (N,)


@torch.inference_mode()
def predict(
    model: PreTrainedModel,
    split: TokenizedSplit,
    device: torch.device,
    batch_size: int,
    bf16: bool = False,
) -> torch.Tensor:
    """Logits (N, C) float32 on CPU of `model` on `split`, row i for example i of the split
    (computed in the same longest-first batches as `evaluate`, so the values are its own)."""
    z, order = _sorted_logits(model, split, device, batch_size, bf16)  # (N, C), (N,)
    out = torch.empty_like(z)
    out[order] = z  # back to the split's order
    return out


@torch.inference_mode()
def evaluate(
    model: PreTrainedModel,
    split: TokenizedSplit,
    spec: TaskSpec,
    device: torch.device,
    batch_size: int,
    bf16: bool = False,
) -> dict[str, float]:
    """Metrics and mean hard loss of `model` on `split` (longest-first batches, eval mode)."""
    z, order = _sorted_logits(model, split, device, batch_size, bf16)  # (N, C), (N,)
    labels = split.labels[order]
    if spec.is_regression:
        loss = torch.nn.functional.mse_loss(z.squeeze(-1), labels.float())
    else:
        loss = torch.nn.functional.cross_entropy(z, labels)
    return {**compute_metrics(spec, z, labels), "loss": float(loss)}
