"""kdray.analysis: planted effects recovered, no effect found where none is, schedules replay."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from kdray.analysis import (
    TEACHER_COLUMNS,
    AnalysisError,
    Sweep,
    export_schedule,
    knowledge_by_phase,
    load_sweep,
    policy_reward_by_phase,
    teacher_by_phase,
)
from kdray.analysis.report import write_report
from kdray.base.errors import ConfigError
from kdray.base.results import PHASE_LOG
from kdray.config import TrialConfig
from kdray.training.trainer import distil

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
    result = distil(TrialConfig.from_dict(raw))
    log = pd.read_parquet(Path(result.output_dir) / PHASE_LOG)
    assert len(log) == 4
    for row, bucket in zip(log.itertuples(), exported, strict=True):
        assert bucket["start"] <= row.progress_start < bucket["end"]
        for k in TYPES:
            assert getattr(row, f"w_{k}") == pytest.approx(bucket["weights"][k], abs=1e-6)


def teacher_sweep(mode: str = "max") -> Sweep:
    """Three trials of a multi-teacher sweep, phase logs built per trial and concatenated as
    load_sweep does: a (best) and b (worst) with the pool big+small, c with big only (no
    tw_small column: NaN after the concat); b read no teacher output in its second phase; a used
    the rl teacher policy (tp_reward, tp_baseline) and has a stage-A phase that must not count."""
    weights = {"a": ([0.8, 0.6, 0.4, 0.2], [0.2, 0.4, 0.6, 0.8]),
               "b": ([0.2, np.nan, 0.5, 0.5], [0.8, np.nan, 0.5, 0.5]),
               "c": ([1.0] * 4, None)}  # fmt: skip
    val = {"a": 0.9, "b": 0.6, "c": 0.7}
    logs = []
    for tid, (big, small) in weights.items():
        log = pd.DataFrame({"trial_id": tid, "final": True, "phase": range(4),
                            "progress_start": [0.0, 0.25, 0.5, 0.75],
                            "progress": [0.25, 0.5, 0.75, 1.0],
                            "val_metric": [np.nan, 0.5, 0.5, val[tid]], "tw_big": big})  # fmt: skip
        if small is not None:
            log["tw_small"] = small
        if tid == "a":
            log["tp_reward"] = [0.1, 0.3, 0.5, 0.7]
            log["tp_baseline"] = [0.05, 0.1, 0.2, 0.3]
            stage_a = {"trial_id": "a", "final": False, "phase": -1, "progress_start": 0.0,
                       "progress": 0.25, "val_metric": np.nan, "tw_big": 0.0, "tw_small": 1.0,
                       "tp_reward": 9.0, "tp_baseline": 9.0}  # fmt: skip
            log = pd.concat([pd.DataFrame([stage_a]), log], ignore_index=True)
        logs.append(log)
    trials = pd.DataFrame({"trial_id": list(val), "status": "finished",
                           "val_metric": list(val.values()), "test_metric": np.nan,
                           "steps": 20, "wall_s": [3.0, 1.0, 2.0]})  # fmt: skip
    phases = pd.concat(logs, ignore_index=True)
    return Sweep("synthetic", trials, pd.DataFrame(), phases, mode=mode)


def teacher_cell(table: pd.DataFrame, teacher: str, start: float) -> dict[str, Any]:
    row = table[(table["teacher"] == teacher) & (table["start"] == start)]
    assert len(row) == 1
    return dict(row.iloc[0])


def test_teacher_weights_by_bucket_top_and_bottom() -> None:
    table = teacher_by_phase(teacher_sweep(), buckets=(0, 0.5, 1))
    assert list(table.columns) == list(TEACHER_COLUMNS)
    assert list(table["teacher"]) == ["big", "small", "big", "small"]
    assert list(table["bucket"]) == ["[0, 0.5)", "[0, 0.5)", "[0.5, 1]", "[0.5, 1]"]
    # 3 trials, quantile 0.25: top = a (0.9), bottom = b (0.6); b's NaN phase and a's stage-A
    # phase count nowhere, c's missing tw_small counts nowhere for small
    expected = {
        ("big", 0.0): (3.6 / 5, 0.7, 0.2, 3, 5),
        ("small", 0.0): (1.4 / 3, 0.3, 0.8, 2, 3),
        ("big", 0.5): (3.6 / 6, 0.3, 0.5, 3, 6),
        ("small", 0.5): (2.4 / 4, 0.7, 0.5, 2, 4),
    }
    for (teacher, start), (mean, top, bottom, n_trials, n_phases) in expected.items():
        c = teacher_cell(table, teacher, start)
        assert c["mean_weight"] == pytest.approx(mean), (teacher, start)
        assert c["top_weight"] == pytest.approx(top), (teacher, start)
        assert c["bottom_weight"] == pytest.approx(bottom), (teacher, start)
        assert (c["n_trials"], c["n_phases"]) == (n_trials, n_phases), (teacher, start)


def test_teacher_weights_rank_by_the_sweeps_mode_or_the_logs_val_metric() -> None:
    minimized = teacher_by_phase(teacher_sweep(mode="min"), buckets=(0, 0.5, 1))
    c = teacher_cell(minimized, "big", 0.0)
    assert (c["top_weight"], c["bottom_weight"]) == pytest.approx((0.2, 0.7))  # b best
    # a bare phase-log frame: trials ranked by their last val_metric in it (higher better)
    sweep = teacher_sweep()
    from_phases = teacher_by_phase(sweep.phases, buckets=(0, 0.5, 1))
    pd.testing.assert_frame_equal(from_phases, teacher_by_phase(sweep, buckets=(0, 0.5, 1)))
    with pytest.raises(ConfigError, match="cover"):
        teacher_by_phase(sweep, buckets=(0, 0.5))


def test_no_teacher_columns_give_empty_tables() -> None:
    sweep = synthetic(effect=False)
    table = teacher_by_phase(sweep)
    assert table.empty and list(table.columns) == list(TEACHER_COLUMNS)
    assert policy_reward_by_phase(sweep).empty
    no_logs = Sweep("synthetic", sweep.trials, pd.DataFrame(), pd.DataFrame())
    assert teacher_by_phase(no_logs).empty and policy_reward_by_phase(no_logs).empty


def test_policy_reward_and_baseline_by_bucket() -> None:
    table = policy_reward_by_phase(teacher_sweep(), buckets=(0, 0.5, 1))
    assert list(table["bucket"]) == ["[0, 0.5)", "[0.5, 1]"]
    assert list(table["reward"]) == pytest.approx([0.2, 0.6])  # a's stage-A phase left out
    assert list(table["baseline"]) == pytest.approx([0.075, 0.25])
    assert list(table["n_trials"]) == [1, 1] and list(table["n_phases"]) == [2, 2]


def test_report_has_teachers_only_when_logged(tmp_path: Path) -> None:
    sweep = teacher_sweep()
    write_report(sweep, tmp_path / "multi", [0, 0.5, 1], "html")
    report = (tmp_path / "multi" / "report.md").read_text()
    assert "## Teachers by phase" in report and "![teacher weights](teacher_weights.png)" in report
    assert "REINFORCE" in report
    assert "Knowledge by phase\n\nNot available" in report  # no phase rewards: the rest stays
    assert (tmp_path / "multi" / "teacher_weights.png").read_bytes()[:4] == b"\x89PNG"
    assert '<img alt="teacher weights"' in (tmp_path / "multi" / "report.html").read_text()
    saved = pd.read_csv(tmp_path / "multi" / "teacher_by_phase.csv")
    pd.testing.assert_frame_equal(saved, teacher_by_phase(sweep, [0, 0.5, 1]), check_dtype=False)

    single = synthetic(effect=True, trials=6)
    single.trials = single.trials.assign(status="finished", test_metric=np.nan, steps=20,
                                         wall_s=1.0)  # fmt: skip
    write_report(single, tmp_path / "single", [0, 0.5, 1], "md")
    report = (tmp_path / "single" / "report.md").read_text()
    assert "## Knowledge by phase" in report
    assert "Teachers by phase" not in report and "teacher weight" not in report
    assert not (tmp_path / "single" / "teacher_weights.png").exists()
    assert not (tmp_path / "single" / "teacher_by_phase.csv").exists()


def recipes_sweep() -> Sweep:
    """Two recipes x 3 seeds (b's seed 2 pruned), phase rewards only for a's trials: soft
    helps early under a (the planted effect of `synthetic`)."""
    base = synthetic(effect=True, trials=6)
    recipe = ["a", "a", "a", "b", "b", "b"]
    trials = base.trials.assign(**{
        "config/recipe": recipe, "config/trainer.seed": [0, 1, 2, 0, 1, 2],
        "status": ["finished"] * 5 + ["pruned"], "val_metric": [0.8, 0.82, 0.84, 0.7, 0.9, 0.6],
        "test_metric": [0.75, 0.80, 0.85, 0.70, 0.81, 0.5], "wall_s": [10.0] * 6, "steps": 20,
    })  # fmt: skip
    phases = base.phases[base.phases["trial_id"].isin(["t0", "t1", "t2"])]
    search = {"recipe": {"grid": ["a", "b"]}, "trainer.seed": {"grid": [0, 1, 2]}}
    return Sweep("synthetic", trials, pd.DataFrame(), phases, search=search)


def test_methods_are_compared_per_seed_against_the_best(tmp_path: Path) -> None:
    from kdray.analysis.methods import knowledge_by_method, methods_table

    table = methods_table(recipes_sweep()).set_index("method")
    a, b = table.loc["a"], table.loc["b"]
    assert (a["trials"], a["finished"], b["trials"], b["finished"]) == (3, 3, 3, 2)
    assert a["val_mean"] == pytest.approx(0.82) and b["val_mean"] == pytest.approx(0.8)
    assert a["test_std"] == pytest.approx(0.05)  # 0.75, 0.80, 0.85
    assert (a["reference"], b["reference"]) == ("a", "a")  # best by validation
    # b − a on the seeds both finished (0, 1): (0.70 − 0.75 + 0.81 − 0.80) / 2
    assert b["test_diff"] == pytest.approx(-0.02) and b["paired_seeds"] == 2
    assert b["seeds_ahead"] == 1 and a["test_diff"] == 0 and a["paired_seeds"] == 3
    by_method = knowledge_by_method(recipes_sweep(), [0, 0.5, 1])
    assert set(by_method["method"]) == {"a"}  # b's trials logged no phase rewards
    assert (by_method["n_trials"] == 3).all()
    write_report(recipes_sweep(), tmp_path / "r", [0, 0.5, 1], "md")
    report = (tmp_path / "r" / "report.md").read_text()
    assert "## Methods compared (recipe)" in report and "each method used when" in report
    assert pd.read_csv(tmp_path / "r" / "methods.csv")["method"].tolist() == ["a", "b"]
    plain = synthetic(effect=True, trials=6)  # no method searched: no section
    assert methods_table(plain).empty and knowledge_by_method(plain).empty
