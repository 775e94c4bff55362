"""GLUE tasks: ragged tokenised splits, the train/validation/reward carving, the cache.

The nine GLUE tasks are described as data in `kdray.data.tasks.TASKS` (one `TaskSpec` each): file
layout, column names, label strings, metrics (imported here too). Examples are read by
`kdray.data.glue` from a folder in the classic GLUE TSV layout (`<data_dir>/SST-2/train.tsv`,
`.../dev.tsv`) or from the `nyu-mll/glue` hub dataset, and tokenised once into a
`TokenizedSplit`: every
example's token ids concatenated into one flat tensor with offsets (no padding stored);
`TokenizedSplit.batch` pads a batch dynamically with `kdray.base.tensors.gather_padded`.

`load_task` carves three disjoint splits out of train.tsv (train, validation for model
selection, reward for selectors) with a seeded permutation, keeps the GLUE dev split(s) as the
reported test figure, and caches the tokenised result on disk keyed by everything it depends
on. Every problem with the data (missing folder or file, wrong columns, unknown label) is a
`DataError` raised before any model work, naming the file and the fix.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from kdray.base.errors import DataError
from kdray.base.io import atomic_torch_save, content_key
from kdray.base.tensors import offsets_from_lengths
from kdray.config import split_sizes
from kdray.data.glue import (  # noqa: F401 - re-exported: the loaders' public names
    GLUE_DIR_ENV,
    HUB_DATASET,
    RawSplit,
    glue_files,
    load_hub,
    read_glue_split,
    read_glue_tsv,
    resolve_data_dir,
)
from kdray.data.tasks import TASKS, TaskSpec, get_task  # noqa: F401 - TASKS re-exported
from kdray.data.tokens import _STATE_KEYS, TokenizedSplit

if TYPE_CHECKING:
    from kdray.config import DataConfig

log = logging.getLogger(__name__)

#: Bumped whenever the cached layout or the tokenisation recipe changes.
CACHE_VERSION = 1


def tokenize(raw: RawSplit, tokenizer: Any, max_length: int) -> TokenizedSplit:
    """Tokenise every example with one tokenizer call (pairs when there are two texts).

    Truncation to `max_length` tokens (longest-first for pairs), no padding.
    """
    label_dtype = np.float32 if raw.labels.dtype.kind == "f" else np.int64
    labels = torch.from_numpy(np.array(raw.labels, dtype=label_dtype))  # (n,) copy
    if len(raw) == 0:
        empty = torch.zeros(0, dtype=torch.long)
        return TokenizedSplit(empty, empty.clone(), torch.zeros(1, dtype=torch.long), labels)
    columns = [list(col) for col in zip(*raw.texts, strict=True)]
    if len(columns) > 2:
        raise ValueError(f"examples have {len(columns)} texts; at most 2 are supported")
    enc = tokenizer(
        *columns, truncation=True, max_length=max_length, padding=False, return_attention_mask=False
    )
    ids: list[list[int]] = enc["input_ids"]
    lengths = torch.from_numpy(np.fromiter(map(len, ids), dtype=np.int64, count=len(ids)))  # (n,)
    total = int(lengths.sum())
    input_ids = torch.from_numpy(
        np.fromiter(itertools.chain.from_iterable(ids), dtype=np.int64, count=total)
    )  # (total,)
    if enc.get("token_type_ids") is not None:
        token_type_ids = torch.from_numpy(
            np.fromiter(
                itertools.chain.from_iterable(enc["token_type_ids"]), dtype=np.int64, count=total
            )
        )  # (total,)
    else:
        token_type_ids = torch.zeros_like(input_ids)  # (total,)
    return TokenizedSplit(input_ids, token_type_ids, offsets_from_lengths(lengths), labels)


# ----------------------------------------------------------------------------- task splits


@dataclass
class TaskData:
    """A task ready for training: three disjoint splits of train.tsv and the GLUE dev split(s)."""

    spec: TaskSpec
    #: Trained on.
    train: TokenizedSplit
    #: Carved from train.tsv: model selection, the sweep's metric.
    validation: TokenizedSplit
    #: Carved from train.tsv: reserved for selectors' rewards, never trained on.
    reward: TokenizedSplit
    #: The GLUE dev split(s) by name ("dev"; MNLI "dev_matched", "dev_mismatched"): reported.
    test: dict[str, TokenizedSplit]
    #: Hex sha256 of everything the data depends on (the cache key).
    fingerprint: str

    def to_state(self) -> dict[str, torch.Tensor]:
        """Plain flat dict of tensors: "<split>/<field>", test splits as "test/<name>/<field>"."""
        state: dict[str, torch.Tensor] = {}
        parts = {"train": self.train, "validation": self.validation, "reward": self.reward}
        parts.update({f"test/{name}": split for name, split in self.test.items()})
        for prefix, split in parts.items():
            state.update({f"{prefix}/{k}": v for k, v in split.to_state().items()})
        return state

    @classmethod
    def from_state(
        cls, spec: TaskSpec, state: dict[str, torch.Tensor], fingerprint: str
    ) -> TaskData:
        """Inverse of `to_state`."""

        def part(prefix: str) -> TokenizedSplit:
            return TokenizedSplit.from_state({k: state[f"{prefix}/{k}"] for k in _STATE_KEYS})

        return cls(
            spec=spec,
            train=part("train"),
            validation=part("validation"),
            reward=part("reward"),
            test={name: part(f"test/{name}") for name in spec.test_splits},
            fingerprint=fingerprint,
        )


def split_indices(n: int, cfg: DataConfig) -> dict[str, np.ndarray]:
    """Row numbers of train.tsv for the "train", "validation" and "reward" splits.

    A permutation from `default_rng(cfg.split_seed)`; its first `max_train_examples` rows are
    kept (all when None); of those, the first round(k * validation_fraction) are validation,
    the next round(k * reward_fraction) reward, the rest train. Disjoint by construction.
    """
    perm = np.random.default_rng(cfg.split_seed).permutation(n)
    if cfg.max_train_examples is not None:
        perm = perm[: cfg.max_train_examples]
    k = len(perm)
    n_val, n_rew = split_sizes(k, cfg, "data.max_train_examples", DataError)
    return {
        "train": perm[n_val + n_rew :],
        "validation": perm[:n_val],
        "reward": perm[n_val : n_val + n_rew],
    }


def fingerprint(cfg: DataConfig, tokenizer: Any, source: dict[str, Any]) -> str:
    """Hex sha256 of everything tokenised splits depend on (tokenizer, config, source)."""
    key = {
        "version": CACHE_VERSION,
        "tokenizer": [
            str(getattr(tokenizer, "name_or_path", "")),
            len(tokenizer),
            type(tokenizer).__name__,
        ],
        "task": cfg.task,
        "max_length": cfg.max_length,
        "max_train_examples": cfg.max_train_examples,
        "validation_fraction": cfg.validation_fraction,
        "reward_fraction": cfg.reward_fraction,
        "split_seed": cfg.split_seed,
        "max_test_examples": cfg.max_test_examples,
        "source": source,
    }
    return content_key(key)


def _tsv_source(files: dict[str, Path]) -> dict[str, Any]:
    """Cache-key description of TSV files: path, size and mtime of each."""
    out = {}
    for split, path in files.items():
        st = path.stat()
        out[split] = [str(path), st.st_size, st.st_mtime_ns]
    return out


def cache_path(cache_dir: str | Path, task: str, key: str) -> Path:
    """Where `load_task` caches a task: `<cache_dir>/data/<task>-<key16>.pt`."""
    return Path(cache_dir).expanduser().resolve() / "data" / f"{task}-{key[:16]}.pt"


def load_task(
    cfg: DataConfig, tokenizer: Any, cache_dir: str | Path | None, progress: bool = False
) -> TaskData:
    """Read, split and tokenise `cfg.task`, through the on-disk cache when `cache_dir` is set.

    Source: the GLUE folder from `resolve_data_dir(cfg.data_dir)`, else the hub. The splits
    follow `split_indices`; test splits keep their first `max_test_examples` rows (no shuffle).
    The cache file is `<cache_dir>/data/<task>-<key16>.pt`; a hit reads no TSV (the files are
    still checked to exist, and their sizes and mtimes are part of the key).
    """
    if cfg.dataset is not None:
        return _load_own(cfg, tokenizer, cache_dir, progress)
    assert cfg.task is not None
    spec = get_task(cfg.task)
    say = log.info if progress else log.debug
    data_dir = resolve_data_dir(cfg.data_dir)
    if data_dir is not None:
        files = glue_files(spec, data_dir)
        source: dict[str, Any] = {"tsv": _tsv_source(files)}
    else:
        source = {"hub": [HUB_DATASET, spec.hub_config]}
    key = fingerprint(cfg, tokenizer, source)
    path = cache_path(cache_dir, spec.name, key) if cache_dir is not None else None
    cached = _cached(spec, path, key, say)
    if cached is not None:
        return cached

    say("%s: reading examples from %s", spec.name, data_dir or f"hub {HUB_DATASET}")
    raw = read_glue_tsv(spec, data_dir) if data_dir is not None else load_hub(spec)
    parts = split_indices(len(raw["train"]), cfg)
    tests = {name: raw[name] for name in spec.test_splits}
    if cfg.max_test_examples is not None:
        cap = np.arange(cfg.max_test_examples)
        tests = {n: r.take(cap[: len(r)]) for n, r in tests.items()}
    # One tokenizer call over all kept training rows, then cheap ragged subsets.
    order = np.concatenate([parts["validation"], parts["reward"], parts["train"]])
    say("%s: tokenising %d training examples", spec.name, len(order))
    kept = tokenize(raw["train"].take(order), tokenizer, cfg.max_length)
    n_val, n_rew = len(parts["validation"]), len(parts["reward"])
    data = TaskData(
        spec=spec,
        train=kept.subset(torch.arange(n_val + n_rew, len(order))),
        validation=kept.subset(torch.arange(n_val)),
        reward=kept.subset(torch.arange(n_val, n_val + n_rew)),
        test={n: tokenize(r, tokenizer, cfg.max_length) for n, r in tests.items()},
        fingerprint=key,
    )
    return _saved(data, path, say)


def _cached(spec: TaskSpec, path: Path | None, key: str, say: Any) -> TaskData | None:
    """The cached task at `path`, or None (no file, or one that does not read: rebuilt)."""
    if path is None or not path.is_file():
        return None
    try:
        data = TaskData.from_state(spec, torch.load(path, weights_only=True), key)
    except Exception as err:  # a corrupt or foreign file: rebuild it
        log.warning("ignoring unreadable data cache %s (%s); rebuilding it", path, err)
        return None
    say("%s: tokenised data from cache %s", spec.name, path)
    return data


def _saved(data: TaskData, path: Path | None, say: Any) -> TaskData:
    if path is not None:
        atomic_torch_save(data.to_state(), path)
        say("%s: cached tokenised data in %s", data.spec.name, path)
    return data


def _load_own(
    cfg: DataConfig, tokenizer: Any, cache_dir: str | Path | None, progress: bool
) -> TaskData:
    """`load_task` for your own dataset (`kdray.data.own`): validation from its split when it
    has one (else carved from train like GLUE's), reward carved from train, test its split."""
    from kdray.data.own import describe, splits_of
    from kdray.data.specs import data_identity
    from kdray.data.tokens import tokenize_split

    assert cfg.dataset is not None
    say = log.info if progress else log.debug
    spec = describe(cfg.dataset)
    train, validation, test = splits_of(cfg.dataset)
    key = fingerprint(cfg, tokenizer, {"dataset": data_identity(cfg)["dataset"]})
    path = cache_path(cache_dir, spec.name, key) if cache_dir is not None else None
    cached = _cached(spec, path, key, say)
    if cached is not None:
        return cached
    if validation is None:
        parts = split_indices(len(train), cfg)
    else:
        perm = np.random.default_rng(cfg.split_seed).permutation(len(train))
        perm = perm[: cfg.max_train_examples] if cfg.max_train_examples is not None else perm
        n_rew = round(len(perm) * cfg.reward_fraction)
        parts = {"validation": perm[:0], "reward": perm[:n_rew], "train": perm[n_rew:]}
    say("%s: tokenising %d training examples", spec.name, sum(map(len, parts.values())))

    def tokenized(ds: Any, rows: Any = None) -> TokenizedSplit:
        """A split tokenised on its own (no copy of a larger tokenised block)."""
        return tokenize_split(ds if rows is None else ds.select(rows), spec, tokenizer,
                              cfg.max_length)  # fmt: skip

    if test is not None and cfg.max_test_examples is not None:
        test = test.select(range(min(cfg.max_test_examples, len(test))))
    data = TaskData(
        spec=spec,
        train=tokenized(train, parts["train"]),
        validation=(tokenized(train, parts["validation"]) if validation is None
                    else tokenized(validation)),
        reward=tokenized(train, parts["reward"]),
        test={"test": tokenized(test)} if test is not None else {},
        fingerprint=key,
    )  # fmt: skip
    return _saved(data, path, say)
