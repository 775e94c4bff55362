"""YAML reading for configs, sweep files and schedules: safe loading only, errors name the line.

Shared by the command lines (`kdray.cli`), sweep files (`kdray.search.spec`) and schedule files
(`kdray.selector.baselines`), so none of them needs the CLI plumbing.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from kdray.base.errors import ConfigError


class SafeLoader(yaml.SafeLoader):
    """yaml.SafeLoader (no object construction) that also reads `1e-4` as a float, as YAML
    1.2 and every Python user do; YAML 1.1 wants `1.0e-4` and would return the string."""


SafeLoader.add_implicit_resolver(  # copies the resolver table: yaml.SafeLoader is untouched
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def safe_load(text: str) -> Any:
    """yaml.safe_load with exponent floats (see SafeLoader)."""
    return yaml.load(text, Loader=SafeLoader)  # a SafeLoader subclass: no object tags


def load_yaml(path: str | Path) -> dict[str, Any]:
    """A YAML mapping (safe loading only); errors name the file and line."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file '{path}' not found")
    return parse_yaml(path.read_text(), str(path))


def read_yaml(text: str, source: str) -> Any:
    """YAML text (from `source`, for messages) -> data; malformed YAML names the line."""
    try:
        return safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"malformed YAML in '{source}'{where}: {problem}") from exc


def parse_yaml(text: str, source: str) -> dict[str, Any]:
    """YAML text (from `source`, for messages) -> a mapping of config sections."""
    data = read_yaml(text, source)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"'{source}' must hold a mapping of config sections")
    return data


def parse_override(text: str) -> tuple[str, Any]:
    """'trainer.max_steps=100' -> ('trainer.max_steps', 100); the value is read as YAML."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise ConfigError(f"--set expects KEY=VALUE (e.g. trainer.max_steps=100), got '{text}'")
    return key.strip(), read_yaml(value, f"--set {text}")
