"""Counterfactual knowledge probes (kdray.training.probes) and paired method comparisons."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from kdray.analysis import (
    AnalysisError,
    Sweep,
    aligned_predictions,
    compare,
    export_schedule,
    knowledge_by_phase,
)
from kdray.analysis.stats import SEEDS_AND_EXAMPLES, paired_metric_bootstrap
from kdray.base.errors import ConfigError
from kdray.base.results import PHASE_LOG, PREDICTIONS, PROBES, RESULTS
from kdray.config import TrialConfig
from kdray.models.classifier import encode
from kdray.models.features import Needs
from kdray.training.build import Setup
from kdray.training.probes import CONTROL, CURRENT, Prober
from kdray.training.trainer import distil
from tests.helpers import CrashAtStep


def probe_cfg(tiny_cfg: dict[str, Any], tmp_path: Path, name: str, probe: dict[str, Any],
              **over: Any) -> TrialConfig:  # fmt: skip
    raw = {**tiny_cfg, "probe": probe}
    raw["data"] = {**raw["data"], "reward_fraction": 0.1}
    raw["selector"] = {"phase_length": 5, "kind": "acks"}
    raw["trainer"] = {**raw["trainer"], "max_steps": 20, "output_dir": str(tmp_path / name)}
    return TrialConfig.from_dict(raw).replace(**over)


def frame(folder: Path, name: str) -> pd.DataFrame:
    return pd.read_parquet(folder / name).drop(columns="run_id")


def test_a_probed_run_is_the_same_run(tiny_cfg: dict[str, Any], tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """Probing every other phase (ACKS: its RNG, its agent) leaves the phase log, the
    validation history and the test metrics as they are without probes; each fork leaves the
    run's student, optimiser, RNG and step untouched; the rows and the cost are recorded."""
    plain = distil(probe_cfg(tiny_cfg, tmp_path, "plain", {}))
    seen: list[int] = []
    original = Prober.probe

    def checked(self: Prober, run: Any) -> None:
        moments = run.optimizer.state_dict()["state"]
        before = (torch.get_rng_state(), run.step, run.phase,
                  {k: v.clone() for k, v in run.s.student.state_dict().items()},
                  {k: v["exp_avg"].clone() for k, v in moments.items()})  # fmt: skip
        original(self, run)
        assert torch.equal(torch.get_rng_state(), before[0])
        assert (run.step, run.phase) == before[1:3]
        for k, v in run.s.student.state_dict().items():
            assert torch.equal(v, before[3][k]), k
        for k, v in run.optimizer.state_dict()["state"].items():
            assert torch.equal(v["exp_avg"], before[4][k])
        seen.append(run.step)

    monkeypatch.setattr(Prober, "probe", checked)
    probed = distil(probe_cfg(tiny_cfg, tmp_path, "probed", {"every": 2}))
    assert seen == [0, 10]  # phases 0 and 2 of 4
    pd.testing.assert_frame_equal(frame(tmp_path / "plain", PHASE_LOG),
                                  frame(tmp_path / "probed", PHASE_LOG))  # fmt: skip
    assert probed.test == plain.test
    assert [h["val_metric"] for h in probed.history] == [h["val_metric"] for h in plain.history]
    rows = pd.read_parquet(tmp_path / "probed" / PROBES)
    assert list(rows["arm"][:5]) == [CONTROL, "soft", "hidden", "relation", CURRENT]
    assert (rows["steps"] == 5).all() and len(rows) == 10
    assert (rows.loc[rows["arm"] == CONTROL, "effect"] == 0).all()
    drop = rows["loss_before"] - rows["loss_after"]
    np.testing.assert_allclose(rows["loss_drop"], drop)
    assert rows.loc[rows["arm"] == "soft", ["w_hard", "w_soft", "w_hidden"]].iloc[0].tolist() == [
        1.0, 1.0, 0.0]  # fmt: skip
    cost = json.loads((tmp_path / "probed" / RESULTS).read_text())["probes"]
    assert cost["probes"] == 2 and cost["steps"] == 50 and cost["step_overhead"] == 2.5
    assert cost["seconds"] > 0 and plain.probes is None
    reported = [h for h in probed.history if "probe/soft" in h]
    assert reported and reported[-1]["probe/steps"] == 50.0


def test_resume_after_a_kill_mid_probe_is_exact(
    tiny_cfg: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed in the third arm of the probe at step 10 (after the checkpoint at step 10), the
    resumed run probes again from the same state: the same phase log, probe rows and test
    metrics as a run never killed."""
    whole = distil(probe_cfg(tiny_cfg, tmp_path, "a", {"every": 1}))
    original, calls = Prober._train, [0]

    def killed(self: Prober, run: Any, weights: Any, k: int) -> Any:
        calls[0] += 1
        if calls[0] == 13:  # probes at steps 0 and 5 ran 5 arms each
            raise KeyboardInterrupt
        return original(self, run, weights, k)

    with monkeypatch.context() as m:
        m.setattr(Prober, "_train", killed)
        with pytest.raises(KeyboardInterrupt):
            distil(probe_cfg(tiny_cfg, tmp_path, "b", {"every": 1}))
    assert calls[0] == 13
    resumed = distil(probe_cfg(tiny_cfg, tmp_path, "b", {"every": 1}))
    pd.testing.assert_frame_equal(
        frame(tmp_path / "a", PHASE_LOG), frame(tmp_path / "b", PHASE_LOG)
    )
    a, b = frame(tmp_path / "a", PROBES), frame(tmp_path / "b", PROBES)
    pd.testing.assert_frame_equal(a.drop(columns="seconds"), b.drop(columns="seconds"))
    assert resumed.test == whole.test


def test_killed_between_probes_resumes_exactly(tiny_cfg: dict[str, Any], tmp_path: Path) -> None:
    """A kill at a checkpoint (step 10) of a probing run: same rows after resuming."""
    distil(probe_cfg(tiny_cfg, tmp_path, "a", {"at": [0.5, 0.8]}))
    with pytest.raises(KeyboardInterrupt):
        distil(probe_cfg(tiny_cfg, tmp_path, "b", {"at": [0.5, 0.8]}), CrashAtStep(10))
    distil(probe_cfg(tiny_cfg, tmp_path, "b", {"at": [0.5, 0.8]}))
    a, b = frame(tmp_path / "a", PROBES), frame(tmp_path / "b", PROBES)
    assert a["step"].unique().tolist() == [10, 15]  # the phases holding t/T = 0.5 and 0.8
    pd.testing.assert_frame_equal(a.drop(columns="seconds"), b.drop(columns="seconds"))


@pytest.mark.parametrize(
    ("probe", "types", "message"),
    [
        ({"every": -1}, None, "'probe.every' must be >= 0"),
        ({"at": [0.2, 1.0]}, None, "'probe.at' holds points of training progress in [0, 1)"),
        ({"every": 2, "steps": 0}, None, "'probe.steps'"),
        ({"every": 2}, ["soft", "hidden"], "has no 'hard'"),
        ({"every": 2}, ["hard"], "has only 'hard'"),
    ],
)
def test_bad_probe_configs_are_refused(tiny_cfg: dict[str, Any], probe: dict[str, Any],
                                       types: list[str] | None, message: str) -> None:  # fmt: skip
    raw = {**tiny_cfg, "probe": probe}
    if types:
        raw["knowledge"] = {"types": types}
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace(")", r"\)")):
        TrialConfig.from_dict(raw)


# ------------------------------------------------------------------------ a planted toy


def plant(monkeypatch: pytest.MonkeyPatch, switch: int) -> None:
    """soft helps before step `switch` and hurts after it; hidden the other way round.

    Helping: the loss of the student on a batch of the reward split itself (the held-out
    loss the probes measure falls); hurting: the same with flipped labels."""
    original = Setup.losses

    def losses(self: Setup, batch: Any, weights: Any, policy: Any, step: int) -> Any:
        out = original(self, batch, weights, policy, step)
        held = {k: v.to(self.device) for k, v in self.data.reward.batch(torch.arange(32)).items()}
        logits = encode(self.student, held, Needs()).logits
        good = F.cross_entropy(logits, held["labels"])
        bad = F.cross_entropy(logits, 1 - held["labels"])
        early = step < switch
        if "soft" in out:
            out["soft"] = good if early else bad
        if "hidden" in out:
            out["hidden"] = bad if early else good
        return out

    monkeypatch.setattr(Setup, "losses", losses)


@pytest.mark.slow
def test_probes_find_a_planted_early_and_late_effect(
    tiny_cfg: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tokenizer_dir: str
) -> None:
    """Three runs of 20 steps, a probe every phase: soft's effect is positive early and
    negative late, hidden's the opposite, each with a CI excluding 0; the schedule exported
    from the effects uses soft early and hidden late. The teacher is MiniLM's pre-trained
    encoder (a random classifier head): its 1-layer student learns within a few steps, a
    random tiny one does not."""
    plant(monkeypatch, switch=10)
    tiny_cfg = {**tiny_cfg, "teacher": {"path": tokenizer_dir}}
    phases, probes, trials = [], [], []
    for seed in range(3):
        cfg = probe_cfg(tiny_cfg, tmp_path, f"s{seed}", {"every": 1}, **{
            "knowledge.types": ["hard", "soft", "hidden"], "selector.kind": "none",
            "trainer.max_steps": 20, "trainer.eval_every": 10, "trainer.seed": seed,
            "trainer.learning_rate": 1e-3})  # fmt: skip
        result = distil(cfg)
        tid = f"t{seed}"
        phases.append(pd.read_parquet(tmp_path / f"s{seed}" / PHASE_LOG).assign(trial_id=tid))
        probes.append(pd.read_parquet(tmp_path / f"s{seed}" / PROBES).assign(trial_id=tid))
        trials.append({"trial_id": tid, "status": "finished",
                       "val_metric": result.validation["accuracy"]})  # fmt: skip
    sweep = Sweep("toy", pd.DataFrame(trials), pd.DataFrame(), pd.concat(phases),
                  probes=pd.concat(probes))  # fmt: skip
    table = knowledge_by_phase(sweep, [0, 0.5, 1]).set_index(["knowledge", "start"])
    assert (table["estimator"] == "probe").all()
    assert (table["n_trials"] == 3).all() and (table["n_probes"] == 6).all()
    soft_early, soft_late = table.loc[("soft", 0.0)], table.loc[("soft", 0.5)]
    hidden_early, hidden_late = table.loc[("hidden", 0.0)], table.loc[("hidden", 0.5)]
    assert soft_early["ci_low"] > 0 and soft_late["ci_high"] < 0
    assert hidden_early["ci_high"] < 0 and hidden_late["ci_low"] > 0
    assert table["significant"].all()
    # the observational fit on the same runs has nothing to go on: `none` logs no rewards
    with pytest.raises(AnalysisError, match="no phase rewards"):
        knowledge_by_phase(sweep, [0, 0.5, 1], estimator="observational")
    import yaml

    path = export_schedule(table.reset_index(), tmp_path / "schedule.yaml", source="effect")
    buckets = yaml.safe_load(path.read_text())["schedule"]
    assert buckets[0]["weights"] == {"hard": 1.0, "soft": 1.0, "hidden": 0.0}
    assert buckets[1]["weights"] == {"hard": 1.0, "soft": 0.0, "hidden": 1.0}
    TrialConfig.from_dict({**tiny_cfg, "selector": {"kind": "schedule",
                                                    "schedule_file": str(path)}})  # fmt: skip


def test_nested_bootstrap_centre_and_single_run() -> None:
    """The effect is the mean of run means (runs weigh alike, whatever their probe count);
    a bucket that one run alone probed has no interval (its probes share one student)."""
    probes = pd.DataFrame({
        "trial_id": ["a", "a", "a", "b", "b"], "arm": "soft", "effect": [1.0, 2.0, 3.0, 5.0, 6.0],
        "progress": [0.1, 0.2, 0.3, 0.2, 0.6], "episode": 0, "step": [1, 2, 3, 2, 6]})  # fmt: skip
    trials = pd.DataFrame({"trial_id": ["a", "b"], "status": "finished", "val_metric": [0.5, 0.6]})
    sweep = Sweep("toy", trials, pd.DataFrame(), pd.DataFrame(), probes=probes)
    table = knowledge_by_phase(sweep, [0, 0.5, 1]).set_index("start")
    early, late = table.loc[0.0], table.loc[0.5]
    assert early["effect"] == pytest.approx((2.0 + 5.0) / 2) and early["n_probes"] == 4
    assert 1.0 <= early["ci_low"] < early["effect"] < early["ci_high"] <= 5.0
    assert (early["n_trials"], late["n_trials"]) == (2, 1)
    assert late["effect"] == 6.0 and np.isnan(late["ci_low"]) and not late["significant"]
    both = knowledge_by_phase(sweep, [0, 1]).iloc[0]
    assert both["effect"] == pytest.approx((2.0 + 5.5) / 2)  # not the pooled 17 / 5


# ----------------------------------------------------------------- paired comparisons


def test_paired_metric_bootstrap_centre_is_hand_computed() -> None:
    """Two seeds, ten examples: the centre is the mean of the per-seed differences, for
    accuracy (per-example path) and F1 (recomputed per resample)."""
    labels = np.array([1, 0, 1, 1, 0, 1, 0, 0, 1, 1])
    a = np.array([[1, 0, 1, 1, 0, 1, 0, 1, 1, 1],    # 9 right
                  [1, 0, 1, 0, 0, 1, 0, 0, 1, 1]])  # 9 right  # fmt: skip
    b = np.array([[1, 1, 0, 1, 0, 1, 0, 1, 1, 0],    # 6 right
                  [0, 0, 1, 1, 0, 1, 1, 0, 1, 1]])  # 8 right  # fmt: skip
    acc = paired_metric_bootstrap("accuracy", a, b, labels, n_boot=2000)
    assert acc["mean"] == pytest.approx(((0.9 - 0.6) + (0.9 - 0.8)) / 2)
    # two seeds: the interval over seeds and examples, at least as wide as the examples' alone
    assert acc["covers"] == SEEDS_AND_EXAMPLES and (acc["seeds"], acc["examples"]) == (2, 10)
    assert acc["ci95"][0] <= acc["examples95"][0] and acc["examples95"][1] <= acc["ci95"][1]
    # F1 of the positive class: a0 6/(6+1) precision 6/7, recall 1 -> 12/13; a1 tp 5, fp 0,
    # fn 1 -> 10/11; b0 tp 4, fp 2, fn 2 -> 2/3; b1 tp 5, fp 1, fn 1 -> 5/6
    f1 = paired_metric_bootstrap("f1", a, b, labels, n_boot=300)
    assert f1["mean"] == pytest.approx(((12 / 13 - 2 / 3) + (10 / 11 - 5 / 6)) / 2)
    assert f1["ci95"][1] - f1["ci95"][0] >= f1["examples95"][1] - f1["examples95"][0]
    with pytest.raises(ValueError, match="predictions must be"):
        paired_metric_bootstrap("accuracy", a, b[:, :5], labels)


def write_run(folder: Path, labels: np.ndarray, preds: np.ndarray) -> None:
    folder.mkdir(parents=True)
    pd.DataFrame({"split": "dev", "example": range(len(labels)), "label": labels,
                  "prediction": preds}).to_parquet(folder / PREDICTIONS)  # fmt: skip
    (folder / RESULTS).write_text(json.dumps({"status": "finished", "main_metric": "accuracy"}))


def test_aligned_predictions_line_runs_up_by_example() -> None:
    """Runs whose rows come in another order are sorted by example; a run scored on other
    examples is named."""

    def run(order: list[int], preds: list[int], split: str = "dev") -> pd.DataFrame:
        labels = [1, 0, 1]
        return pd.DataFrame({"split": split, "example": order, "prediction": preds,
                             "label": [labels[i] for i in order]})  # fmt: skip

    labels, x = aligned_predictions(
        {
            "a": [run([0, 1, 2], [1, 0, 0]), run([2, 0, 1], [1, 1, 1])],
            "b": [run([1, 2, 0], [0, 1, 1])],
        }
    )
    assert list(labels) == [1, 0, 1]
    assert x["a"].tolist() == [[1, 0, 0], [1, 1, 1]] and x["b"].tolist() == [[1, 0, 1]]
    with pytest.raises(AnalysisError, match="b's run 1 was scored on other dev examples"):
        aligned_predictions({"a": [run([0, 1, 2], [1, 0, 0])], "b": [run([0, 1], [1, 0])]})


def test_compare_pairs_two_methods_of_a_sweep(tmp_path: Path) -> None:
    """compare(sweep, a, b) pairs the runs by seed, on their saved predictions; a task where
    neither method beats the constant prediction is called uninformative."""
    labels = np.array([1, 0, 1, 1, 0, 1, 0, 1])  # constant prediction: 5/8
    right = {("acks", 0): [1] * 8, ("acks", 1): [1] * 7 + [0],
             ("all", 0): [1] * 6 + [0, 0], ("all", 1): [1] * 6 + [0, 0]}  # fmt: skip
    rows = []
    for (method, seed), r in right.items():
        tid = f"{method}{seed}"
        preds = np.where(np.array(r) == 1, labels, 1 - labels)
        write_run(tmp_path / tid / "run", labels, preds)
        rows.append({"trial_id": tid, "status": "finished", "config/selector.kind": method,
                     "config/trainer.seed": seed, "config/data.task": "sst2",
                     "path": str(tmp_path / tid), "val_metric": 0.5})  # fmt: skip
    search = {"selector.kind": {"grid": ["acks", "all"]}, "trainer.seed": {"grid": [0, 1]}}
    sweep = Sweep(str(tmp_path), pd.DataFrame(rows), pd.DataFrame(), pd.DataFrame(),
                  search=search)  # fmt: skip
    out = compare(sweep, "acks", "all")
    assert out["seeds"] == [0, 1] and out["per_seed"] == [0.25, 0.125]
    assert out["mean"] == pytest.approx(0.1875) and out["informative"]
    assert out["a_score"] == pytest.approx(15 / 16) and out["constant"] == 5 / 8
    assert out["ci_low"] <= out["mean"] <= out["ci_high"]
    from kdray.analysis.methods import methods_table

    table = methods_table(sweep).set_index("method")
    assert table.loc["all", "ci_low"] == pytest.approx(-out["ci_high"], abs=0.07)
    twice = sweep.trials.assign(**{"config/trainer.seed": [0, 0, 0, 1]})
    with pytest.raises(AnalysisError, match="several finished trials"):
        compare(Sweep(sweep.path, twice, pd.DataFrame(), pd.DataFrame(), search=search), "acks",
                "all")  # fmt: skip
    bad = sweep.trials.assign(**{"config/selector.kind": ["acks", "acks", "none", "none"]})
    with pytest.raises(AnalysisError, match=r"no finished trial with selector\.kind = all"):
        compare(Sweep(sweep.path, bad, pd.DataFrame(), pd.DataFrame(), search=search), "acks",
                "all")  # fmt: skip
