"""Shared command-line plumbing: YAML configs, --set overrides, and clean exits on user errors."""

from __future__ import annotations

import argparse
import logging
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

from kdray.config import TrialConfig, set_path
from kdray.errors import ConfigError, KdrayError


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


def trial_config(
    config: str | None, overrides: Sequence[str] = (), data_dir: str | None = None
) -> TrialConfig:
    """Config file (or defaults) + --set overrides + --data-dir, validated."""
    raw = load_yaml(config) if config else {}
    for item in overrides:
        key, value = parse_override(item)
        set_path(raw, key, value)
    if data_dir is not None:
        set_path(raw, "data.data_dir", str(Path(data_dir).expanduser().resolve()))
    return TrialConfig.from_dict(raw)


def add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML trial config (sections data, teacher, ...)")
    parser.add_argument(
        "--data-dir",
        help="GLUE folder in the classic TSV layout (default: $KDRAY_GLUE_DIR, else the hub)",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one config value, e.g. --set trainer.max_steps=100 (repeatable)",
    )


def run_cli(main: Callable[[], int | None]) -> None:
    """Run `main`; a KdrayError becomes one line on stderr and exit code 2, no traceback."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "urllib3", "filelock", "datasets"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # weight-init notices for a new student head are expected
    hf_logging.disable_progress_bar()
    try:
        code = main()
    except KdrayError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print(
            "interrupted; rerun the same command to resume from the last checkpoint",
            file=sys.stderr,
        )
        sys.exit(130)
    sys.exit(code or 0)
