"""The bottom layer: errors, files and plain data that every other package uses.

- `errors`: `KdrayError` and its kinds (`ConfigError`, `DataError`, `WriteError`).
- `io`: atomic writes, the cache root, storage URIs.
- `yamlio`: YAML through `yaml.safe_load`, with the line of an error.
- `strict`: frozen dataclasses from nested dicts, refusing unknown keys.
- `results`: a run folder's schema: the files training writes and analysis reads.
- `tensors`: small tensor helpers (torch; imported by name, not re-exported here).
- `registry`: the one style of kdray's pluggable families (`name_table`).
- `lazy`: re-exports that import their module on first use.

May import: nothing else of kdray.
"""

from kdray.base.errors import ConfigError, DataError, KdrayError, WriteError
from kdray.base.io import atomic_dir, atomic_path, atomic_write_text, cache_root, storage_fs
from kdray.base.yamlio import load_yaml, parse_yaml

__all__ = [
    "ConfigError",
    "DataError",
    "KdrayError",
    "WriteError",
    "atomic_dir",
    "atomic_path",
    "atomic_write_text",
    "cache_root",
    "load_yaml",
    "parse_yaml",
    "storage_fs",
]
