"""cluster.yaml against Ray's cluster-launcher schema; the job entry point `ray submit` runs; the
cluster commands of docs/sweeps.md ("On a cluster"): `ray job submit` against a real
token-protected Ray head (slow)."""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tests.helpers import REPO, closed_port, tiny_space

ROOT = REPO


def launcher_config(raw: dict) -> dict:
    """What `ray up` validates: the file with the provider's defaults filled in."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = prepare_config(copy.deepcopy(raw))
    validate_config(config)
    return config


def test_cluster_yaml_passes_rays_schema() -> None:
    raw = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    config = launcher_config(raw)
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    workers = [t for name, t in types.items() if name != config["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0  # a CPU head
    assert workers and all(t["resources"]["GPU"] >= 1 and t["max_workers"] > t["min_workers"]
                           for t in workers)  # fmt: skip
    setup = " ".join(config["setup_commands"])
    assert 'pip install "torch==2.13.0" -e ~/kdray"[cluster]"' in setup and "/mnt/kdray" in setup
    head_start = " ".join(config["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head_start
    # token authentication on every node, with the token docs/sweeps.md has the user generate
    for start in (config["head_start_ray_commands"], config["worker_start_ray_commands"]):
        assert "RAY_AUTH_MODE=token ray start" in start[-1]
    assert config["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"


def test_schema_check_catches_a_bad_key() -> None:
    raw = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    raw["available_node_types"]["gpu_worker"]["resourcez"] = {"GPU": 1}
    with pytest.raises(jsonschema.ValidationError, match="resourcez"):
        launcher_config(raw)


def test_docs_show_both_cluster_forms() -> None:
    """The cluster steps live in docs/sweeps.md ("On a cluster"); the README keeps the job form."""
    docs = (ROOT / "docs" / "sweeps.md").read_text()
    assert "ray submit cluster.yaml kdray/sweep.py -- " in docs
    assert "ray job submit --working-dir . -- " in docs and "python -m kdray.sweep" in docs
    readme = (ROOT / "README.md").read_text()
    assert "ray job submit --working-dir . -- " in readme and "ray up cluster.yaml" in readme


def test_sweep_script_runs_as_ray_submit_runs_it(tmp_path: Path) -> None:
    """`ray submit` copies the script to the head and runs `python sweep.py ARGS` there."""
    script = shutil.copy(ROOT / "kdray" / "sweep.py", tmp_path / "sweep.py")
    proc = subprocess.run([sys.executable, script, "--help"], capture_output=True, text=True,
                          cwd=tmp_path, timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "--space" in proc.stdout and "--resume" in proc.stdout


def _ray(*args: str, env: dict[str, str], cwd: Path = ROOT, timeout: int = 180) -> Any:
    return subprocess.run(["ray", *args], capture_output=True, text=True, env=env, cwd=cwd,
                          timeout=timeout)  # fmt: skip


@pytest.mark.slow
def test_docs_job_submit_runs_on_a_token_protected_head(tiny_cfg: dict, tmp_path: Path) -> None:
    """The cluster commands of docs/sweeps.md on a real Ray head on the loopback address: the token
    generated, the head started with token authentication, a 2-trial sweep submitted with
    `ray job submit --working-dir .` as written there, its results read where it says. A
    client without the token is refused."""
    home = tmp_path / "home"  # the laptop's and the head's ~ (~/.ray/auth_token)
    home.mkdir()
    bin_dir = str(Path(sys.executable).parent)  # the job's `python` is this interpreter
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env |= {"HOME": str(home), "PATH": f"{bin_dir}:{env['PATH']}", "HF_HUB_OFFLINE": "1"}
    assert _ray("get-auth-token", "--generate", env=env).returncode == 0
    assert (home / ".ray" / "auth_token").is_file()
    env["RAY_AUTH_MODE"] = "token"
    port, dashboard = closed_port(), closed_port()
    with tempfile.TemporaryDirectory(prefix="kr", dir="/tmp", ignore_cleanup_errors=True) as d:
        start = _ray("start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}",
                     "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}",
                     "--include-dashboard=true", "--num-cpus=2", f"--temp-dir={d}",
                     env=env)  # fmt: skip
        try:
            assert start.returncode == 0, start.stdout + start.stderr
            space = tiny_space(tiny_cfg, tmp_path / "job.yaml", {"trainer.seed": {"grid": [0, 1]}},
                               num_samples=1)  # fmt: skip
            storage = tmp_path / "results"
            client = {**env, "RAY_ADDRESS": f"http://127.0.0.1:{dashboard}"}
            submit = ("job", "submit", "--working-dir", ".", "--", "python", "-m", "kdray.sweep",
                      "--space", str(space), "--storage", str(storage))  # fmt: skip
            job = _ray(*submit, env=client, timeout=900)
            # a head that has just started may have no job agent yet ("try again later", Ray
            # says; how long that takes depends on the machine): a refused submission made no
            # job, so it is submitted again
            deadline = time.monotonic() + 120
            while "No available agent" in job.stdout + job.stderr and time.monotonic() < deadline:
                time.sleep(2)
                job = _ray(*submit, env=client, timeout=900)
            out = job.stdout + job.stderr
            assert job.returncode == 0 and "succeeded" in out, out[-4000:]
            assert "2 trials: 2 finished" in out  # the sweep's own summary, in the job's log
            from kdray.analysis import load_sweep

            sweep = load_sweep(storage / "job")  # STORAGE/NAME, as docs/sweeps.md says
            assert list(sweep.trials["status"]) == ["finished", "finished"]
            assert len(list((storage / "job").glob("*/run/phases.parquet"))) == 2
            stranger = {**client, "HOME": str(tmp_path)}  # no token there
            del stranger["RAY_AUTH_MODE"]
            refused = _ray("job", "list", env=stranger, timeout=120)
            assert refused.returncode != 0
            assert "uthentication" in refused.stdout + refused.stderr
        finally:
            _ray("stop", "--force", env=env)
