"""Single-teacher behaviour pinned on any CPU: fixed-seed runs against golden files.

Each run is checked twice:

- **float64** (`golden/runs.json`): the whole trial in float64 (`torch.set_default_dtype`;
  kdray computes in torch's default dtype). Recorded from the code whose float32 behaviour the
  float32 file below pinned. Tolerance `TOLERANCE["float64"]`.
- **float32** (`golden/runs_float32.json`): the dtype users train in, recorded on one CPU
  before the core redesign and unchanged since. Tolerance `TOLERANCE["float32"]`.

Why two tolerances: which float kernels run depends on the CPU (`ATEN_CPU_CAPABILITY` picks
default, avx2 or avx512 kernels on one machine; MKL and oneDNN have their own paths), and they
differ in the last bits. Training amplifies those bits: Adam's first steps normalise each
gradient, the float16 teacher cache rounds the teacher's outputs, and the ACKS agent feeds its
own noisy rewards back into its actions. Measured on an AVX-512 Xeon under the default, avx2
and avx512 kernels, `MKL_CBWR=COMPATIBLE`, `ONEDNN_MAX_CPU_ISA=SSE41` and one thread, the
largest relative difference from the files (beyond their absolute tolerances) was 2.4e-6 in
float64 (default kernels; the others matched to 1e-9) and 1.6e-3 in float32
(`MKL_CBWR=COMPATIBLE`; the float32 file itself came from another CPU): the tolerances leave
40x and 6x room for other CPUs. Discrete outcomes (status, step counts, the phase and
evaluation schedule) must match exactly. A real change moves the numbers by far more: a 0.1%
larger learning rate moves them by up to 58% (`test_a_small_change_is_caught`). With a
random tiny teacher the logits are near 0, where the soft-label loss barely depends on the
temperature: the goldens pin the code paths and the agents, not every knob's effect.

Re-record after a deliberate change of behaviour (both files, or one with `-k float64`):
`KDRAY_WRITE_GOLDEN=1 python -m pytest tests/training/test_golden_runs.py`; the float32 file then
holds the recording machine's numbers.
"""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import torch

from kdray.config import TrialConfig
from kdray.training.trainer import ListReporter, distil
from tests.helpers import REPO

GOLDEN = {
    "float64": Path(__file__).parent / "golden" / "runs.json",
    "float32": Path(__file__).parent / "golden" / "runs_float32.json",
}
#: (relative, absolute) tolerance of continuous values, per dtype (measured: see above)
TOLERANCE = {"float64": (1e-4, 1e-9), "float32": (1e-2, 1e-7)}
#: values compared exactly whatever the dtype: what ran when, and how it ended
EXACT = {"status", "steps", "step", "phase", "episode", "final", "progress", "progress_start"}

#: name -> config overrides on top of `tiny_cfg`
RUNS: dict[str, dict[str, Any]] = {
    "none": {"selector.kind": "none"},
    "vanilla": {"selector.kind": "vanilla"},
    "all": {"selector.kind": "all"},
    "random_soft": {"selector.kind": "random_soft"},
    "acks_online": {"selector.kind": "acks"},
    "acks_online_hard": {"selector.kind": "acks", "selector.action": "hard"},
    "acks_two_stage": {
        "selector.kind": "acks",
        "selector.mode": "two_stage",
        "selector.episodes": 2,
        "selector.episode_steps": 10,
    },
    "all_nine_types": {
        "selector.kind": "all",
        "student.num_heads": 4,
        "knowledge.types": [
            "hard",
            "soft",
            "hidden",
            "relation",
            "attention",
            "embedding_relation",
            "attention_relation",
            "sample_relation",
            "contrastive",
        ],
    },
}

COMMON = {
    "trainer.max_steps": 20,
    "selector.phase_length": 5,
    "trainer.eval_every": 5,
    "data.reward_fraction": 0.1,
    "selector.reward_examples": 32,
}

#: phase-log columns recorded (a later log may add columns, never change these)
PHASE_KEYS = ("episode", "final", "phase", "step", "progress", "progress_start", "reward_loss",
              "reward_drop", "val_metric", "reward", "q_value")  # fmt: skip


@contextmanager
def default_dtype(dtype: torch.dtype) -> Iterator[None]:
    before = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(before)


def record(tiny_cfg: dict[str, Any], name: str, dtype: str, **change: Any) -> dict[str, Any]:
    """Run `name` in `dtype` (`change`: more overrides) and return what the golden file keeps.
    The teacher outputs are computed afresh (a cache of its own)."""
    cfg = TrialConfig.from_dict(tiny_cfg).replace(**COMMON, **RUNS[name], **change)
    cfg = cfg.replace(cache_dir=str(Path(cfg.trainer.output_dir).parent / "cache"))
    rep = ListReporter()
    with default_dtype(getattr(torch, dtype)):
        result = distil(cfg, rep)
    import pandas as pd

    log = pd.read_parquet(Path(result.output_dir) / "phases.parquet")
    rows = []
    for r in log.to_dict("records"):
        row = {k: r[k] for k in PHASE_KEYS if k in r}
        row.update({k: v for k, v in r.items() if k.startswith(("w_", "loss_"))})
        rows.append({k: (bool(v) if k == "final" else float(v)) for k, v in row.items()})
    got = {
        "status": result.status,
        "steps": result.steps,
        "phases": rows,
        "history": [
            {k: float(v) for k, v in h.items() if isinstance(v, int | float)}
            for h in result.history
        ],
        "test": result.test,
    }
    return json.loads(json.dumps(got))  # the same float repr as the file


def close(a: Any, b: Any, where: str, rtol: float, atol: float) -> None:
    """Assert run `b` matches golden `a`: EXACT keys and non-floats equal, floats within
    (rtol, atol), NaN where the golden has NaN."""
    if isinstance(a, dict):
        assert isinstance(b, dict), where
        missing = set(a) - set(b)
        assert not missing, f"{where}: missing {sorted(missing)}"
        for k in a:
            if k in EXACT:
                assert a[k] == b[k], f"{where}.{k}: golden {a[k]!r}, got {b[k]!r}"
            else:
                close(a[k], b[k], f"{where}.{k}", rtol, atol)
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), f"{where}: length {len(a)} vs {len(b)}"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            close(x, y, f"{where}[{i}]", rtol, atol)
    elif isinstance(a, float) and not isinstance(a, bool):
        if math.isnan(a):
            assert isinstance(b, float) and math.isnan(b), f"{where}: {b} is not NaN"
        else:
            assert math.isclose(a, b, rel_tol=rtol, abs_tol=atol), f"{where}: golden {a}, got {b}"
    else:
        assert a == b, f"{where}: golden {a!r}, got {b!r}"


@pytest.mark.parametrize("dtype", list(GOLDEN))
@pytest.mark.parametrize("name", list(RUNS))
def test_single_teacher_run_matches_golden(tiny_cfg: dict, name: str, dtype: str) -> None:
    got = record(tiny_cfg, name, dtype)
    path = GOLDEN[dtype]
    if os.environ.get("KDRAY_WRITE_GOLDEN"):
        golden = json.loads(path.read_text()) if path.is_file() else {}
        golden[name] = got
        path.write_text(json.dumps(golden, indent=1, sort_keys=True) + "\n")
        pytest.skip("golden written")
    close(json.loads(path.read_text())[name], got, name, *TOLERANCE[dtype])


def test_a_small_change_is_caught(tiny_cfg: dict) -> None:
    """The float64 tolerance still sees a 0.1% change of the learning rate."""
    golden = json.loads(GOLDEN["float64"].read_text())["acks_online"]
    lr = TrialConfig.from_dict(tiny_cfg).trainer.learning_rate
    got = record(tiny_cfg, "acks_online", "float64", **{"trainer.learning_rate": lr * 1.001})
    with pytest.raises(AssertionError):
        close(golden, got, "acks_online", *TOLERANCE["float64"])


def kernel_paths() -> list[dict[str, str]]:
    """Settings that change which float kernels this machine runs: each ATen CPU capability
    up to the machine's own (x86: default, avx2, avx512), and MKL's reproducible mode."""
    paths = [{"ATEN_CPU_CAPABILITY": "default"}]
    if platform.machine().lower() in ("x86_64", "amd64"):
        levels = ["DEFAULT", "AVX2", "AVX512"]
        native = torch.backends.cpu.get_cpu_capability()  # as ATEN_CPU_CAPABILITY allows
        top = levels.index(native) if native in levels else 0
        paths += [{"ATEN_CPU_CAPABILITY": c.lower()} for c in levels[1 : top + 1]]
        if torch.backends.mkl.is_available():
            paths.append({"MKL_CBWR": "COMPATIBLE"})
    return paths


@pytest.mark.slow
@pytest.mark.parametrize("env", kernel_paths(), ids=lambda e: "-".join(e.values()))
def test_goldens_hold_on_each_kernel_path(env: dict[str, str]) -> None:
    """The golden runs again, in a process whose kernels `env` picks (checked to be in force)."""
    run_env = {**os.environ, **env}
    root = REPO
    if "ATEN_CPU_CAPABILITY" in env:
        probe = [sys.executable, "-c",
                 "import torch; print(torch.backends.cpu.get_cpu_capability())"]  # fmt: skip
        got = subprocess.run(probe, capture_output=True, text=True, env=run_env, timeout=120)
        assert got.stdout.strip().lower() == env["ATEN_CPU_CAPABILITY"], got.stderr[-2000:]
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__,
         "-k", "matches_golden"],
        capture_output=True, text=True, env=run_env, cwd=root, timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert f"{len(RUNS) * len(GOLDEN)} passed" in proc.stdout, proc.stdout[-2000:]
