"""Across a sweep's trials: which knowledge types help at which training steps.

    from kdray.analysis import load_sweep, knowledge_by_phase, export_schedule
    sweep = load_sweep("~/kdray_results/quickstart")        # or "s3://bucket/kdray/quickstart"
    sweep.trials, sweep.history, sweep.phases               # tidy pandas tables
    table = knowledge_by_phase(sweep, buckets=(0, 0.25, 0.5, 0.75, 1))
    export_schedule(table, "schedule.yaml")                 # replay: selector.kind schedule
    teacher_by_phase(sweep)                                 # multi-teacher pools: who, when
    compare(sweep, "acks", "all")                           # two methods, paired over seeds

Tables (one row each per):
    trials   trial: trial_id, status (finished, diverged, pruned, errored, running, pending,
             paused), config/<path> for every config key (the base trial with the sampled
             values), val_metric (last), best_val_metric, the sweep's metric (last; when
             it is another, e.g. val_loss), test_metric, steps, iterations, wall_s
    history  evaluation: trial_id plus everything the trial reported (val_*, train_loss,
             selector/* diagnostics, step, training_iteration, ...)
    phases   phase of any trial's phase log (kdray.results.PHASE_LOG) plus trial_id
    probes   probe arm of any trial's counterfactual probes (kdray.results.PROBES, schema in
             kdray.probes) plus trial_id; empty for sweeps without probes

Two estimators of which knowledge helps when (knowledge_by_phase says which it used):

- probe (used whenever the sweep has probe rows): per knowledge type and progress bucket, the
  mean paired effect of the type's probe arm (its reward-split loss drop over K steps minus
  that of hard labels alone, from the same student, batches and dropout masks). The mean is
  over runs (each run's probes in the bucket averaged first); the CI comes from a two-stage
  bootstrap: runs resampled, then each drawn run's probes (probes are nested in runs). An
  experiment, not a correlation: the knowledge was switched on and off at that point.
- observational (the fallback): in each bucket, the phase's reward-split loss drop regressed on
  the weights of all knowledge types (ordinary least squares with an intercept, so each effect
  controls for the other weights); CIs from a bootstrap over trials. It reads only what the
  trials happened to do, so it needs weights that varied (random_soft, acks) and many phases.

A positive effect: that knowledge in that part of training went with a larger drop of the
held-out loss.

`compare(sweep, a, b)`: two methods of the sweep (values of its method dimension, e.g.
selector.kind) paired over the seeds both finished, on the same dev examples: the per-seed
differences of the main metric and a paired bootstrap CI over the examples (from each run's
kdray.results.PREDICTIONS).

A multi-teacher run logs per phase the mean weight each teacher of its pool got over the phase's
examples (tw_<teacher>) and, with the rl teacher policy, the policy's reward and baseline
(tp_reward, tp_baseline): teacher_by_phase and policy_reward_by_phase average them per bucket.
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
    PREDICTIONS,
    PROBE_CONTROL,
    PROBE_CURRENT,
    PROBES,
    RESULTS,
    STUDENT_DIR,
    TEACHER_PREFIX,
    TRIAL_RUN_DIR,
    knowledge_types,
    read_results,
    read_table,
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
#: The columns of teacher_by_phase and of policy_reward_by_phase, also when they have no rows.
TEACHER_COLUMNS = ("teacher", "bucket", "start", "end", "mean_weight", "top_weight",
                   "bottom_weight", "n_trials", "n_phases")  # fmt: skip
POLICY_COLUMNS = ("bucket", "start", "end", "reward", "baseline", "n_trials", "n_phases")


#: Config paths that name a method, in the order a sweep's method dimension is looked for.
METHOD_PATHS = ("recipe", "selector.kind", "teacher_policy.kind")
#: The searched path that pairs trials of different methods.
SEED_PATH = "trainer.seed"


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
    #: Counterfactual probe rows of every trial that probed (kdray.probes), plus trial_id.
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
    trials: list[dict[str, Any]] = []
    history: list[pd.DataFrame] = []
    logs: list[pd.DataFrame] = []
    probes: list[pd.DataFrame] = []
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
        for name, into in ((PHASE_LOG, logs), (PROBES, probes)):
            try:
                into.append(read_table(f"{run_dir}/{name}", fs).assign(trial_id=tid))
            except FileNotFoundError:
                pass
            except Exception as exc:  # a corrupt file: report which, analyse the rest
                skipped.append(f"{run_dir}/{name}: {type(exc).__name__}: {exc}")
                log.warning("skipped %s/%s: %s", run_dir, name, exc)
    return Sweep(
        path=uri,
        trials=pd.DataFrame(trials),
        history=pd.concat(history, ignore_index=True) if history else pd.DataFrame(),
        phases=pd.concat(logs, ignore_index=True) if logs else pd.DataFrame(),
        metric=metric,
        mode=settings.mode if settings else "max",
        search=spec.to_dict()["search"] if spec else {},
        skipped=skipped,
        probes=pd.concat(probes, ignore_index=True) if probes else pd.DataFrame(),
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
    return student if "://" in student or Path(student).exists() else None


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


def _weights_in(
    cell: pd.DataFrame, column: str, lo: float, hi: float, top: Any, bottom: Any
) -> dict[str, Any]:
    """One progress bucket's weight summary of `column`: its mean over every phase of the
    bucket, over the top trials' phases and over the bottom trials' (NaN: no such column)."""
    out: dict[str, Any] = {"bucket": _bucket_label(lo, hi), "start": lo, "end": hi}
    if column not in cell:
        return {**out, "mean_weight": np.nan, "top_weight": np.nan, "bottom_weight": np.nan}
    w = cell[column]
    return {
        **out,
        "mean_weight": w.mean(),
        "top_weight": w[cell["trial_id"].isin(top)].mean(),
        "bottom_weight": w[cell["trial_id"].isin(bottom)].mean(),
    }


def _bucket_label(lo: float, hi: float) -> str:
    """'[0, 0.25)', and '[0.75, 1]' for the last bucket (it holds the phases that start at 1)."""
    return f"[{lo:g}, {hi:g}{']' if hi == 1.0 else ')'}"


def _in_bucket(phases: pd.DataFrame, lo: float, hi: float) -> pd.Series:
    """The phases (rows) that start in [lo, hi), or [lo, 1] for the last bucket: a phase counts
    where it starts, so a phase that straddles an edge is not counted twice."""
    start = phases.get("progress_start", phases["progress"])
    return (start >= lo) & ((start < hi) | (hi == 1.0))


def _top_bottom(metric: pd.Series, mode: str, quantile: float) -> tuple[set[Any], set[Any]]:
    """The ids (metric's index) of the best and the worst `quantile` of trials, at least one each;
    trials without a metric are in neither."""
    sign = 1 if mode == "max" else -1
    ranked = (sign * metric).dropna().sort_values(ascending=False)
    n_q = max(1, round(quantile * len(ranked)))
    return set(ranked.index[:n_q]), set(ranked.index[-n_q:])


def _check_quantile(quantile: float) -> None:
    if not 0 < quantile <= 0.5:
        raise ConfigError(f"quantile must be in (0, 0.5], got {quantile}")


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
    estimator: str = "auto",
) -> pd.DataFrame:
    """One row per knowledge type × progress bucket (see the module docstring).

    Columns: knowledge, bucket, start, end, mean_weight, top_weight, bottom_weight (mean weight
    among the top / bottom `quantile` of trials by the sweep's metric, last value), effect, ci_low,
    ci_high, significant (the CI excludes 0), n_trials, n_phases, n_probes, estimator.

    `estimator`: probe (the counterfactual probes), observational (the regression on the phase
    logs), or auto: probe when the sweep has probe rows, else observational.
    """
    edges = check_buckets(buckets)
    _check_quantile(quantile)
    if estimator not in ("auto", "probe", "observational"):
        raise ConfigError(f"estimator must be auto, probe or observational, got {estimator!r}")
    if estimator == "probe" or (estimator == "auto" and not sweep.probes.empty):
        return _probe_effects(sweep, edges, quantile, n_boot, level, seed)
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
    top, bottom = _top_bottom(metric, sweep.mode, quantile)
    rng = np.random.default_rng(seed)
    rows = []
    for lo, hi in itertools.pairwise(edges):
        cell = phases[_in_bucket(phases, lo, hi)]
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
            rows.append({
                "knowledge": k,
                **_weights_in(cell, f"w_{k}", lo, hi, top, bottom),
                "effect": effect[j],
                "ci_low": ci[0],
                "ci_high": ci[1],
                "significant": bool(ci[0] > 0 or ci[1] < 0),
                "n_trials": len(unique),
                "n_phases": len(cell),
                "n_probes": 0,
                "estimator": "observational",
            })  # fmt: skip
    return pd.DataFrame(rows)


def _probe_effects(
    sweep: Sweep, edges: list[float], quantile: float, n_boot: int, level: float, seed: int
) -> pd.DataFrame:
    """knowledge_by_phase's probe estimator (see the module docstring): one row per knowledge
    type with a probe arm × progress bucket; a probe counts in the bucket of its progress."""
    probes = sweep.probes
    if probes.empty:
        raise AnalysisError(
            f"{sweep.path}: no trial has counterfactual probes ({PROBES}); set probe.every "
            f"(e.g. 4) or probe.at in the trial config, or use the observational estimator"
        )
    arms = [a for a in dict.fromkeys(probes["arm"]) if a not in (PROBE_CONTROL, PROBE_CURRENT)]
    phases = _final_phases(sweep) if not sweep.phases.empty else pd.DataFrame()
    metric = sweep.trials.set_index("trial_id")[sweep.metric]
    top, bottom = _top_bottom(metric[metric.index.isin(probes["trial_id"])], sweep.mode, quantile)
    rng = np.random.default_rng(seed)
    rows = []
    for lo, hi in itertools.pairwise(edges):
        cell = probes[_in_bucket(probes, lo, hi)]
        in_phases = phases[_in_bucket(phases, lo, hi)] if len(phases) else phases
        for k in arms:
            arm = cell[cell["arm"] == k]
            measured = arm.dropna(subset=["effect"])  # an arm that diverged has no effect
            groups = [g["effect"].to_numpy(float) for _, g in measured.groupby("trial_id")]
            lo_ci, hi_ci = _nested_ci(groups, n_boot, level, rng)
            rows.append({
                "knowledge": k,
                **_weights_in(in_phases, f"w_{k}", lo, hi, top, bottom),
                "effect": float(np.mean([g.mean() for g in groups])) if groups else np.nan,
                "ci_low": lo_ci,
                "ci_high": hi_ci,
                "significant": bool(lo_ci > 0 or hi_ci < 0),
                "n_trials": len(groups),
                "n_phases": arm[["trial_id", "episode", "step"]].drop_duplicates().shape[0],
                "n_probes": len(arm),
                "estimator": "probe",
            })  # fmt: skip
    return pd.DataFrame(rows)


def _nested_ci(
    groups: list[np.ndarray], n_boot: int, level: float, rng: np.random.Generator
) -> tuple[float, float]:
    """Percentile CI of the mean of group means under a two-stage bootstrap: groups (runs)
    drawn with replacement, then each drawn group's values (its probes). NaN with fewer than
    two groups: one run's probes share its student, so they alone say nothing about runs."""
    if len(groups) < 2:
        return np.nan, np.nan
    n = len(groups)
    stats = np.empty(n_boot)
    for b in range(n_boot):
        drawn = (groups[r] for r in rng.integers(0, n, n))
        stats[b] = np.mean([g[rng.integers(0, len(g), len(g))].mean() for g in drawn])
    alpha = (1 - level) / 2
    lo, hi = np.quantile(stats, [alpha, 1 - alpha])
    return float(lo), float(hi)


def teacher_names(phases: pd.DataFrame) -> list[str]:
    """The teachers a phase log records (from its tw_<teacher> columns), in column order: the
    union over the trials' pools when `phases` holds several trials' logs."""
    return [c[len(TEACHER_PREFIX) :] for c in phases.columns if c.startswith(TEACHER_PREFIX)]


def _final_phases(sweep_or_phases: Sweep | pd.DataFrame) -> pd.DataFrame:
    """The final-segment phases (the evaluated student's; stage-A episodes of two-stage ACKS
    train students that are thrown away) of a Sweep or of a phase-log frame."""
    phases = sweep_or_phases.phases if isinstance(sweep_or_phases, Sweep) else sweep_or_phases
    return phases[phases["final"].astype(bool)] if "final" in phases.columns else phases


def teacher_by_phase(
    sweep_or_phases: Sweep | pd.DataFrame,
    buckets: Sequence[float] = DEFAULT_BUCKETS,
    quantile: float = 0.25,
) -> pd.DataFrame:
    """One row per teacher × progress bucket: how much of the student's signal came from each
    teacher of a multi-teacher pool in each part of training, and whether the best trials
    leaned on other teachers, or at other times, than the worst ones.

    The weight is the phase log's tw_<teacher> (the mean weight the teacher got over the phase's
    examples), averaged over the final-segment phases that start in the bucket, as
    knowledge_by_phase buckets them. A phase where the teacher's weight is NaN (no teacher
    output read, or a trial whose pool lacks that teacher) does not count for it, so a teacher
    in few pools is averaged over those trials only (see n_trials).

    `sweep_or_phases`: a Sweep, whose trials are ranked by the sweep's metric (last value) in
    its mode; or a phase-log frame with trial_id (Sweep.phases), whose trials are ranked by their
    last val_metric in it (the main metric, higher is better).

    Columns (TEACHER_COLUMNS): teacher, bucket, start, end, mean_weight (all trials),
    top_weight, bottom_weight (the top / bottom `quantile` of the trials that logged teacher
    weights), n_trials, n_phases (with a weight for that teacher). No rows when the phase logs
    have no tw_ columns (single-teacher runs).
    """
    edges = check_buckets(buckets)
    _check_quantile(quantile)
    phases = _final_phases(sweep_or_phases)
    teachers = teacher_names(phases)
    if not teachers:
        return pd.DataFrame(columns=list(TEACHER_COLUMNS))
    columns = [f"{TEACHER_PREFIX}{t}" for t in teachers]
    logged = phases.loc[phases[columns].notna().any(axis=1), "trial_id"].unique()
    if isinstance(sweep_or_phases, Sweep):
        metric = sweep_or_phases.trials.set_index("trial_id")[sweep_or_phases.metric]
        mode = sweep_or_phases.mode
    else:
        metric = phases.dropna(subset=["val_metric"]).groupby("trial_id")["val_metric"].last()
        mode = "max"
    top, bottom = _top_bottom(metric[metric.index.isin(logged)], mode, quantile)
    rows = []
    for lo, hi in itertools.pairwise(edges):
        cell = phases[_in_bucket(phases, lo, hi)]
        for t, c in zip(teachers, columns, strict=True):
            w = cell[c]
            rows.append({
                "teacher": t,
                **_weights_in(cell, c, lo, hi, top, bottom),
                "n_trials": cell.loc[w.notna(), "trial_id"].nunique(),
                "n_phases": int(w.notna().sum()),
            })  # fmt: skip
    return pd.DataFrame(rows, columns=list(TEACHER_COLUMNS))


def policy_reward_by_phase(
    sweep_or_phases: Sweep | pd.DataFrame, buckets: Sequence[float] = DEFAULT_BUCKETS
) -> pd.DataFrame:
    """One row per progress bucket: the rl teacher policy's mean REINFORCE reward (tp_reward)
    and EMA baseline after the update (tp_baseline) over the final-segment phases that start in
    it. A reward that stays above the baseline means the policy still finds better teacher
    mixes there; one that meets it, that it has settled.

    Columns (POLICY_COLUMNS): bucket, start, end, reward, baseline, n_trials, n_phases (with a
    reward). No rows when no trial used the rl teacher policy.
    """
    edges = check_buckets(buckets)
    phases = _final_phases(sweep_or_phases)
    if "tp_reward" not in phases or phases["tp_reward"].isna().all():
        return pd.DataFrame(columns=list(POLICY_COLUMNS))
    rows = []
    for lo, hi in itertools.pairwise(edges):
        cell = phases[_in_bucket(phases, lo, hi) & phases["tp_reward"].notna()]
        rows.append({
            "bucket": _bucket_label(lo, hi),
            "start": lo,
            "end": hi,
            "reward": cell["tp_reward"].mean(),
            "baseline": cell["tp_baseline"].mean(),
            "n_trials": cell["trial_id"].nunique(),
            "n_phases": len(cell),
        })  # fmt: skip
    return pd.DataFrame(rows, columns=list(POLICY_COLUMNS))


def export_schedule(table: pd.DataFrame, path: str | Path, source: str = "top_weight") -> Path:
    """The per-bucket weights as a schedule file that `selector: {kind: schedule,
    schedule_file: PATH}` replays; written atomically.

    `source`: a weight column (top_weight, mean_weight, ...) taken as it is; or `effect` (a
    probe table's effects): per bucket, hard labels at 1 and each type with a positive effect
    at effect / the bucket's largest effect (types that did not help get 0)."""
    import yaml

    from kdray.io import atomic_write_text

    if source not in table:
        raise ConfigError(f"no column '{source}' to export; use top_weight, mean_weight or effect")
    buckets = []
    for lo, hi in sorted(set(zip(table["start"], table["end"], strict=True))):
        cell = table[(table["start"] == lo) & (table["end"] == hi)]
        values = dict(zip(cell["knowledge"].astype(str), cell[source].astype(float), strict=True))
        if source == "effect":
            best = max([v for v in values.values() if v > 0], default=0.0)
            values = {"hard": 1.0, **{k: max(v, 0.0) / best if best > 0 else 0.0
                                      for k, v in values.items() if np.isfinite(v)}}  # fmt: skip
        weights = {k: round(w, 6) for k, w in values.items() if np.isfinite(w)}
        buckets.append({"start": float(lo), "end": float(hi), "weights": weights})
    path = Path(path)
    atomic_write_text(path, yaml.safe_dump({"schedule": buckets}, sort_keys=False))
    return path


def method_path(sweep: Sweep) -> str | None:
    """The sweep's method dimension: the first of METHOD_PATHS it searches (None: none)."""
    return next((p for p in METHOD_PATHS if p in sweep.search), None)


def compare(
    sweep: Sweep, a: str, b: str, path: str | None = None, n_boot: int = 2000, seed: int = 0
) -> dict[str, Any]:
    """Method `a` against method `b` of a sweep, paired over seeds and dev examples.

    `a`, `b`: values of the method dimension `path` (default: the first of recipe,
    selector.kind, teacher_policy.kind the sweep searches). Pairs the finished trials of both
    by trainer.seed and reads each one's per-example test predictions (PREDICTIONS).

    Returns a dict: a, b, path, metric (the task's main metric), seeds, per_seed (a − b per
    seed), mean (their mean), ci_low, ci_high (95%, paired bootstrap over the dev examples: the
    same resampled examples for every seed and both methods), verdict (better / worse / no
    detectable difference at this scale, or uninformative), a_score, b_score (mean over the
    seeds), constant (the best constant prediction's score), informative (a or b beats it: if
    neither does, the task says nothing about the methods), n_examples.
    """
    from kdray.metrics import constant_score, paired_comparison
    from kdray.tasks import get_task

    path = path or method_path(sweep)
    column, seed_col = f"config/{path}", f"config/{SEED_PATH}"
    if "path" not in sweep.trials:
        raise AnalysisError(f"{sweep.path}: the trials' folders are not known")
    if path is None or column not in sweep.trials:
        raise AnalysisError(
            f"{sweep.path}: the sweep searches no method (recipe, selector.kind or "
            f"teacher_policy.kind); give path= the config path whose values {a} and {b} are"
        )
    done = sweep.trials[sweep.trials["status"] == "finished"]
    methods = sorted(done[column].astype(str).unique())
    for name in (a, b):
        if name not in methods:
            raise AnalysisError(
                f"{sweep.path}: no finished trial with {path} = {name}; finished methods: "
                f"{', '.join(methods) or 'none'}"
            )
    if seed_col not in done:
        raise AnalysisError(f"{sweep.path}: trials carry no {SEED_PATH} to pair them by")
    fs, _ = storage_fs(sweep.path)

    def predictions(name: str) -> dict[int, pd.DataFrame]:
        rows = done[done[column].astype(str) == name]
        out: dict[int, pd.DataFrame] = {}
        for _, r in rows.iterrows():
            run_dir = f"{r['path']}/{TRIAL_RUN_DIR}"
            if pd.isna(r[seed_col]) or int(r[seed_col]) in out:
                raise AnalysisError(
                    f"{sweep.path}: {name} has several finished trials at {SEED_PATH} = "
                    f"{r[seed_col]} (the sweep varies more than the method and the seed); "
                    f"compare a Sweep whose trials are filtered to one config per method and seed"
                )
            try:
                out[int(r[seed_col])] = read_table(f"{run_dir}/{PREDICTIONS}", fs)
            except FileNotFoundError:
                raise AnalysisError(
                    f"{run_dir} has no {PREDICTIONS} (a run from before kdray saved per-example "
                    f"predictions); rerun the sweep to compare its methods paired"
                ) from None
        return out

    pa, pb = predictions(a), predictions(b)
    seeds = sorted(set(pa) & set(pb))
    if not seeds:
        raise AnalysisError(f"{sweep.path}: {a} and {b} finished on no common {SEED_PATH}")
    first = pa[seeds[0]]
    split = first["split"].iloc[0]
    labels = first.loc[first["split"] == split, "label"].to_numpy()

    def stack(runs: dict[int, pd.DataFrame]) -> np.ndarray:
        rows = []
        for s in seeds:
            df = runs[s][runs[s]["split"] == split]
            if not np.array_equal(df["label"].to_numpy(), labels):
                raise AnalysisError(f"{sweep.path}: seed {s}'s runs were scored on other examples")
            rows.append(df["prediction"].to_numpy())
        return np.stack(rows)  # (S, N)

    xa, xb = stack(pa), stack(pb)
    run_dir = f"{done[done[column].astype(str) == a]['path'].iloc[0]}/{TRIAL_RUN_DIR}"
    metric = str(read_results(run_dir, fs)["main_metric"])
    if "config/data.task" not in done:
        raise AnalysisError(f"{sweep.path}: the trials' configs are not known (no sweep file)")
    constant = constant_score(get_task(str(done["config/data.task"].iloc[0])), labels)
    c = paired_comparison(metric, xa, xb, labels, n_boot=n_boot, seed=seed)
    informative = max(c["a_score"], c["b_score"]) > constant
    return {
        "a": a, "b": b, "path": path, "metric": metric, "seeds": seeds,
        "per_seed": c["per_seed"], "mean": c["mean"], "ci_low": c["ci95"][0],
        "ci_high": c["ci95"][1],
        "verdict": c["verdict"] if informative
        else "uninformative (neither beats the constant prediction)",
        "a_score": c["a_score"], "b_score": c["b_score"], "constant": constant,
        "informative": informative, "n_examples": len(labels),
    }  # fmt: skip


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
