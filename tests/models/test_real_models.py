"""Real pre-trained MiniLM, real GLUE files: the CLIs end to end (slow; run in CI)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO

pytestmark = pytest.mark.slow


def kdray(module: str, *args: str, env_cache: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    import os

    env = {**os.environ, "KDRAY_CACHE": env_cache, "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", f"kdray.{module}", *args],
        capture_output=True, text=True, cwd=cwd, env=env, timeout=900,
    )  # fmt: skip


def test_fine_tune_teacher_then_distil_on_rte(glue_dir: Path, tmp_path: Path) -> None:
    cache = str(tmp_path / "cache")
    small = [
        "--set", "data.task=rte", "--set", "data.max_length=48",
        "--set", "data.max_train_examples=300", "--set", "data.max_test_examples=64",
        "--set", "teacher.max_steps=6", "--set", "teacher.batch_size=8",
        "--set", "teacher.max_train_examples=300",
    ]  # fmt: skip
    proc = kdray("teacher", "--data-dir", str(glue_dir), *small, env_cache=cache, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "validation accuracy:" in proc.stdout and "test (dev) accuracy:" in proc.stdout
    teacher = Path(proc.stdout.split("teacher: ")[1].splitlines()[0])
    meta = json.loads((teacher / "kdray_teacher.json").read_text())
    assert meta["task"] == "rte" and meta["steps"] == 6

    out = tmp_path / "run"
    distil = [
        *small, "--set", "student.num_layers=2", "--set", "trainer.max_steps=6",
        "--set", "trainer.batch_size=8", "--set", "trainer.eval_every=3",
        "--set", "knowledge.types=[hard, soft, hidden, relation, attention_relation]",
    ]  # fmt: skip
    args = ["--data-dir", str(glue_dir), "--output-dir", str(out), *distil]
    proc = kdray("train", *args, env_cache=cache, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert f"teacher: {teacher}" in proc.stdout  # the cached teacher was reused
    result = json.loads((out / "results.json").read_text())
    assert result["status"] == "finished" and result["steps"] == 6
    assert 0.0 <= result["test"]["dev"]["accuracy"] <= 1.0
    assert (out / "student" / "config.json").is_file()


def test_two_teachers_from_the_one_backbone(glue_dir: Path, tmp_path: Path) -> None:
    """MiniLM whole and its first three layers, each fine-tuned (tiny recipe) and cached; a
    student distilled from both with uniform weights, both teachers' outputs cached."""
    cache = str(tmp_path / "cache")
    recipe = {"max_steps": 4, "batch_size": 8, "max_train_examples": 200}
    teachers = json.dumps(
        [{"name": "full", **recipe}, {"name": "three", "num_layers": 3, **recipe}]
    )
    args = [
        "--config", str(REPO / "search_spaces" / "trial_two_teachers.yaml"),
        "--data-dir", str(glue_dir), "--output-dir", str(tmp_path / "run"),
        "--set", f"teachers={teachers}", "--set", "data.max_train_examples=300",
        "--set", "data.max_test_examples=64", "--set", "trainer.max_steps=6",
        "--set", "trainer.batch_size=8", "--set", "trainer.eval_every=3",
    ]  # fmt: skip
    proc = kdray("train", *args, env_cache=cache, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    result = json.loads((tmp_path / "run" / "results.json").read_text())
    assert result["status"] == "finished" and result["teacher_cache"] == "cached"
    from transformers import AutoConfig

    layers = {n: AutoConfig.from_pretrained(p).num_hidden_layers
              for n, p in result["teachers"].items()}  # fmt: skip
    assert layers == {"full": 6, "three": 3}
    stored = list((Path(cache) / "teacher_outputs").glob("*.pt"))
    assert len(stored) == 2  # each teacher's outputs, under its own fingerprint
