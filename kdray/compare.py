"""Methods side by side: a sweep that searches a method dimension (`recipe`, `selector.kind`
or `teacher_policy.kind`), usually over seeds (`trainer.seed`), read back per method.

    from kdray.analysis import load_sweep
    from kdray.compare import methods_table, knowledge_by_method

    sweep = load_sweep("~/kdray_results/recipes_ablation")
    methods_table(sweep)         # one row per method: scores over its trials, paired per seed
    knowledge_by_method(sweep)   # knowledge_by_phase within each method's trials

`methods_table`: trials, finished, val / test mean and std over the finished trials, mean wall
time; and against the reference method (the best by mean validation metric) the per-seed
test-metric differences on the seeds both finished (mean, number of seeds, seeds where the
method is ahead) and, where the runs saved their per-example predictions, the paired bootstrap
95% CI over dev examples and its verdict (`kdray.analysis.compare`). Seeds are paired only when
the sweep searches trainer.seed.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from kdray.analysis import (  # noqa: F401 - METHOD_PATHS, SEED_PATH: this module's API too
    DEFAULT_BUCKETS,
    METHOD_PATHS,
    SEED_PATH,
    AnalysisError,
    Sweep,
    compare,
    knowledge_by_phase,
    method_path,
)


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
    """Per method: the paired bootstrap CI of its difference from `reference` and the verdict
    (NaN / empty where the runs left no predictions to pair)."""
    out = {}
    for name in methods:
        if name == reference:
            continue
        try:
            c = compare(sweep, name, reference, path)
        except AnalysisError:
            continue
        out[name] = {"ci_low": c["ci_low"], "ci_high": c["ci_high"], "verdict": c["verdict"]}
    return pd.DataFrame.from_dict(out, orient="index", columns=["ci_low", "ci_high", "verdict"])


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
