"""GLUE metrics against hand-computed values, and `compute_metrics` on model outputs."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

from kdray.data.metrics import (
    METRICS,
    accuracy,
    compute_metrics,
    constant_score,
    f1,
    matthews,
    pearson,
    spearman,
)
from kdray.data.tasks import TASKS


def test_accuracy_hand_computed() -> None:
    # 2 of 4 right.
    assert accuracy(np.array([1, 0, 1, 1]), np.array([1, 1, 1, 0])) == pytest.approx(0.5)


def test_f1_positive_class_one() -> None:
    # tp = 2 (rows 0, 4), fp = 1 (row 1), fn = 1 (row 3): P = R = 2/3, F1 = 2/3.
    preds, labels = np.array([1, 1, 0, 0, 1]), np.array([1, 0, 0, 1, 1])
    assert f1(preds, labels) == pytest.approx(2 / 3)
    # Swapping the class names changes F1: it is the F1 of class 1, not a macro average.
    # tp = 1 (row 2), fp = 1 (row 3), fn = 1 (row 1): F1 = 1/2.
    assert f1(1 - preds, 1 - labels) == pytest.approx(0.5)


def test_f1_without_positives_is_zero() -> None:
    assert f1(np.zeros(4, dtype=int), np.zeros(4, dtype=int)) == 0.0


def test_matthews_hand_computed() -> None:
    # tp = 2, fp = 1, tn = 1, fn = 0: (2*1 - 1*0) / sqrt(3 * 2 * 2 * 1) = 2 / sqrt(12).
    value = matthews(np.array([1, 1, 1, 0]), np.array([1, 1, 0, 0]))
    assert value == pytest.approx(2 / math.sqrt(12))
    assert matthews(np.array([1, 0, 1, 0]), np.array([1, 0, 1, 0])) == pytest.approx(1.0)
    assert matthews(np.array([0, 1, 0, 1]), np.array([1, 0, 1, 0])) == pytest.approx(-1.0)


def test_pearson_hand_computed() -> None:
    # deviations p: (-1, 0, 1), l: (-4/3, -1/3, 5/3); cov = 3, var p = 2, var l = 42/9.
    value = pearson(np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0, 4.0]))
    assert value == pytest.approx(3 / math.sqrt(2 * 42 / 9))


def test_spearman_hand_computed() -> None:
    # label ranks (1, 3, 2, 4): sum d^2 = 2, rho = 1 - 6 * 2 / (4 * 15) = 0.8.
    value = spearman(np.array([1.0, 2.0, 3.0, 4.0]), np.array([10.0, 30.0, 20.0, 40.0]))
    assert value == pytest.approx(0.8)


@pytest.mark.parametrize("fn", [pearson, spearman])
def test_constant_predictions_give_zero_not_nan(fn) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no ConstantInputWarning leaks out
        assert fn(np.full(5, 2.5), np.arange(5.0)) == 0.0
        assert fn(np.array([1.0]), np.array([2.0])) == 0.0  # fewer than two examples


def test_metric_table_returns_python_floats() -> None:
    preds, labels = np.array([1, 0, 1, 1]), np.array([1, 0, 0, 1])
    for name, fn in METRICS.items():
        value = fn(preds, labels)
        assert type(value) is float, name
        assert -1.0 <= value <= 1.0, name


def test_compute_metrics_classification_argmax() -> None:
    logits = torch.tensor([[2.0, -1.0], [0.1, 0.3], [-1.0, 1.0], [3.0, 2.0]])  # (4, 2)
    labels = torch.tensor([0, 1, 0, 1])
    # preds (0, 1, 1, 0): accuracy 2/4; class 1: tp 1, fp 1, fn 1 -> F1 1/2.
    assert compute_metrics(TASKS["sst2"], logits, labels) == {"accuracy": pytest.approx(0.5)}
    out = compute_metrics(TASKS["mrpc"], logits.numpy(), labels.numpy())
    assert out == {"f1": pytest.approx(0.5), "accuracy": pytest.approx(0.5)}
    assert list(out) == ["f1", "accuracy"]
    assert compute_metrics(TASKS["cola"], logits, labels) == {"matthews": pytest.approx(0.0)}


def test_compute_metrics_three_classes() -> None:
    logits = np.array([[3.0, 0.0, 0.0], [0.0, 0.0, 5.0], [0.0, 1.0, 0.0]])  # (3, 3)
    out = compute_metrics(TASKS["mnli"], logits, [0, 2, 2])
    assert out == {"accuracy": pytest.approx(2 / 3)}


def test_compute_metrics_regression() -> None:
    logits = torch.tensor([[1.0], [2.0], [3.0]], dtype=torch.bfloat16)  # (3, 1)
    labels = torch.tensor([1.0, 2.0, 4.0])
    out = compute_metrics(TASKS["stsb"], logits, labels)
    assert set(out) == {"pearson", "spearman"}
    assert out["pearson"] == pytest.approx(3 / math.sqrt(2 * 42 / 9))
    assert out["spearman"] == pytest.approx(1.0)
    flat = compute_metrics(TASKS["stsb"], np.array([1.0, 2.0, 3.0]), labels)  # (3,) works too
    assert flat == pytest.approx(out)


def test_compute_metrics_constant_regression_is_zero() -> None:
    out = compute_metrics(TASKS["stsb"], torch.full((4, 1), 2.0), torch.tensor([0.0, 1, 2, 5]))
    assert out == {"pearson": 0.0, "spearman": 0.0}


def test_compute_metrics_shape_errors() -> None:
    with pytest.raises(ValueError, match="predictions but"):
        compute_metrics(TASKS["sst2"], np.zeros((3, 2)), np.zeros(4))
    with pytest.raises(ValueError, match=r"\(B, C\)"):
        compute_metrics(TASKS["sst2"], np.zeros(3), np.zeros(3))
    with pytest.raises(ValueError, match=r"\(B, 1\)"):
        compute_metrics(TASKS["stsb"], np.zeros((3, 2)), np.zeros(3))


def test_constant_score_is_the_best_constant_prediction() -> None:
    # 3 positives of 5. Accuracy: all-positive gets 3/5. F1 (MRPC): all-positive has
    # P = 3/5, R = 1, so F1 = 2·0.6/1.6 = 0.75; all-negative has F1 0.
    labels = np.array([1, 0, 1, 1, 0])
    assert constant_score(TASKS["rte"], labels) == pytest.approx(0.6)
    assert constant_score(TASKS["mrpc"], torch.tensor(labels)) == pytest.approx(0.75)
    # Matthews and correlations give a constant 0.
    assert constant_score(TASKS["cola"], labels) == 0.0
    assert constant_score(TASKS["stsb"], np.array([0.5, 2.0, 4.5])) == 0.0


def test_predict_returns_logits_in_the_split_order() -> None:
    """`predict` batches longest-first like `evaluate` and puts the rows back in the split's
    order: its logits give `evaluate`'s metrics, and row i is example i's own output."""
    from transformers import BertConfig, BertForSequenceClassification

    from kdray.base.tensors import offsets_from_lengths
    from kdray.data.dataset import TokenizedSplit
    from kdray.training.loop import evaluate, predict

    torch.manual_seed(0)
    config = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=20, max_position_embeddings=32)  # fmt: skip
    model = BertForSequenceClassification(config).train()
    lengths = torch.tensor([3, 9, 5, 1, 7, 9, 2])  # (7,) not sorted: batches reorder them
    ids = torch.randint(1, 50, (int(lengths.sum()),))
    split = TokenizedSplit(ids, torch.zeros_like(ids), offsets_from_lengths(lengths),
                           torch.tensor([0, 1, 1, 0, 1, 0, 0]))  # fmt: skip
    cpu = torch.device("cpu")
    z = predict(model, split, cpu, batch_size=3)  # (7, 2)
    assert z.shape == (7, 2) and z.dtype == torch.float32
    assert model.training  # the mode is restored
    model.eval()
    with torch.no_grad():
        for i in range(len(split)):
            alone = split.batch(torch.tensor([i]))
            own = model(input_ids=alone["input_ids"], attention_mask=alone["attention_mask"],
                        token_type_ids=alone["token_type_ids"]).logits[0]  # fmt: skip
            torch.testing.assert_close(z[i], own, rtol=1e-4, atol=1e-5)
    metrics = evaluate(model, split, TASKS["sst2"], cpu, batch_size=3)
    assert compute_metrics(TASKS["sst2"], z, split.labels)["accuracy"] == metrics["accuracy"]
    loss = torch.nn.functional.cross_entropy(z, split.labels)
    assert float(loss) == pytest.approx(metrics["loss"], rel=1e-6)
