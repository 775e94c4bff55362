"""Your own data through the whole pipeline: the trial command line and the Python API, the
student a `transformers.pipeline` reads with your class names, a 2-trial sweep, its report and
`kdray.export` (the support-ticket CSVs of tests/fixtures/tickets, the tiny random teacher)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

import kdray
from tests.helpers import ENV, REPO, finished_trials, sweep_cli, tiny_space, trial_outcomes

TICKETS = REPO / "tests" / "fixtures" / "tickets"
DATASET = {
    "path": "csv",
    "data_files": {"train": str(TICKETS / "train.csv"), "test": str(TICKETS / "test.csv")},
    "text_columns": ["subject", "body"],
    "label_column": "queue",
    "metrics": ["accuracy", "f1_macro"],
}


def own(tiny_cfg: dict[str, Any]) -> dict[str, Any]:
    """The tiny trial of conftest on the ticket CSVs instead of SST-2."""
    data = {k: v for k, v in tiny_cfg["data"].items() if k not in ("task", "data_dir")}
    trainer = {**tiny_cfg["trainer"], "save_student": True}
    return {**tiny_cfg, "data": {**data, "dataset": DATASET, "max_train_examples": None},
            "trainer": trainer}  # fmt: skip


@pytest.mark.slow
def test_a_trial_on_your_data_gives_a_student_with_your_class_names(
    tiny_cfg: dict[str, Any], tmp_path: Path
) -> None:
    from transformers import pipeline

    raw = own(tiny_cfg)
    raw["trainer"] = {**raw["trainer"], "max_steps": 20}
    result = kdray.run_trial(raw)
    assert result.status == "finished" and result.main_metric == "accuracy"
    assert {"accuracy", "f1_macro"} <= set(result.test["test"])
    student = Path(result.student_dir or "")
    config = json.loads((student / "config.json").read_text())
    assert config["id2label"] == {"0": "billing", "1": "technical"}
    guess = pipeline("text-classification", model=str(student))("My invoice is wrong")
    assert guess[0]["label"] in ("billing", "technical")
    card = (student / "README.md").read_text()
    assert "tickets (train: train.csv, test: test.csv; sha256 " in card and "f1_macro" in card
    # the trial command line on the same data, from a YAML file
    raw["trainer"] = {**raw["trainer"], "output_dir": str(tmp_path / "cli"), "max_steps": 5}
    (tmp_path / "trial.yaml").write_text(yaml.safe_dump(raw))
    command = [sys.executable, "-m", "kdray.train", "--config", "trial.yaml"]
    cli = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, env=ENV,
                         timeout=300)  # fmt: skip
    assert cli.returncode == 0, cli.stderr[-2000:]
    assert "test (test) accuracy:" in cli.stdout and "f1_macro" in cli.stdout


@pytest.mark.slow
def test_a_sweep_on_your_data_analyses_and_exports(
    tiny_cfg: dict[str, Any], tmp_path: Path
) -> None:
    from kdray import analyze, export

    path = tiny_space(own(tiny_cfg), tmp_path / "own.yaml",
                      {"selector.kind": {"grid": ["all", "acks"]}}, num_samples=1)  # fmt: skip
    storage = tmp_path / "results"
    proc = sweep_cli("--space", str(path), "--storage", str(storage), cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 trials: 2 finished" in proc.stdout, trial_outcomes(storage / "own", proc)
    assert len(finished_trials(storage / "own")) == 2
    assert analyze.main([str(storage / "own")]) == 0
    assert (storage / "own" / "analysis" / "report.md").is_file()
    assert export.main([str(storage / "own"), "--best", str(tmp_path / "student")]) == 0
    exported = json.loads((tmp_path / "student" / "config.json").read_text())
    assert set(exported["id2label"].values()) == {"billing", "technical"}


@pytest.mark.slow
def test_recipes_pools_policies_and_probes_run_on_your_data(
    tiny_cfg: dict[str, Any], tiny_teacher: str, second_teacher: str
) -> None:
    """MLKD's two stages, then a pool of two teachers weighed by the rl policy with
    counterfactual probes: nothing in them is GLUE's."""
    from kdray.config import TrialConfig
    from kdray.training.trainer import distil

    raw = {k: v for k, v in own(tiny_cfg).items() if k != "knowledge"}
    raw["trainer"] = {**raw["trainer"], "save_student": False}
    mlkd = TrialConfig.from_dict({**raw, "recipe": "mlkd"})
    mlkd = mlkd.replace(
        **{
            "student.num_heads": 2,
            "trainer.output_dir": f"{tiny_cfg['trainer']['output_dir']}-mlkd",
        }
    )
    result = distil(mlkd)
    assert result.status == "finished"
    pool = {k: v for k, v in raw.items() if k != "teacher"}
    pool["teachers"] = [{"name": "a", "path": tiny_teacher}, {"name": "b", "path": second_teacher}]
    pool["teacher_policy"] = {"kind": "rl"}
    pool["knowledge"] = {"types": ["hard", "soft"]}
    pool["probe"] = {"at": [0.5], "steps": 2}
    pool["data"] = {**pool["data"], "reward_fraction": 0.1}  # 60 examples: probes need 32
    result = distil(TrialConfig.from_dict(pool))
    assert result.status == "finished" and set(result.teachers) == {"a", "b"}
    assert result.probes and result.probes["rows"] > 0
