"""Methods side by side: a sweep that searches a method dimension (`recipe`, `selector.kind`
or `teacher_policy.kind`), usually over seeds (`trainer.seed`), read back per method.

    from kdray.analysis import load_sweep
    from kdray.analysis.methods import methods_table, knowledge_by_method

    sweep = load_sweep("~/kdray_results/recipes_ablation")
    methods_table(sweep)         # one row per method: scores over its trials, paired per seed
    knowledge_by_method(sweep)   # knowledge_by_phase within each method's trials

`methods_table`: trials, finished, val / test mean and std over the finished trials, mean wall time;
and against the reference method (the best by mean validation metric) the per-seed test-metric
differences on the seeds both finished (mean, number of seeds, seeds where the method is ahead) and,
where the runs saved their per-example predictions, the paired 95% interval over seeds and dev
examples and its verdict (`compare`). Seeds are paired only when the sweep searches trainer.seed.

`compare(sweep, a, b)`: two methods of the sweep (values of its method dimension, e.g.
selector.kind) paired over the seeds both finished, on the same dev examples: the per-seed
differences of the main metric and a 95% interval resampling the seeds and the examples (from
each run's kdray.base.results.PREDICTIONS; `kdray.analysis.stats`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from kdray.analysis.phases import knowledge_by_phase
from kdray.analysis.tables import DEFAULT_BUCKETS, AnalysisError, Sweep
from kdray.base.io import fs_path, storage_fs
from kdray.base.results import PREDICTIONS, TRIAL_RUN_DIR, read_results, read_table

#: Config paths that name a method, in the order a sweep's method dimension is looked for.
METHOD_PATHS = ("recipe", "selector.kind", "teacher_policy.kind")
#: The searched path that pairs trials of different methods.
SEED_PATH = "trainer.seed"
#: What `methods_table` takes of each `compare` against the reference.
INTERVAL_COLUMNS = ("ci_low", "ci_high", "verdict", "n_examples", "covers")


def methods_table(sweep: Sweep, path: str | None = None) -> pd.DataFrame:
    """One row per value of the method dimension `path` (default: `method_path`); see the
    module docstring. Empty when the sweep searches no method."""
    path = path or method_path(sweep)
    column = f"config/{path}"
    if path is None or column not in sweep.trials:
        return pd.DataFrame()
    t = sweep.trials.assign(method=sweep.trials[column].astype(str))
    done = t[t["status"] == "finished"]
    seed = f"config/{SEED_PATH}"
    rows = []
    for name, rows_of in t.groupby("method", sort=False):
        ok = done[done["method"] == name]
        rows.append({
            "method": name,
            "trials": len(rows_of),
            "finished": len(ok),
            "val_mean": ok["val_metric"].mean(),
            "val_std": ok["val_metric"].std(),
            "test_mean": ok["test_metric"].mean() if "test_metric" in ok else np.nan,
            "test_std": ok["test_metric"].std() if "test_metric" in ok else np.nan,
            "wall_s": ok["wall_s"].mean() if "wall_s" in ok else np.nan,
        })  # fmt: skip
    table = pd.DataFrame(rows)
    if table["val_mean"].notna().any():
        best = table.loc[table["val_mean"].idxmax(), "method"]
        table["reference"] = best
        table = table.join(_paired(done, best, seed), on="method")
        table = table.join(_intervals(sweep, table["method"], best, path), on="method")
    return table


def _intervals(sweep: Sweep, methods: pd.Series, reference: str, path: str) -> pd.DataFrame:
    """Per method: the paired 95% interval of its difference from `reference` (seeds and
    examples resampled: `compare`), what it covers, and the verdict (NaN / empty where the runs
    left no predictions to pair)."""
    out = {}
    for name in methods:
        if name == reference:
            continue
        try:
            c = compare(sweep, name, reference, path)
        except AnalysisError:
            continue
        out[name] = {k: c[k] for k in INTERVAL_COLUMNS}
    return pd.DataFrame.from_dict(out, orient="index", columns=list(INTERVAL_COLUMNS))


def _paired(done: pd.DataFrame, reference: str, seed: str) -> pd.DataFrame:
    """Per method: the mean test-metric difference against `reference` over the seeds both
    finished, the number of those seeds and how many the method is ahead on."""
    columns = ["test_diff", "paired_seeds", "seeds_ahead"]
    if seed not in done or "test_metric" not in done:
        return pd.DataFrame(columns=columns)
    scores = done.pivot_table(index=seed, columns="method", values="test_metric", aggfunc="mean")
    out = {}
    for name in scores.columns:
        both = scores[name] - scores[reference]  # NaN where either did not finish
        diff = both.dropna()
        out[name] = {"test_diff": diff.mean() if len(diff) else np.nan,
                     "paired_seeds": len(diff), "seeds_ahead": int((diff > 0).sum())}  # fmt: skip
    return pd.DataFrame.from_dict(out, orient="index", columns=columns)


def knowledge_by_method(
    sweep: Sweep, buckets: Sequence[float] = DEFAULT_BUCKETS, path: str | None = None
) -> pd.DataFrame:
    """`knowledge_by_phase` within each method's trials (a `method` column first; each
    method's estimator as knowledge_by_phase picks it: probes where its trials probed); methods
    whose trials have neither probes nor phase rewards are left out. Empty when the sweep
    searches no method or none of its methods has either."""
    path = path or method_path(sweep)
    column = f"config/{path}"
    if path is None or column not in sweep.trials or (sweep.phases.empty and sweep.probes.empty):
        return pd.DataFrame()

    def of(table: pd.DataFrame, ids: set[str]) -> pd.DataFrame:
        return table[table["trial_id"].isin(ids)].dropna(axis=1, how="all") if len(table) else table

    parts = []
    for name, trials in sweep.trials.groupby(sweep.trials[column].astype(str), sort=False):
        ids = set(trials["trial_id"])
        phases, probes = of(sweep.phases, ids), of(sweep.probes, ids)
        sub = Sweep(sweep.path, trials, sweep.history, phases, sweep.metric, sweep.mode,
                    sweep.search, probes=probes)  # fmt: skip
        try:
            table = knowledge_by_phase(sub, buckets)
        except AnalysisError:  # this method's trials logged no phase rewards
            continue
        parts.append(table.assign(method=name))
    if not parts:
        return pd.DataFrame()
    out = pd.concat(parts, ignore_index=True)
    return out[["method", *[c for c in out.columns if c != "method"]]]


# ------------------------------------------------------------------ two methods, paired


def method_path(sweep: Sweep) -> str | None:
    """The sweep's method dimension: the first of METHOD_PATHS it searches (None: none)."""
    return next((p for p in METHOD_PATHS if p in sweep.search), None)


def aligned_predictions(
    runs: dict[str, Sequence[pd.DataFrame]],
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Several methods' runs lined up for a paired comparison: runs maps a method to its
    runs' per-example predictions (each a run's predictions.parquet; run s of every method
    from the same seed). Returns the labels (N,) and each method's (S, N) predictions on the
    first run's first split, rows in example order; AnalysisError when a run was scored on
    other examples."""
    first_runs = next(iter(runs.values()))
    split = first_runs[0]["split"].iloc[0]

    def rows(df: pd.DataFrame) -> pd.DataFrame:
        return df[df["split"] == split].sort_values("example")

    first = rows(first_runs[0])
    labels = first["label"].to_numpy()
    stacks = {}
    for name, method_runs in runs.items():
        lined = [rows(df) for df in method_runs]
        for i, df in enumerate(lined):
            if not (np.array_equal(df["example"], first["example"])
                    and np.array_equal(df["label"], labels)):  # fmt: skip
                raise AnalysisError(
                    f"{name}'s run {i + 1} was scored on other {split} examples than the first"
                )
        stacks[name] = np.stack([df["prediction"].to_numpy() for df in lined])
    return labels, stacks


def compare(
    sweep: Sweep, a: str, b: str, path: str | None = None, n_boot: int = 2000, seed: int = 0
) -> dict[str, Any]:
    """Method `a` against method `b` of a sweep, paired over seeds and dev examples.

    `a`, `b`: values of the method dimension `path` (default: the first of recipe,
    selector.kind, teacher_policy.kind the sweep searches). Pairs the finished trials of both
    by trainer.seed and reads each one's per-example test predictions (PREDICTIONS).

    Returns a dict: a, b, path, metric (the task's main metric), seeds, per_seed (a − b per
    seed), mean (their mean), ci_low, ci_high (95%, the Multi-Bootstrap of
    `kdray.analysis.stats`: seeds drawn with replacement, then dev examples, the same draws for
    both methods; with one seed the examples only), verdict (better / worse / no
    detectable difference at this scale, or uninformative), a_score, b_score (mean over the
    seeds), constant (the best constant prediction's score), informative (a or b beats it: if
    neither does, the task says nothing about the methods), n_examples, covers (what the
    interval resamples: "seeds and examples", or "examples only (1 seed)").
    """
    from kdray.analysis.stats import UNINFORMATIVE, paired_comparison
    from kdray.data.metrics import best_constant

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
            run_dir = f"{fs_path(r['path'])}/{TRIAL_RUN_DIR}"
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
    try:
        labels, x = aligned_predictions({a: [pa[s] for s in seeds], b: [pb[s] for s in seeds]})
    except AnalysisError as e:
        raise AnalysisError(f"{sweep.path}: {e}") from None
    xa, xb = x[a], x[b]
    run_dir = f"{fs_path(done[done[column].astype(str) == a]['path'].iloc[0])}/{TRIAL_RUN_DIR}"
    metric = str(read_results(run_dir, fs)["main_metric"])
    regression = np.asarray(labels).dtype.kind == "f"
    constant = best_constant(metric, regression, labels)
    c = paired_comparison(metric, xa, xb, labels, n_boot=n_boot, seed=seed)
    informative = max(c["a_score"], c["b_score"]) > constant
    return {
        "a": a, "b": b, "path": path, "metric": metric, "seeds": seeds,
        "per_seed": c["per_seed"], "mean": c["mean"], "ci_low": c["ci95"][0],
        "ci_high": c["ci95"][1],
        "verdict": c["verdict"] if informative
        else UNINFORMATIVE,
        "a_score": c["a_score"], "b_score": c["b_score"], "constant": constant,
        "informative": informative, "n_examples": len(labels), "covers": c["covers"],
    }  # fmt: skip
