"""Teacher outputs computed once and reused by every training step (and every trial).

For one (teacher, task, split, max length, requested outputs) the teacher runs once in eval
mode over the split; its logits (fp32) and the hidden states, attention context vectors and
attention probabilities that the chosen knowledge reads (fp16) are stored ragged, without
padding, in the split's own token layout. `TeacherOutputs.features(idx)` gathers a batch's
`Features` with one indexing operation per tensor, padded exactly like the student's batch,
so the training loop runs no teacher forward pass. When the outputs would exceed the memory
budget the trainer falls back to live teacher forwards: same batches, same losses.
"""

from __future__ import annotations

import contextlib
import json
import logging
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from tqdm.auto import tqdm

from kdray.base.io import atomic_torch_save, content_key
from kdray.base.tensors import default_float, offsets_from_lengths, padded_index
from kdray.data.dataset import TokenizedSplit
from kdray.models.classifier import encode
from kdray.models.features import Features, Needs

if TYPE_CHECKING:
    from transformers import PreTrainedModel

log = logging.getLogger(__name__)

STORE = torch.float16


@dataclass
class TeacherOutputs:
    """Ragged teacher outputs for every example of one split."""

    offsets: torch.Tensor  # (n + 1,) token offsets, as in the split
    logits: torch.Tensor  # (n, C) fp32
    hidden: dict[int, torch.Tensor] = field(default_factory=dict)  # (tokens, d) fp16
    attn_context: dict[int, torch.Tensor] = field(default_factory=dict)  # (tokens, d) fp16
    attn_probs: dict[int, torch.Tensor] = field(default_factory=dict)  # (Σ H·T_i², ) fp16
    heads: int = 0
    #: Fingerprint of the tokenised data these outputs were computed on (TaskData.fingerprint).
    fingerprint: str = ""

    def matches(self, split: TokenizedSplit, fingerprint: str) -> bool:
        """Whether these outputs belong to exactly this split (same rows, same tokens)."""
        return self.fingerprint == fingerprint and torch.equal(self.offsets, split.offsets)

    @property
    def nbytes(self) -> int:
        tensors = [self.logits, *self.hidden.values(), *self.attn_context.values()]
        tensors += list(self.attn_probs.values())
        return sum(t.numel() * t.element_size() for t in tensors)

    def features(
        self, idx: torch.Tensor, device: torch.device | str = "cpu", needs: Needs | None = None
    ) -> Features:
        """The batch of rows `idx` (only `needs`, when given), padded to its longest row, in
        torch's default dtype (float32 unless set) on `device`. Padding positions hold
        arbitrary values, as a live forward pass gives there too; every loss masks them."""
        idx = idx.cpu()  # the store lives in host memory
        feats = Features(logits=self.logits[idx].to(device))
        where, _ = padded_index(self.offsets, idx)  # (B, L) token positions
        square = None  # (B, H, L, L) attention-map positions, built only when needed
        for name in ("hidden", "attn_context", "attn_probs"):
            wanted = getattr(needs, name) if needs is not None else None
            for layer, flat in getattr(self, name).items():
                if wanted is not None and layer not in wanted:
                    continue
                if name == "attn_probs" and square is None:
                    square, _ = _square_index(self.offsets, idx, self.heads)
                index = square if name == "attn_probs" else where
                getattr(feats, name)[layer] = default_float(flat[index].to(device))
        return feats

    def covers(self, needs: Needs) -> bool:
        """Whether every output in `needs` is stored."""
        return (
            needs.hidden <= self.hidden.keys()
            and needs.attn_context <= self.attn_context.keys()
            and needs.attn_probs <= self.attn_probs.keys()
        )

    def to_state(self) -> dict[str, torch.Tensor]:
        state = {
            "offsets": self.offsets,
            "logits": self.logits,
            "heads": torch.tensor(self.heads),
            "fingerprint": torch.tensor(list(self.fingerprint.encode()), dtype=torch.uint8),
        }
        for name in ("hidden", "attn_context", "attn_probs"):
            for layer, t in getattr(self, name).items():
                state[f"{name}.{layer}"] = t
        return state

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        """Pickled as raw byte arrays, which pickle 5 hands over out of band: Ray's object
        store (a sweep's tune.with_parameters) then keeps one copy in the node's shared memory
        and every trial reads it in place, where pickled tensors would be copied and unpacked
        again by every trial (a private copy each). torch.save goes through to_state and is
        unaffected."""
        return _from_buffers, ({k: _as_buffer(t) for k, t in self.to_state().items()},)

    @classmethod
    def from_state(cls, state: dict[str, torch.Tensor]) -> TeacherOutputs:
        fingerprint = bytes(state["fingerprint"].tolist()).decode()
        out = cls(
            state["offsets"], state["logits"], heads=int(state["heads"]), fingerprint=fingerprint
        )
        for key, t in state.items():
            name, _, layer = key.partition(".")
            if layer:
                getattr(out, name)[int(layer)] = t
        return out


def _as_buffer(t: torch.Tensor) -> tuple[np.ndarray, torch.dtype, tuple[int, ...]]:
    return t.contiguous().reshape(-1).view(torch.uint8).numpy(), t.dtype, tuple(t.shape)


def _from_buffers(
    buffers: dict[str, tuple[np.ndarray, torch.dtype, tuple[int, ...]]],
) -> TeacherOutputs:
    """TeacherOutputs.__reduce__'s inverse: tensors over the arrays, not copies of them (from
    Ray's object store the arrays are read-only, and nothing writes to teacher outputs)."""
    with warnings.catch_warnings():  # "the given NumPy array is not writable"
        warnings.simplefilter("ignore", UserWarning)
        state = {
            k: torch.from_numpy(a).view(dtype).reshape(shape)
            for k, (a, dtype, shape) in buffers.items()
        }
    return TeacherOutputs.from_state(state)


def _square_offsets(offsets: torch.Tensor, heads: int) -> torch.Tensor:
    """Offsets of each example's (H, T_i, T_i) block in the flat attention store."""
    lengths = offsets[1:] - offsets[:-1]
    return offsets_from_lengths(heads * lengths * lengths)


def _square_index(
    offsets: torch.Tensor, idx: torch.Tensor, heads: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat positions (B, H, L, L) of rows `idx` of the attention store, and the valid mask."""
    sq = _square_offsets(offsets, heads)
    lengths = (offsets[idx + 1] - offsets[idx])[:, None, None, None]  # (B, 1, 1, 1)
    width = int(lengths.max()) if len(idx) else 0
    h = torch.arange(heads)[None, :, None, None]
    q = torch.arange(width)[None, None, :, None]
    k = torch.arange(width)[None, None, None, :]
    mask = (q < lengths) & (k < lengths)  # (B, 1, L, L)
    where = sq[idx][:, None, None, None] + h * lengths * lengths + q * lengths + k
    mask = mask.expand(-1, heads, -1, -1)
    return torch.where(mask, where, 0), mask


def estimate_bytes(split: TokenizedSplit, needs: Needs, width: int, heads: int) -> int:
    """Bytes the fp16 features of `needs` would take for `split` (logits are negligible)."""
    lengths = split.lengths.long()
    tokens = int(lengths.sum())
    feature_layers = len(needs.hidden) + len(needs.attn_context)
    squares = int((lengths * lengths).sum()) * heads * len(needs.attn_probs)
    return 2 * (feature_layers * tokens * width + squares)


@torch.inference_mode()
def compute_teacher_outputs(
    teacher: PreTrainedModel,
    split: TokenizedSplit,
    needs: Needs,
    batch_size: int = 128,
    device: torch.device | str = "cpu",
    progress: bool = False,
    autocast: bool = False,
    fingerprint: str = "",
) -> TeacherOutputs:
    """Run the teacher (eval mode) once over `split`, longest-first batches, store ragged."""
    teacher.eval()
    n = len(split)
    offsets = split.offsets
    tokens = int(offsets[-1])
    heads = int(getattr(teacher.config, "num_attention_heads", 0) or 0)
    out = TeacherOutputs(offsets, torch.empty(0), heads=heads, fingerprint=fingerprint)
    order = torch.argsort(split.lengths, descending=True)
    sq = _square_offsets(offsets, heads) if needs.attn_probs else None
    logits: torch.Tensor | None = None
    batches = range(0, n, batch_size)
    for start in tqdm(batches, desc="teacher outputs", disable=not progress, leave=False):
        idx = order[start : start + batch_size]
        batch = {k: v.to(device) for k, v in split.batch(idx).items()}
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
            feats = encode(teacher, batch, needs)
        if logits is None:
            logits = torch.empty(n, feats.logits.shape[-1], dtype=torch.get_default_dtype())
        logits[idx] = default_float(feats.logits).cpu()
        where, mask = padded_index(offsets, idx)
        dest = where[mask]
        for name in ("hidden", "attn_context"):
            for layer, t in getattr(feats, name).items():
                store = getattr(out, name)
                if layer not in store:
                    store[layer] = torch.empty(tokens, t.shape[-1], dtype=STORE)
                store[layer][dest] = t.to(STORE).cpu()[mask]
        if needs.attn_probs:
            assert sq is not None
            w, m = _square_index(offsets, idx, heads)
            for layer, t in feats.attn_probs.items():
                if layer not in out.attn_probs:
                    out.attn_probs[layer] = torch.empty(int(sq[-1]), dtype=STORE)
                out.attn_probs[layer][w[m]] = t.to(STORE).cpu()[m]
    assert logits is not None
    out.logits = logits
    return out


def model_fingerprint(path: str) -> str:
    """The model folder plus the sizes and times of its files: a re-trained model in the same
    folder gets a new key."""
    folder = Path(path)
    if not folder.is_dir():
        return path  # a hub id: its revision is fixed by the hub cache
    files = sorted(f for f in folder.iterdir() if f.is_file())
    return json.dumps(
        [str(folder)] + [[f.name, f.stat().st_size, f.stat().st_mtime_ns] for f in files]
    )


def cache_key(
    teacher_id: str, data_fingerprint: str, split: str, needs: Needs, precision: str
) -> str:
    """Stable key over everything that determines the stored outputs, the precision the
    teacher ran in among them (`bf16` autocast, or torch's default dtype)."""
    key = {
        "teacher": teacher_id,
        "data": data_fingerprint,
        "split": split,
        "hidden": sorted(needs.hidden),
        "attn_context": sorted(needs.attn_context),
        "attn_probs": sorted(needs.attn_probs),
        "precision": precision,
    }
    return content_key(key, 16)


def load_or_compute(
    cache_dir: Path | None,
    key: str,
    split: TokenizedSplit,
    fingerprint: str,
    compute: Callable[[], TeacherOutputs],
) -> TeacherOutputs:
    """Read the outputs stored under `key` (checked against the split), or compute and store."""
    if cache_dir is None:
        return compute()
    path = cache_dir / "teacher_outputs" / f"{key}.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    # one process computes, the others (two sweeps, or a sweep's trials) wait and read it
    with cache_lock(path, "teacher outputs"):
        if path.is_file():
            try:
                outputs = TeacherOutputs.from_state(torch.load(path, weights_only=True))
                if outputs.matches(split, fingerprint):
                    return outputs
                log.warning("teacher-output cache %s belongs to other data; recomputing", path)
            except Exception as exc:  # unreadable (an older format, a damaged disk): recompute
                log.warning("teacher-output cache %s unreadable (%s); recomputing", path, exc)
        outputs = compute()
        atomic_torch_save(outputs.to_state(), path)  # whole or not at all, even when killed
        return outputs


@contextlib.contextmanager
def cache_lock(path: Path, what: str) -> Iterator[None]:
    """Hold `path`.lock (an OS lock: freed when its holder dies, so a killed process never
    blocks the next); when another process holds it, say so, then wait for it."""
    from filelock import FileLock, Timeout

    lock = FileLock(f"{path}.lock")
    try:
        lock.acquire(timeout=0)
    except Timeout:
        log.info("another process is preparing %s (%s); waiting for it", what, path)
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


def prepare_outputs(
    path: str,
    split: TokenizedSplit,
    fingerprint: str,
    needs: Needs,
    cache_dir: Path | None,
    *,
    model: PreTrainedModel | None = None,
    batch_size: int = 128,
    device: torch.device | str = "cpu",
    progress: bool = False,
    autocast: bool = False,
) -> TeacherOutputs:
    """The outputs `needs` of the teacher at `path` on `split`: from the cache under the
    teacher's own fingerprint, or computed once (with `model` when it is loaded already, else
    loading it) and stored. The one way a trainer's setup and a sweep driver get them."""

    def compute() -> TeacherOutputs:
        from kdray.models.classifier import load_classifier

        teacher = model
        if teacher is None:
            teacher = load_classifier(path, eager=bool(needs.attn_probs))
            teacher.to(device)
        return compute_teacher_outputs(
            teacher,
            split,
            needs,
            batch_size=batch_size,
            device=device,
            progress=progress,
            autocast=autocast,
            fingerprint=fingerprint,
        )

    precision = str(torch.get_default_dtype()).removeprefix("torch.")
    precision = f"bf16-{precision}" if autocast else precision
    key = cache_key(model_fingerprint(path), fingerprint, "train", needs, precision)
    return load_or_compute(cache_dir, key, split, fingerprint, compute)
