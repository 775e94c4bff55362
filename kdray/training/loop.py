"""Stateless pieces of a training loop: the seeded batch order, the optimiser and one step of
it, evaluation and prediction."""

from __future__ import annotations

import ctypes
import functools
import math
import os
import sys
from collections.abc import Iterable

import torch
from transformers import PreTrainedModel
from transformers import get_linear_schedule_with_warmup as linear_schedule

from kdray.base.tensors import default_float
from kdray.config import TrainerConfig
from kdray.data.dataset import TokenizedSplit
from kdray.data.metrics import compute_metrics
from kdray.data.tasks import TaskSpec
from kdray.models.classifier import encode
from kdray.models.device import autocast
from kdray.models.features import Needs

#: glibc's mallopt parameters (malloc.h) and how much freed heap memory is kept for reuse.
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4
KEEP_FREED_BYTES = 1 << 30


@functools.cache
def reuse_freed_cpu_memory() -> bool:
    """Serve large CPU allocations from glibc's heap, where freed blocks stay mapped for reuse.

    glibc hands every block over 32 MB (its largest mmap threshold) to mmap and unmaps it when
    freed, so a buffer allocated at every step, such as a BERT student's dense word-embedding
    gradient (47 MB at 30522 x 384), page-faults all its pages again each step: 11k faults per
    step, about 30 ms of a 400 ms CPU step on 2 cores, and a cost that differs from one
    process to the next. With mmap off for malloc (glibc still falls back to it when the heap
    cannot grow) and freed memory kept up to KEEP_FREED_BYTES, those blocks are reused, as
    jemalloc or tcmalloc would (PyTorch's advice for CPU training). Process-wide, applied
    once; Linux with glibc only; KDRAY_MALLOC=system leaves the allocator alone. Returns
    whether it applied."""
    if os.environ.get("KDRAY_MALLOC") == "system" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(_M_MMAP_MAX, 0)) and bool(
            libc.mallopt(_M_TRIM_THRESHOLD, KEEP_FREED_BYTES)
        )
    except (OSError, AttributeError):  # not glibc (musl, ...): its own allocator stays
        return False


class BatchOrder:
    """Seeded reshuffle every epoch; the batch of any step is known without replaying.

    `lengths` (N,): group batches by length, as Hugging Face's `group_by_length` does: the
    epoch's shuffled rows are cut into mega-batches of MEGA_BATCHES batches, each sorted by
    length and cut into batches, and the epoch's batches are then shuffled again, so a batch
    pads to a length close to its rows' own (SST-2 at max_length 64: a third of the tokens)
    while the order of lengths stays random."""

    #: Batches per mega-batch (Hugging Face's LengthGroupedSampler uses 50).
    MEGA_BATCHES = 50

    def __init__(self, n: int, batch_size: int, seed: int,
                 lengths: torch.Tensor | None = None) -> None:  # fmt: skip
        self.n, self.batch_size, self.seed = n, min(batch_size, n), seed
        self.per_epoch = max(1, n // self.batch_size)
        self.lengths = lengths
        self._epoch, self._perm = -1, torch.empty(0, dtype=torch.long)

    def __call__(self, step: int) -> torch.Tensor:
        epoch, b = divmod(step, self.per_epoch)
        if epoch != self._epoch:
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._epoch, self._perm = epoch, torch.randperm(self.n, generator=gen)
            if self.lengths is not None:
                self._perm = self._grouped(self._perm, gen)
        return self._perm[b * self.batch_size : (b + 1) * self.batch_size]

    def _grouped(self, perm: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """`perm`'s first per_epoch batches regrouped by length (rows past them dropped, as
        the plain order drops them)."""
        assert self.lengths is not None
        bs = self.batch_size
        rows = perm[: self.per_epoch * bs]
        mega = bs * self.MEGA_BATCHES
        chunks = [c[torch.argsort(self.lengths[c], descending=True, stable=True)]
                  for c in rows.split(mega)]  # fmt: skip
        batches = torch.cat(chunks).view(self.per_epoch, bs)  # (per_epoch, bs)
        return batches[torch.randperm(self.per_epoch, generator=gen)].reshape(-1)


def make_optimizer(
    params: Iterable[torch.nn.Parameter], tr: TrainerConfig, lr_steps: int
) -> tuple[torch.optim.AdamW, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW (no weight decay on biases and norms) and its linear warm-up/decay schedule over
    `lr_steps` steps."""
    params = list(params)
    optimizer = torch.optim.AdamW(
        [
            {"params": [p for p in params if p.dim() >= 2], "weight_decay": tr.weight_decay},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
        ],
        lr=tr.learning_rate,
        fused=True,  # one kernel for all parameters: ~5x faster steps than the loop on CPU
    )
    n = lr_steps
    return optimizer, linear_schedule(optimizer, int(tr.warmup_ratio * n), n)


def optimizer_step(
    losses: dict[str, torch.Tensor],
    weights: dict[str, float],
    optimizer: torch.optim.Optimizer,
    lr_schedule: torch.optim.lr_scheduler.LRScheduler,
    max_grad_norm: float,
) -> float:
    """One step on Σ_k weights[k]·losses[k]: the weighted loss (0.0 when there is no loss: the
    schedule still advances). A non-finite loss updates nothing and is returned as it is."""
    if not losses:  # a hard action that selects nothing: the step trains nothing
        lr_schedule.step()
        return 0.0
    total = torch.stack([weights[k] * v for k, v in losses.items()]).sum()
    value = float(total.detach())
    if not math.isfinite(value):
        return value
    optimizer.zero_grad(set_to_none=True)
    total.backward()
    params = [p for g in optimizer.param_groups for p in g["params"]]
    torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
    optimizer.step()
    lr_schedule.step()
    return value


#: How much padding an evaluation batch may add over its rows' own tokens (eval_batches).
EVAL_PADDING_SLACK = 1.25


def eval_batches(lengths: torch.Tensor, batch_size: int) -> list[tuple[int, int]]:
    """Consecutive batches [start, end) over rows sorted longest first, each of at most
    `batch_size` rows and padding to its first row's length at most EVAL_PADDING_SLACK times
    its rows' own tokens: the long rows go in small batches, the short ones in full batches,
    and nothing computes much padding (one batch of 128 SST-2 rows pads to ~3x its tokens)."""
    lens = lengths.tolist()
    batches, start = [], 0
    while start < len(lens):
        end, tokens = start + 1, lens[start]
        while (
            end < len(lens)
            and end - start < batch_size
            and (end - start + 1) * lens[start] <= EVAL_PADDING_SLACK * (tokens + lens[end])
        ):
            tokens += lens[end]
            end += 1
        batches.append((start, end))
        start = end
    return batches


def _sorted_logits(
    model: PreTrainedModel,
    split: TokenizedSplit,
    device: torch.device,
    batch_size: int,
    bf16: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits of `model` on `split` in longest-first order (eval mode, restored after):
    (logits (N, C) on CPU in torch's default dtype, order (N,)), row i of the logits being
    example order[i]."""
    was_training = model.training
    model.eval()
    order = torch.argsort(split.lengths, descending=True)  # (N,)
    logits = []
    for start, end in eval_batches(split.lengths[order], batch_size):
        idx = order[start:end]
        batch = {k: v.to(device) for k, v in split.batch(idx).items()}
        with autocast(device, bf16):
            logits.append(default_float(encode(model, batch, Needs()).logits).cpu())
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
    """Logits (N, C) on CPU (torch's default dtype) of `model` on `split`, row i for example i
    of the split (computed in the same longest-first batches as `evaluate`, so the values are
    its own)."""
    return _split_order(*_sorted_logits(model, split, device, batch_size, bf16))


def _split_order(z: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """Rows of longest-first logits (N, C) back in the split's order."""
    out = torch.empty_like(z)
    out[order] = z
    return out


@torch.inference_mode()
def scored(
    model: PreTrainedModel,
    split: TokenizedSplit,
    spec: TaskSpec,
    device: torch.device,
    batch_size: int,
    bf16: bool = False,
) -> tuple[dict[str, float], torch.Tensor]:
    """`evaluate`'s metrics and the logits (N, C) on CPU (torch's default dtype) they came
    from, row i for example i of the split."""
    z, order = _sorted_logits(model, split, device, batch_size, bf16)  # (N, C), (N,)
    labels = split.labels[order]
    if spec.is_regression:
        loss = torch.nn.functional.mse_loss(z.squeeze(-1), default_float(labels))
    else:
        loss = torch.nn.functional.cross_entropy(z, labels)
    return {**compute_metrics(spec, z, labels), "loss": float(loss)}, _split_order(z, order)


def evaluate(
    model: PreTrainedModel,
    split: TokenizedSplit,
    spec: TaskSpec,
    device: torch.device,
    batch_size: int,
    bf16: bool = False,
) -> dict[str, float]:
    """Metrics and mean hard loss of `model` on `split` (longest-first batches, eval mode)."""
    return scored(model, split, spec, device, batch_size, bf16)[0]
