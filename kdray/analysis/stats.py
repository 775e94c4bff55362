"""Paired comparisons with a 95% interval and a plain verdict.

Two methods run on the same seeds and are scored on the same examples. How much a method's
score moves from seed to seed is often larger than what the examples say, so the intervals
here resample both (the Multi-Bootstrap of the MultiBERTs paper, Sellam et al. 2022): each
resample draws S seeds with replacement, then N examples with replacement, the same draws
for both methods, and takes the mean over the drawn seeds of the difference on the drawn
examples. A bootstrap of a few seeds understates their spread, so the interval is built
from the resamples' variance with a small-sample correction (`_result`); with one seed only
the examples are resampled, and the result says so (`covers`).

- `score_bootstrap`: per-example scores (0/1 correctness, say) of S seeds, any contrast of
  arms (a − b, or MLKD's drop minus vanilla's).
- `metric_bootstrap` / `paired_metric_bootstrap`: the same for any metric of predictions (F1,
  Matthews and the correlations do not average over examples, so they are recomputed on each
  resample; accuracy takes the per-example path, the same statistic).
- `paired_comparison`: two methods' predictions to per-seed differences, interval, verdict.
- `paired_bootstrap`: two models on the same examples (one seed each).
- `verdict`: "better", "worse" or "no detectable difference at this scale".
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any, TypedDict

import numpy as np

from kdray.data.metrics import METRICS, ArrayLike, as_numpy

#: `verdict` when the 95% interval of a difference contains 0.
NO_DIFFERENCE = "no detectable difference at this scale"
#: The verdict in its place where no method beats the constant prediction (the differences
#: there are noise, not methods).
UNINFORMATIVE = "uninformative (neither beats the constant prediction)"
#: What an interval resamples (`SeedExampleDifference.covers`).
SEEDS_AND_EXAMPLES = "seeds and examples"
EXAMPLES_ONLY = "examples only (1 seed)"
#: The fewest resamples behind an interval over several seeds (it reads their variance).
MIN_BOOT = 100

#: A contrast: (weight, (S, N) scores or predictions) per arm, e.g. [(1, a), (-1, b)].
Arms = Sequence[tuple[float, Any]]


class PairedDifference(TypedDict):
    """`paired_bootstrap`'s result (a plain dict): the mean difference and its 95% interval."""

    mean: float
    ci95: tuple[float, float]


class SeedExampleDifference(PairedDifference):
    """A Multi-Bootstrap result: also how many seeds and examples stand behind it, and what
    the interval covers (SEEDS_AND_EXAMPLES, or EXAMPLES_ONLY with one seed)."""

    seeds: int
    examples: int
    covers: str
    #: The plain percentile interval of the same resamples (the Multi-Bootstrap as published),
    #: kept for comparison: with few seeds it is too narrow (`_result`).
    percentile95: tuple[float, float]
    #: The percentile interval over the drawn examples alone, every seed kept (what kdray
    #: reported before it resampled seeds), kept to show what the seeds change.
    examples95: tuple[float, float]


def _stack(arms: Arms, n: int | None = None) -> tuple[list[float], list[np.ndarray]]:
    """The arms' weights and (S, N) arrays (an (N,) array is one seed), checked alike."""
    if not arms:
        raise ValueError("a contrast needs at least one arm")
    weights = [float(w) for w, _ in arms]
    values = [as_numpy(x) for _, x in arms]
    values = [v[None] if v.ndim == 1 else v for v in values]
    shapes = {v.shape for v in values}
    shape = values[0].shape
    if len(shapes) != 1 or len(shape) != 2 or shape[1] == 0 or (n is not None and shape[1] != n):
        want = f"N = {n} labels" if n is not None else "N >= 1"
        raise ValueError(
            f"predictions must be (S, N) for every arm with {want}, got "
            f"{', '.join(str(v.shape) for v in values)}"
        )
    return weights, values


def _check_boot(n_boot: int, s: int) -> None:
    """n_boot resamples are enough for S seeds: 1 with one seed, else MIN_BOOT (a variance
    from a few draws is noise)."""
    if n_boot < (1 if s == 1 else MIN_BOOT):
        raise ValueError(
            f"n_boot must be >= {1 if s == 1 else MIN_BOOT} with {s} seeds, got {n_boot}"
        )


def _draws(
    rng: np.random.Generator, s: int, n: int, n_boot: int
) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """Resamples in chunks: (first index, seeds (m, S), examples (m, N)); the seeds are
    drawn first, then the examples, and with one seed only the examples (so one seed gives
    the examples-only bootstrap draw for draw)."""
    chunk = max(1, 2**22 // (n * s))  # resamples per draw: ~32 MB of gathered scores at a time
    for start in range(0, n_boot, chunk):
        m = min(chunk, n_boot - start)
        seeds = rng.integers(0, s, size=(m, s)) if s > 1 else np.zeros((m, 1), dtype=np.int64)
        yield start, seeds, rng.integers(0, n, size=(m, n))


def _result(mean: float, per_seed: np.ndarray, seeds: np.ndarray, n: int) -> SeedExampleDifference:
    """The interval from the resamples: per_seed (n_boot, S), each seed's contrast on the
    drawn examples; seeds (n_boot, S), the drawn seeds.

    One seed: the percentile interval of the examples-only resamples. Several: the variance
    of the Multi-Bootstrap statistic (the drawn seeds' mean) splits into the examples' part
    (the variance of every seed's mean over the drawn examples) and the seeds' part, which a
    bootstrap of S seeds underestimates by (S − 1)/S and which is known from S values only.
    So the seeds' part is scaled by S/(S − 1), and the interval is mean ± t·√variance with
    Student's t at the Welch–Satterthwaite degrees of freedom of the seeds' part (S − 1 when
    it is all of the variance, more as the examples' part grows). `kdray.analysis.calibration`
    measures why: between equal methods, the percentile interval of the same draws calls a
    difference in about 27% of comparisons at 2 seeds and 11% at 5; this one in 4 to 5%. It
    errs wide: resampling seeds and examples together counts their interaction more than once,
    so where seeds barely matter it calls a difference between equal methods in under 1% of
    comparisons (an interval about 1.3 to 1.6 times wider than needed there). Taking the seeds'
    part from the full data's per-seed spread instead is narrower but called 7 to 9% at 2 to 5
    seeds."""
    s = per_seed.shape[1]
    examples_only = np.nanmean(per_seed, axis=1)  # (n_boot,): every seed, drawn examples
    lo, hi = np.nanpercentile(examples_only, [2.5, 97.5])
    examples95 = (float(lo), float(hi))
    if s == 1:
        return {"mean": mean, "ci95": examples95, "seeds": 1, "examples": n,
                "covers": EXAMPLES_ONLY, "percentile95": examples95,
                "examples95": examples95}  # fmt: skip
    from scipy.stats import t as student_t

    both = np.nanmean(np.take_along_axis(per_seed, seeds, 1), axis=1)  # (n_boot,)
    v_examples = float(np.nanvar(examples_only))
    v_seeds = max(float(np.nanvar(both)) - v_examples, 0.0) * s / (s - 1)
    v = v_examples + v_seeds
    df = v**2 * (s - 1) / v_seeds**2 if v_seeds > 0 else math.inf
    half = float(student_t.ppf(0.975, df)) * math.sqrt(v)
    lo, hi = np.nanpercentile(both, [2.5, 97.5])
    return {"mean": mean, "ci95": (mean - half, mean + half), "seeds": s, "examples": n,
            "covers": SEEDS_AND_EXAMPLES, "percentile95": (float(lo), float(hi)),
            "examples95": examples95}  # fmt: skip


def score_bootstrap(arms: Arms, n_boot: int = 10000, seed: int = 0) -> SeedExampleDifference:
    """The contrast Σ_k w_k · mean(scores_k) and its 95% interval over seeds and examples.

    arms: (w_k, scores_k) with scores_k (S, N) per-example scores (e.g. 0/1 correctness) of
    S seeds on the same N examples, row s of every arm from seed s. mean: the contrast
    averaged over seeds and examples. ci95: from `n_boot` resamples, each drawing seeds, then
    examples, with replacement (the same draws for every arm), as `_result` says. Seeded: the
    same inputs and seed give the same interval.
    """
    weights, values = _stack(arms)
    _check_boot(n_boot, values[0].shape[0])
    d = np.zeros(values[0].shape)  # (S, N): the contrast per seed and example
    for w, v in zip(weights, values, strict=True):
        d += w * v.astype(np.float64)
    s, n = values[0].shape
    per_seed, drawn = np.empty((n_boot, s)), np.empty((n_boot, s), dtype=np.int64)
    for start, seeds, examples in _draws(np.random.default_rng(seed), s, n, n_boot):
        rows = slice(start, start + len(seeds))
        per_seed[rows] = d[:, examples].mean(axis=2).T  # (m, S): each seed, drawn examples
        drawn[rows] = seeds
    return _result(float(d.mean()), per_seed, drawn, n)


def metric_bootstrap(
    metric: str, arms: Arms, labels: ArrayLike, n_boot: int = 2000, seed: int = 0
) -> SeedExampleDifference:
    """The contrast Σ_k w_k · metric(predictions_k) averaged over seeds, and its 95%
    interval over seeds and examples (as `score_bootstrap`).

    arms: (w_k, predictions_k), predictions (S, N) class ids or regression scores of S seeds
    on the same N examples; labels (N,). The metric is recomputed on each resample's examples
    for each seed; accuracy takes the per-example path (`score_bootstrap` on correctness),
    the same statistic over the same draws.
    """
    gold = as_numpy(labels).reshape(-1)
    weights, values = _stack(arms, len(gold))
    _check_boot(n_boot, values[0].shape[0])
    if metric == "accuracy":
        right = [(w, v == gold) for w, v in zip(weights, values, strict=True)]
        return score_bootstrap(right, n_boot, seed)
    fn = METRICS[metric]
    s, n = values[0].shape

    def contrast(seed_row: int, idx: np.ndarray | slice) -> float:
        g = gold[idx]
        return sum(w * fn(v[seed_row, idx], g) for w, v in zip(weights, values, strict=True))

    mean = float(np.mean([contrast(r, slice(None)) for r in range(s)]))
    per_seed, drawn = np.empty((n_boot, s)), np.empty((n_boot, s), dtype=np.int64)
    for start, seeds, examples in _draws(np.random.default_rng(seed), s, n, n_boot):
        for j, idx in enumerate(examples):
            per_seed[start + j] = [contrast(r, idx) for r in range(s)]
        drawn[start : start + len(seeds)] = seeds
    return _result(mean, per_seed, drawn, n)


def paired_metric_bootstrap(
    metric: str,
    a: ArrayLike,
    b: ArrayLike,
    labels: ArrayLike,
    n_boot: int = 2000,
    seed: int = 0,
) -> SeedExampleDifference:
    """Method A's metric minus method B's, averaged over seeds, and its Multi-Bootstrap 95%
    interval (`metric_bootstrap` of a − b). a, b: (S, N) predictions of S seeds on the same N
    examples, row s of both from seed s; labels (N,)."""
    return metric_bootstrap(metric, [(1.0, a), (-1.0, b)], labels, n_boot, seed)


def paired_bootstrap(
    a: ArrayLike | list[float], b: ArrayLike | list[float], n_boot: int = 10000, seed: int = 0
) -> PairedDifference:
    """Mean of a − b over examples and its percentile 95% bootstrap interval, for two models
    (one seed each) on the same examples.

    a, b: (N,) per-example scores (e.g. 0/1 correctness on the same dev examples). Each of
    the `n_boot` resamples draws N example indices with replacement, the same for both
    (paired); `score_bootstrap` with one seed. Returns {"mean": float, "ci95": (lo, hi)};
    ValueError when the shapes differ, are not (N,), N is 0 or n_boot < 1.
    """
    x, y = as_numpy(a), as_numpy(b)
    if x.shape != y.shape:
        raise ValueError(f"paired scores must have one shape, got {x.shape} and {y.shape}")
    if x.ndim != 1 or len(x) == 0:
        raise ValueError(f"paired scores must be (N,) with N >= 1, got {x.shape}")
    out = score_bootstrap([(1.0, x), (-1.0, y)], n_boot, seed)
    return {"mean": out["mean"], "ci95": out["ci95"]}


def paired_comparison(
    metric: str, a: ArrayLike, b: ArrayLike, labels: ArrayLike, n_boot: int = 2000, seed: int = 0
) -> dict[str, Any]:
    """Method A against method B on S paired seeds (a, b: (S, N) predictions; labels (N,)):
    per_seed (metric(a_s) − metric(b_s)), mean, ci95 (`paired_metric_bootstrap`: seeds and
    examples), verdict, a_score and b_score (mean over the seeds), seeds, examples and covers
    (what the interval resamples), and examples95 (the interval over examples alone)."""
    fn = METRICS[metric]
    x, y, gold = as_numpy(a), as_numpy(b), as_numpy(labels).reshape(-1)
    x, y = (x[None], y[None]) if x.ndim == 1 else (x, y)
    boot = paired_metric_bootstrap(metric, x, y, gold, n_boot=n_boot, seed=seed)
    sa, sb = ([float(fn(p, gold)) for p in z] for z in (x, y))  # each seed's score
    return {
        "per_seed": [p - q for p, q in zip(sa, sb, strict=True)],
        "mean": boot["mean"], "ci95": boot["ci95"], "verdict": verdict(boot["ci95"]),
        "a_score": float(np.mean(sa)), "b_score": float(np.mean(sb)),
        "seeds": boot["seeds"], "examples": boot["examples"], "covers": boot["covers"],
        "examples95": boot["examples95"],
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
