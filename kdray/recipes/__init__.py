"""Named recipes: published distillation methods as config presets (issue 15).

A trial config (or one sweep trial) that says `recipe: NAME` starts from the preset
`kdray/recipes/NAME.yaml` and overrides it key by key: sections merge, values and lists
(`knowledge.types`, `stages`) replace, mapping entries (`knowledge.weights`, `schedules`) are
added to. Every recipe is plain config data, so it validates, sweeps and analyses like any
other config, and `recipe` can be searched (`recipe: {choice: [acks, vanilla, mlkd, dwt]}`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kdray.errors import ConfigError, unknown
from kdray.yamlio import load_yaml

HERE = Path(__file__).parent


def recipe_names() -> list[str]:
    return sorted(p.stem for p in HERE.glob("*.yaml"))


def load_recipe(name: str) -> dict[str, Any]:
    """The preset `name` as plain config data."""
    if not isinstance(name, str) or name not in recipe_names():
        raise unknown("recipe", str(name), recipe_names(), "recipe")
    data = load_yaml(HERE / f"{name}.yaml")
    if "recipe" in data:
        raise ConfigError(f"recipe '{name}' names another recipe; recipes do not nest")
    return data


def merged(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """`base` overridden by `over`: nested mappings merge, everything else is replaced."""
    out = dict(base)
    for k, v in over.items():
        both = isinstance(v, Mapping) and isinstance(base.get(k), Mapping)
        out[k] = merged(base[k], v) if both else v
    return out


def with_recipe(raw: Mapping[str, Any]) -> Mapping[str, Any]:
    """`raw` over its recipe's preset (`raw` itself when it names none)."""
    name = raw.get("recipe")
    return raw if name is None else merged(load_recipe(name), raw)
