"""User-facing errors. Every user mistake becomes one of these, with the fix in the message."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class KdrayError(Exception):
    """Base class: a problem the user can fix. CLIs print the message and exit 2."""


class ConfigError(KdrayError):
    """A configuration value is unknown, out of range or inconsistent."""


class DataError(KdrayError):
    """A data file or folder is missing or malformed."""


class WriteError(KdrayError):
    """A file could not be written (disk full, no permission): the previous version is kept,
    so once the cause is fixed the same command resumes. Not an OSError, so code that retries
    or skips on OSError does not swallow it."""


def suggest(name: str, valid: Iterable[str]) -> str:
    """' (did you mean 'x'?)' when a valid name is close to `name`, else ''."""
    close = difflib.get_close_matches(name, list(valid), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def unknown(kind: str, name: str, valid: Iterable[str], where: str = "") -> ConfigError:
    """ConfigError for an unknown name, listing the valid ones and the closest match."""
    valid = sorted(valid)
    at = f" in {where}" if where else ""
    return ConfigError(
        f"unknown {kind} '{name}'{at}{suggest(name, valid)}; valid: {', '.join(valid)}"
    )


def first_line(exc: BaseException, limit: int = 300) -> str:
    """An exception's message as one line (transformers' and datasets' span several): its
    first line, without a closing period, at most `limit` characters."""
    lines = str(exc).strip().splitlines()
    return (lines[0].rstrip(".") if lines else type(exc).__name__)[:limit]
