"""Files and folders: atomic writes (a crash never leaves a half-written checkpoint, cache or
result file), storage locations, and the cache folder."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import torch

#: Environment variable naming the cache folder when `cache_dir` is not set.
CACHE_ENV = "KDRAY_CACHE"
#: The cache folder when neither `cache_dir` nor $KDRAY_CACHE is set.
DEFAULT_CACHE = "~/.cache/kdray"


class HasCacheDir(Protocol):
    """Anything with a `cache_dir` (a `kdray.config.TrialConfig`), without importing config."""

    @property
    def cache_dir(self) -> str | None: ...


def cache_root(cfg: HasCacheDir) -> Path:
    """The cache folder for tokenised data, teachers and teacher outputs, absolute:
    `cfg.cache_dir`, else $KDRAY_CACHE, else ~/.cache/kdray."""
    root = cfg.cache_dir or os.environ.get(CACHE_ENV) or DEFAULT_CACHE
    return Path(root).expanduser().resolve()


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary file beside `path`; rename it onto `path` when the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def atomic_torch_save(obj: object, path: Path) -> None:
    """torch.save through a temporary file (read back with torch.load(weights_only=True))."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def atomic_write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


@contextlib.contextmanager
def atomic_dir(path: Path) -> Iterator[Path]:
    """Yield a temporary folder beside `path`; it becomes `path` only when the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}."))
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def storage_location(path: str) -> str:
    """A storage URI (s3://...) as given; a local folder expanded and made absolute."""
    return path if "://" in path else str(Path(path).expanduser().resolve())


def storage_fs(path: str) -> tuple[Any, str]:
    """(pyarrow filesystem, path in it) for a local folder or a storage URI such as s3://..."""
    import pyarrow.fs

    if "://" in path:
        return pyarrow.fs.FileSystem.from_uri(path)
    return pyarrow.fs.LocalFileSystem(), storage_location(path)
