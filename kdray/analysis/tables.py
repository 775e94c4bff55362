"""Reading a sweep into tables: `load_sweep` (trials, history, phase logs, probes), the
leaderboard, the best trial and its student, and the searched knobs' importance.

Tables (one row each per):
    trials   trial: trial_id, status (finished, diverged, pruned, errored, running, pending,
             paused), config/<path> for every config key (the base trial with the sampled
             values), val_metric (last), best_val_metric, the sweep's metric (last; when
             it is another, e.g. val_loss), test_metric, steps, iterations, wall_s
    history  evaluation: trial_id plus everything the trial reported (val_*, train_loss,
             selector/* diagnostics, step, training_iteration, ...)
    phases   phase of any trial's phase log (kdray.base.results.PHASE_LOG) plus trial_id
    probes   probe arm of any trial's counterfactual probes (kdray.base.results.PROBES, schema in
             kdray.training.probes) plus trial_id; empty for sweeps without probes
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from kdray.base.errors import ConfigError, KdrayError
from kdray.base.io import is_uri, storage_fs
from kdray.base.results import (
    PHASE_LOG,
    PROBES,
    RESULTS,
    STUDENT_DIR,
    TRIAL_RUN_DIR,
    read_results,
)
from kdray.config import flat_paths

log = logging.getLogger(__name__)

DEFAULT_BUCKETS = (0.0, 0.25, 0.5, 0.75, 1.0)
#: A trial's status (Sweep.trials["status"]) and what it means. finished and diverged come
#: from the run's own results.json; the rest from Tune's state of a trial without one.
STATUSES = {
    "finished": "ran all of trainer.max_steps",
    "diverged": "ended at a non-finite loss",
    "pruned": "stopped by the scheduler (or the time budget) before trainer.max_steps",
    "errored": "raised, also after its retries (error.txt in the trial folder)",
    "running": "under way",
    "pending": "waiting for resources",
    "paused": "paused by the scheduler",
}
TUNE_STATUS = {"ERROR": "errored", "RUNNING": "running", "PENDING": "pending",
               "PAUSED": "paused"}  # fmt: skip


class AnalysisError(KdrayError):
    """The path or the logs cannot be analysed (say why and what would work)."""


@dataclass
class Sweep:
    """One sweep's results as tables (see the module docstring for the columns)."""

    path: str
    trials: pd.DataFrame
    history: pd.DataFrame
    phases: pd.DataFrame
    metric: str = "val_metric"
    mode: str = "max"
    #: Searched config paths -> their distribution ({kind: [args]}), when the sweep file is known.
    search: dict[str, Any] = field(default_factory=dict)
    #: Files that could not be read (corrupt or half-written), each with the reason.
    skipped: list[str] = field(default_factory=list)
    #: Counterfactual probe rows of every trial that probed (kdray.training.probes), plus trial_id.
    probes: pd.DataFrame = field(default_factory=pd.DataFrame)


# ------------------------------------------------------------------------------------ loading


def trial_status(tune_status: str, run_dir: str, fs: Any = None) -> tuple[str, str | None]:
    """A trial's status (a STATUSES key) from what its run wrote, and a problem reading it.

    A run writes results.json when it ends by itself (finished or diverged). Tune marks a
    trial TERMINATED also when the scheduler stops it, and marks the row where it stopped
    `done`, so neither tells pruned from finished: a terminated trial without results.json
    was stopped before its end.
    """
    try:
        return str(read_results(run_dir, fs)["status"]), None
    except FileNotFoundError:
        if tune_status == "TERMINATED":
            return "pruned", None
        return TUNE_STATUS.get(tune_status, tune_status.lower()), None
    except (OSError, ValueError, KeyError) as exc:  # a damaged file: say so, keep Tune's word
        status = "finished" if tune_status == "TERMINATED" else tune_status
        return TUNE_STATUS.get(status, status.lower()), f"{run_dir}/{RESULTS}: {exc}"


def describe_statuses(trials: pd.DataFrame) -> str:
    """'6 trials: 2 finished, 4 pruned' (in STATUSES order)."""
    counts = trials["status"].value_counts() if len(trials) else pd.Series(dtype=int)
    order = [s for s in STATUSES if s in counts] + [s for s in counts.index if s not in STATUSES]
    parts = ", ".join(f"{counts[s]} {s}" for s in order)
    return f"{len(trials)} trial{'s' if len(trials) != 1 else ''}" + (f": {parts}" if parts else "")


def load_sweep(path: str | Path, phases: bool = True, history: bool = True) -> Sweep:
    """The tables of a finished or running sweep at a local folder or a storage URI.

    `phases`: False leaves the phase logs and probes unread; `history`: False leaves every
    trial's report history unread (`history` is then empty), and the trials table takes each
    trial's last report from Tune's experiment state: what a summary, the best trial or the
    keep rules need, without a read per trial. Phase logs are read in parallel."""
    from kdray.search.folder import SPEC_FILE, load_saved_spec, sweep_folder
    from kdray.search.spec import SweepSpec

    raw = str(path)
    try:
        uri = sweep_folder(raw, "sweep folder")
    except ConfigError as exc:  # one error type for the analysis API
        raise AnalysisError(str(exc)) from None
    fs, _ = storage_fs(uri)
    try:
        analysis = _tune_analysis(uri, history)
    except (ValueError, FileNotFoundError, OSError) as exc:
        raise AnalysisError(
            f"{raw} is not a sweep folder (no Tune experiment state); give the folder "
            f"STORAGE/NAME that `python -m kdray.sweep` printed"
        ) from exc
    spec: SweepSpec | None = None
    try:
        spec = load_saved_spec(uri)
    except ConfigError:
        log.warning("%s has no %s: configs are the sampled values only", raw, SPEC_FILE)
    settings = spec.sweep if spec else None
    metric = settings.metric if settings else "val_metric"
    skipped: list[str] = []
    trials: list[dict[str, Any]] = []
    history_frames: list[pd.DataFrame] = []
    run_dirs: dict[str, str] = {}
    frames = analysis.trial_dataframes
    scheme = uri.split("://", 1)[0] + "://" if is_uri(uri) else ""
    for trial in analysis.trials:
        tid, tdir = trial.trial_id, trial.path  # a path in `fs` (a URI's without its scheme)
        df = frames.get(tid, pd.DataFrame())
        last = df.iloc[-1].to_dict() if len(df) else dict(trial.last_result or {})
        run_dir = f"{tdir}/{TRIAL_RUN_DIR}"
        status, problem = trial_status(trial.status, run_dir, fs)
        if problem:
            skipped.append(problem)
        config = spec.sampled_config(trial.config) if spec else {}
        row = {
            "trial_id": tid,
            "status": status,
            **{
                f"config/{k}": str(v) if isinstance(v, list | dict) else v
                for k, v in flat_paths(config).items()
            },
            **{f"config/{k}": v for k, v in trial.config.items()},
            "val_metric": last.get("val_metric", np.nan),
            "best_val_metric": last.get("best_val_metric", np.nan),
            metric: last.get(metric, np.nan),  # the sweep's metric, when it is another one
            "test_metric": last.get("test_metric", np.nan),
            "steps": last.get("step", 0),
            "iterations": last.get("training_iteration", 0),
            "wall_s": last.get("time_total_s", np.nan),
            "path": scheme + tdir,  # where to open it: a folder, or a URI
        }
        trials.append(row)
        run_dirs[tid] = run_dir
        if len(df):
            history_frames.append(df.drop(columns=[c for c in df if c.startswith("config/")]))
    tables = {
        name: read_tables({t: f"{d}/{name}" for t, d in run_dirs.items()}, fs, skipped)
        for name in ((PHASE_LOG, PROBES) if phases else ())
    }
    return Sweep(
        path=uri,
        trials=pd.DataFrame(trials),
        history=pd.concat(history_frames, ignore_index=True) if history_frames else pd.DataFrame(),
        phases=tables.get(PHASE_LOG, pd.DataFrame()),
        metric=metric,
        mode=settings.mode if settings else "max",
        search=spec.to_dict()["search"] if spec else {},
        skipped=skipped,
        probes=tables.get(PROBES, pd.DataFrame()),
    )


def _tune_analysis(uri: str, history: bool) -> Any:
    """Tune's reader of the experiment state; without `history`, one that skips reading
    every trial's result file (the state holds each trial's last result)."""
    from ray.tune import ExperimentAnalysis

    class LastResults(ExperimentAnalysis):
        def _fetch_trial_dataframes(self) -> dict[str, pd.DataFrame]:
            return {}

    return (ExperimentAnalysis if history else LastResults)(uri)


def read_tables(files: dict[str, str], fs: Any, skipped: list[str]) -> pd.DataFrame:
    """Parquet files of trials ({trial_id: file}) as one table with a trial_id column, read in
    parallel (pyarrow reads without the GIL). A missing file is passed over; an unreadable one
    is named in `skipped` and the rest are read."""
    from concurrent.futures import ThreadPoolExecutor

    import pyarrow as pa
    import pyarrow.parquet as pq

    def read(item: tuple[str, str]) -> pa.Table | None:
        tid, file = item
        try:
            table = pq.read_table(file, filesystem=fs)
        except FileNotFoundError:
            return None
        except Exception as exc:  # a corrupt file: report which, analyse the rest
            skipped.append(f"{file}: {type(exc).__name__}: {exc}")
            log.warning("skipped %s: %s", file, exc)
            return None
        return table.append_column("trial_id", pa.array([tid] * len(table), pa.string()))

    with ThreadPoolExecutor(max_workers=min(8, max(1, len(files)))) as pool:
        found = [t for t in pool.map(read, files.items()) if t is not None]
    if not found:
        return pd.DataFrame()
    return pa.concat_tables(found, promote_options="default").to_pandas()


def leaderboard(sweep: Sweep, n: int = 10) -> pd.DataFrame:
    """The top `n` trials that reported a validation metric: finished ones first (a pruned
    or diverged trial's last metric is from before its end), each group by the metric, ties
    by trial id (as `kdray.search.states` ranks students while the sweep runs)."""
    m = sweep.metric
    t = sweep.trials.dropna(subset=[m])
    t = t.assign(_unfinished=t["status"] != "finished").sort_values(
        ["_unfinished", m, "trial_id"], ascending=[True, sweep.mode == "min", True]
    )
    searched = [f"config/{p}" for p in sweep.search if f"config/{p}" in t]
    columns = ["trial_id", "status", m, "val_metric", "test_metric", "steps", "wall_s", *searched]
    return t[list(dict.fromkeys(columns))].head(n)


def print_summary(experiment: str) -> None:
    """The summary a sweep prints at its end: trials by status (`trial_status`, so a pruned
    trial is not counted as finished) and the best trial, finished ones first. A summary
    that cannot be read is logged, never a failure of the finished sweep."""
    try:
        sweep = load_sweep(experiment, phases=False, history=False)
    except KdrayError as exc:
        log.warning("no summary of %s: %s", experiment, exc)
        return
    print(f"\n{describe_statuses(sweep.trials)}; results in {experiment}")
    best = best_trial(sweep)
    if best is None:
        print("no trial reported a result")
        return
    print(
        f"best trial: {Path(best['path']).name}"
        + ("" if best["status"] == "finished" else f" ({best['status']}: no trial finished)")
    )
    searched = {p: best[f"config/{p}"] for p in sweep.search if f"config/{p}" in best}
    plain = {p: v.item() if isinstance(v, np.generic) else v for p, v in searched.items()}
    print(f"  config: {plain}")  # numpy scalars as plain values (0, not np.int64(0))
    test = best["test_metric"]
    print(f"  {sweep.metric}: {best[sweep.metric]:.4f}   test (dev) score: "
          f"{'(not reached)' if pd.isna(test) else f'{test:.4f}'}")  # fmt: skip
    print(f"  student: {student_path(best) or '(not saved)'}")


def best_trial(sweep: Sweep) -> pd.Series | None:
    """The leaderboard's first trial (finished ones first, then by the sweep's metric), or
    None when no trial reported the metric."""
    board = leaderboard(sweep, n=1)
    return None if board.empty else sweep.trials.loc[board.index[0]]


def student_path(trial: pd.Series) -> str | None:
    """A trial's saved student folder (a Hugging Face model folder), or None when it saved
    none (pruned, errored, or `trainer.save_student: false`)."""
    student = f"{trial['path']}/{TRIAL_RUN_DIR}/{STUDENT_DIR}"
    if is_uri(student):
        import pyarrow.fs

        fs, where = storage_fs(student)
        return student if fs.get_file_info(where).type != pyarrow.fs.FileType.NotFound else None
    return student if Path(student).exists() else None


def param_importance(sweep: Sweep) -> pd.Series:
    """Importance of each searched knob for the sweep's metric, last value (Optuna's default
    evaluator on the trials that reported it); empty when fewer than 3 such trials."""
    import optuna

    dists: dict[str, Any] = {}
    for p, d in sweep.search.items():
        ((kind, args),) = d.items()
        if kind in ("uniform", "loguniform"):
            low, high = args
            dists[p] = optuna.distributions.FloatDistribution(low, high, log=kind == "loguniform")
        elif kind == "int":
            dists[p] = optuna.distributions.IntDistribution(*args)
        else:
            dists[p] = optuna.distributions.CategoricalDistribution(list(args))
    done = sweep.trials.dropna(subset=[sweep.metric])
    if len(done) < 3 or not dists:
        return pd.Series(dtype=float)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize" if sweep.mode == "max" else "minimize")
    for _, row in done.iterrows():
        params = {p: row[f"config/{p}"] for p in dists if f"config/{p}" in row}
        if len(params) == len(dists):
            params = {p: (int(v) if isinstance(dists[p], optuna.distributions.IntDistribution)
                          else v) for p, v in params.items()}  # fmt: skip
            study.add_trial(optuna.trial.create_trial(params=params, distributions=dists,
                                                      value=float(row[sweep.metric])))  # fmt: skip
    try:
        with warnings.catch_warnings():  # evaluators are marked experimental
            warnings.simplefilter("ignore")
            return pd.Series(optuna.importance.get_param_importances(study))
    except (RuntimeError, ValueError) as exc:
        log.warning("no hyperparameter importance: %s", exc)
        return pd.Series(dtype=float)
