"""Files and folders: atomic writes (a crash never leaves a half-written checkpoint, cache or
result file), storage locations, the cache folder and its keys."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

from kdray.base.errors import WriteError

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


def content_key(data: Any, length: int | None = None) -> str:
    """Hex sha256 of `data` as sorted-key JSON (values JSON cannot write, as their str): the
    key of a cache entry over everything it depends on. `length` keeps its first characters
    (each cache keeps the length its folder names have always had, so they stay valid)."""
    payload = json.dumps(data, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:length]


#: Modes plain open() and mkdir() ask for; the umask then takes its bits away.
FILE_MODE, DIR_MODE = 0o666, 0o777
#: Guards the os.umask fallback of `umask`, which sets the umask to read it.
_UMASK_LOCK = threading.Lock()


def umask() -> int:
    """The process's umask. Linux tells it in /proc/self/status; elsewhere os.umask reads it
    only by setting it, so it is set to 0o077 for that instant: a file another thread creates
    meanwhile is too private rather than world-writable."""
    with contextlib.suppress(OSError, ValueError, IndexError), open("/proc/self/status") as f:
        for line in f:
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    with _UMASK_LOCK:
        old = os.umask(0o077)
        os.umask(old)
    return old


def write_error(path: Path, exc: OSError) -> WriteError:
    """WriteError for an OSError while writing `path` atomically: the cause (strerror and errno
    name), whether the previous version is still there, and what to do about it."""
    code = errno.errorcode.get(exc.errno or 0)
    cause = f"{exc.strerror} ({code})" if exc.strerror and code else str(exc) or repr(exc)
    other = exc.filename
    if isinstance(other, str) and Path(other).parent != path.parent:  # a copy's source, say
        cause += f" at {other}"
    kept = f"the previous {path.name} is kept" if path.exists() else "nothing was written"
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        fix = "free space on that disk (or raise the quota)"
    elif exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        fix = f"make {path.parent} writable"
    else:
        fix = "fix the cause"
    return WriteError(
        f"could not write {path}: {cause}; {kept}; {fix}, then rerun the same command to resume"
    )


def _fsync(path: Path) -> None:
    """Flush `path` to the disk before it is renamed into place: after an OS crash or a power
    loss a renamed file then holds its data, not zero bytes."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def keep_copy(path: Path, keep: Path) -> None:
    """`keep` becomes the content of `path` (when there is one), atomically: a hard link, or
    a copy where the filesystem has none. `path` is untouched, so both stay readable."""
    if not path.is_file():
        return
    fd, name = tempfile.mkstemp(dir=keep.parent, prefix=f".{keep.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        tmp.unlink()
        try:
            os.link(path, tmp)
        except OSError:  # no hard links here (some network and FUSE filesystems)
            shutil.copy2(path, tmp)
        os.replace(tmp, keep)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_path(path: Path, keep: Path | None = None) -> Iterator[Path]:
    """Yield a temporary file beside `path`; rename it onto `path` when the block succeeds.

    The file gets the mode plain open() gives (0o666 less the umask), not mkstemp's 0o600,
    so others can read results on shared storage. `keep`: the previous `path` is kept there
    first (see `keep_copy`), so two versions survive and a crash at any point leaves the old
    one readable. An OSError (disk full, no permission), in the block or at the rename,
    becomes a WriteError naming `path`; `path` is then as it was and the temporary file gone.
    """
    path = Path(path)
    tmp: Path | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        tmp = Path(name)
        try:  # best effort: some network filesystems refuse chmod, and the write still counts
            with contextlib.suppress(OSError):
                os.fchmod(fd, FILE_MODE & ~umask())
        finally:
            os.close(fd)
        yield tmp
        _fsync(tmp)
        if keep is not None:
            keep_copy(path, keep)
        os.replace(tmp, path)
    except OSError as exc:
        raise write_error(path, exc) from exc
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):  # never hide the error that got us here
                tmp.unlink(missing_ok=True)


def atomic_torch_save(obj: object, path: Path, keep: Path | None = None) -> None:
    """torch.save through a temporary file (read back with torch.load(weights_only=True)).

    torch writes through a Python file object: given a path its C++ writer turns a full disk
    into a RuntimeError ("unexpected pos"), while Python's write raises OSError(ENOSPC)."""
    import torch  # here: the analysis and export command lines import this module, not torch

    with atomic_path(path, keep) as tmp, open(tmp, "wb") as f:
        torch.save(obj, f)


def atomic_write_text(path: Path, text: str) -> None:
    """`text` into `path` atomically: readers see the old file or the new one, never half."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


@contextlib.contextmanager
def atomic_dir(path: Path) -> Iterator[Path]:
    """Yield a temporary folder beside `path`; it becomes `path` only when the block succeeds.

    The folder gets mkdir's mode (0o777 less the umask), not mkdtemp's 0o700. A previous
    `path` is moved aside until the new one is in place, and an OSError becomes a WriteError
    as in `atomic_path`."""
    path = Path(path)
    tmp: Path | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}."))
        with contextlib.suppress(OSError):  # best effort, as in atomic_path
            tmp.chmod(DIR_MODE & ~umask())
        yield tmp
        old = tmp.with_name(tmp.name + ".old")
        if path.exists():
            os.replace(path, old)
        try:
            os.replace(tmp, path)
        except OSError:
            if old.exists():
                os.replace(old, path)
            raise
        shutil.rmtree(old, ignore_errors=True)
    except OSError as exc:
        raise write_error(path, exc) from exc
    finally:
        if tmp is not None and tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def is_uri(path: str) -> bool:
    """A storage URI (s3://bucket/..., gs://...), not a local path."""
    return "://" in path


def storage_location(path: str) -> str:
    """A storage URI (s3://...) as given; a local folder expanded and made absolute."""
    return path if is_uri(path) else str(Path(path).expanduser().resolve())


def fs_path(path: str) -> str:
    """Where `path` (a local path or a storage URI) is in its pyarrow filesystem: a URI less
    its scheme (s3://bucket/key -> bucket/key), a local path as it is."""
    return path.split("://", 1)[1] if is_uri(path) else path


def storage_fs(path: str) -> tuple[Any, str]:
    """(pyarrow filesystem, path in it) for a local folder or a storage URI such as s3://..."""
    import pyarrow.fs

    if is_uri(path):
        return pyarrow.fs.FileSystem.from_uri(path)
    return pyarrow.fs.LocalFileSystem(), storage_location(path)
