"""Your own dataset (`data.dataset`): read as `datasets.load_dataset` reads it, checked before
any work, described as a `TaskSpec` and tokenised through `Dataset.map`.

    data:
      dataset:
        path: csv                                   # csv, json, parquet, text, a folder, a hub id
        data_files: {train: tickets/train.csv, test: tickets/test.csv}
        text_columns: [subject, body]               # one text, or a pair
        label_column: queue
        metrics: [accuracy, f1_macro]               # the first is the main metric

`describe` reads the label column once (Arrow, memory-mapped) and settles the problem
(classification or regression), the class names in id order and the metrics; every problem
with the data (a missing file or column, an empty split, unknown or empty labels, one class, a
float column that looks like classes, ...) is a `DataError` that says what and how to fix it.
`tokenize_split` tokenises with `Dataset.map(batched=True)` into Arrow and takes the token ids
from there without building Python lists of the corpus, so memory grows with the tokens kept,
not with the file.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import logging
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kdray.base.errors import ConfigError, DataError
from kdray.base.io import content_key
from kdray.data.tasks import TaskSpec

if TYPE_CHECKING:
    import datasets

    from kdray.config import DatasetConfig
    from kdray.data.tokens import TokenizedSplit

log = logging.getLogger(__name__)

#: Formats `path` may name (datasets' packaged builders) that read `data_files`.
FORMATS = ("csv", "json", "parquet", "text", "arrow")
#: Above this many distinct labels a classification problem is refused (regression, surely).
MAX_CLASSES = 1000
#: A float label column with at most this many distinct whole values looks like classes.
FEW_VALUES = 10
#: Rows named in a message about bad rows.
SHOWN_ROWS = 5


# ------------------------------------------------------------------------------- reading


def _files(cfg: DatasetConfig) -> dict[str, list[str]] | None:
    """`data_files` as split -> absolute paths (a single file given as a string too)."""
    if cfg.data_files is None:
        return None
    out: dict[str, list[str]] = {}
    for split, value in cfg.data_files.items():
        names = [value] if isinstance(value, str) else list(value)
        if not names or not all(isinstance(n, str) for n in names):
            raise ConfigError(
                f"'data.dataset.data_files.{split}' must be a file name or a list of them, got "
                f"{value!r}"
            )
        out[str(split)] = [str(Path(n).expanduser().resolve()) for n in names]
    return out


def _local_folder(cfg: DatasetConfig) -> Path | None:
    folder = Path(cfg.path).expanduser()
    return folder.resolve() if folder.is_dir() else None


def _is_saved_dataset(folder: Path) -> bool:
    """A folder written by `Dataset(Dict).save_to_disk`."""
    return (folder / "dataset_dict.json").is_file() or (folder / "state.json").is_file()


def read(cfg: DatasetConfig) -> datasets.DatasetDict:
    """Every split of the dataset, memory-mapped; DataError in one line when it cannot be read
    (a missing file or folder, a hub id offline or unknown)."""
    import datasets

    datasets.disable_progress_bars()
    datasets.utils.logging.set_verbosity(logging.CRITICAL)  # its errors become one DataError
    files = _files(cfg)
    for split, names in (files or {}).items():
        missing = [n for n in names if not Path(n).is_file()]
        if missing:
            raise DataError(
                f"data.dataset.data_files.{split}: {missing[0]} not found; give an existing "
                f"file (relative paths are read from the folder you run kdray in)"
            )
        if all(_holds_no_rows(Path(n), cfg.path) for n in names):
            raise DataError(
                f"data.dataset.data_files.{split}: {names[0]} holds no rows; give the "
                f"{split} split rows, or drop it from data_files and data.dataset.splits"
            )
    folder = _local_folder(cfg)
    if folder is not None and _is_saved_dataset(folder):
        loaded = datasets.load_from_disk(str(folder))
        return (
            loaded
            if isinstance(loaded, datasets.DatasetDict)
            else datasets.DatasetDict(train=loaded)
        )
    # a hub id is "name" or "owner/name"; anything else that names no folder is a missing one
    looks_local = cfg.path.startswith((".", "/", "~")) or cfg.path.strip("/").count("/") > 1
    if folder is None and looks_local:
        raise DataError(f"data.dataset.path: folder {cfg.path} not found; give an existing folder")
    if cfg.path in FORMATS and files is None:
        raise ConfigError(
            f"'data.dataset.path: {cfg.path}' reads files: give data.dataset.data_files, e.g. "
            f"{{train: train.{cfg.path}, test: test.{cfg.path}}}"
        )
    kwargs: dict[str, Any] = {"data_files": files, "revision": cfg.revision, **cfg.options}
    if cfg.delimiter is not None:
        kwargs["delimiter"] = cfg.delimiter
    try:
        loaded = datasets.load_dataset(str(folder or cfg.path), cfg.name, **kwargs)
    except FileNotFoundError as exc:
        raise DataError(f"data.dataset.path: {cfg.path}: {_first_line(exc)}") from exc
    except datasets.exceptions.DatasetGenerationError as exc:  # the reader refused a file
        cause = exc.__cause__ or exc
        raise DataError(
            f"data.dataset: cannot parse the {cfg.path} files ({_first_line(cause)}); check the "
            f"format, data.dataset.delimiter, and for texts with quote characters "
            f"data.dataset.options: {{quoting: 3}}"
        ) from exc
    except TypeError as exc:  # an option the reader does not take
        raise ConfigError(f"'data.dataset.options': {_first_line(exc)}") from exc
    except (ConnectionError, OSError, ValueError) as exc:
        if files is not None or folder is not None:  # local data the reader refused
            raise DataError(f"data.dataset: cannot read {cfg.path}: {_first_line(exc)}") from exc
        offline = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("HF_DATASETS_OFFLINE")
        why = "offline (HF_HUB_OFFLINE is set)" if offline else "no network or no such dataset"
        raise DataError(
            f"data.dataset.path: cannot read {cfg.path} from the hub ({why}: "
            f"{_first_line(exc)}); give local files (path: csv, json or parquet with "
            f"data_files) or a folder, or unset HF_HUB_OFFLINE with the network up"
        ) from exc
    if not isinstance(loaded, datasets.DatasetDict):
        loaded = datasets.DatasetDict(train=loaded)
    return loaded


def _holds_no_rows(path: Path, fmt: str) -> bool:
    """An empty file, or (csv) one with a header line only; other formats are left to the
    reader and the empty-split check."""
    if path.stat().st_size == 0:
        return True
    if fmt != "csv":
        return False
    with open(path, "rb") as f:
        head = f.read(1 << 16)
    return len([line for line in head.splitlines() if line.strip()]) <= 1 and len(head) < 1 << 16


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]


def content_hash(cfg: DatasetConfig, splits: datasets.DatasetDict) -> str:
    """What the data is, not where: the sha256 of the data files (or the saved folder's files),
    else the hub id, config, revision and datasets' own fingerprints."""
    h = hashlib.sha256()
    files = _files(cfg)
    folder = _local_folder(cfg)
    paths: list[Path] = []
    if files is not None:
        paths = [Path(n) for names in files.values() for n in names]
    elif folder is not None:
        paths = sorted(p for p in folder.rglob("*") if p.is_file())
    if paths:
        for p in paths:
            with open(p, "rb") as f:
                while block := f.read(1 << 20):
                    h.update(block)
        return h.hexdigest()
    # a hub dataset: its id and revision, and datasets' own fingerprint of each split
    ident = [cfg.path, cfg.name, cfg.revision, {k: v._fingerprint for k, v in splits.items()}]
    return content_key(ident)


# ------------------------------------------------------------------------------ checking


def _nearest(name: str, columns: list[str]) -> list[str]:
    close = difflib.get_close_matches(name, columns, n=len(columns), cutoff=0.0)
    return close or columns


def _split(cfg: DatasetConfig, splits: datasets.DatasetDict, role: str) -> datasets.Dataset | None:
    name = cfg.splits.get(role)
    if name is None:
        if role == "train":
            raise ConfigError("'data.dataset.splits.train' must name the training split")
        return None
    if name not in splits:
        raise DataError(
            f"data.dataset.splits.{role}: the dataset has no split '{name}'; it has "
            f"{', '.join(splits)} (set data.dataset.splits.{role}, or null)"
        )
    ds = splits[name]
    if len(ds) == 0:
        raise DataError(f"data.dataset: split '{name}' ({role}) is empty; give it rows")
    for key, column in [("label_column", cfg.label_column)] + [
        ("text_columns", c) for c in cfg.text_columns
    ]:
        if column not in ds.column_names:
            raise DataError(
                f"data.dataset.{key}: split '{name}' has no column '{column}'; its columns are "
                f"{', '.join(_nearest(column, ds.column_names))}"
            )
    return ds


def empty_text_rows(ds: datasets.Dataset, columns: tuple[str, ...]) -> list[int]:
    """Row numbers whose text (any of `columns`) is missing or blank (Arrow compute, no copy
    of the corpus into Python)."""
    import pyarrow.compute as pc

    table = ds.with_format("arrow")[:]
    bad = None
    for c in columns:
        col = pc.cast(table.column(c), "string")
        blank = pc.or_kleene(pc.is_null(col), pc.equal(pc.utf8_trim_whitespace(col), ""))
        blank = pc.fill_null(blank, True)
        bad = blank if bad is None else pc.or_(bad, blank)
    if bad is None:
        return []
    return pc.indices_nonzero(bad).to_pylist()


def missing_label_rows(ds: datasets.Dataset, column: str) -> list[int]:
    """Row numbers whose label is missing (null, or NaN in a float column)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    col = ds.with_format("arrow")[:].column(column)
    missing = pc.is_null(col, nan_is_null=pa.types.is_floating(col.type))
    return pc.indices_nonzero(missing).to_pylist()


def _problem(cfg: DatasetConfig, train: datasets.Dataset) -> str:
    import datasets

    feature = train.features[cfg.label_column]
    dtype = getattr(feature, "dtype", "")
    is_float = isinstance(feature, datasets.Value) and dtype.startswith("float")
    if cfg.problem != "auto":
        numeric = isinstance(feature, datasets.Value) and dtype.startswith(("float", "int", "uint"))
        if cfg.problem == "regression" and not numeric:
            raise DataError(
                f"data.dataset.label_column '{cfg.label_column}' holds {dtype or 'class'} values, "
                f"not numbers, so it cannot be regressed; use problem: classification"
            )
        return cfg.problem
    if not is_float:
        return "classification"
    values = train.unique(cfg.label_column)
    whole = [v for v in values if v is not None and not math.isnan(v) and float(v).is_integer()]
    if len(values) <= FEW_VALUES and len(whole) == len(values):
        raise DataError(
            f"data.dataset.label_column '{cfg.label_column}' holds floats but only "
            f"{len(values)} distinct whole values ({', '.join(f'{v:g}' for v in sorted(whole))}): "
            f"classes, most likely; set data.dataset.problem: classification (or regression to "
            f"regress them)"
        )
    return "regression"


def _label_names(cfg: DatasetConfig, train: datasets.Dataset) -> tuple[str, ...]:
    """Class names in id order: `labels`, else a ClassLabel's names, else the sorted distinct
    training labels (as strings)."""
    import datasets

    feature = train.features[cfg.label_column]
    if isinstance(feature, datasets.ClassLabel):
        found = tuple(feature.names)
    else:
        values = [v for v in train.unique(cfg.label_column) if v is not None]
        if len(values) > MAX_CLASSES:
            raise DataError(
                f"data.dataset.label_column '{cfg.label_column}' has {len(values)} distinct "
                f"labels, over {MAX_CLASSES} classes; a score, most likely: set "
                f"data.dataset.problem: regression"
            )
        found = tuple(str(v) for v in sorted(values))
    if cfg.labels is None:
        names = found
    else:
        names = tuple(cfg.labels)
        extra, missing = sorted(set(found) - set(names)), sorted(set(names) - set(found))
        if extra or len(set(names)) != len(names):
            raise DataError(
                f"data.dataset.labels ({', '.join(names)}) do not match the training labels "
                f"({', '.join(found)}): {', '.join(extra) or 'a name listed twice'} "
                f"{'missing from the list' if extra else ''}; list every class once, in id order"
            )
        if missing:
            log.warning("data.dataset.labels %s never occur in the training split", missing)
    if len(names) < 2:
        raise DataError(
            f"data.dataset.label_column '{cfg.label_column}' has one class only "
            f"({', '.join(names) or 'none'}); a classifier needs two or more"
        )
    if cfg.positive_label is not None:
        if cfg.positive_label not in names or len(names) != 2:
            raise DataError(
                f"data.dataset.positive_label '{cfg.positive_label}' must be one of the two "
                f"classes ({', '.join(names)})"
            )
        names = (*(n for n in names if n != cfg.positive_label), cfg.positive_label)
    return names


def _check_labels(cfg: DatasetConfig, ds: datasets.Dataset, role: str, names: tuple[str, ...]):
    import datasets

    if isinstance(ds.features[cfg.label_column], datasets.ClassLabel):
        return
    known = set(names)
    values = [v for v in ds.unique(cfg.label_column)]
    unknown = sorted(str(v) for v in values if v is None or str(v) not in known)
    if unknown:
        column = ds[cfg.label_column] if len(ds) <= 200_000 else None
        rows = sum(1 for v in column if v is None or str(v) not in known) if column else None
        counted = f" in {rows} rows" if rows is not None else ""
        raise DataError(
            f"data.dataset: the {role} split has labels {', '.join(unknown[:10])}{counted} that "
            f"the training split does not ({', '.join(names[:20])}); fix those rows or add the "
            f"classes to training"
        )


def default_metrics(problem: str, n_classes: int) -> tuple[str, ...]:
    """accuracy (and f1_macro beyond two classes, f1 for two); pearson, spearmanr for scores."""
    if problem == "regression":
        return ("pearson", "spearmanr")
    return ("accuracy", "f1") if n_classes == 2 else ("accuracy", "f1_macro")


def task_name(cfg: DatasetConfig) -> str:
    """A short name for the dataset (cache files, reports): its folder or file stem."""
    files = _files(cfg)
    if files:
        first = Path(next(iter(files.values()))[0])
        stem = first.parent.name if first.stem in ("train", "data") else first.stem
    else:
        stem = Path(cfg.path.rstrip("/")).name
    clean = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in stem)
    return clean or "dataset"


_DESCRIBED: dict[str, tuple[TaskSpec, Any]] = {}


def describe(cfg: DatasetConfig) -> TaskSpec:
    """The dataset as a task: labels, problem, metrics, splits; every check of the data that
    needs no model. Remembered per process (by the config), so a sweep's many checks read the
    data once."""
    key = _described_key(cfg)
    if key not in _DESCRIBED:
        _DESCRIBED[key] = _describe(cfg)
    return _DESCRIBED[key][0]


def splits_of(cfg: DatasetConfig) -> Any:
    """(train, validation or None, test or None) datasets of `cfg`, checked (`describe`)."""
    describe(cfg)
    return _DESCRIBED[_described_key(cfg)][1]


def _described_key(cfg: DatasetConfig) -> str:
    """The config and its files' sizes and times: an edited file is described again."""
    files = [Path(n) for names in (_files(cfg) or {}).values() for n in names]
    stamps = [[str(f), f.stat().st_size, f.stat().st_mtime_ns] for f in files if f.is_file()]
    return content_key([cfg.__dict__, stamps])


def _describe(cfg: DatasetConfig) -> tuple[TaskSpec, Any]:
    from kdray.data.metrics import METRICS

    if not 1 <= len(cfg.text_columns) <= 2:
        raise ConfigError(
            f"'data.dataset.text_columns' needs one text column or a pair, got "
            f"{list(cfg.text_columns)}"
        )
    for m in cfg.metrics or ():
        if m not in METRICS:
            from kdray.base.errors import unknown

            raise unknown("metric", m, METRICS, "data.dataset.metrics")
    unknown_roles = sorted(set(cfg.splits) - {"train", "validation", "test"})
    if unknown_roles:
        raise ConfigError(
            f"'data.dataset.splits' takes train, validation and test, got {unknown_roles[0]}"
        )
    splits = read(cfg)
    train = _split(cfg, splits, "train")
    assert train is not None
    validation, test = _split(cfg, splits, "validation"), _split(cfg, splits, "test")
    parts = {"train": train, "validation": validation, "test": test}
    kept: dict[str, Any] = {}
    for role, ds in parts.items():
        if ds is None:
            kept[role] = None
            continue
        unlabelled = missing_label_rows(ds, cfg.label_column)
        if unlabelled:
            raise DataError(
                f"data.dataset: the {role} split has {len(unlabelled)} rows without a label "
                f"(rows {', '.join(map(str, unlabelled[:SHOWN_ROWS]))}); label or drop them"
            )
        bad = empty_text_rows(ds, cfg.text_columns)
        if bad and not cfg.drop_empty:
            shown = ", ".join(map(str, bad[:SHOWN_ROWS])) + (
                ", ..." if len(bad) > SHOWN_ROWS else ""
            )
            raise DataError(
                f"data.dataset: the {role} split has {len(bad)} rows with an empty or missing "
                f"text (rows {shown}); fill them, or set data.dataset.drop_empty: true to drop them"
            )
        if bad:
            log.warning("data.dataset: dropping %d rows with an empty text from %s", len(bad), role)
            drop = set(bad)
            ds = ds.select([i for i in range(len(ds)) if i not in drop])
            if len(ds) == 0:
                raise DataError(f"data.dataset: the {role} split is empty once empty texts go")
        kept[role] = ds
    problem = _problem(cfg, kept["train"])
    if problem == "classification":
        names = _label_names(cfg, kept["train"])
        for role in ("validation", "test"):
            if kept[role] is not None:
                _check_labels(cfg, kept[role], role, names)
    else:
        names = ()
    metrics = tuple(cfg.metrics) if cfg.metrics else default_metrics(problem, len(names))
    regression_only, classes_only = {"pearson", "spearman", "spearmanr"}, set(METRICS) - {
        "pearson", "spearman", "spearmanr"}  # fmt: skip
    wrong = [
        m for m in metrics if m in (classes_only if problem == "regression" else regression_only)
    ]
    if wrong:
        raise ConfigError(
            f"'data.dataset.metrics': {wrong[0]} does not score {problem}; use "
            f"{', '.join(default_metrics(problem, len(names)))}"
        )
    if "f1" in metrics and len(names) != 2:
        raise ConfigError(
            f"'data.dataset.metrics': f1 scores two classes, this dataset has {len(names)}; use "
            f"f1_macro or f1_micro"
        )
    name = task_name(cfg)
    spec = TaskSpec(
        name=name,
        glue_dir="",
        hub_config="",
        text_columns=tuple(cfg.text_columns),
        label_column=cfg.label_column,
        hub_text_columns=tuple(cfg.text_columns),
        labels=names,
        is_regression=problem == "regression",
        metrics=metrics,
        main_metric=metrics[0],
        test_splits={"test": str(cfg.splits["test"])} if kept["test"] is not None else {},
        hub_test_splits={},
        source=_source(cfg, splits),
    )
    return spec, (kept["train"], kept["validation"], kept["test"])


def _source(cfg: DatasetConfig, splits: datasets.DatasetDict) -> Mapping[str, Any]:
    """How the model card and the cache keys name the data: path, files, revision, content."""
    return {
        "path": cfg.path,
        "name": cfg.name,
        "data_files": _files(cfg),
        "revision": cfg.revision,
        "sha256": content_hash(cfg, splits),
    }


# ---------------------------------------------------------------------------- tokenising


def _encoder(tokenizer: Any, max_length: int) -> Any:
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

    from kdray.base.tensors import offsets_from_lengths
    from kdray.data.tokens import TokenizedSplit

    ids = {name: i for i, name in enumerate(spec.labels)}
    columns, label = spec.text_columns, spec.label_column
    encoder = _encoder(tokenizer, max_length)
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
            "y": [float(v) for v in values] if spec.is_regression else [
                v if isinstance(v, int) and not isinstance(v, bool) and str(v) not in ids
                else ids[str(v)] for v in values
            ],
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
