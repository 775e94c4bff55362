"""The sweep command: bad input before Ray starts; a real single-node Ray sweep (slow)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from kdray.base.errors import ConfigError
from kdray.search.spec import Resources, SweepConfig
from kdray.search.sweep_file import parse_sweep
from kdray.search.tuner import check_resources
from tests.helpers import (
    ENV,
    GLUE,
    closed_port,
    finished_trials,
    sweep_cli,
    tiny_space,
    trial_outcomes,
)


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ("search:\n  trainer.learnig_rate: {uniform: [0, 1]}\n", "trainer.learning_rate"),
        ("sweep: {metric: accuracy}\n", "never reported"),
        ("trial:\n  data: [1,\n", "line"),
        (
            "search:\n  knowledge.temperature: {uniform: [1, 4]}\nsweep: {scheduler: pbt}\n",
            "searcher: random",
        ),
        (
            "search:\n  trainer.learning_rate: {uniform: [0.001, 0.01]}\n"
            "sweep: {scheduler: pbt, searcher: random}\n",
            "knowledge.temperature",
        ),
        ("search:\n  knowledge.weights.sofft: {uniform: [0, 1]}\n", "sofft"),
        ("search:\n  trainer.max_steps: {int: [0, 10]}\n", "trainer.max_steps"),
        ("search:\n  - trainer.seed\n", "'search' must be a mapping"),
        # scheduler and searcher settings: refused before Ray and the teacher start
        ("sweep: {scheduler: asha, scheduler_options: {grace_perod: 1}}\n", "grace_perod"),
        ("sweep: {scheduler: asha, scheduler_options: {grace_period: 0}}\n", "grace_period"),
        ("search:\n  trainer.seed: {grid: [0, 1]}\nsweep: {searcher: optuna}\n", "optuna"),
        # every task of the grid needs its files in the GLUE folder (../shared/glue has no QNLI)
        (
            f"trial: {{data: {{data_dir: {GLUE}}}}}\n"
            "search:\n  data.task: {grid: [sst2, qnli]}\n",
            "no QNLI/ subfolder",
        ),
    ],
)
def test_bad_sweep_is_refused_before_ray(tmp_path: Path, content: str, needle: str) -> None:
    space = tmp_path / "bad.yaml"
    space.write_text(content)
    assert needle in sweep_error("--space", str(space), "--storage", str(tmp_path / "out"))


def sweep_error(*args: str) -> str:
    """The error `python -m kdray.sweep ARGS` refuses with, checked to come before Ray starts
    and to be one line. Run in this process (a command costs ~10 s of imports); that the
    command prints it as one line and exits 2 is test_bad_sweep_cli_exits_2_with_one_line's."""
    import ray

    from kdray.base.errors import KdrayError
    from kdray.sweep import main

    with pytest.raises(KdrayError) as err:
        main(list(args))
    assert not ray.is_initialized()
    message = str(err.value)
    assert "\n" not in message
    return message


def test_bad_sweep_cli_exits_2_with_one_line(tmp_path: Path) -> None:
    space = tmp_path / "bad.yaml"
    space.write_text("trial:\n  data: [1,\n")
    proc = sweep_cli("--space", str(space), "--storage", str(tmp_path / "out"), cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "line" in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_bad_arguments_are_refused_before_ray(tmp_path: Path) -> None:
    space = tmp_path / "ok.yaml"
    space.write_text("search:\n  trainer.seed: {choice: [0, 1]}\n")
    storage = tmp_path / "out"
    (storage / "taken").mkdir(parents=True)
    (storage / "taken" / "tuner.pkl").write_bytes(b"")  # what Tune leaves in a sweep folder
    for args, needle in [
        (["--retry-errored"], "--resume"),
        (["--name", "taken"], "already holds a sweep"),
        (["--address", "bogus"], "--address"),
    ]:
        assert needle in sweep_error("--space", str(space), "--storage", str(storage), *args)


def test_resume_of_a_non_sweep_folder_is_refused(tmp_path: Path) -> None:
    for folder, needle in ((tmp_path, "not a sweep folder"), (tmp_path / "missing", "not found")):
        message = sweep_error("--resume", str(folder))
        assert needle in message and str(folder) in message


def test_unwritable_storage_exits_2(tmp_path: Path) -> None:
    space = tmp_path / "ok.yaml"
    space.write_text("search:\n  trainer.seed: {choice: [0, 1]}\n")
    (tmp_path / "a-file").write_text("")
    proc = sweep_cli("--space", str(space), "--storage", str(tmp_path / "a-file" / "x"),
                     cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 2 and "not writable" in proc.stderr and "--storage" in proc.stderr


def test_resources_no_node_can_hold_are_refused() -> None:
    spec = parse_sweep({"sweep": {"resources": {"cpu": 4, "gpu": 0.5}}}, "x")
    assert spec.sweep.resources == Resources(cpu=4, gpu=0.5)
    with pytest.raises(ConfigError, match=r"lower sweep\.resources"):
        check_resources(spec, [{"CPU": 2.0}, {"CPU": 8.0}], "this machine")
    check_resources(
        spec, [{"CPU": 2.0}, {"CPU": 4.0, "GPU": 1.0}], "a cluster"
    )  # an autoscaled GPU type


def test_spec_round_trips_through_its_saved_form() -> None:
    raw = {
        "name": "rt",
        "trial": {"selector": {"kind": "acks"}},
        "search": {"knowledge.weights.soft": {"uniform": [0.0, 2.0]},
                   "knowledge.temperature": {"choice": [1.0, 2.0]}},
        "sweep": {"scheduler": "pbt", "searcher": "random", "num_samples": 4},
    }  # fmt: skip
    spec = parse_sweep(raw, "x")
    again = parse_sweep(yaml.safe_load(yaml.safe_dump(spec.to_dict())), "y")
    assert again == spec and isinstance(again.sweep, SweepConfig)
    cfg = spec.trial_config({"knowledge.weights.soft": 0.5})
    assert cfg.knowledge.weights == {"soft": 0.5}


@pytest.mark.slow
def test_single_node_sweep_end_to_end(tiny_cfg: dict, tmp_path: Path, ray_tmp: Path) -> None:
    """Finished, diverged (lr 1e6) and raising (missing data) trials side by side, on a
    machine where a Ray head died without `ray stop`: its stale record names a dead address,
    and the sweep warns and runs on a fresh local Ray instead of waiting for it forever."""
    dead = f"127.0.0.1:{closed_port()}"
    (ray_tmp / "ray" / "ray_current_cluster").write_text(dead)
    glue = tiny_cfg["data"]["data_dir"]
    search = {"trainer.learning_rate": {"grid": [1e-4, 1e6]},
              "data.data_dir": {"grid": [glue, str(tmp_path / "no-glue")]}}  # fmt: skip
    path = tiny_space(tiny_cfg, tmp_path / "e2e.yaml", search, num_samples=1, max_concurrent=2)
    storage = tmp_path / "results"
    proc = sweep_cli("--space", str(path), "--storage", str(storage), cwd=tmp_path, timeout=600,
                     env={"RAY_TMPDIR": str(ray_tmp)})  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert dead in proc.stderr and "ray stop" in proc.stderr  # the stale record's warning
    assert "4 trials: 1 finished, 1 diverged, 2 errored" in proc.stdout
    assert "best trial:" in proc.stdout and "test (dev) score: 0." in proc.stdout
    from ray.tune import ExperimentAnalysis

    df = ExperimentAnalysis(str(storage / "e2e")).dataframe()
    ran = df[df["config/data.data_dir"] == glue]
    assert len(ran) == 2 and set(ran["status"]) == {"finished", "diverged"}
    assert set(ran[ran["status"] == "diverged"]["config/trainer.learning_rate"]) == {1e6}
    assert len(finished_trials(storage / "e2e")) == 1
    assert len(list((storage / "e2e").glob("*/run/phases.parquet"))) == 2
    errors = list((storage / "e2e").glob("*/error.txt"))
    assert len(errors) == 2 and "no-glue" in errors[0].read_text()  # retried, then reported
    assert (storage / "e2e" / "kdray_sweep.yaml").is_file()


@pytest.mark.slow
def test_asha_prunes_and_reused_workers_start_clean(tiny_cfg: dict, tmp_path: Path) -> None:
    """Pruned trials end at their report; the next trial on that worker starts fresh. Every
    trial probes at t/T = 0.1 and 0.6, so the sweep ends with a knowledge x phase table whose
    early cells hold all trials and whose late ones the trials that got there."""
    tiny_cfg["trainer"] = {**tiny_cfg["trainer"], "max_steps": 20}  # 4 evaluations
    tiny_cfg["probe"] = {"at": [0.1, 0.6], "steps": 2}
    tiny_cfg["data"] = {**tiny_cfg["data"], "reward_fraction": 0.1}
    search = {"trainer.learning_rate": {"grid": [1e-6, 1e-5, 1e-4, 1e-3]},
              "trainer.seed": {"grid": [0, 1]}}  # fmt: skip
    options = {"grace_period": 1, "reduction_factor": 3}
    path = tiny_space(tiny_cfg, tmp_path / "asha.yaml", search, scheduler="asha", num_samples=1,
                      max_concurrent=2, metric="val_loss", mode="min",
                      scheduler_options=options)  # fmt: skip
    storage = tmp_path / "results"
    proc = sweep_cli("--space", str(path), "--storage", str(storage), cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # a snapshot per report is kdray's design: Tune's advice against it is not shown
    assert "Experiment state snapshotting" not in proc.stderr
    from ray.tune import ExperimentAnalysis

    df = ExperimentAnalysis(str(storage / "asha")).dataframe()
    assert (df["training_iteration"] < 4).any(), "ASHA pruned nothing"
    # each report says how long the trial spent handing results and checkpoints to Tune before
    later = df[df["training_iteration"] > 1]
    assert (later["time_report_s"] > 0).all() and (df["time_report_s"] < df["time_total_s"]).all()
    # pruned trials are not counted as finished: not at the end, nor by the analysis
    from kdray.analysis import load_sweep

    trials = load_sweep(storage / "asha").trials
    n_pruned = int((df["training_iteration"] < 4).sum())
    assert (trials["status"] == "pruned").sum() == n_pruned
    assert set(trials[trials["status"] == "pruned"]["steps"]) <= {5, 10, 15}
    assert (trials[trials["status"] == "finished"]["steps"] == 20).all()
    assert f"8 trials: {8 - n_pruned} finished, {n_pruned} pruned" in proc.stdout
    from kdray import analyze

    assert "knowledge x phase (probe estimator)" in proc.stdout  # the sweep's own report
    assert (
        "Estimator: **counterfactual probes**"
        in (storage / "asha" / "analysis" / "report.md").read_text()
    )
    assert analyze.main([str(storage / "asha")]) == 0  # selector all, but probes
    assert f"{n_pruned} pruned" in (storage / "asha" / "analysis" / "report.md").read_text()
    from kdray.analysis import knowledge_by_phase

    table = knowledge_by_phase(load_sweep(storage / "asha")).set_index(["knowledge", "start"])
    reached = int((trials["steps"] >= 15).sum())  # probed at step 12: past the second rung
    assert table.loc[("soft", 0.0), "n_trials"] == 8
    assert table.loc[("soft", 0.5), "n_trials"] == reached
    assert df["pid"].nunique() < len(df), "no worker was reused"
    # every trial trained from its own start: its phase log holds its own rows only
    logs = [pd.read_parquet(p) for p in (storage / "asha").glob("*/run/phases.parquet")]
    assert len(logs) == 8 and all(log["run_id"].nunique() == 1 for log in logs)
    assert all(log["step"].iloc[0] == 5 for log in logs)


@pytest.mark.slow
@pytest.mark.parametrize("interval", [2, 3])
def test_pbt_sweep_mutates_knobs_from_checkpoints(
    tiny_cfg: dict, tmp_path: Path, interval: int
) -> None:
    """Two trials of four evaluations under synchronous PBT: at every perturbation the weaker
    one clones the stronger one's checkpoint. Interval 2 exploits mid-run; interval 3 at the
    last evaluation before the final one, so the clone trains only the last 5 steps."""
    tiny_cfg["trainer"] = {**tiny_cfg["trainer"], "max_steps": 20}
    search = {"knowledge.temperature": {"uniform": [1.0, 4.0]},
              "knowledge.weights.hidden": {"uniform": [0.0, 2.0]}}  # fmt: skip
    options = {"quantile_fraction": 0.5, "synch": True, "perturbation_interval": interval}
    path = tiny_space(tiny_cfg, tmp_path / "pbt.yaml", search, scheduler="pbt", num_samples=2,
                      metric="val_loss", mode="min", scheduler_options=options)  # fmt: skip
    storage = tmp_path / "results"
    proc = sweep_cli("--space", str(path), "--storage", str(storage), cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(finished_trials(storage / "pbt")) == 2, trial_outcomes(storage / "pbt", proc)

    # an exploited trial continues a donor's run: its phase log starts with the donor's rows
    logs = [pd.read_parquet(p) for p in (storage / "pbt").glob("*/run/phases.parquet")]
    assert any(log["run_id"].nunique() > 1 for log in logs), "PBT never exploited"


@pytest.mark.slow
def test_two_node_cluster_runs_trials_on_both_nodes(tiny_cfg: dict, tmp_path: Path) -> None:
    from ray.cluster_utils import Cluster

    path = tiny_space(tiny_cfg, tmp_path / "two.yaml", {"trainer.seed": {"grid": [0, 1, 2, 3]}},
                      num_samples=1, max_concurrent=2)  # fmt: skip
    storage = tmp_path / "results"
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    try:
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        node_ids = {n.node_id for n in cluster.list_all_nodes()}
        proc = sweep_cli("--space", str(path), "--storage", str(storage),
                         "--address", cluster.address, cwd=tmp_path, timeout=600)  # fmt: skip
    finally:
        cluster.shutdown()
    assert proc.returncode == 0, proc.stderr[-3000:]
    from ray.tune import ExperimentAnalysis

    df = ExperimentAnalysis(str(storage / "two")).dataframe()
    assert len(df) == 4 and len(finished_trials(storage / "two")) == 4  # one storage path
    assert set(df["node_id"]) == node_ids  # both nodes ran trials


@pytest.mark.slow
def test_killed_driver_resumes_without_losing_finished_trials(
    tiny_cfg: dict, tmp_path: Path
) -> None:
    tiny_cfg["trainer"] = {**tiny_cfg["trainer"], "max_steps": 60, "eval_every": 10}
    path = tiny_space(tiny_cfg, tmp_path / "kill.yaml", {"trainer.seed": {"grid": [0, 1, 2, 3]}},
                      num_samples=1, max_concurrent=1)  # fmt: skip
    storage = tmp_path / "results"
    experiment = storage / "kill"
    driver = subprocess.Popen(
        [sys.executable, "-m", "kdray.sweep", "--space", str(path), "--storage", str(storage)],
        cwd=tmp_path, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 300
        while not finished_trials(experiment) and time.monotonic() < deadline:
            assert driver.poll() is None, "the sweep ended before it could be interrupted"
            time.sleep(0.2)
        before = finished_trials(experiment)
        assert 1 <= len(before) < 4
        # Tune saves its experiment state every second (TUNE_GLOBAL_CHECKPOINT_S): a trial
        # that wrote results.json less than that before the kill may not be recorded as done
        # yet, and resuming then rightly finishes it again; wait until `before` is recorded
        time.sleep(3)
        os.killpg(driver.pid, signal.SIGKILL)  # the driver and the Ray it started
        driver.wait()
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
    proc = sweep_cli("--resume", str(experiment), cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    after = finished_trials(experiment)
    assert len(after) == 4
    assert {t: after[t] for t in before} == before  # finished trials were kept, not rerun


def test_relative_paths_are_made_absolute_for_the_trials(tmp_path: Path) -> None:
    (tmp_path / "teacher").mkdir()
    raw = {"trial": {"data": {"data_dir": "../glue"}, "cache_dir": "cache",
                     "teacher": {"path": "teacher", "backbone": "minilm"}}}  # fmt: skip
    spec = parse_sweep(raw, "x").absolute(tmp_path)
    cfg = spec.trial_config({})
    assert cfg.data.data_dir == str((tmp_path.parent / "glue").resolve())
    assert cfg.cache_dir == str(tmp_path / "cache")
    assert cfg.teacher.path == str(tmp_path / "teacher")
    assert cfg.teacher.backbone == "minilm"  # a registered name (or hub id), not a file
