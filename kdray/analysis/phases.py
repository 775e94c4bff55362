"""Which knowledge types (and which teachers) help at which training steps.

Two estimators of which knowledge helps when (`knowledge_by_phase` says which it used):

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

A multi-teacher run logs per phase the mean weight each teacher of its pool got over the phase's
examples (tw_<teacher>) and, with the rl teacher policy, the policy's reward and baseline
(tp_reward, tp_baseline): `teacher_by_phase` and `policy_reward_by_phase` average them per
bucket. `export_schedule` writes a table's weights as a schedule file (`selector.kind:
schedule` replays it).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from kdray.analysis.tables import (
    DEFAULT_BUCKETS,
    AnalysisError,
    Sweep,
    describe_statuses,
)
from kdray.base.errors import ConfigError
from kdray.base.results import (
    PHASE_LOG,
    PROBE_CONTROL,
    PROBE_CURRENT,
    PROBES,
    TEACHER_PREFIX,
    TRIAL_RUN_DIR,
    knowledge_types,
)
from kdray.config import tiles_progress

#: The columns of teacher_by_phase and of policy_reward_by_phase, also when they have no rows.
TEACHER_COLUMNS = ("teacher", "bucket", "start", "end", "mean_weight", "top_weight",
                   "bottom_weight", "n_trials", "n_phases")  # fmt: skip
POLICY_COLUMNS = ("bucket", "start", "end", "reward", "baseline", "n_trials", "n_phases")


def check_buckets(buckets: Sequence[float]) -> list[float]:
    """Progress bucket edges as floats: increasing, from 0 to 1; ConfigError otherwise."""
    edges = [float(b) for b in buckets]
    if not tiles_progress(list(itertools.pairwise(edges))):
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

    from kdray.base.io import atomic_write_text

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
