"""The sweep command: bad input before Ray starts; a real single-node Ray sweep (slow)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml


def sweep_cli(*args: str, cwd: Path, timeout: int = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "RAY_DEDUP_LOGS": "0"}
    return subprocess.run(
        [sys.executable, "-m", "kdray.sweep", *args],
        capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ("search:\n  trainer.learnig_rate: {uniform: [0, 1]}\n", "trainer.learning_rate"),
        ("sweep: {metric: accuracy}\n", "never reported"),
        ("trial:\n  data: [1,\n", "line"),
    ],
)
def test_bad_sweep_exits_2_before_ray(tmp_path: Path, content: str, needle: str) -> None:
    space = tmp_path / "bad.yaml"
    space.write_text(content)
    proc = sweep_cli("--space", str(space), "--storage", str(tmp_path / "out"), cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert needle in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_resume_of_a_non_sweep_folder_exits_2(tmp_path: Path) -> None:
    space = tmp_path / "ok.yaml"
    space.write_text("search:\n  trainer.seed: {choice: [0, 1]}\n")
    proc = sweep_cli("--space", str(space), "--resume", str(tmp_path), cwd=tmp_path)
    assert proc.returncode == 2 and "not a sweep folder" in proc.stderr


@pytest.mark.slow
def test_single_node_sweep_end_to_end(tiny_cfg: dict, tmp_path: Path) -> None:
    trial = {k: v for k, v in tiny_cfg.items() if k != "cache_dir"}
    trial["trainer"] = {k: v for k, v in trial["trainer"].items() if k != "output_dir"}
    trial["data"] = {**trial["data"], "reward_fraction": 0.1}
    trial["selector"] = {"phase_length": 5, "reward_examples": 32}
    space = {
        "name": "e2e",
        "trial": {**trial, "cache_dir": tiny_cfg["cache_dir"]},
        "search": {"selector.kind": {"grid": ["all", "acks"]}},
        "sweep": {"num_samples": 1, "searcher": "random", "scheduler": "fifo",
                  "resources": {"cpu": 1}, "max_concurrent": 2},
    }  # fmt: skip
    path = tmp_path / "e2e.yaml"
    path.write_text(yaml.safe_dump(space))
    storage = tmp_path / "results"
    proc = sweep_cli("--space", str(path), "--storage", str(storage), cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "best trial:" in proc.stdout
    results = sorted((storage / "e2e").glob("*/run/results.json"))
    assert len(results) == 2
    for r in results:
        assert json.loads(r.read_text())["status"] == "finished"
        assert (r.parent / "phases.parquet").is_file()
    from ray.tune import ExperimentAnalysis

    df = ExperimentAnalysis(str(storage / "e2e")).dataframe()
    assert len(df) == 2 and "val_metric" in df.columns
