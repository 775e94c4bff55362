"""GLUE examples as text: read from a folder in the classic TSV layout or from the hub.

`read_glue_tsv` reads `<data_dir>/<TASK>/train.tsv` and the dev file(s) with the columns and
label strings of the task's `TaskSpec` (`kdray.data.tasks`); `load_hub` reads the `nyu-mll/glue`
dataset. Every problem (missing folder or file, wrong columns, unknown label) is a
`DataError` naming the file and the fix. `kdray.data.dataset` tokenises what these return.
"""

from __future__ import annotations

import csv
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from kdray.base.errors import DataError
from kdray.data.tasks import TaskSpec

if TYPE_CHECKING:  # pandas loads only to read a TSV: a trial on cached data never does
    import pandas as pd

log = logging.getLogger(__name__)

#: Environment variable naming the GLUE folder when `data.data_dir` is not set.
GLUE_DIR_ENV = "KDRAY_GLUE_DIR"
#: Hub dataset used when no GLUE folder is given.
HUB_DATASET = "nyu-mll/glue"


# ------------------------------------------------------------------------------ raw examples


@dataclass
class RawSplit:
    """Untokenised examples of one split."""

    #: One tuple of 1 or 2 strings per example (the task's text columns, in order).
    texts: list[tuple[str, ...]]
    #: (n,) int64 label ids, or float32 scores for regression.
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.texts)

    def take(self, idx: np.ndarray) -> RawSplit:
        """The examples at row numbers `idx`, in that order."""
        return RawSplit([self.texts[i] for i in idx.tolist()], self.labels[idx])


def resolve_data_dir(data_dir: str | None) -> Path | None:
    """The GLUE folder to read: `data_dir`, else `$KDRAY_GLUE_DIR`, else None (the hub).

    Resolved to an absolute path now, because Ray Tune changes the working directory of
    trials later. The folder is not checked here; `read_glue_tsv` / `load_task` do that.
    """
    chosen = data_dir or os.environ.get(GLUE_DIR_ENV) or None
    if chosen is None:
        return None
    return Path(chosen).expanduser().resolve()


def _glue_layout_hint(spec: TaskSpec) -> str:
    files = ", ".join(f"{spec.glue_dir}/{f}" for f in spec.split_files.values())
    return f"a folder in the GLUE layout (holding {files})"


def glue_files(spec: TaskSpec, data_dir: Path) -> dict[str, Path]:
    """Split name -> TSV path of `spec` under `data_dir`; DataError if any is missing."""
    fix = f"pass --data-dir or set {GLUE_DIR_ENV} to {_glue_layout_hint(spec)}"
    if not data_dir.is_dir():
        raise DataError(f"GLUE folder {data_dir} not found; {fix}")
    task_dir = data_dir / spec.glue_dir
    if not task_dir.is_dir():
        present = sorted(p.name for p in data_dir.iterdir() if p.is_dir())
        raise DataError(
            f"GLUE folder {data_dir} has no {spec.glue_dir}/ subfolder for task '{spec.name}' "
            f"(found: {', '.join(present) or 'nothing'}); {fix}"
        )
    files = {split: task_dir / name for split, name in spec.split_files.items()}
    for split, path in files.items():
        if not path.is_file():
            raise DataError(
                f"GLUE file {path} not found (the '{split}' split of task '{spec.name}'); {fix}"
            )
    return files


def _read_frame(spec: TaskSpec, path: Path) -> pd.DataFrame:
    """One GLUE TSV as strings; rows pandas cannot parse are skipped with a logged count."""
    import pandas as pd

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", pd.errors.ParserWarning)
        try:
            frame = pd.read_csv(
                path,
                sep="\t",
                quoting=csv.QUOTE_NONE,
                encoding="utf-8-sig",
                dtype=str,
                keep_default_na=False,
                header=0 if spec.header else None,
                names=list(spec.column_names) if spec.column_names else None,
                # "warn" is "skip" plus one ParserWarning per chunk listing the skipped lines,
                # which is how the skipped rows are counted.
                on_bad_lines="warn",
            )
        except pd.errors.EmptyDataError:
            raise DataError(
                f"GLUE file {path} is empty; replace it with the GLUE {spec.glue_dir} file"
            ) from None
        except (pd.errors.ParserError, UnicodeDecodeError) as err:
            raise DataError(
                f"GLUE file {path} could not be parsed as tab-separated UTF-8 ({err}); "
                f"replace it with the GLUE {spec.glue_dir} file"
            ) from None
    skipped = 0
    for w in caught:
        if issubclass(w.category, pd.errors.ParserWarning):
            skipped += str(w.message).count("Skipping line")
        else:  # not ours: pass it on
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    if skipped:
        log.warning("%s: skipped %d malformed line(s) pandas could not parse", path, skipped)
    return frame


def _labels_from_column(spec: TaskSpec, values: pd.Series, path: Path) -> np.ndarray:
    """Label strings -> (n,) int64 ids (float32 scores for regression); DataError if unknown."""
    import pandas as pd

    if spec.is_regression:
        scores = pd.to_numeric(values, errors="coerce")
        bad = scores.isna()
        if bad.any():
            raise DataError(
                f"GLUE file {path}: label '{values[bad].iloc[0]}' in column "
                f"'{spec.label_column}' is not a number ({int(bad.sum())} such row(s)); "
                f"task '{spec.name}' is a regression task with real-valued labels"
            )
        return scores.to_numpy(dtype=np.float32, copy=True)
    ids = values.map({label: i for i, label in enumerate(spec.labels)})
    bad = ids.isna()
    if bad.any():
        raise DataError(
            f"GLUE file {path}: label '{values[bad].iloc[0]}' in column '{spec.label_column}' "
            f"is not a label of task '{spec.name}' ({int(bad.sum())} such row(s)); allowed "
            f"values: {', '.join(spec.labels)}. Is this the GLUE {spec.glue_dir} file?"
        )
    return ids.to_numpy(dtype=np.int64, copy=True)


def read_glue_split(spec: TaskSpec, path: Path) -> RawSplit:
    """One GLUE TSV file of `spec` -> RawSplit; DataError naming the file and the fix.

    Rows with an empty label field (short lines, as in QQP) are skipped with a logged count,
    like the lines pandas cannot parse at all.
    """
    frame = _read_frame(spec, path)
    needed = [*spec.text_columns, spec.label_column]
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise DataError(
            f"GLUE file {path} lacks column(s) {', '.join(missing)}: expected "
            f"{', '.join(needed)}, found {', '.join(map(str, frame.columns))}; "
            f"replace it with the GLUE {spec.glue_dir} file"
            + ("" if spec.header else " (header-less, columns " + ", ".join(needed) + ")")
        )
    frame = frame[needed]
    unlabeled = frame[spec.label_column].isna() | (frame[spec.label_column].str.strip() == "")
    if unlabeled.any():
        log.warning("%s: skipped %d row(s) without a label", path, int(unlabeled.sum()))
        frame = frame[~unlabeled]
    if len(frame) == 0:
        raise DataError(
            f"GLUE file {path} has no labelled examples; replace it with the GLUE "
            f"{spec.glue_dir} file"
        )
    labels = _labels_from_column(spec, frame[spec.label_column].str.strip(), path)
    columns = [frame[c].fillna("").tolist() for c in spec.text_columns]
    return RawSplit(texts=list(zip(*columns, strict=True)), labels=labels)


def read_glue_tsv(spec: TaskSpec, data_dir: Path) -> dict[str, RawSplit]:
    """Every split of `spec` from a GLUE folder: keys "train" and the spec's test split names."""
    return {
        split: read_glue_split(spec, path) for split, path in glue_files(spec, data_dir).items()
    }


def load_hub(spec: TaskSpec) -> dict[str, RawSplit]:
    """Every split of `spec` from the `nyu-mll/glue` hub dataset (needs network or HF cache).

    Keys: "train" and the spec's test split names. A failure (offline, no cached copy) is a
    DataError telling the user to pass a GLUE folder instead.
    """
    import datasets

    fix = f"pass --data-dir or set {GLUE_DIR_ENV} to {_glue_layout_hint(spec)}"
    try:
        dd = datasets.load_dataset(HUB_DATASET, spec.hub_config)
    except Exception as err:
        raise DataError(
            f"could not load task '{spec.name}' from the hub ({HUB_DATASET}, config "
            f"'{spec.hub_config}'): {type(err).__name__}: {err}. Without network access, "
            f"{fix}"
        ) from err
    hub_splits = {"train": "train", **spec.hub_test_splits}
    out: dict[str, RawSplit] = {}
    for split, hub_split in hub_splits.items():
        where = f"hub dataset {HUB_DATASET}/{spec.hub_config} split '{hub_split}'"
        if hub_split not in dd:
            raise DataError(f"{where} is missing (found: {', '.join(dd)}); {fix}")
        ds = dd[hub_split]
        needed = [*spec.hub_text_columns, "label"]
        missing = [c for c in needed if c not in ds.column_names]
        if missing:
            raise DataError(
                f"{where} lacks column(s) {', '.join(missing)}: expected {', '.join(needed)}, "
                f"found {', '.join(ds.column_names)}; {fix}"
            )
        frame = ds.select_columns(needed).to_pandas()
        if spec.is_regression:
            labels = frame["label"].to_numpy(dtype=np.float32, copy=True)
        else:
            labels = frame["label"].to_numpy(dtype=np.int64, copy=True)
            bad = (labels < 0) | (labels >= spec.num_labels)
            if bad.any():
                raise DataError(
                    f"{where}: label id {labels[bad][0]} outside 0..{spec.num_labels - 1} "
                    f"(unlabelled split?); {fix}"
                )
        columns = [frame[c].astype(str).tolist() for c in spec.hub_text_columns]
        out[split] = RawSplit(texts=list(zip(*columns, strict=True)), labels=labels)
    return out
