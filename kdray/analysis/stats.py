"""Paired comparisons with a 95% interval and a plain verdict.

`paired_bootstrap` compares two models on the same examples (the mean per-example difference
and its bootstrap interval), `paired_metric_bootstrap` two methods over seeds on any metric
(F1 and the correlations do not average over examples), `paired_comparison` two methods'
per-seed scores, and `verdict` reads the interval: "better", "worse" or "no detectable
difference at this scale".
"""

from __future__ import annotations

from typing import Any, TypedDict

import numpy as np

from kdray.data.metrics import METRICS, ArrayLike, as_numpy

#: `verdict` when the 95% interval of a difference contains 0.
NO_DIFFERENCE = "no detectable difference at this scale"


class PairedDifference(TypedDict):
    """`paired_bootstrap`'s result (a plain dict): the mean difference and its 95% interval."""

    mean: float
    ci95: tuple[float, float]


def paired_bootstrap(
    a: ArrayLike | list[float], b: ArrayLike | list[float], n_boot: int = 10000, seed: int = 0
) -> PairedDifference:
    """Mean of a − b over examples and its percentile 95% bootstrap interval.

    a, b: (N,) per-example scores of two models on the same N examples (e.g. 0/1 correctness
    on the same dev examples). Each of the `n_boot` resamples draws N example indices with
    replacement, the same indices for both (paired), and takes the mean difference over them;
    ci95 is the 2.5th and 97.5th percentile of those means. Seeded: the same inputs and seed
    give the same interval. Returns {"mean": float, "ci95": (lo, hi)}; ValueError when the
    shapes differ, are not (N,), N is 0 or n_boot < 1.
    """
    x, y = as_numpy(a), as_numpy(b)
    if x.shape != y.shape:
        raise ValueError(f"paired scores must have one shape, got {x.shape} and {y.shape}")
    if x.ndim != 1 or len(x) == 0:
        raise ValueError(f"paired scores must be (N,) with N >= 1, got {x.shape}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    d = x.astype(np.float64) - y.astype(np.float64)  # (N,)
    rng = np.random.default_rng(seed)
    n = len(d)
    chunk = max(1, 2**22 // n)  # resamples per draw: ~32 MB of indices at a time
    means = np.empty(n_boot)  # (n_boot,)
    for start in range(0, n_boot, chunk):
        m = min(chunk, n_boot - start)
        idx = rng.integers(0, n, size=(m, n))  # (m, N)
        means[start : start + m] = d[idx].mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return {"mean": float(d.mean()), "ci95": (float(lo), float(hi))}


def paired_metric_bootstrap(
    metric: str,
    a: ArrayLike,
    b: ArrayLike,
    labels: ArrayLike,
    n_boot: int = 2000,
    seed: int = 0,
) -> PairedDifference:
    """Method A's metric minus method B's, averaged over seeds, and its paired 95% interval.

    a, b: (S, N) predictions (class ids, or regression scores) of S seeds on the same N
    examples, row s of both from seed s; labels (N,). mean: the mean over seeds of
    metric(a_s) − metric(b_s). ci95: percentiles of that mean over `n_boot` resamples of the
    examples, the same indices for every seed and both methods (so what the examples share
    cancels). Accuracy takes the per-example path (`paired_bootstrap` on each example's
    correctness averaged over seeds), which is the same statistic; other metrics are recomputed
    on every resample.
    """
    x, y, gold = as_numpy(a), as_numpy(b), as_numpy(labels).reshape(-1)
    if x.ndim == 1:
        x, y = x[None], y[None]
    if x.shape != y.shape or x.ndim != 2 or x.shape[1] != len(gold):
        raise ValueError(
            f"predictions must be (S, N) for both methods with N = {len(gold)} labels, got "
            f"{x.shape} and {y.shape}"
        )
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    fn = METRICS[metric]
    if metric == "accuracy":
        return paired_bootstrap((x == gold).mean(0), (y == gold).mean(0), n_boot, seed)
    mean = float(np.mean([fn(xs, gold) - fn(ys, gold) for xs, ys in zip(x, y, strict=True)]))
    rng = np.random.default_rng(seed)
    means = np.empty(n_boot)
    for i in range(n_boot):
        idx = rng.integers(0, len(gold), len(gold))
        g = gold[idx]
        means[i] = np.mean([fn(xs[idx], g) - fn(ys[idx], g) for xs, ys in zip(x, y, strict=True)])
    lo, hi = np.nanpercentile(means, [2.5, 97.5])  # a resample may leave a metric undefined
    return {"mean": mean, "ci95": (float(lo), float(hi))}


def paired_comparison(
    metric: str, a: ArrayLike, b: ArrayLike, labels: ArrayLike, n_boot: int = 2000, seed: int = 0
) -> dict[str, Any]:
    """Method A against method B on S paired seeds (a, b: (S, N) predictions; labels (N,)):
    per_seed (metric(a_s) − metric(b_s)), mean, ci95 (`paired_metric_bootstrap`), verdict,
    a_score and b_score (mean over the seeds). The per-seed differences show the seed-to-seed
    spread that the interval over examples does not."""
    fn = METRICS[metric]
    x, y, gold = as_numpy(a), as_numpy(b), as_numpy(labels).reshape(-1)
    boot = paired_metric_bootstrap(metric, x, y, gold, n_boot=n_boot, seed=seed)
    return {
        "per_seed": [float(fn(xs, gold) - fn(ys, gold)) for xs, ys in zip(x, y, strict=True)],
        "mean": boot["mean"], "ci95": boot["ci95"], "verdict": verdict(boot["ci95"]),
        "a_score": float(np.mean([fn(xs, gold) for xs in x])),
        "b_score": float(np.mean([fn(ys, gold) for ys in y])),
    }  # fmt: skip


def verdict(ci95: tuple[float, float] | list[float]) -> str:
    """The reading of a 95% interval of a − b: "better" when it lies wholly above 0, "worse"
    when wholly below, else "no detectable difference at this scale" (NO_DIFFERENCE)."""
    lo, hi = ci95
    if lo > 0:
        return "better"
    if hi < 0:
        return "worse"
    return NO_DIFFERENCE
