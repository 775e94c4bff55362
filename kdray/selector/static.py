"""`static`: every active knowledge type at action 1 (the weights are knowledge.weights)."""

from __future__ import annotations

from kdray.selector.base import PhaseState, Selector


class StaticSelector(Selector):
    kind = "static"

    def start_phase(self, state: PhaseState) -> dict[str, float]:
        return dict.fromkeys(self.types, 1.0)
