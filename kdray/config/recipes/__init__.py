"""Named recipes: published distillation methods as config presets.

A trial config (or one sweep trial) that says `recipe: NAME` starts from the preset
`kdray/config/recipes/NAME.yaml` (one file per recipe; `RECIPES` lists them) and overrides it key by
key: sections merge, values and lists (`knowledge.types`, `stages`) replace, mapping entries
(`knowledge.weights`, `schedules`) are added to. Every recipe is plain config data, so it validates,
sweeps and analyses like any other config, and `recipe` can be searched (`recipe: {choice: [acks,
vanilla, mlkd, dwt]}`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kdray.base.errors import ConfigError, unknown
from kdray.base.yamlio import load_yaml

HERE = Path(__file__).parent


#: `recipe` name -> its preset file: every YAML file of this folder.
RECIPES: dict[str, Path] = {p.stem: p for p in sorted(HERE.glob("*.yaml"))}


def load_recipe(name: str) -> dict[str, Any]:
    """The preset `name` as plain config data."""
    if not isinstance(name, str) or name not in RECIPES:
        raise unknown("recipe", str(name), RECIPES, "recipe")
    data = load_yaml(RECIPES[name])
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
