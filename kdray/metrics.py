"""GLUE evaluation metrics, from scikit-learn and scipy.

Every metric is a function `fn(preds, labels) -> float` registered in `METRICS` by name; a
`TaskSpec.metrics` entry names one of them. Values are returned on their natural scale
(accuracy and F1 in [0, 1]; Matthews, Pearson and Spearman in [-1, 1]), never multiplied by 100.

Correlations are undefined for constant predictions (or constant labels, or fewer than two
examples): scipy returns nan there, and these functions return 0.0 instead, so an untrained
regression student that predicts one value scores "no correlation" rather than poisoning a
sweep's metric with nan.

`paired_bootstrap` compares two models on the same examples (the mean per-example difference
and its bootstrap interval), `paired_metric_bootstrap` two methods over seeds on any metric
(F1 and the correlations do not average over examples), and `verdict` reads the interval.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypedDict

import numpy as np
import torch

if TYPE_CHECKING:
    from kdray.tasks import TaskSpec

ArrayLike = np.ndarray | torch.Tensor


def accuracy(preds: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of predictions equal to the labels (scikit-learn's accuracy_score)."""
    preds, labels = np.asarray(preds), np.asarray(labels)
    return float((preds == labels).mean()) if len(labels) else 0.0


def f1(preds: np.ndarray, labels: np.ndarray) -> float:
    """Binary F1 of the positive class 1 (MRPC, QQP); 0.0 when there is no positive at all."""
    from sklearn.metrics import f1_score  # here: a trial on an accuracy task never loads it

    return float(f1_score(labels, preds, pos_label=1, average="binary", zero_division=0))


def matthews(preds: np.ndarray, labels: np.ndarray) -> float:
    """Matthews correlation coefficient (CoLA); 0.0 for constant predictions (sklearn's rule)."""
    from sklearn.metrics import matthews_corrcoef

    return float(matthews_corrcoef(labels, preds))


def _correlation(name: str, preds: np.ndarray, labels: np.ndarray) -> float:
    """scipy.stats' correlation `name`, with 0.0 where it is undefined (constant input, < 2
    examples)."""
    from scipy import stats  # here: a trial on a classification task never loads it

    preds = np.asarray(preds, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.float64)
    if len(preds) < 2:
        return 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", stats.ConstantInputWarning)
        value = float(getattr(stats, name)(preds, labels)[0])
    return 0.0 if np.isnan(value) else value


def pearson(preds: np.ndarray, labels: np.ndarray) -> float:
    """Pearson correlation (STS-B); 0.0 where undefined (constant predictions or labels)."""
    return _correlation("pearsonr", preds, labels)


def spearman(preds: np.ndarray, labels: np.ndarray) -> float:
    """Spearman rank correlation (STS-B); 0.0 where undefined (constant predictions or labels)."""
    return _correlation("spearmanr", preds, labels)


#: Metric name -> fn(preds, labels) -> float. `TaskSpec.metrics` names keys of this table.
METRICS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "accuracy": accuracy,
    "f1": f1,
    "matthews": matthews,
    "pearson": pearson,
    "spearman": spearman,
}


def _numpy(x: ArrayLike | list[float] | list[int]) -> np.ndarray:
    """A CPU numpy copy of a tensor (half precision promoted to float32), array or list."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        if x.dtype in (torch.bfloat16, torch.float16):
            x = x.float()
        return x.numpy()
    return np.asarray(x)


def predictions(spec: TaskSpec, logits: ArrayLike) -> np.ndarray:
    """Model outputs -> predictions: argmax class ids (B,), or the regression scores (B,)."""
    out = _numpy(logits)
    if spec.is_regression:
        if out.ndim == 2 and out.shape[1] == 1:
            out = out[:, 0]  # (B, 1) -> (B,)
        if out.ndim != 1:
            raise ValueError(f"regression logits must be (B, 1) or (B,), got {out.shape}")
        return out.astype(np.float64)
    if out.ndim != 2:
        raise ValueError(f"classification logits must be (B, C), got {out.shape}")
    return out.argmax(axis=1)  # (B, C) -> (B,)


def compute_metrics(
    spec: TaskSpec, logits: ArrayLike, labels: ArrayLike | list[float] | list[int]
) -> dict[str, float]:
    """Every metric of `spec.metrics` for model outputs against gold labels.

    logits: (B, C) for classification (argmax is taken), (B, 1) or (B,) for regression.
    labels: (B,) class ids or regression scores. Returns {metric name: float}, on the natural
    scale of each metric; undefined correlations (constant predictions) are 0.0.
    """
    preds = predictions(spec, logits)
    gold = _numpy(labels).reshape(-1)
    if len(preds) != len(gold):
        raise ValueError(f"{len(preds)} predictions but {len(gold)} labels")
    gold = gold.astype(np.float64 if spec.is_regression else np.int64)
    return {name: float(METRICS[name](preds, gold)) for name in spec.metrics}


def constant_score(spec: TaskSpec, labels: ArrayLike | list[float] | list[int]) -> float:
    """The main metric of the best constant prediction: the floor a model must beat to have
    learned anything (majority-class accuracy; all-positive F1 on MRPC, 0.812 on its dev set;
    0.0 for Matthews and the correlations)."""
    gold = _numpy(labels).reshape(-1)
    metric = METRICS[spec.main_metric]
    if spec.is_regression:
        return metric(np.full(len(gold), float(gold.mean())), gold.astype(np.float64))
    gold = gold.astype(np.int64)
    return max(metric(np.full(len(gold), c), gold) for c in range(spec.num_labels))


# ------------------------------------------------------------------------ paired comparisons

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
    x, y = _numpy(a), _numpy(b)
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
    x, y, gold = _numpy(a), _numpy(b), _numpy(labels).reshape(-1)
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
    x, y, gold = _numpy(a), _numpy(b), _numpy(labels).reshape(-1)
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
