"""kdray in the ecosystem: the Python API, tracking through Tune's callbacks (MLflow, W&B),
student folders that `transformers.pipeline` loads, `kdray.export`, the console scripts and
the HTML report in a real browser."""

from __future__ import annotations

import html
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

import kdray
from kdray.base.errors import ConfigError
from tests.helpers import ray_in_this_process

SCRIPTS = ("kdray-sweep", "kdray-train", "kdray-analyze", "kdray-export")


def tiny_trial(teacher: str, glue: Path, cache: str, out: Path) -> dict[str, Any]:
    return {
        "data": {"task": "sst2", "data_dir": str(glue), "max_length": 32,
                 "max_train_examples": 400, "max_test_examples": 64, "reward_fraction": 0.1},
        "teacher": {"path": teacher},
        "student": {"num_layers": 1, "init": "remap"},
        "knowledge": {"types": ["hard", "soft", "hidden"]},
        "selector": {"phase_length": 5, "reward_examples": 32},
        "trainer": {"max_steps": 10, "batch_size": 8, "eval_every": 5, "eval_batch_size": 64,
                    "output_dir": str(out)},
        "cache_dir": cache,
    }  # fmt: skip


# ------------------------------------------------------------------------------ fast: the API


def test_run_trial_writes_a_student_that_a_pipeline_loads(
    tiny_teacher: str, glue_dir: Path, cache_dir: str, tmp_path: Path
) -> None:
    from transformers import pipeline

    cfg = tiny_trial(tiny_teacher, glue_dir, cache_dir, tmp_path / "run")
    result = kdray.run_trial(cfg, {"selector.kind": "all"})  # a mapping, overrides as a mapping
    student = Path(result.student_dir or "")
    assert {"config.json", "model.safetensors", "tokenizer.json", "README.md",
            "kdray_teacher.json"} <= {p.name for p in student.iterdir()}  # fmt: skip
    config = json.loads((student / "config.json").read_text())
    assert config["id2label"] == {"0": "negative", "1": "positive"}
    assert config["label2id"] == {"negative": 0, "positive": 1}
    out = pipeline("text-classification", model=str(student))(["a gripping film", "dull, flat"])
    assert [o["label"] in ("negative", "positive") for o in out] == [True, True]
    card = (student / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: transformers\npipeline_tag: text-classification")
    dev = result.test["dev"]["accuracy"]
    for needle in (f"`{tiny_teacher}`", "GLUE sst2 (negative, positive)", "hard, soft, hidden",
                   "| selector | all |", "| training steps | 10 |",
                   f"| GLUE dev accuracy (measured, never tuned on) | {dev:.4f} |"):  # fmt: skip
        assert needle in card, needle
    # the same run from a YAML path and "KEY=VALUE" overrides: the ended run kept no
    # training state (run_trial's default), so it trains again, to the same scores
    path = tmp_path / "trial.yaml"
    path.write_text(yaml.safe_dump(cfg))
    again = kdray.run_trial(str(path), ["selector.kind=all"])
    assert again.test == result.test


def test_run_trial_raises_config_errors_before_any_work(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown config key 'trainer.max_step'.*max_steps"):
        kdray.run_trial({"trainer": {"max_step": 10}})
    with pytest.raises(ConfigError, match=r"--set expects KEY=VALUE"):
        kdray.run_trial(None, ["trainer.max_steps"])
    with pytest.raises(ConfigError, match=r"wrap it in a list"):
        kdray.run_trial(None, "trainer.max_steps=3")
    with pytest.raises(ConfigError, match=r"YAML path, a mapping or a kdray.TrialConfig"):
        kdray.run_trial(42)  # type: ignore[arg-type]
    with pytest.raises(kdray.KdrayError, match=r"no-such.yaml"):
        kdray.run_trial(str(tmp_path / "no-such.yaml"))


def test_run_sweep_raises_the_clis_errors_before_ray(tmp_path: Path) -> None:
    import ray

    with pytest.raises(ConfigError, match=r"--space FILE is required"):
        kdray.run_sweep()
    with pytest.raises(ConfigError, match=r"unknown sweep section 'serch'.*search"):
        kdray.run_sweep({"serch": {}})
    with pytest.raises(ConfigError, match=r"unknown logger 'mlflw' in sweep.loggers\[0\].*mlflow"):
        kdray.run_sweep({"sweep": {"loggers": ["mlflw"]}})
    with pytest.raises(ConfigError, match=r"resumed sweep runs as it was saved"):
        kdray.run_sweep(resume=str(tmp_path), overrides={"sweep.num_samples": 2})
    with pytest.raises(ConfigError, match=r"retry_errored"):
        kdray.run_sweep({"name": "x"}, retry_errored=True)
    assert not ray.is_initialized()


def test_missing_tracker_names_its_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "mlflow" else real(name, *a))  # fmt: skip
    with pytest.raises(
        ConfigError, match=r"needs the mlflow package.*pip install \"kdray\[mlflow\]\""
    ):
        kdray.run_sweep({"sweep": {"loggers": ["csv", "mlflow"]}})
    with pytest.raises(ConfigError, match=r"unknown option 'sweep.logger_options.csv.path'"):
        kdray.run_sweep({"sweep": {"loggers": ["csv"], "logger_options": {"csv": {"path": 1}}}})


def test_wandb_online_without_a_login_is_refused(monkeypatch: pytest.MonkeyPatch,
                                                 tmp_path: Path) -> None:  # fmt: skip
    pytest.importorskip("wandb")
    for var in ("WANDB_API_KEY", "WANDB_MODE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path))  # no saved login
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    from kdray.search.sweep_file import parse_sweep
    from kdray.search.tracking import check_login

    with pytest.raises(ConfigError, match=r"needs a W&B login.*WANDB_MODE=offline"):
        check_login(parse_sweep({"sweep": {"loggers": ["wandb"]}}, "x"))
    offline = {"loggers": ["wandb"], "logger_options": {"wandb": {"mode": "offline"}}}
    check_login(parse_sweep({"sweep": offline}, "x"))


def test_console_scripts_are_installed() -> None:
    """Each script is installed (pip install -e .) and points at its module's `cli`; one runs
    for real (the others import the same way: torch and Ray, seconds each)."""
    from importlib.metadata import entry_points

    scripts = {ep.name: ep for ep in entry_points(group="console_scripts") if ep.name in SCRIPTS}
    assert set(scripts) == set(SCRIPTS)
    for name, ep in scripts.items():
        assert shutil.which(name), f"{name} is not on PATH: pip install -e . installs it"
        module = name.removeprefix("kdray-")
        assert ep.value == f"kdray.{module}:cli" and callable(ep.load())
    proc = subprocess.run([shutil.which("kdray-export") or "", "/no/such/sweep", "--best", "x"],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "/no/such/sweep" in proc.stderr


# ------------------------------------------------------------- slow: one sweep, every tracker


@pytest.fixture(scope="module")
def tracked_sweep(
    tiny_teacher: str, glue_dir: Path, cache_dir: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Any, Path]]:
    """Two trials (ACKS and all) run through `kdray.run_sweep` with csv, tensorboard, MLflow
    (its default here: a local SQLite store in the sweep's folder) and W&B (offline)."""

    tmp = tmp_path_factory.mktemp("tracked")
    trial = tiny_trial(tiny_teacher, glue_dir, cache_dir, tmp / "unused")
    del trial["trainer"]["output_dir"]
    space = {
        "name": "tracked",
        "trial": trial,
        "search": {"selector.kind": {"grid": ["acks", "all"]}},
        "sweep": {"searcher": "random", "scheduler": "fifo", "num_samples": 1,
                  "resources": {"cpu": 1}, "max_concurrent": 2,
                  "loggers": ["csv", "tensorboard", "mlflow", "wandb"],
                  "logger_options": {"wandb": {"mode": "offline"}}},
    }  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="kr", dir="/tmp") as ray_dir, \
            pytest.MonkeyPatch.context() as mp:  # fmt: skip
        mp.setenv("RAY_TMPDIR", ray_dir)
        mp.delenv("RAY_ADDRESS", raising=False)
        mp.setenv("WANDB_SILENT", "true")
        (Path(ray_dir) / "ray").mkdir()
        with ray_in_this_process():
            run = kdray.run_sweep(space, storage=str(tmp / "results"))
        yield run, tmp


@pytest.mark.slow
def test_run_sweep_returns_results_best_trial_and_analysis(tracked_sweep: Any) -> None:
    run, _ = tracked_sweep
    assert len(run.results) == 2 and not run.results.errors
    sweep = run.analysis()
    assert set(sweep.trials["status"]) == {"finished"} and len(sweep.phases) > 0
    best = run.best_trial
    assert best["val_metric"] == sweep.trials["val_metric"].max()
    assert Path(run.best.path).name == Path(best["path"]).name
    assert run.best.metrics["val_metric"] == best["val_metric"]
    assert run.best_student == f"{best['path']}/run/student" and Path(run.best_student).is_dir()
    experiment = Path(run.path)
    assert (experiment / "analysis" / "report.md").is_file()  # the sweep's own report
    for trial in sweep.trials["path"]:
        files = {p.name for p in Path(trial).iterdir()}
        assert {"progress.csv", "result.json"} <= files  # csv and Tune's JSON
        assert any(f.startswith("events.out.tfevents") for f in files)  # tensorboard


@pytest.mark.slow
def test_load_and_report_a_real_sweep(tracked_sweep: Any, tmp_path: Path) -> None:
    """pandas on a real sweep's folder (by path and by storage URI), a corrupt phase log named
    and skipped, and `python -m kdray.analyze` writing every report file."""
    from kdray.analysis import load_sweep
    from kdray.base.results import PHASE_LOG, TRIAL_RUN_DIR

    run, _ = tracked_sweep
    folder = tmp_path / "tracked"  # a copy: the other tests read the original
    shutil.copytree(run.path, folder)
    sweep = load_sweep(folder)
    assert len(sweep.trials) == 2 and set(sweep.trials["status"]) == {"finished"}
    for col in ("trial_id", "status", "config/selector.kind", "config/trainer.learning_rate",
                "config/knowledge.temperature", "val_metric", "best_val_metric",
                "test_metric", "steps", "wall_s"):  # fmt: skip
        assert col in sweep.trials, col
    assert {"trial_id", "val_metric", "step", "training_iteration"} <= set(sweep.history)
    assert len(sweep.history) == 2 * 2  # 2 evaluations per trial (+ the final report)
    assert {"trial_id", "phase", "progress_start", "reward_drop", "w_soft"} <= set(sweep.phases)
    assert len(sweep.phases) == 2 * 2  # every trial logs its 2 phases
    by_uri = load_sweep(f"file://{folder}")  # a storage URI, through pyarrow
    pd.testing.assert_frame_equal(by_uri.phases, sweep.phases)
    assert list(by_uri.trials["val_metric"]) == list(sweep.trials["val_metric"])

    report = subprocess.run(
        [sys.executable, "-m", "kdray.analyze", str(folder), "--buckets", "0,0.5,1",
         "--format", "html"], capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert report.returncode == 0, report.stderr[-3000:]
    out = folder / "analysis"
    for name in ("report.md", "report.html", "heatmap.png", "trajectories.png", "cost.png",
                 "leaderboard.png", "schedule.yaml", "knowledge_by_phase.csv"):  # fmt: skip
        assert (out / name).is_file(), name
    assert "Knowledge by phase" in (out / "report.md").read_text()
    assert "Hyperparameter importance" in (out / "report.md").read_text()
    # the report ends with the command that replays the schedule it exported; it runs
    command = f"python -m kdray.train --config {shlex.quote(str(out.resolve() / 'replay.yaml'))}"
    assert (out / "report.md").read_text().rstrip().endswith(f"{command}\n```")
    assert f"replay the schedule: {command}" in report.stdout
    assert f"<pre><code>{html.escape(command)}</code></pre>" in (out / "report.html").read_text()
    replay = subprocess.run(
        [sys.executable, *shlex.split(command)[1:], "--set", "trainer.max_steps=4",
         "--output-dir", str(tmp_path / "replayed")], capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert replay.returncode == 0, replay.stderr[-3000:]
    assert json.loads((tmp_path / "replayed" / "results.json").read_text())["status"] == "finished"
    selector = yaml.safe_load((out / "replay.yaml").read_text())["selector"]
    assert selector == {"kind": "schedule", "schedule_file": str(out.resolve() / "schedule.yaml"),
                        "phase_length": selector["phase_length"]}  # fmt: skip

    # a corrupt phase log is named and skipped; the other trial is still read
    victim = folder / Path(sweep.trials["path"].iloc[0]).name / TRIAL_RUN_DIR / PHASE_LOG
    victim.write_bytes(b"not parquet")
    again = load_sweep(folder)
    assert len(again.skipped) == 1 and str(victim) in again.skipped[0]
    assert again.phases["trial_id"].nunique() == 1


@pytest.mark.slow
def test_mlflow_round_trip(tracked_sweep: Any) -> None:
    from mlflow.tracking import MlflowClient

    run, _ = tracked_sweep
    client = MlflowClient(tracking_uri=f"sqlite:///{run.path}/mlflow.db")
    experiment = client.get_experiment_by_name("tracked")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    trials = [r for r in runs if r.data.tags.get("kdray.kind") != "analysis"]
    assert len(trials) == 2 and all(r.info.status == "FINISHED" for r in trials)
    assert {r.data.params["selector.kind"] for r in trials} == {"acks", "all"}  # the config
    sweep = run.analysis()
    for r in trials:
        name = r.data.tags["trial_name"]
        (row,) = [t for _, t in sweep.trials.iterrows() if name.endswith(t["trial_id"])]
        history = client.get_metric_history(r.info.run_id, "val_metric")
        assert len(history) == row["iterations"] >= 2  # every report
        assert r.data.metrics["val_metric"] == pytest.approx(row["val_metric"])
        assert r.data.metrics["step"] == 10 and "test_metric" in r.data.metrics
        artifacts = {a.path for a in client.list_artifacts(r.info.run_id, "run")}
        assert {
            "run/config.yaml",
            "run/phases.parquet",
            "run/results.json",
            "run/student",
        } <= artifacts  # the full config, the phase log, the student
        assert "run/checkpoint.pt" not in artifacts  # the training state stays in the sweep
    acks = next(r for r in trials if r.data.params["selector.kind"] == "acks")
    assert any(k.startswith("selector/") for k in acks.data.metrics)  # the agent's diagnostics
    (analysis,) = [r for r in runs if r.data.tags.get("kdray.kind") == "analysis"]
    files = {a.path for a in client.list_artifacts(analysis.info.run_id, "analysis")}
    assert "analysis/report.md" in files and "analysis/knowledge_by_phase.csv" in files


@pytest.mark.slow
def test_wandb_offline_runs(tracked_sweep: Any) -> None:
    """W&B's offline runs, one per trial and one for the analysis. wandb has no public reader
    of its offline .wandb files (they go to `wandb sync`); their protobuf records hold the
    logged keys and JSON values as plain bytes, which is what is checked here."""
    run, _ = tracked_sweep
    runs = sorted((Path(run.path) / "wandb").glob("offline-run-*"))
    assert len(runs) == 3, runs  # two trials and the analysis run
    records = {r.name.rsplit("-", 1)[-1]: next(r.glob("*.wandb")).read_bytes() for r in runs}
    sweep = run.analysis()
    for _, trial in sweep.trials.iterrows():
        data = records[trial["trial_id"]]  # a trial's W&B run id is its Tune trial id
        kind = trial["config/selector.kind"]
        assert b"selector.kind" in data and f'"{kind}"'.encode() in data  # the config
        assert b"val_metric" in data and b"test_metric" in data  # every report
        assert b"phases.parquet" in data and b"student/config.json" in data  # the run folder
        assert kind != "acks" or b"selector/" in data  # the agent's diagnostics
    (analysis,) = [d for k, d in records.items() if k not in set(sweep.trials["trial_id"])]
    assert b"report.md" in analysis and b"knowledge_by_phase.csv" in analysis


@pytest.mark.slow
def test_export_copies_the_best_student(tracked_sweep: Any, tmp_path: Path) -> None:
    from transformers import pipeline

    run, _ = tracked_sweep
    out = tmp_path / "best"
    cmd = [sys.executable, "-m", "kdray.export", run.path, "--best", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert Path(run.best.path).name in proc.stdout and str(out) in proc.stdout
    copied = {p.name for p in out.iterdir()}
    assert copied == {p.name for p in Path(run.best_student).iterdir()}
    labels = {o["label"] for o in pipeline("text-classification", model=str(out))(["fine", "bad"])}
    assert labels <= {"negative", "positive"}
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert again.returncode == 2 and "exists" in again.stderr and "Traceback" not in again.stderr


def chromium() -> str | None:
    return next(filter(None, map(shutil.which, ("chromium", "chromium-browser"))), None)


@pytest.mark.slow
def test_html_report_renders_every_figure_in_chromium(tracked_sweep: Any, tmp_path: Path) -> None:
    """The report folder copied elsewhere (the sweep's own folder gone from the page's view):
    headless Chromium loads the page; a probe script counts broken images."""
    browser = chromium()
    if browser is None:
        reason = "no chromium on PATH (apt-get install chromium)"
        if os.environ.get("CI"):  # .ci/run installs it
            pytest.fail(reason)
        pytest.skip(reason)
    from kdray import analyze

    run, _ = tracked_sweep
    out = tmp_path / "made"
    assert analyze.main([run.path, "--format", "html", "--out", str(out)]) == 0
    moved = tmp_path / "elsewhere" / "report.html"
    moved.parent.mkdir()
    shutil.copy(out / "report.html", moved)  # the page alone, away from its figures
    shutil.rmtree(out)
    page = moved.read_text()
    probe = ("<script>addEventListener('load', () => { const i = [...document.images]; "
             "document.body.dataset.images = i.length; document.body.dataset.broken = "
             "i.filter(x => !x.complete || x.naturalWidth === 0).length; });</script>")  # fmt: skip
    checked = moved.with_name("checked.html")
    checked.write_text(page.replace("</body>", probe + "</body>"))
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--allow-file-access-from-files",
             "--virtual-time-budget=10000"]  # fmt: skip
    dom = subprocess.run([browser, *flags, "--dump-dom", checked.as_uri()], capture_output=True,
                         text=True, timeout=180).stdout  # fmt: skip
    assert 'data-broken="0"' in dom, dom[-2000:]
    images = int(dom.split('data-images="')[1].split('"')[0])
    assert images >= 4  # leaderboard, cost, heatmap, trajectories
    assert "<h2>Leaderboard</h2>" in dom and 'alt="effect heatmap"' in dom
    shot = tmp_path / "report.png"
    subprocess.run([browser, *flags, f"--screenshot={shot}", "--window-size=1200,2400",
                    moved.as_uri()], capture_output=True, timeout=180)  # fmt: skip
    assert shot.is_file() and shot.stat().st_size > 10_000  # a page, not a blank
