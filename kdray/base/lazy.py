"""Names a package re-exports without importing their modules until first used (PEP 562).

A package whose modules need torch or transformers re-exports their public names this way, so
that importing one light module of it (the task table, a sweep file's checks) does not load
the rest:

    __getattr__ = lazy_exports(__name__, {"kdray.data.dataset": ("TaskData", "load_task")})
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence


def lazy_exports(package: str, modules: Mapping[str, Sequence[str]]) -> Callable[[str], object]:
    """A module-level `__getattr__` for `package`: each name of `modules` (module -> the names
    it defines) is imported from its module on first access."""
    where = {name: module for module, names in modules.items() for name in names}

    def __getattr__(name: str) -> object:
        if name in where:
            return getattr(importlib.import_module(where[name]), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
