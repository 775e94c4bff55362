"""Your own dataset (`data.dataset`): read as `datasets.load_dataset` reads it, checked before
any work, described as a `TaskSpec` and tokenised through `Dataset.map`.

    data:
      dataset:
        path: csv                                   # csv, json, parquet, a folder, a hub id
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

import difflib
import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kdray.base.errors import ConfigError, DataError, unknown
from kdray.base.io import content_key
from kdray.data.reader import content_hash, data_files, read
from kdray.data.tasks import TaskSpec

if TYPE_CHECKING:
    import datasets
    import pyarrow as pa

    from kdray.config import DatasetConfig

log = logging.getLogger(__name__)

#: Above this many distinct labels a classification problem is refused (regression, surely).
MAX_CLASSES = 1000
#: A float label column with at most this many distinct whole values looks like classes.
FEW_VALUES = 10
#: Rows named in a message about bad rows.
SHOWN_ROWS = 5


# ------------------------------------------------------------------------------ checking


def _nearest(name: str, columns: list[str]) -> list[str]:
    close = difflib.get_close_matches(name, columns, n=len(columns), cutoff=0.0)
    return close or columns


#: kdray split -> the dataset's split name, unless `data.dataset.splits` says otherwise.
DEFAULT_SPLITS: dict[str, str | None] = {"train": "train", "validation": None, "test": "test"}


def split_names(cfg: DatasetConfig) -> dict[str, str | None]:
    """`data.dataset.splits` over the defaults; two roles naming one split are refused."""
    names = {**DEFAULT_SPLITS, **cfg.splits}
    given = [n for n in names.values() if n is not None]
    if len(given) != len(set(given)):
        raise ConfigError(
            f"'data.dataset.splits' names one split for two roles ({names}); a run must not be "
            f"validated or tested on the examples it trains on"
        )
    return names


def _split(cfg: DatasetConfig, splits: datasets.DatasetDict, role: str) -> datasets.Dataset | None:
    name = split_names(cfg).get(role)
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


def empty_text_rows(table: pa.Table, columns: tuple[str, ...]) -> list[int]:
    """Row numbers whose text (any of `columns`) is missing or blank (Arrow compute, no copy
    of the corpus into Python)."""
    import pyarrow.compute as pc

    bad = None
    for c in columns:
        col = pc.cast(table.column(c), "string")
        blank = pc.or_kleene(pc.is_null(col), pc.equal(pc.utf8_trim_whitespace(col), ""))
        blank = pc.fill_null(blank, True)
        bad = blank if bad is None else pc.or_(bad, blank)
    if bad is None:
        return []
    return pc.indices_nonzero(bad).to_pylist()


def missing_label_rows(table: pa.Table, column: str, class_label: bool) -> list[int]:
    """Row numbers whose label is missing (null, NaN in a float column, -1 in a ClassLabel)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    col = table.column(column)
    missing = pc.is_null(col, nan_is_null=pa.types.is_floating(col.type))
    if class_label:  # -1: "no label" (e.g. the hub's GLUE test splits)
        missing = pc.or_(missing, pc.fill_null(pc.less(col, 0), False))
    return pc.indices_nonzero(missing).to_pylist()


def _problem(cfg: DatasetConfig, train: datasets.Dataset) -> str:
    import datasets

    feature = train.features[cfg.label_column]
    dtype = getattr(feature, "dtype", "")
    is_float = isinstance(feature, datasets.Value) and dtype.startswith("float")
    if cfg.problem != "auto":
        numeric = type(feature) is datasets.Value and dtype.startswith(("float", "int", "uint"))
        if cfg.problem == "regression" and not numeric:
            raise DataError(
                f"data.dataset.label_column '{cfg.label_column}' holds "
                f"{dtype if dtype == 'string' else 'class names'} values, not numbers, so it "
                f"cannot be regressed; use problem: classification"
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
            numbers = all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
            fix = "a score, most likely: set data.dataset.problem: regression"
            if not numbers:
                fix = "group them into fewer classes, or predict a number (problem: regression)"
            raise DataError(
                f"data.dataset.label_column '{cfg.label_column}' has {len(values)} distinct "
                f"labels, over {MAX_CLASSES} classes; {fix}"
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
        if len(names) != 2:
            raise ConfigError(
                f"'data.dataset.positive_label' names the positive class of binary f1, and this "
                f"dataset has {len(names)} classes; drop it"
            )
        if cfg.positive_label not in names:
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
    strangers = sorted(str(v) for v in ds.unique(cfg.label_column) if str(v) not in known)
    if strangers:
        column = ds[cfg.label_column] if len(ds) <= 200_000 else None
        rows = sum(1 for v in column if v is None or str(v) not in known) if column else None
        counted = f" in {rows} rows" if rows is not None else ""
        raise DataError(
            f"data.dataset: the {role} split has labels {', '.join(strangers[:10])}{counted} that "
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
    files = data_files(cfg)
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
    files = [Path(n) for names in (data_files(cfg) or {}).values() for n in names]
    stamps = [[str(f), f.stat().st_size, f.stat().st_mtime_ns] for f in files if f.is_file()]
    return content_key([cfg.__dict__, stamps])


def _describe(cfg: DatasetConfig) -> tuple[TaskSpec, Any]:
    import datasets

    from kdray.data.metrics import METRICS

    if not 1 <= len(cfg.text_columns) <= 2:
        raise ConfigError(
            f"'data.dataset.text_columns' needs one text column or a pair, got "
            f"{list(cfg.text_columns)}"
        )
    for m in cfg.metrics or ():
        if m not in METRICS:
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
        table = ds.with_format("arrow")[:]
        class_label = isinstance(ds.features[cfg.label_column], datasets.ClassLabel)
        unlabelled = missing_label_rows(table, cfg.label_column, class_label)
        if unlabelled:
            raise DataError(
                f"data.dataset: the {role} split has {len(unlabelled)} rows without a label "
                f"(rows {', '.join(map(str, unlabelled[:SHOWN_ROWS]))}); label or drop them"
            )
        bad = empty_text_rows(table, cfg.text_columns)
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
    scores = {"pearson", "spearman", "spearmanr"}  # the metrics of a regression
    wrong = [m for m in metrics if (m in scores) != (problem == "regression")]
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
        test_splits={"test": str(split_names(cfg)["test"])} if kept["test"] is not None else {},
        hub_test_splits={},
        source=_source(cfg, splits),
    )
    return spec, (kept["train"], kept["validation"], kept["test"])


def _source(cfg: DatasetConfig, splits: datasets.DatasetDict) -> Mapping[str, Any]:
    """How the model card and the cache keys name the data: path, files, revision, content."""
    return {
        "path": cfg.path,
        "name": cfg.name,
        "data_files": data_files(cfg),
        "revision": cfg.revision,
        "sha256": content_hash(cfg, splits),
    }
