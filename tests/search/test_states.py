"""What a sweep keeps: one owner of a live trial's state, nothing heavy after it ends, the
keep rules, `export --prune`, and where a single run lands."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.fs
import pytest
import yaml

import kdray
from kdray.analysis import Sweep, best_trial, load_sweep, prune_sweep, student_path
from kdray.base.errors import ConfigError
from kdray.base.results import CHECKPOINT, PREV_CHECKPOINT, STUDENT_DIR
from kdray.search.folder import RUNNING_FILE, SPEC_FILE, check_not_running, running, saved_keep
from kdray.search.spec import KeepConfig
from kdray.search.states import (
    ENDED,
    MARKER,
    STAGE,
    back_to_marked,
    end_trial,
    has_ended,
    marker_of,
    students_rule,
    trial_states,
    tune_owns_state,
)
from kdray.search.sweep_file import parse_sweep
from tests.helpers import ENV, REPO, closed_port, sweep_cli, tiny_space, trial_outcomes

# ------------------------------------------------------------------------- fast: the rules


def test_student_rules_parse_and_bad_ones_name_the_key() -> None:
    assert students_rule("finished") == ("finished", 0)
    assert students_rule("none") == ("none", 0)
    assert students_rule("best:3") == ("best", 3)
    assert students_rule("best") == ("best", 1)
    for bad in ("best:0", "top3", "best:x", "all"):
        with pytest.raises(ConfigError, match=r"'sweep.keep.students' must be finished, none"):
            students_rule(bad)


def test_a_bad_keep_setting_is_refused_with_the_sweep_file() -> None:
    raw = {"trial": {}, "search": {}, "sweep": {"keep": {"states": "some"}}}
    with pytest.raises(ConfigError, match=r"'sweep.keep.states' must be one of none, best, all"):
        parse_sweep(raw, "s")
    raw["sweep"] = {"keep": {"students": "best:-1"}}
    with pytest.raises(ConfigError, match=r"'sweep.keep.students' must be finished, none or best"):
        parse_sweep(raw, "s")
    assert parse_sweep({"trial": {}}, "s").sweep.keep.states == "none"  # the default


def test_the_owner_of_a_live_state() -> None:
    assert not tune_owns_state(storage_is_local=True, scheduler="asha")  # the run folder
    assert tune_owns_state(storage_is_local=True, scheduler="pbt")  # PBT clones Tune's
    assert tune_owns_state(storage_is_local=False, scheduler="asha")  # a storage URI


def fake_trial(root: Path, name: str = "trial_0001") -> Path:
    """A trial folder with every kind of state: the run folder's two, Tune's folder with a
    state and one with a marker, plus what must stay (student, results, logs)."""
    trial = root / name
    run = trial / "run"
    (run / STUDENT_DIR).mkdir(parents=True)
    (run / STUDENT_DIR / "model.safetensors").write_bytes(b"w" * 100)
    (run / "phases.parquet").write_bytes(b"p")
    (run / CHECKPOINT).write_bytes(b"s" * 3000)
    (run / PREV_CHECKPOINT).write_bytes(b"s" * 2000)
    (trial / "checkpoint_000002").mkdir()
    (trial / "checkpoint_000002" / CHECKPOINT).write_bytes(b"s" * 1000)
    (trial / "checkpoint_000003").mkdir()
    (trial / "checkpoint_000003" / MARKER).write_text("{}")
    (trial / "result.json").write_text("{}")
    return trial


@pytest.mark.parametrize("subtree", [False, True], ids=["local", "storage-uri-fake"])
def test_an_ended_trial_keeps_no_state_and_says_so_first(tmp_path: Path, subtree: bool) -> None:
    trial = fake_trial(tmp_path)
    local = pyarrow.fs.LocalFileSystem()
    # the same code through a filesystem that is not the local one (as s3:// or gs:// are)
    fs = pyarrow.fs.SubTreeFileSystem(str(tmp_path), local) if subtree else local
    where = trial.name if subtree else str(trial)
    states = trial_states(fs, where)
    assert [Path(p).relative_to(where).as_posix() for p in states] == [
        f"run/{CHECKPOINT}", f"run/{PREV_CHECKPOINT}", "checkpoint_000002",
    ]  # fmt: skip
    freed = end_trial(fs, where, "pruned", keep_last=False)
    assert freed.bytes == 6000 and freed.paths == 3 and trial_states(fs, where) == []
    ended = json.loads((trial / "run" / ENDED).read_text())
    assert ended["status"] == "pruned" and len(ended["removed"]) == 3 and has_ended(fs, where)
    assert (trial / "run" / STUDENT_DIR / "model.safetensors").is_file()
    assert (trial / "run" / "phases.parquet").is_file() and (trial / "result.json").is_file()
    assert (trial / "checkpoint_000003" / MARKER).is_file()  # Tune's record, a few bytes
    assert end_trial(fs, where, "pruned", keep_last=False).bytes == 0  # settled once


def test_keep_last_keeps_only_the_newest_state(tmp_path: Path) -> None:
    trial = fake_trial(tmp_path)
    fs = pyarrow.fs.LocalFileSystem()
    assert end_trial(fs, str(trial), "finished", keep_last=True).bytes == 3000
    assert trial_states(fs, str(trial)) == [str(trial / "run" / CHECKPOINT)]


def test_a_restarted_trial_goes_on_from_the_state_tune_recorded(tmp_path: Path) -> None:
    """Saved at step 10 and reported, saved at step 20 and lost before its report: the trial
    restarts from step 10, so step 20 is reported again rather than never."""
    import torch

    from kdray.config import TrialConfig
    from kdray.training import checkpoint

    run = tmp_path / "run"

    def save(step: int) -> None:
        state = {**dict.fromkeys(checkpoint.STATE_KEYS), "config": TrialConfig().to_dict(),
                 "step": step}  # fmt: skip
        checkpoint.save(state, run)

    def step_now() -> int:
        return int(torch.load(run / CHECKPOINT, weights_only=True)["step"])

    save(10)
    reported = marker_of(run / CHECKPOINT, 10)
    back_to_marked(run, reported, "t")
    assert step_now() == 10  # nothing saved since: as it was
    save(20)  # then the process dies before reporting it
    back_to_marked(run, reported, "t")
    assert step_now() == 10 and not (run / PREV_CHECKPOINT).exists()
    save(30)
    back_to_marked(run, marker_of(run / CHECKPOINT, 30), "t")
    assert step_now() == 30 and (run / PREV_CHECKPOINT).exists()


def test_a_running_sweep_is_marked_and_a_stale_mark_is_ignored(tmp_path: Path) -> None:
    with running(str(tmp_path)):
        claim = json.loads((tmp_path / RUNNING_FILE).read_text())
        assert claim["pid"] == os.getpid() and claim["host"] == socket.gethostname()
        with pytest.raises(ConfigError, match=rf"is running \(its {RUNNING_FILE}: driver "):
            check_not_running(str(tmp_path))
    assert not (tmp_path / RUNNING_FILE).exists()
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    stale = {"host": socket.gethostname(), "pid": int(gone.stdout), "started": "earlier"}
    (tmp_path / RUNNING_FILE).write_text(json.dumps(stale))
    check_not_running(str(tmp_path))  # its driver is gone: not running
    (tmp_path / RUNNING_FILE).write_text(json.dumps({**stale, "host": "another-machine"}))
    with pytest.raises(ConfigError, match="another-machine"):
        check_not_running(str(tmp_path))


def test_partial_files_of_a_killed_write_go_with_the_states(tmp_path: Path) -> None:
    trial = fake_trial(tmp_path)
    (trial / "run" / f".{CHECKPOINT}.x1y2.tmp").write_bytes(b"t" * 500)  # a torn save
    staged = tmp_path / f"{STAGE}{trial.name}-abc"  # a hand-over to Tune cut short
    staged.mkdir()
    (staged / CHECKPOINT).write_bytes(b"t" * 400)
    other = tmp_path / f"{STAGE}trial_0002-abc"  # another trial's: not this one's to delete
    other.mkdir()
    freed = end_trial(pyarrow.fs.LocalFileSystem(), str(trial), "pruned", keep_last=False)
    assert freed.bytes == 6000 + 500 + 400 and freed.paths == 5
    assert not staged.exists() and other.is_dir()
    assert [p.name for p in (trial / "run").iterdir() if p.name.endswith(".tmp")] == []


def saved_sweep(folder: Path, sweep: dict[str, Any]) -> None:
    """A saved sweep file whose trial section would not validate (as one naming a tracker this
    machine lacks): pruning reads only sweep.keep and sweep.scheduler from it."""
    raw = {"trial": {"student": {"no_such_key": 1}}, "sweep": sweep}
    (folder / SPEC_FILE).write_text(yaml.safe_dump(raw))


def test_the_saved_keep_rules_are_read_alone_and_never_guessed(tmp_path: Path) -> None:
    saved_sweep(tmp_path, {"scheduler": "pbt", "keep": {"states": "all"}})
    assert saved_keep(str(tmp_path)) == (KeepConfig(states="all"), "pbt")
    saved_sweep(tmp_path, {"keep": {"students": "top"}})
    with pytest.raises(ConfigError, match=r"'sweep.keep.students' must be finished, none"):
        saved_keep(str(tmp_path))
    (tmp_path / SPEC_FILE).unlink()
    with pytest.raises(ConfigError, match=rf"has no {SPEC_FILE} .*pass both --states and --keep"):
        saved_keep(str(tmp_path))


def fake_sweep(root: Path, statuses: dict[str, str]) -> Sweep:
    """A sweep on disk as prune_sweep reads it: a fake_trial folder per (name, status)."""
    rows = []
    for n, (name, status) in enumerate(statuses.items()):
        trial = fake_trial(root, name)
        rows.append({"trial_id": name, "status": status, "path": str(trial), "val_metric": n,
                     "test_metric": n, "steps": 10, "wall_s": 1.0})  # fmt: skip
    return Sweep(path=str(root), trials=pd.DataFrame(rows), history=pd.DataFrame(),
                 phases=pd.DataFrame())  # fmt: skip


@pytest.mark.parametrize("scheduler", ["asha", "pbt"])
def test_prune_leaves_what_resume_needs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, scheduler: str
) -> None:
    """Ended trials lose their states, errored ones keep them (--resume continues them), and
    so does the folder of an errored trial that --retry-errored replaced by a new one (which
    Tune lists no more). In a PBT sweep with a trial to resume no state goes (PBT may clone
    any); students still do."""
    sweep = fake_sweep(tmp_path, {"a": "finished", "b": "pruned", "c": "errored"})
    fake_trial(tmp_path, "d_replaced")
    (tmp_path / "report").mkdir()  # not a trial folder: left alone
    monkeypatch.setattr("kdray.analysis.prune.load_sweep", lambda *a, **k: sweep)
    saved_sweep(tmp_path, {"scheduler": scheduler, "keep": {"students": "none"}})
    pruned = prune_sweep(tmp_path)
    fs = pyarrow.fs.LocalFileSystem()
    left = {n: len(trial_states(fs, str(tmp_path / n))) for n in ("a", "b", "c", "d_replaced")}
    held = scheduler == "pbt"
    assert (
        left == {"a": 0, "b": 0, "c": 3, "d_replaced": 0} if not held else set(left.values()) == {3}
    )
    assert pruned.states_held == held and pruned.continued == {"errored": 1}
    assert pruned.replaced == (0 if held else 1) and (tmp_path / "report").is_dir()
    assert not (tmp_path / "a" / "run" / STUDENT_DIR).exists()  # students: none
    assert (tmp_path / "c" / "run" / STUDENT_DIR).exists()  # errored: untouched
    assert ("PBT may clone" in pruned.describe()) == held


# ----------------------------------------------------------------------------- a single run


def test_a_single_run_lands_beside_the_sweeps_without_its_state(
    tiny_cfg: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    cfg = {**tiny_cfg, "trainer": {**tiny_cfg["trainer"], "output_dir": None,
                                   "save_student": True}}  # fmt: skip
    result = kdray.run_trial(cfg)
    out = Path(result.output_dir)
    assert out.parent == tmp_path / "home" / "kdray_results" / "runs"
    assert out.name.startswith("sst2_") and result.student_dir == str(out / STUDENT_DIR)
    assert (out / STUDENT_DIR / "model.safetensors").is_file() and (out / "results.json").is_file()
    assert not (out / CHECKPOINT).exists() and not (out / PREV_CHECKPOINT).exists()
    kept = kdray.run_trial(cfg, keep_state=True)
    assert Path(kept.output_dir) != out and (Path(kept.output_dir) / CHECKPOINT).is_file()


# ------------------------------------------------------------------------ slow: real sweeps


def states_of(experiment: Path) -> dict[str, list[str]]:
    fs = pyarrow.fs.LocalFileSystem()
    return {t.name: trial_states(fs, str(t)) for t in experiment.iterdir() if (t / "run").is_dir()}


@pytest.mark.slow
def test_a_30_trial_sweep_keeps_no_state_and_the_students_asked_for(
    tiny_cfg: dict[str, Any], tmp_path: Path
) -> None:
    space = tiny_space(
        {**tiny_cfg, "trainer": {**tiny_cfg["trainer"], "save_student": True}},
        tmp_path / "thirty.yaml",
        {"trainer.learning_rate": {"loguniform": [1.0e-4, 1.0e-2]},
         "selector.kind": {"choice": ["none", "vanilla", "all"]}},
        num_samples=30, scheduler="asha",
        scheduler_options={"grace_period": 1, "reduction_factor": 3},
        keep={"students": "best:2"},
    )  # fmt: skip
    storage = tmp_path / "results"
    proc = sweep_cli("--space", str(space), "--storage", str(storage), cwd=tmp_path,
                     timeout=900)  # fmt: skip
    experiment = storage / "thirty"
    assert proc.returncode == 0, trial_outcomes(experiment, proc)
    trials = [t for t in experiment.iterdir() if (t / "run").is_dir()]
    assert len(trials) == 30 and "30 trials:" in proc.stdout
    assert states_of(experiment) == {t.name: [] for t in trials}  # no training state left
    assert all((t / "run" / ENDED).is_file() for t in trials)
    finished = [t for t in trials if (t / "run" / "results.json").is_file()]
    students = [t for t in trials if (t / "run" / STUDENT_DIR).is_dir()]
    assert len(finished) >= 2 and len(students) == 2, proc.stdout[-2000:]
    assert not (experiment / RUNNING_FILE).exists()
    # the best trial's student is one of the two kept
    best = best_trial(load_sweep(experiment, phases=False))
    path = student_path(best) if best is not None else None
    assert path is not None and Path(path).parent.parent in students

    # export --prune: students none; refused while a sweep runs
    def export(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "kdray.export", str(experiment), *args],
                              capture_output=True, text=True, cwd=REPO, env=ENV,
                              timeout=300)  # fmt: skip

    claim = {"host": socket.gethostname(), "pid": os.getpid(), "started": "now"}
    (experiment / RUNNING_FILE).write_text(json.dumps(claim))
    refused = export("--prune", "--keep", "none")
    assert refused.returncode == 2 and "is running" in refused.stderr, refused.stderr
    assert len([t for t in trials if (t / "run" / STUDENT_DIR).is_dir()]) == 2
    (experiment / RUNNING_FILE).unlink()
    pruned = export("--prune", "--keep", "none")
    assert pruned.returncode == 0, pruned.stderr
    assert "freed" in pruned.stdout and "kept 0 students" in pruned.stdout, pruned.stdout
    assert not any((t / "run" / STUDENT_DIR).exists() for t in trials)


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, dict[str, str]]]:
    """A local S3 endpoint (moto's server) with an empty bucket `kdray-test`: (a boto3 client,
    the environment that points pyarrow, Ray Tune and kdray at it)."""
    import boto3
    from moto.server import ThreadedMotoServer

    port = closed_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}  # fmt: skip
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    client = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"])
    client.create_bucket(Bucket="kdray-test")
    try:
        yield client, env
    finally:
        server.stop()


def objects(client: Any) -> list[str]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket="kdray-test")
    return [o["Key"] for page in pages for o in page.get("Contents", [])]


@pytest.mark.slow
def test_a_sweep_at_a_storage_uri_keeps_the_same_rules(
    tiny_cfg: dict[str, Any], tmp_path: Path, s3: tuple[Any, dict[str, str]]
) -> None:
    """On s3:// Tune owns a live trial's state; an ended trial's goes, the students the rule
    keeps stay, and the summary, `export --prune` and `export --best` read the bucket."""
    client, env = s3
    space = tiny_space(
        {**tiny_cfg, "trainer": {**tiny_cfg["trainer"], "save_student": True}},
        tmp_path / "uri.yaml", {"trainer.seed": {"grid": [0, 1, 2]}},
        num_samples=1, keep={"students": "best:1"},
    )  # fmt: skip
    uri = "s3://kdray-test/results/uri"
    proc = sweep_cli("--space", str(space), "--storage", "s3://kdray-test/results", cwd=tmp_path,
                     env=env, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert f"3 trials: 3 finished; results in {uri}" in proc.stdout
    assert f"student: {uri}/" in proc.stdout  # the best trial's, in the bucket
    keys = objects(client)
    assert not [k for k in keys if k.endswith(CHECKPOINT) or k.endswith(PREV_CHECKPOINT)]
    assert len([k for k in keys if k.endswith(f"/run/{ENDED}")]) == 3
    assert len([k for k in keys if k.endswith(f"/{STUDENT_DIR}/model.safetensors")]) == 1

    def export(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "kdray.export", uri, *args],
                              capture_output=True, text=True, cwd=REPO, env={**ENV, **env},
                              timeout=300)  # fmt: skip

    best = export("--best", str(tmp_path / "best"))
    assert best.returncode == 0 and (tmp_path / "best" / "model.safetensors").is_file(), best
    pruned = export("--prune", "--keep", "none")
    assert pruned.returncode == 0 and "freed" in pruned.stdout, pruned.stderr
    assert not [k for k in objects(client) if f"/{STUDENT_DIR}/" in k]
