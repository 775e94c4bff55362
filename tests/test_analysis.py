"""kdray.analysis: planted effects recovered, no effect found where none is, schedules replay."""

from __future__ import annotations

import itertools
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from kdray.analysis import (
    AnalysisError,
    Sweep,
    export_schedule,
    knowledge_by_phase,
    load_sweep,
)
from kdray.config import TrialConfig
from kdray.errors import ConfigError
from kdray.results import PHASE_LOG, TRIAL_RUN_DIR
from kdray.trainer import run_trial

TYPES = ["hard", "soft", "hidden"]


def synthetic(effect: bool, trials: int = 40, phases: int = 8, seed: int = 0) -> Sweep:
    """Random weights per phase; the reward drop rises with soft early and hidden late."""
    rng = np.random.default_rng(seed)
    rows = []
    for t in range(trials):
        for p in range(phases):
            start = p / phases
            w = dict(zip(TYPES, rng.uniform(0, 1, len(TYPES)), strict=True))
            drop = rng.normal(0, 0.005)
            if effect:
                drop += 0.02 * (w["soft"] if start < 0.5 else w["hidden"])
            rows.append({"trial_id": f"t{t}", "phase": p, "progress_start": start,
                         "progress": (p + 1) / phases, "final": True, "reward_drop": drop,
                         **{f"w_{k}": v for k, v in w.items()}})  # fmt: skip
    trials_df = pd.DataFrame(
        {"trial_id": [f"t{t}" for t in range(trials)], "val_metric": rng.uniform(0.7, 0.9, trials)}
    )
    return Sweep("synthetic", trials_df, pd.DataFrame(), pd.DataFrame(rows))


def cell(table: pd.DataFrame, knowledge: str, start: float) -> pd.Series:
    return table[(table["knowledge"] == knowledge) & (table["start"] == start)].iloc[0]


def test_planted_effects_are_recovered_with_sign_and_ci() -> None:
    table = knowledge_by_phase(synthetic(effect=True), buckets=(0, 0.5, 1), n_boot=300)
    assert len(table) == len(TYPES) * 2
    early_soft, late_hidden = cell(table, "soft", 0.0), cell(table, "hidden", 0.5)
    for c in (early_soft, late_hidden):
        assert c["effect"] == pytest.approx(0.02, abs=0.005)
        assert c["ci_low"] > 0 and c["significant"]
    for k, start in (("soft", 0.5), ("hidden", 0.0), ("hard", 0.0), ("hard", 0.5)):
        c = cell(table, k, start)
        assert c["ci_low"] < 0 < c["ci_high"] and not c["significant"], (k, start)
    assert (table["n_trials"] == 40).all() and (table["n_phases"] == 160).all()


def test_no_effect_gives_cis_covering_zero() -> None:
    table = knowledge_by_phase(synthetic(effect=False), buckets=(0, 0.5, 1), n_boot=300)
    assert ((table["ci_low"] < 0) & (table["ci_high"] > 0)).all()
    assert not table["significant"].any()


def test_top_and_bottom_trials_weights() -> None:
    sweep = synthetic(effect=False)
    best = sweep.trials.sort_values("val_metric").iloc[-1]["trial_id"]
    table = knowledge_by_phase(sweep, buckets=(0, 1), quantile=1 / 40, n_boot=10)
    rows = sweep.phases[sweep.phases["trial_id"] == best]
    assert cell(table, "soft", 0.0)["top_weight"] == pytest.approx(rows["w_soft"].mean())


@pytest.mark.parametrize("buckets", [(0, 0.5), (0.1, 1), (0, 0.6, 0.5, 1), (0,)])
def test_buckets_must_cover_0_to_1(buckets: tuple[float, ...]) -> None:
    with pytest.raises(ConfigError, match="cover"):
        knowledge_by_phase(synthetic(effect=False), buckets=buckets)


def test_phase_logs_without_rewards_name_the_selectors() -> None:
    sweep = synthetic(effect=False)
    sweep.phases["reward_drop"] = np.nan
    with pytest.raises(AnalysisError, match=r"acks.*measure_reward: true"):
        knowledge_by_phase(sweep)


def test_not_a_sweep_folder(tmp_path: Path) -> None:
    with pytest.raises(AnalysisError, match="not a sweep folder"):
        load_sweep(tmp_path)


def test_exported_schedule_replays_phase_by_phase(tiny_cfg: dict, tmp_path: Path) -> None:
    buckets = (0, 0.25, 0.5, 0.75, 1)
    table = knowledge_by_phase(synthetic(effect=True), buckets=buckets, n_boot=10)
    path = export_schedule(table, tmp_path / "schedule.yaml")
    exported = yaml.safe_load(path.read_text())["schedule"]
    assert [(b["start"], b["end"]) for b in exported] == list(itertools.pairwise(buckets))
    raw: dict[str, Any] = {**tiny_cfg, "knowledge": {"types": TYPES}}
    raw["selector"] = {"kind": "schedule", "schedule_file": str(path), "phase_length": 5}
    raw["trainer"] = {**raw["trainer"], "max_steps": 20}
    result = run_trial(TrialConfig.from_dict(raw))
    log = pd.read_parquet(Path(result.output_dir) / PHASE_LOG)
    assert len(log) == 4
    for row, bucket in zip(log.itertuples(), exported, strict=True):
        assert bucket["start"] <= row.progress_start < bucket["end"]
        for k in TYPES:
            assert getattr(row, f"w_{k}") == pytest.approx(bucket["weights"][k], abs=1e-6)


@pytest.mark.slow
def test_load_and_report_a_real_tiny_sweep(tiny_cfg: dict, tmp_path: Path) -> None:
    from tests.test_sweep import sweep_cli, tiny_space

    tiny_cfg["trainer"] = {**tiny_cfg["trainer"], "max_steps": 20}
    space = tiny_space(tiny_cfg, tmp_path / "tiny.yaml",
                       {"selector.kind": {"grid": ["all", "acks"]},
                        "trainer.learning_rate": {"grid": [1e-4, 3e-4]}},
                       num_samples=1, max_concurrent=2)  # fmt: skip
    proc = sweep_cli("--space", str(space), "--storage", str(tmp_path), cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    sweep = load_sweep(tmp_path / "tiny")
    assert len(sweep.trials) == 4 and set(sweep.trials["status"]) == {"finished"}
    for col in ("trial_id", "status", "config/selector.kind", "config/trainer.learning_rate",
                "config/knowledge.temperature", "val_metric", "best_val_metric",
                "test_metric", "steps", "wall_s"):  # fmt: skip
        assert col in sweep.trials, col
    assert {"trial_id", "val_metric", "step", "training_iteration"} <= set(sweep.history)
    assert len(sweep.history) == 4 * 4  # 4 evaluations per trial (+ the final report)
    assert {"trial_id", "phase", "progress_start", "reward_drop", "w_soft"} <= set(sweep.phases)
    assert len(sweep.phases) == 4 * 4  # every trial logs its 4 phases
    by_uri = load_sweep(f"file://{tmp_path / 'tiny'}")  # a storage URI, through pyarrow
    pd.testing.assert_frame_equal(by_uri.phases, sweep.phases)
    assert list(by_uri.trials["val_metric"]) == list(sweep.trials["val_metric"])

    # a corrupt phase log is named and skipped; the rest is analysed
    victim = Path(sweep.trials["path"].iloc[0]) / TRIAL_RUN_DIR / PHASE_LOG
    victim.write_bytes(b"not parquet")
    again = load_sweep(tmp_path / "tiny")
    assert len(again.skipped) == 1 and str(victim) in again.skipped[0]
    assert again.phases["trial_id"].nunique() == 3

    report = subprocess.run(
        [sys.executable, "-m", "kdray.analyze", str(tmp_path / "tiny"), "--buckets", "0,0.5,1",
         "--format", "html"], capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert report.returncode == 0, report.stderr[-3000:]
    out = tmp_path / "tiny" / "analysis"
    for name in ("report.md", "report.html", "heatmap.png", "trajectories.png", "cost.png",
                 "leaderboard.png", "schedule.yaml", "knowledge_by_phase.csv"):  # fmt: skip
        assert (out / name).is_file(), name
    assert "Knowledge by phase" in (out / "report.md").read_text()
    assert "Hyperparameter importance" in (out / "report.md").read_text()
