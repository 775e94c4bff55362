"""Single-teacher behaviour pinned: fixed-seed CPU runs against golden files.

`tests/golden/runs.json` was recorded from main before the core redesign (commit 58e597b) with
`KDRAY_WRITE_GOLDEN=1 python -m pytest tests/test_golden_runs.py`; every later core change must
reproduce it: the same phase log, the same validation and test metrics, losses equal up to float
reduction order (1e-6 relative).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import pytest

from kdray.config import TrialConfig
from kdray.trainer import ListReporter, run_trial

GOLDEN = Path(__file__).parent / "golden" / "runs.json"
RTOL, ATOL = 1e-6, 1e-7

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


def record(tiny_cfg: dict[str, Any], name: str) -> dict[str, Any]:
    cfg = TrialConfig.from_dict(tiny_cfg).replace(**COMMON, **RUNS[name])
    rep = ListReporter()
    result = run_trial(cfg, rep)
    import pandas as pd

    log = pd.read_parquet(Path(result.output_dir) / "phases.parquet")
    rows = []
    for r in log.to_dict("records"):
        row = {k: r[k] for k in PHASE_KEYS if k in r}
        row.update({k: v for k, v in r.items() if k.startswith(("w_", "loss_"))})
        rows.append({k: (bool(v) if k == "final" else float(v)) for k, v in row.items()})
    return {
        "status": result.status,
        "steps": result.steps,
        "phases": rows,
        "history": [
            {k: float(v) for k, v in h.items() if isinstance(v, int | float)}
            for h in result.history
        ],
        "test": result.test,
    }


def close(a: Any, b: Any, where: str) -> None:
    if isinstance(a, dict):
        assert isinstance(b, dict), where
        missing = set(a) - set(b)
        assert not missing, f"{where}: missing {sorted(missing)}"
        for k in a:
            close(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), f"{where}: length {len(a)} vs {len(b)}"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            close(x, y, f"{where}[{i}]")
    elif isinstance(a, float) and not isinstance(a, bool):
        if math.isnan(a):
            assert isinstance(b, float) and math.isnan(b), f"{where}: {b} is not NaN"
        else:
            assert math.isclose(a, b, rel_tol=RTOL, abs_tol=ATOL), f"{where}: golden {a}, got {b}"
    else:
        assert a == b, f"{where}: golden {a!r}, got {b!r}"


@pytest.mark.parametrize("name", list(RUNS))
def test_single_teacher_run_matches_golden(tiny_cfg: dict, name: str) -> None:
    got = json.loads(json.dumps(record(tiny_cfg, name)))  # the same float repr as the file
    if os.environ.get("KDRAY_WRITE_GOLDEN"):
        golden = json.loads(GOLDEN.read_text()) if GOLDEN.is_file() else {}
        golden[name] = got
        GOLDEN.write_text(json.dumps(golden, indent=1, sort_keys=True) + "\n")
        pytest.skip("golden written")
    golden = json.loads(GOLDEN.read_text())
    close(golden[name], got, name)
