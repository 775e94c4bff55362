"""Strict reading of nested plain data (YAML, a Tune sample) into frozen dataclasses.

`_build(cls, raw, where)` checks every key against the dataclass's fields (an unknown key is a
`ConfigError` naming the nearest valid one) and every value against its annotation
(`_coerce`); `set_path` / `flat_paths` / `dataclass_paths` handle dotted config paths. Nothing
here knows kdray's config: `kdray.config` builds on it.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal, TypeVar, get_args, get_origin

from kdray.base.errors import ConfigError, suggest

T = TypeVar("T")


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def set_path(raw: dict[str, Any], path: str, value: Any) -> None:
    """Set `a.b.c` in a nested dict, creating the intermediate dicts (an empty section, as
    YAML reads `trainer:` with nothing under it, counts as one)."""
    *parents, leaf = path.split(".")
    node = raw
    for i, p in enumerate(parents):
        if node.get(p) is None:
            node[p] = {}
        node = node[p]
        if not isinstance(node, dict):
            raise ConfigError(
                f"cannot set '{path}': '{'.'.join(parents[: i + 1])}' is a value "
                f"({node!r}), not a section"
            )
    node[leaf] = value


def flat_paths(raw: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested config data -> {dotted path: leaf value} (an empty mapping is a leaf)."""
    out: dict[str, Any] = {}
    for k, v in raw.items():
        if isinstance(v, Mapping) and v:
            out.update(flat_paths(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out


@functools.cache
def type_hints(cls: Any) -> dict[str, Any]:
    """`typing.get_type_hints` of a config class, worked out once (a sweep's analysis builds
    thousands of configs)."""
    return typing.get_type_hints(cls)


def dataclass_paths(cls: type, prefix: str = "") -> list[str]:
    """Every dotted leaf path of a config class (for search-space validation and messages)."""
    paths: list[str] = []
    hints = type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            paths += dataclass_paths(tp, f"{prefix}{f.name}.")  # type: ignore[arg-type]
        else:
            paths.append(prefix + f.name)
    return paths


def _build(cls: type[T], raw: Any, where: str) -> T:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"'{where or 'config'}' must be a mapping, got {type(raw).__name__}")
    hints = type_hints(cls)  # type: ignore[arg-type]
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    kwargs: dict[str, Any] = {}
    for key, value in raw.items():
        path = f"{where}.{key}" if where else str(key)
        if key not in names:
            raise ConfigError(
                f"unknown config key '{path}'{suggest(str(key), names)}; "
                f"valid keys{' in ' + where if where else ''}: {', '.join(names)}"
            )
        kwargs[key] = _coerce(hints[key], value, path)
    return cls(**kwargs)


def _coerce(tp: Any, value: Any, path: str) -> Any:
    """Check `value` against the annotation `tp`; return it in the annotated form."""
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, path)  # type: ignore[arg-type]
    origin, args = get_origin(tp), get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(inner[0], value, path)
    if origin is Literal:
        if value not in args:
            raise ConfigError(
                f"'{path}' must be one of {', '.join(map(str, args))}; got {value!r}"
                f"{suggest(str(value), map(str, args))}"
            )
        return value
    if origin is tuple:
        if isinstance(value, str) or not isinstance(value, list | tuple):
            raise ConfigError(f"'{path}' must be a list, got {value!r}")
        return tuple(_coerce(args[0], v, f"{path}[{i}]") for i, v in enumerate(value))
    if origin in (Mapping, dict) or tp is Mapping:
        if not isinstance(value, Mapping):
            raise ConfigError(f"'{path}' must be a mapping, got {value!r}")
        return {str(k): _coerce(args[1], v, f"{path}.{k}") for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"'{path}' must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not (
            isinstance(value, int) or (isinstance(value, float) and value.is_integer())
        ):
            raise ConfigError(f"'{path}' must be an integer, got {value!r}")
        return int(value)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"'{path}' must be a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"'{path}' must be a string, got {value!r}")
        return value
    return value  # pragma: no cover - every annotation above is handled
