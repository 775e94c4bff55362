"""GLUE evaluation metrics, from scikit-learn and scipy.

Every metric is a function `fn(preds, labels) -> float` registered in `METRICS` by name; a
`TaskSpec.metrics` entry names one of them. Values are returned on their natural scale
(accuracy and F1 in [0, 1]; Matthews, Pearson and Spearman in [-1, 1]), never multiplied by 100.

Correlations are undefined for constant predictions (or constant labels, or fewer than two
examples): scipy returns nan there, and these functions return 0.0 instead, so an untrained
regression student that predicts one value scores "no correlation" rather than poisoning a
sweep's metric with nan.

The paired comparisons built on these metrics are in `kdray.analysis.stats`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from kdray.data.tasks import TaskSpec

ArrayLike = np.ndarray | torch.Tensor


def accuracy(preds: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of predictions equal to the labels (scikit-learn's accuracy_score)."""
    preds, labels = np.asarray(preds), np.asarray(labels)
    return float((preds == labels).mean()) if len(labels) else 0.0


def f1(preds: np.ndarray, labels: np.ndarray) -> float:
    """Binary F1 of the positive class 1 (MRPC, QQP); 0.0 when there is no positive at all."""
    from sklearn.metrics import f1_score  # here: a trial on an accuracy task never loads it

    return float(f1_score(labels, preds, pos_label=1, average="binary", zero_division=0))


def f1_macro(preds: np.ndarray, labels: np.ndarray) -> float:
    """F1 averaged over the classes present in labels or predictions, each class alike
    (scikit-learn's average="macro")."""
    from sklearn.metrics import f1_score

    return float(f1_score(labels, preds, average="macro", zero_division=0))


def f1_micro(preds: np.ndarray, labels: np.ndarray) -> float:
    """F1 over all decisions pooled (scikit-learn's average="micro"; accuracy for one label per
    example)."""
    from sklearn.metrics import f1_score

    return float(f1_score(labels, preds, average="micro", zero_division=0))


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
    "f1_macro": f1_macro,
    "f1_micro": f1_micro,
    "matthews": matthews,
    "mcc": matthews,
    "pearson": pearson,
    "spearman": spearman,
    "spearmanr": spearman,
}


def as_numpy(x: ArrayLike | list[float] | list[int]) -> np.ndarray:
    """A CPU numpy copy of a tensor (half precision promoted to float32), array or list."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        if x.dtype in (torch.bfloat16, torch.float16):
            x = x.float()
        return x.numpy()
    return np.asarray(x)


def predictions(spec: TaskSpec, logits: ArrayLike) -> np.ndarray:
    """Model outputs -> predictions: argmax class ids (B,), or the regression scores (B,)."""
    out = as_numpy(logits)
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
    gold = as_numpy(labels).reshape(-1)
    if len(preds) != len(gold):
        raise ValueError(f"{len(preds)} predictions but {len(gold)} labels")
    gold = gold.astype(np.float64 if spec.is_regression else np.int64)
    return {name: float(METRICS[name](preds, gold)) for name in spec.metrics}


def constant_score(spec: TaskSpec, labels: ArrayLike | list[float] | list[int]) -> float:
    """The main metric of the best constant prediction: the floor a model must beat to have
    learned anything (majority-class accuracy; all-positive F1 on MRPC, 0.812 on its dev set;
    0.0 for Matthews and the correlations)."""
    return best_constant(spec.main_metric, spec.is_regression, labels)


def best_constant(
    metric: str, regression: bool, labels: ArrayLike | list[float] | list[int]
) -> float:
    """`constant_score` by the metric's name: the mean for a score, else the best single class
    among the labels."""
    gold = as_numpy(labels).reshape(-1)
    fn = METRICS[metric]
    if regression:
        return fn(np.full(len(gold), float(gold.mean())), gold.astype(np.float64))
    gold = gold.astype(np.int64)
    return max(fn(np.full(len(gold), c), gold) for c in np.unique(gold))
