"""Across a sweep's trials: which knowledge types help at which training steps.

    from kdray.analysis import load_sweep, knowledge_by_phase, export_schedule
    sweep = load_sweep("~/kdray_results/quickstart")        # or "s3://bucket/kdray/quickstart"
    sweep.trials, sweep.history, sweep.phases               # tidy pandas tables
    table = knowledge_by_phase(sweep, buckets=(0, 0.25, 0.5, 0.75, 1))
    export_schedule(table, "schedule.yaml")                 # replay: selector.kind schedule

Tables (one row each per):
    trials   trial: trial_id, status (finished, diverged, pruned, errored, running, pending,
             paused), config/<path> for every config key (the base trial with the sampled
             values), val_metric (last), best_val_metric, the sweep's metric (last; when
             it is another, e.g. val_loss), test_metric, steps, iterations, wall_s
    history  evaluation: trial_id plus everything the trial reported (val_*, train_loss,
             selector/* diagnostics, step, training_iteration, ...)
    phases   phase of any trial's phase log (kdray.results.PHASE_LOG) plus trial_id

The effect estimate: in each progress bucket, the phase's reward-split loss drop regressed on
the weights of all knowledge types (ordinary least squares with an intercept, so each effect
controls for the other weights); confidence intervals from a bootstrap over trials (phases of a
trial are not independent). A positive effect: more of that knowledge in that part of training
went with a larger drop of the held-out loss.
"""

from __future__ import annotations

import itertools
import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from kdray.config import flat_paths
from kdray.errors import ConfigError, KdrayError
from kdray.io import storage_fs
from kdray.results import (
    PHASE_LOG,
    RESULTS,
    STUDENT_DIR,
    TRIAL_RUN_DIR,
    knowledge_types,
    read_phase_log,
    read_results,
)

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


def load_sweep(path: str | Path, phases: bool = True) -> Sweep:
    """The tables of a finished or running sweep at a local folder or a storage URI
    (`phases`: False leaves the phase logs unread, e.g. for a summary)."""
    from ray.tune import ExperimentAnalysis

    from kdray.search_space import SPEC_FILE, SweepSpec, load_saved_spec, sweep_folder

    raw = str(path)
    try:
        uri = sweep_folder(raw, "sweep folder")
    except ConfigError as exc:  # one error type for the analysis API
        raise AnalysisError(str(exc)) from None
    fs, _ = storage_fs(uri)
    try:
        analysis = ExperimentAnalysis(uri)
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
    trials, history, logs = [], [], []
    frames = analysis.trial_dataframes
    for trial in analysis.trials:
        tid, tdir = trial.trial_id, trial.path
        df = frames.get(tid, pd.DataFrame())
        last = df.iloc[-1].to_dict() if len(df) else {}
        run_dir = f"{tdir}/{TRIAL_RUN_DIR}"
        status, problem = trial_status(trial.status, run_dir, fs)
        if problem:
            skipped.append(problem)
        config = spec.trial_config(trial.config).to_dict() if spec else {}
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
            "path": tdir,
        }
        trials.append(row)
        if len(df):
            history.append(df.drop(columns=[c for c in df if c.startswith("config/")]))
        if not phases:
            continue
        try:
            logs.append(read_phase_log(f"{run_dir}/{PHASE_LOG}", fs).assign(trial_id=tid))
        except FileNotFoundError:
            pass
        except Exception as exc:  # a corrupt file: report which, analyse the rest
            skipped.append(f"{run_dir}/{PHASE_LOG}: {type(exc).__name__}: {exc}")
            log.warning("skipped %s/%s: %s", run_dir, PHASE_LOG, exc)
    return Sweep(
        path=uri,
        trials=pd.DataFrame(trials),
        history=pd.concat(history, ignore_index=True) if history else pd.DataFrame(),
        phases=pd.concat(logs, ignore_index=True) if logs else pd.DataFrame(),
        metric=metric,
        mode=settings.mode if settings else "max",
        search=spec.to_dict()["search"] if spec else {},
        skipped=skipped,
    )


def leaderboard(sweep: Sweep, n: int = 10) -> pd.DataFrame:
    """The top `n` trials that reported a validation metric: finished ones first (a pruned
    or diverged trial's last metric is from before its end), each group by the metric."""
    m = sweep.metric
    t = sweep.trials.dropna(subset=[m])
    t = t.assign(_unfinished=t["status"] != "finished").sort_values(
        ["_unfinished", m], ascending=[True, sweep.mode == "min"]
    )
    searched = [f"config/{p}" for p in sweep.search if f"config/{p}" in t]
    columns = ["trial_id", "status", m, "val_metric", "test_metric", "steps", "wall_s", *searched]
    return t[list(dict.fromkeys(columns))].head(n)


def print_summary(experiment: str) -> None:
    """The summary a sweep prints at its end: trials by status (`trial_status`, so a pruned
    trial is not counted as finished) and the best trial, finished ones first. A summary
    that cannot be read is logged, never a failure of the finished sweep."""
    try:
        sweep = load_sweep(experiment, phases=False)
    except KdrayError as exc:
        log.warning("no summary of %s: %s", experiment, exc)
        return
    print(f"\n{describe_statuses(sweep.trials)}; results in {experiment}")
    board = leaderboard(sweep, n=1)
    if board.empty:
        print("no trial reported a result")
        return
    best = sweep.trials.loc[board.index[0]]
    print(
        f"best trial: {Path(best['path']).name}"
        + ("" if best["status"] == "finished" else f" ({best['status']}: no trial finished)")
    )
    searched = {p: best[f"config/{p}"] for p in sweep.search if f"config/{p}" in best}
    print(f"  config: {searched}")
    test = best["test_metric"]
    print(f"  {sweep.metric}: {best[sweep.metric]:.4f}   test (dev) score: "
          f"{'(not reached)' if pd.isna(test) else f'{test:.4f}'}")  # fmt: skip
    student = f"{best['path']}/{TRIAL_RUN_DIR}/{STUDENT_DIR}"
    saved = "://" in student or Path(student).exists()
    print(f"  student: {student if saved else '(not saved)'}")


# ----------------------------------------------------------------------------------- analysis


def check_buckets(buckets: Sequence[float]) -> list[float]:
    edges = [float(b) for b in buckets]
    if (
        len(edges) < 2
        or edges[0] != 0.0
        or edges[-1] != 1.0
        or any(b <= a for a, b in itertools.pairwise(edges))
    ):
        raise ConfigError(
            f"buckets must be increasing edges from 0 to 1 that cover [0, 1], e.g. "
            f"0,0.25,0.5,0.75,1; got {','.join(map(str, edges))}"
        )
    return edges


def _ols(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Coefficients of y ~ 1 + x (without the intercept); NaN for a column without spread."""
    varied = x.std(axis=0) > 1e-12
    out = np.full(x.shape[1], np.nan)
    if varied.any() and len(y) > varied.sum() + 1:
        design = np.column_stack([np.ones(len(y)), x[:, varied]])
        coef, *_ = np.linalg.lstsq(design, y, rcond=None)
        out[varied] = coef[1:]
    return out


def no_phase_logs(sweep: Sweep) -> str:
    """Why a sweep has no phase logs at all, from its trials' statuses."""
    n = len(sweep.trials)
    if n == 0:
        return f"{sweep.path}: the sweep has no trials yet"
    return (
        f"{sweep.path}: none of its {describe_statuses(sweep.trials)} has a phase log "
        f"(<trial>/{TRIAL_RUN_DIR}/{PHASE_LOG}); a trial writes it at its first evaluation, so "
        f"these trials ended before one, or their folders were moved or not synced from the "
        f"storage"
    )


def knowledge_by_phase(
    sweep: Sweep,
    buckets: Sequence[float] = DEFAULT_BUCKETS,
    quantile: float = 0.25,
    n_boot: int = 500,
    level: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:
    """One row per knowledge type × progress bucket (see the module docstring).

    Columns: knowledge, bucket, start, end, mean_weight, top_weight, bottom_weight (mean weight
    among the top / bottom `quantile` of trials by the sweep's metric, last value), effect, ci_low,
    ci_high, significant (the CI excludes 0), n_trials, n_phases.
    """
    edges = check_buckets(buckets)
    if not 0 < quantile <= 0.5:
        raise ConfigError(f"quantile must be in (0, 0.5], got {quantile}")
    phases = sweep.phases
    if phases.empty:
        raise AnalysisError(no_phase_logs(sweep))
    if "reward_drop" not in phases or phases["reward_drop"].notna().sum() == 0:
        from kdray.selector import SELECTORS

        measured = sorted(k for k, c in SELECTORS.items() if c.needs_reward_split)
        used = ", ".join(sorted(map(str, phases.get("selector", pd.Series()).dropna().unique())))
        raise AnalysisError(
            f"{sweep.path}: the phase logs of {phases['trial_id'].nunique()} trials (selectors "
            f"{used}) have no phase rewards: the reward-split loss drop is measured by the "
            f"selectors {', '.join(measured)} and by any trial with selector.measure_reward: "
            f"true; search over selector.kind: acks or set selector.measure_reward: true "
            f"(random_soft makes the cleanest experiment)"
        )
    phases = phases[phases["reward_drop"].notna()]
    types = knowledge_types(phases)
    metric = sweep.trials.set_index("trial_id")[sweep.metric]
    metric = metric[metric.index.isin(phases["trial_id"])]  # trials with phase rewards
    sign = 1 if sweep.mode == "max" else -1
    ranked = (sign * metric).dropna().sort_values(ascending=False)
    n_q = max(1, round(quantile * len(ranked)))
    top, bottom = set(ranked.index[:n_q]), set(ranked.index[-n_q:])
    start = phases.get("progress_start", phases["progress"])
    rng = np.random.default_rng(seed)
    rows = []
    for lo, hi in itertools.pairwise(edges):
        inside = (start >= lo) & ((start < hi) | (hi == 1.0))
        cell = phases[inside]
        ids = cell["trial_id"].to_numpy()
        x = cell[[f"w_{k}" for k in types]].to_numpy(float)
        y = cell["reward_drop"].to_numpy(float)
        effect = _ols(x, y) if len(cell) else np.full(len(types), np.nan)
        unique = np.unique(ids)
        by_trial = {t: np.flatnonzero(ids == t) for t in unique}
        boot = np.full((n_boot, len(types)), np.nan)
        if len(unique) > 1:
            for b in range(n_boot):
                pick = np.concatenate([by_trial[t] for t in rng.choice(unique, len(unique))])
                boot[b] = _ols(x[pick], y[pick])
        alpha = (1 - level) / 2
        for j, k in enumerate(types):
            finite = boot[:, j][np.isfinite(boot[:, j])]
            ci = (np.quantile(finite, [alpha, 1 - alpha]) if len(finite) > n_boot // 2
                  else (np.nan, np.nan))  # fmt: skip
            w = cell[f"w_{k}"]
            rows.append({
                "knowledge": k,
                "bucket": f"[{lo:g}, {hi:g}{']' if hi == 1.0 else ')'}",
                "start": lo,
                "end": hi,
                "mean_weight": w.mean(),
                "top_weight": w[cell["trial_id"].isin(top)].mean(),
                "bottom_weight": w[cell["trial_id"].isin(bottom)].mean(),
                "effect": effect[j],
                "ci_low": ci[0],
                "ci_high": ci[1],
                "significant": bool(ci[0] > 0 or ci[1] < 0),
                "n_trials": len(unique),
                "n_phases": len(cell),
            })  # fmt: skip
    return pd.DataFrame(rows)


def export_schedule(table: pd.DataFrame, path: str | Path, source: str = "top_weight") -> Path:
    """The per-bucket weights (`source`: top_weight, mean_weight, ...) as a schedule file that
    `selector: {kind: schedule, schedule_file: PATH}` replays; written atomically."""
    import yaml

    from kdray.io import atomic_write_text

    if source not in table:
        raise ConfigError(f"no column '{source}' to export; use top_weight or mean_weight")
    buckets = []
    for lo, hi in sorted(set(zip(table["start"], table["end"], strict=True))):
        cell = table[(table["start"] == lo) & (table["end"] == hi)]
        weights = {str(k): round(float(w), 6)
                   for k, w in zip(cell["knowledge"], cell[source], strict=True)
                   if np.isfinite(w)}  # fmt: skip
        buckets.append({"start": float(lo), "end": float(hi), "weights": weights})
    path = Path(path)
    atomic_write_text(path, yaml.safe_dump({"schedule": buckets}, sort_keys=False))
    return path


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
