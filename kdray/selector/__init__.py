"""Selectors: name -> class table, validation and construction."""

from __future__ import annotations

from kdray.config import KnowledgeConfig, SelectorConfig
from kdray.errors import ConfigError, unknown
from kdray.selector.base import PhaseOutcome, PhaseState, Selector
from kdray.selector.static import StaticSelector

__all__ = ["SELECTORS", "PhaseOutcome", "PhaseState", "Selector", "build_selector"]

SELECTORS: dict[str, type[Selector]] = {"static": StaticSelector}


def validate_selector(cfg: SelectorConfig, knowledge: KnowledgeConfig) -> None:
    if cfg.kind not in SELECTORS:
        raise unknown("selector kind", cfg.kind, SELECTORS, "selector.kind")
    if cfg.phase_length <= 0:
        raise ConfigError(f"'selector.phase_length' must be > 0, got {cfg.phase_length}")


def build_selector(cfg: SelectorConfig, types: tuple[str, ...]) -> Selector:
    return SELECTORS[cfg.kind](types)
