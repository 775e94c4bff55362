"""The phase log: one row per phase, the weight summaries reported with each evaluation, and
the Parquet file (`kdray.base.results.PHASE_LOG`, column schema there) rewritten atomically."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from kdray.base.io import atomic_path
from kdray.base.results import PHASE_LOG
from kdray.base.tensors import default_float


class PhaseLog:
    """Rows of every phase so far (a list of dicts: checkpointed as plain values)."""

    def __init__(self, run_id: str, selector: str, types: tuple[str, ...]) -> None:
        self.run_id, self.selector, self.types = run_id, selector, types
        self.rows: list[dict[str, Any]] = []

    def add(
        self,
        *,
        stage: int,
        episode: int,
        final: bool,
        phase: int,
        step: int,
        progress: float,
        progress_start: float,
        weights: dict[str, float],
        losses: dict[str, float],
        reward_before: float | None,
        reward_after: float | None,
        val_metric: float,
        extra: dict[str, float],
    ) -> None:
        self.rows.append(
            {
                "run_id": self.run_id,
                "selector": self.selector,
                "stage": stage,
                "episode": episode,
                "final": final,
                "phase": phase,
                "step": step,
                "progress": progress,
                "progress_start": progress_start,
                **{f"w_{k}": w for k, w in weights.items()},
                **{f"loss_{k}": losses.get(k, math.nan) for k in self.types},
                "reward": math.nan,
                "q_value": math.nan,
                "reward_loss": math.nan if reward_after is None else reward_after,
                "reward_drop": math.nan
                if reward_after is None or reward_before is None
                else reward_before - reward_after,
                "val_metric": val_metric,
                **extra,
            }
        )

    def set_val(self, episode: int, step: int, value: float) -> bool:
        """Put a validation score on the row of the phase that ended at (episode, step);
        False when no such row is the last one (the phase is still under way)."""
        last = self.rows[-1] if self.rows else None
        if last and last["episode"] == episode and last["step"] == step:
            last["val_metric"] = value
            return True
        return False

    def weight_summary(self, since: int, current: dict[str, float] | None) -> dict[str, float]:
        """Mean weight per knowledge type, their spread over phases and the share of weights
        within 0.05 of 0 or 1, over the final segment's phases that ended after step `since`,
        else `current` (the phase under way): a collapsed or saturated policy shows here."""
        rows = [
            [r[f"w_{k}"] for k in self.types] for r in self.rows if r["final"] and r["step"] > since
        ]
        if not rows and current:
            rows = [[current[k] for k in self.types]]
        if not rows:
            return {}
        w = torch.tensor(rows)  # (P, K)
        out = {f"selector/weight_{k}": float(v) for k, v in zip(self.types, w.mean(0), strict=True)}
        out["selector/action_spread"] = float(w.std(0, unbiased=False).mean())
        out["selector/action_saturation"] = float(default_float((w < 0.05) | (w > 0.95)).mean())
        return out

    def write(self, out_dir: Path) -> None:
        """All rows so far as Parquet, atomically."""
        import pandas as pd

        with atomic_path(out_dir / PHASE_LOG) as tmp:
            pd.DataFrame(self.rows).to_parquet(tmp, index=False)
