"""Helpers the tests share (fixtures are in conftest.py): tiny random teachers, crashes at a
chosen step, pools, the real GLUE folder, and the sweep command line run as a subprocess."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from kdray.config import TrialConfig

#: The repository root.
REPO = Path(__file__).resolve().parents[1]
GLUE = REPO.parent / "shared" / "glue"


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

    from kdray.base.results import PHASE_LOG
    from kdray.training.trainer import distil

    whole = distil(cfg("a"))
    with pytest.raises(KeyboardInterrupt):
        distil(cfg("b"), CrashAtStep(crash_at_step))
    resumed = distil(cfg("b"))
    a = pd.read_parquet(tmp_path / "a" / PHASE_LOG).drop(columns="run_id")
    b = pd.read_parquet(tmp_path / "b" / PHASE_LOG).drop(columns="run_id")
    pd.testing.assert_frame_equal(a, b)
    assert resumed.test == whole.test
    return whole, resumed


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


ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "RAY_DEDUP_LOGS": "0", "TUNE_GLOBAL_CHECKPOINT_S": "1"}


def sweep_cli(
    *args: str, cwd: Path, timeout: int = 120, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kdray.sweep", *args],
        capture_output=True, text=True, cwd=cwd, env={**ENV, **(env or {})}, timeout=timeout,
    )  # fmt: skip


def tiny_space(tiny_cfg: dict[str, Any], path: Path, search: dict[str, Any], **sweep: Any) -> Path:
    """A sweep file over the tiny teacher and student of conftest (seconds per trial)."""
    trial = {k: v for k, v in tiny_cfg.items() if k != "trainer"}
    trial["trainer"] = {k: v for k, v in tiny_cfg["trainer"].items() if k != "output_dir"}
    trial["data"] = {**trial["data"], "reward_fraction": 0.1}
    trial["selector"] = {"phase_length": 5, "reward_examples": 32}
    settings = {"searcher": "random", "scheduler": "fifo", "resources": {"cpu": 1}, **sweep}
    path.write_text(yaml.safe_dump({"name": path.stem, "trial": trial, "search": search,
                                    "sweep": settings}))  # fmt: skip
    return path


def trial_outcomes(experiment: Path, proc: subprocess.CompletedProcess[str]) -> str:
    """Why trials did not finish: each trial's results.json status (or none) and Tune's
    error.txt, then the end of the sweep's output (its summary counts trials by status)."""
    lines = []
    for trial in sorted(p for p in experiment.iterdir() if p.is_dir()):
        results = trial / "run" / "results.json"
        status = json.loads(results.read_text())["status"] if results.is_file() else "none"
        error = trial / "error.txt"
        why = error.read_text()[-1500:] if error.is_file() else ""
        lines.append(f"{trial.name}: results.json {status}{' ' + why if why else ''}")
    return "\n".join([*lines, proc.stdout[-1500:], proc.stderr[-1500:]])


def finished_trials(experiment: Path) -> dict[str, float]:
    """Trial folder -> mtime of its results.json, for trials that finished."""
    out = {}
    for r in experiment.glob("*/run/results.json"):
        if json.loads(r.read_text())["status"] == "finished":
            out[r.parent.parent.name] = r.stat().st_mtime
    return out
