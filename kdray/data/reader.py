"""Reading your own dataset (`data.dataset`) the way `datasets.load_dataset` reads it: local
files (csv, json, parquet, arrow), a folder (also one written by `save_to_disk`) or a hub
id; every way it cannot be read is one `DataError` line. `content_hash` names the data by
what it holds, for the cache keys.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kdray.base.errors import ConfigError, DataError, first_line
from kdray.base.io import content_key

if TYPE_CHECKING:
    import datasets

    from kdray.config import DatasetConfig

#: Formats `path` may name (datasets' packaged builders) that read `data_files`; "text" gives
#: one `text` column and no labels, so it is refused when the label column is asked for.
FORMATS = ("csv", "json", "parquet", "text", "arrow")


def data_files(cfg: DatasetConfig) -> dict[str, list[str]] | None:
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


def local_folder(cfg: DatasetConfig) -> Path | None:
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
    files = data_files(cfg)
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
    folder = local_folder(cfg)
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
        raise DataError(f"data.dataset.path: {cfg.path}: {first_line(exc)}") from exc
    except datasets.exceptions.DatasetGenerationError as exc:  # the reader refused a file
        cause = exc.__cause__ or exc
        raise DataError(
            f"data.dataset: cannot parse the {cfg.path} files ({first_line(cause)}); check the "
            f"format, data.dataset.delimiter, and for texts with quote characters "
            f"data.dataset.options: {{quoting: 3}}"
        ) from exc
    except TypeError as exc:  # an option the reader does not take
        raise ConfigError(f"'data.dataset.options': {first_line(exc)}") from exc
    except (ConnectionError, OSError, ValueError) as exc:
        if files is not None or folder is not None:  # local data the reader refused
            raise DataError(f"data.dataset: cannot read {cfg.path}: {first_line(exc)}") from exc
        offline = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("HF_DATASETS_OFFLINE")
        why = "offline (HF_HUB_OFFLINE is set)" if offline else "no network or no such dataset"
        raise DataError(
            f"data.dataset.path: cannot read {cfg.path} from the hub ({why}: "
            f"{first_line(exc)}); give local files (path: csv, json or parquet with "
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


def _file_sha(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def content_hash(cfg: DatasetConfig, splits: datasets.DatasetDict) -> str:
    """What the data is, not where: the sha256 of the data files (or the saved folder's files),
    else the hub id, config, revision and datasets' own fingerprints."""
    files = data_files(cfg)
    folder = local_folder(cfg)
    named: list[tuple[str, Path]] = []
    if files is not None:  # each file under its split, so a swap of splits is a new key
        named = [(f"{split}/{i}", Path(n)) for split, names in files.items()
                 for i, n in enumerate(names)]  # fmt: skip
    elif folder is not None:
        named = [(str(p.relative_to(folder)), p) for p in sorted(folder.rglob("*")) if p.is_file()]
    if named:
        return content_key([[label, _file_sha(p)] for label, p in named])
    # a hub dataset: its id and revision, and datasets' own fingerprint of each split
    ident = [cfg.path, cfg.name, cfg.revision, {k: v._fingerprint for k, v in splits.items()}]
    return content_key(ident)
