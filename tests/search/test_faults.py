"""Faults a sweep survives and what it reports about them: trial status, bad sweep
input before Ray, the analysis without logs, node loss, a crashing trial, two sweeps at once,
a process killed while it prepares a teacher. Disk faults: tests/base/test_disk_faults.py."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from kdray.analysis import Sweep, describe_statuses, leaderboard, trial_status
from kdray.base.errors import ConfigError
from kdray.base.results import PHASE_LOG, RESULTS, TRIAL_RUN_DIR
from kdray.search.folder import SPEC_FILE
from kdray.search.sweep_file import parse_sweep
from tests.helpers import ENV, finished_trials, ray_in_this_process, sweep_cli, tiny_space

# --------------------------------------------------------------------------- trial status


def run_folder(tmp_path: Path, name: str, status: str | None) -> str:
    run = tmp_path / name / TRIAL_RUN_DIR
    run.mkdir(parents=True)
    if status:
        (run / RESULTS).write_text(json.dumps({"status": status}))
    return str(run)


def test_status_comes_from_what_the_run_wrote(tmp_path: Path) -> None:
    """Tune says TERMINATED for a pruned trial too; only the run's results.json tells."""
    assert trial_status("TERMINATED", run_folder(tmp_path, "a", "finished")) == ("finished", None)
    assert trial_status("TERMINATED", run_folder(tmp_path, "b", "diverged"))[0] == "diverged"
    assert trial_status("TERMINATED", run_folder(tmp_path, "c", None)) == ("pruned", None)
    assert trial_status("ERROR", run_folder(tmp_path, "d", None))[0] == "errored"
    assert trial_status("RUNNING", run_folder(tmp_path, "e", None))[0] == "running"
    bad = run_folder(tmp_path, "f", None)
    (Path(bad) / RESULTS).write_text("{half")
    status, problem = trial_status("TERMINATED", bad)
    assert status == "finished" and problem and RESULTS in problem


def test_leaderboard_puts_finished_trials_first() -> None:
    trials = pd.DataFrame({"trial_id": ["p", "f1", "f2", "d"],
                           "status": ["pruned", "finished", "finished", "diverged"],
                           "val_metric": [0.9, 0.7, 0.8, float("nan")],
                           "test_metric": [float("nan"), 0.6, 0.7, float("nan")],
                           "steps": [40, 120, 120, 10],
                           "wall_s": [1.0, 3.0, 3.0, 0.5]})  # fmt: skip
    sweep = Sweep("x", trials, pd.DataFrame(), pd.DataFrame())
    assert list(leaderboard(sweep)["trial_id"]) == ["f2", "f1", "p"]
    assert describe_statuses(trials) == "4 trials: 2 finished, 1 diverged, 1 pruned"
    by_loss = Sweep("x", trials.assign(val_loss=[0.1, 0.5, 0.4, 9.0]), pd.DataFrame(),
                    pd.DataFrame(), metric="val_loss", mode="min")  # fmt: skip
    board = leaderboard(by_loss)
    assert list(board["trial_id"]) == ["f2", "f1", "p", "d"] and "val_loss" in board


# --------------------------------------------------------------- analysis without phase logs


def test_analyze_without_phase_logs_says_why_and_exits_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from kdray import analyze

    trials = pd.DataFrame({"trial_id": ["a", "b"], "status": ["finished", "pruned"],
                           "val_metric": [0.8, 0.7], "test_metric": [0.75, float("nan")],
                           "steps": [20, 10], "wall_s": [2.0, 1.0],
                           "config/selector.kind": ["acks", "acks"]})  # fmt: skip
    no_logs = Sweep(str(tmp_path), trials, pd.DataFrame(), pd.DataFrame())
    monkeypatch.setattr(analyze, "load_sweep", lambda path: no_logs)
    assert analyze.main([str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "none of its 2 trials: 1 finished, 1 pruned has a phase log" in err
    assert "measure_reward" not in err  # the advice for logs without rewards does not apply
    assert (tmp_path / "analysis" / "report.md").is_file()

    phases = pd.DataFrame({"trial_id": ["a"], "selector": ["all"], "reward_drop": [float("nan")],
                           "progress": [0.5], "w_soft": [1.0]})  # fmt: skip
    no_rewards = Sweep(str(tmp_path), trials, pd.DataFrame(), phases)
    monkeypatch.setattr(analyze, "load_sweep", lambda path: no_rewards)
    assert analyze.main([str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "no phase rewards" in err and "selectors all" in err and "measure_reward" in err


def test_analyze_of_a_missing_folder_says_not_found(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "kdray.analyze", str(tmp_path / "nope")],
                          capture_output=True, text=True, env=ENV, timeout=120)  # fmt: skip
    assert proc.returncode == 2 and "not found" in proc.stderr and "nope" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


# ------------------------------------------------------------------- sweep input, before Ray


def test_resources_this_machine_lacks_are_refused_before_ray(tmp_path: Path) -> None:
    space = tmp_path / "big.yaml"
    space.write_text(yaml.safe_dump({"search": {"trainer.seed": {"choice": [0, 1]}},
                                     "sweep": {"resources": {"cpu": 512}}}))  # fmt: skip
    proc = sweep_cli("--space", str(space), "--storage", str(tmp_path / "out"), cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "512 CPU" in proc.stderr and "this machine" in proc.stderr
    assert "Started a local Ray instance" not in proc.stderr + proc.stdout
    assert not (tmp_path / "out" / "big").exists()  # no folder claimed either


def test_two_sweeps_never_share_a_folder(tmp_path: Path) -> None:
    from kdray.search.folder import claim_name

    spec = parse_sweep({"search": {"trainer.seed": {"choice": [0, 1]}}}, "same")
    storage = str(tmp_path)
    first = claim_name(spec, storage, "same", explicit=False)
    second = claim_name(spec, storage, "same", explicit=False)
    assert first == "same" and second.startswith("same_") and second != first
    assert (tmp_path / second / SPEC_FILE).is_file()
    with pytest.raises(ConfigError, match="claimed by another sweep"):
        claim_name(spec, storage, "same", explicit=True)


# ---------------------------------------------------------- teacher outputs killed mid-way


def test_teacher_outputs_interrupted_are_recomputed_finished_are_reused(
    tiny_teacher: str, tiny_cfg: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed while computing the outputs, or while writing them: nothing half-done is kept
    (so nothing half-done is read); once written whole, they are read, not recomputed."""
    import torch

    from kdray.config import TrialConfig
    from kdray.teachers import outputs as teacher_cache
    from kdray.training.build import setup

    tiny_cfg["cache_dir"] = str(tmp_path / "cache")
    cfg = TrialConfig.from_dict(tiny_cfg)
    batches = {"n": 0, "die_at": 2}
    real_encode, real_save = teacher_cache.encode, torch.save

    def encode(*args: Any, **kwargs: Any) -> Any:
        batches["n"] += 1
        if batches["n"] == batches["die_at"]:
            raise KeyboardInterrupt  # the computation stopped half-way
        return real_encode(*args, **kwargs)

    def save_half(obj: Any, f: Any, *args: Any, **kwargs: Any) -> None:
        f.write(b"PK\x03\x04 the first bytes")
        raise KeyboardInterrupt  # the write stopped half-way

    monkeypatch.setattr(teacher_cache, "encode", encode)
    monkeypatch.setattr(teacher_cache, "compute_teacher_outputs",
                        _small_batches(teacher_cache.compute_teacher_outputs))  # fmt: skip
    store = tmp_path / "cache" / "teacher_outputs"
    with pytest.raises(KeyboardInterrupt):
        setup(cfg, {"teacher": tiny_teacher})
    assert not list(store.glob("*.pt")), "half-computed outputs were kept"
    batches["die_at"] = -1
    with monkeypatch.context() as m:
        m.setattr(torch, "save", save_half)
        with pytest.raises(KeyboardInterrupt):
            setup(cfg, {"teacher": tiny_teacher})
    assert not list(store.glob("*.pt")), "half-written outputs were kept"
    setup(cfg, {"teacher": tiny_teacher})  # computes them whole
    done = {p: p.stat().st_mtime_ns for p in store.glob("*.pt")}
    assert done and torch.save is real_save
    n = batches["n"]
    setup(cfg, {"teacher": tiny_teacher})  # finished: read, not recomputed
    assert batches["n"] == n and {p: p.stat().st_mtime_ns for p in store.glob("*.pt")} == done


def _small_batches(compute: Any) -> Any:
    def run(*args: Any, **kwargs: Any) -> Any:
        return compute(*args, **{**kwargs, "batch_size": 16})

    return run


# --------------------------------------------------------------------------- slow: real Ray


def read_rows(trial_dir: Path) -> list[dict[str, Any]]:
    """The rows Tune recorded for a trial (result.json, one JSON object per line)."""
    path = trial_dir / "result.json"
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        with contextlib.suppress(json.JSONDecodeError):  # the line being written
            rows.append(json.loads(line))
    return rows


def assert_clean_phase_log(run_dir: Path, max_steps: int, phase_length: int) -> None:
    """Every phase of the kept segment once, none missing: a resumed run repeats nothing."""
    log = pd.read_parquet(run_dir / PHASE_LOG)
    final = log[log["final"]]
    assert list(final["phase"]) == list(range(max_steps // phase_length))
    assert list(final["step"]) == list(range(phase_length, max_steps + 1, phase_length))


@pytest.mark.slow
def test_node_loss_trials_continue_on_the_remaining_node(tiny_cfg: dict, tmp_path: Path) -> None:
    from ray.cluster_utils import Cluster

    tiny_cfg["trainer"] = {**tiny_cfg["trainer"], "max_steps": 100, "eval_every": 10}
    path = tiny_space(tiny_cfg, tmp_path / "loss.yaml", {"trainer.seed": {"grid": [0, 1, 2]}},
                      num_samples=1, max_concurrent=2, max_failures=3)  # fmt: skip
    experiment = tmp_path / "results" / "loss"
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    driver = None
    try:
        worker = cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        driver = subprocess.Popen(
            [sys.executable, "-m", "kdray.sweep", "--space", str(path), "--storage",
             str(experiment.parent), "--address", cluster.address],
            cwd=tmp_path, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        victim = None
        deadline = time.monotonic() + 300
        while victim is None and time.monotonic() < deadline:
            assert driver.poll() is None, driver.communicate()[0][-3000:]
            for trial in experiment.glob("*/"):
                rows = read_rows(trial)
                on_worker = [r for r in rows if r.get("node_id") == worker.node_id]
                early = rows and rows[-1]["step"] <= 50  # far from its end: still there after
                if on_worker and early and list(trial.glob("checkpoint_*")):
                    victim = trial
            time.sleep(0.05)
        assert victim is not None, "no trial ran on the worker node"
        before = finished_trials(experiment)
        cluster.remove_node(worker)  # the node and every trial on it are gone
        out, _ = driver.communicate(timeout=600)
    finally:
        if driver is not None and driver.poll() is None:
            driver.kill()
        cluster.shutdown()
    assert driver.returncode == 0, out[-3000:]
    after = finished_trials(experiment)
    assert len(after) == 3 and {t: after[t] for t in before} == before  # finished: untouched
    rows = read_rows(victim)
    steps = [r["step"] for r in rows]
    # every evaluation reported, in order; one reported on the lost node after the last
    # checkpoint Tune kept is reported again by the resumed trial (Tune's at-least-once)
    assert steps == sorted(steps) and sorted(set(steps)) == list(range(10, 101, 10)), steps
    moved = [r for r in rows if r["node_id"] != worker.node_id]  # on the head, after the loss
    assert moved and all(r["resumed_from_step"] >= 10 for r in moved), rows  # not from step 0
    assert_clean_phase_log(victim / TRIAL_RUN_DIR, 100, 5)


def crash_after_first_checkpoint(config: dict[str, Any], spec: Any, marks: str, **kw: Any) -> None:
    """kdray.search.tuner.train_trial, raising once per trial right after its first checkpoint
    reached Tune (runs in a Ray worker)."""
    from ray import tune

    import kdray.search.tuner as sweep

    mark = Path(marks) / tune.get_context().get_trial_id()
    original = sweep.TuneReporter.report

    def report(self: Any, metrics: dict[str, Any], checkpoint_dir: str | None = None) -> None:
        original(self, metrics, checkpoint_dir)
        if checkpoint_dir and not metrics.get("done") and not mark.exists():
            mark.write_text(str(metrics["step"]))
            raise RuntimeError("injected crash after the first checkpoint")

    sweep.TuneReporter.report = report  # type: ignore[method-assign]
    try:
        sweep.train_trial(config, spec, **kw)
    finally:
        sweep.TuneReporter.report = original  # type: ignore[method-assign]


@pytest.mark.slow
def test_trial_that_crashes_is_retried_from_its_checkpoint(tiny_cfg: dict, tmp_path: Path) -> None:
    import ray.cloudpickle
    from ray import tune

    from kdray.search import ray_start
    from kdray.search.sweep_file import load_spec
    from kdray.search.tuner import prepare_teachers, run_config, tune_config

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers need not import it
    tiny_cfg["trainer"] = {**tiny_cfg["trainer"], "max_steps": 30, "eval_every": 10}
    path = tiny_space(tiny_cfg, tmp_path / "crash.yaml", {"trainer.seed": {"grid": [0]}},
                      num_samples=1, max_concurrent=1, max_failures=1)  # fmt: skip
    spec = load_spec(str(path))
    marks = tmp_path / "marks"
    marks.mkdir()
    with ray_in_this_process():
        ray_start.start(ray_start.resolve("local"), num_cpus=2)
        teachers, shared = prepare_teachers(spec)
        trainable = tune.with_resources(
            tune.with_parameters(crash_after_first_checkpoint, spec=spec, marks=str(marks),
                                 teacher_paths=teachers, shared=shared), {"cpu": 1},
        )  # fmt: skip
        results = tune.Tuner(
            trainable, param_space=spec.param_space(), tune_config=tune_config(spec, None),
            run_config=run_config(spec, "crash", str(tmp_path / "results"), verbose=0),
        ).fit()  # fmt: skip
    assert results.num_errors == 0 and len(list(marks.iterdir())) == 1  # it crashed once
    for result in results:
        trial = Path(result.path)
        assert json.loads((trial / TRIAL_RUN_DIR / RESULTS).read_text())["status"] == "finished"
        crashed_at = int((marks / result.metrics["trial_id"]).read_text())
        rows = read_rows(trial)
        steps = [r["step"] for r in rows]
        assert steps == sorted(set(steps)) and steps[-1] == 30, steps
        after = {r["resumed_from_step"] for r in rows if r["step"] > crashed_at}
        assert after == {crashed_at}, f"not continued from its checkpoint: {rows}"
        assert_clean_phase_log(trial / TRIAL_RUN_DIR, 30, 5)


@pytest.mark.slow
def test_two_sweeps_at_once_fine_tune_the_teacher_once(
    tiny_cfg: dict, tiny_teacher: str, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"  # shared, and without the teacher: both sweeps want it
    tiny_cfg["teacher"] = {"backbone": tiny_teacher, "max_steps": 30, "batch_size": 8,
                           "max_train_examples": 400}  # fmt: skip
    tiny_cfg["cache_dir"] = str(cache)
    path = tiny_space(tiny_cfg, tmp_path / "twice.yaml", {"trainer.seed": {"grid": [0]}},
                      num_samples=1, max_concurrent=1)  # fmt: skip
    storage = tmp_path / "results"
    command = [sys.executable, "-m", "kdray.sweep", "--space", str(path), "--storage", str(storage)]
    sweeps = [subprocess.Popen(command, cwd=tmp_path, env=ENV, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True) for _ in range(2)]  # fmt: skip
    outs = [s.communicate(timeout=600)[0] for s in sweeps]
    assert [s.returncode for s in sweeps] == [0, 0], outs[0][-2000:] + outs[1][-2000:]
    assert sum(out.count("fine-tuning teacher") for out in outs) == 1
    folders = sorted(p.parent for p in storage.glob(f"*/{SPEC_FILE}"))
    assert len(folders) == 2  # one folder each
    nodes = []
    for folder in folders:
        assert len(finished_trials(folder)) == 1
        nodes.append({r["node_id"] for t in folder.glob("*/") for r in read_rows(t)})
    assert nodes[0].isdisjoint(nodes[1])  # each its own Ray instance
    assert len(list((cache / "teachers").glob("sst2-*/config.json"))) == 1


@pytest.mark.slow
def test_killed_teacher_fine_tune_resumes_and_a_finished_one_is_reused(
    tiny_cfg: dict, tiny_teacher: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """`python -m kdray.teacher` killed mid fine-tune; the next starts (in this process)
    continue it from its checkpoint, then reuse it."""
    from kdray.config import TrialConfig
    from kdray.training.fine_tune import ensure_teacher

    cfg = {**tiny_cfg, "cache_dir": str(tmp_path / "cache"),
           "teacher": {"backbone": tiny_teacher, "max_steps": 200, "batch_size": 8,
                       "max_train_examples": 400}}  # fmt: skip
    config = tmp_path / "teacher.yaml"
    config.write_text(yaml.safe_dump(cfg))
    command = [sys.executable, "-m", "kdray.teacher", "--config", str(config)]
    teachers = tmp_path / "cache" / "teachers"
    proc = subprocess.Popen(command, cwd=tmp_path, env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 300
        while not list(teachers.glob(".*.run/checkpoint.pt")) and time.monotonic() < deadline:
            assert proc.poll() is None, "the fine-tune ended before it could be killed"
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert not list(teachers.glob("sst2-*/config.json")), "a half-trained teacher was kept"
    trial = TrialConfig.from_dict(cfg)
    with caplog.at_level(logging.INFO, logger="kdray.training.checkpoint"):
        path = ensure_teacher(trial)
    assert "resumed" in caplog.text  # from the killed fine-tune's checkpoint, not step 0
    (folder,) = teachers.glob("sst2-*/config.json")
    stamp = folder.stat().st_mtime_ns
    caplog.clear()
    with caplog.at_level(logging.INFO):
        assert ensure_teacher(trial) == path
    assert "resumed" not in caplog.text and folder.stat().st_mtime_ns == stamp  # reused
