"""cluster.yaml against Ray's cluster-launcher schema; the job entry point `ray submit` runs."""

from __future__ import annotations

import copy
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


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
    assert 'pip install "torch==2.13.0" -e ~/kdray' in setup and "/mnt/kdray" in setup
    assert "--dashboard-host=127.0.0.1" in " ".join(config["head_start_ray_commands"])


def test_schema_check_catches_a_bad_key() -> None:
    raw = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    raw["available_node_types"]["gpu_worker"]["resourcez"] = {"GPU": 1}
    with pytest.raises(jsonschema.ValidationError, match="resourcez"):
        launcher_config(raw)


def test_readme_shows_both_cluster_forms() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "ray submit cluster.yaml kdray/sweep.py -- " in readme
    assert "ray job submit --working-dir . -- " in readme and "python -m kdray.sweep" in readme


def test_sweep_script_runs_as_ray_submit_runs_it(tmp_path: Path) -> None:
    """`ray submit` copies the script to the head and runs `python sweep.py ARGS` there."""
    script = shutil.copy(ROOT / "kdray" / "sweep.py", tmp_path / "sweep.py")
    proc = subprocess.run([sys.executable, script, "--help"], capture_output=True, text=True,
                          cwd=tmp_path, timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "--space" in proc.stdout and "--resume" in proc.stdout
