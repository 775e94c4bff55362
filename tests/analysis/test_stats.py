"""Paired comparisons: the bootstrap interval over paired examples and its verdict."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kdray.analysis.stats import NO_DIFFERENCE, paired_bootstrap, verdict


def test_paired_bootstrap_identical_scores_show_no_difference() -> None:
    a = np.random.default_rng(1).integers(0, 2, size=200)  # (200,) 0/1 correctness
    out = paired_bootstrap(a, a.copy(), n_boot=500)
    assert out["mean"] == 0.0
    lo, hi = out["ci95"]
    assert lo <= 0.0 <= hi
    assert verdict(out["ci95"]) == NO_DIFFERENCE


def test_paired_bootstrap_clearly_better_and_worse() -> None:
    rng = np.random.default_rng(2)
    b = (rng.random(500) < 0.6).astype(float)  # (500,) ~60% right
    a = np.maximum(b, rng.random(500) < 0.5)  # (500,) right wherever b is, and on ~half the rest
    out = paired_bootstrap(a, b, n_boot=1000)
    assert out["mean"] == pytest.approx(float((a - b).mean()))
    assert 0.0 < out["ci95"][0] <= out["mean"] <= out["ci95"][1]
    assert verdict(out["ci95"]) == "better"
    back = paired_bootstrap(torch.tensor(b), torch.tensor(a), n_boot=1000)  # tensors work too
    assert back["mean"] == pytest.approx(-out["mean"])
    assert verdict(back["ci95"]) == "worse"


def test_paired_bootstrap_pairs_the_examples() -> None:
    # a is b plus one more right answer in 100: paired resamples (same indices for both)
    # never differ by less than 0; unpaired ones of these half-right columns would reach
    # about -0.14.
    b = np.tile([1.0, 0.0], 50)  # (100,)
    a = b.copy()
    a[1] = 1.0
    out = paired_bootstrap(a, b, n_boot=2000, seed=3)
    assert out["mean"] == pytest.approx(0.01)
    assert out["ci95"][0] >= 0.0


def test_paired_bootstrap_is_seeded() -> None:
    rng = np.random.default_rng(4)
    a, b = rng.random(300), rng.random(300)  # (300,) each
    first = paired_bootstrap(a, b, n_boot=800, seed=7)
    assert paired_bootstrap(a, b, n_boot=800, seed=7) == first
    assert paired_bootstrap(a, b, n_boot=800, seed=8)["ci95"] != first["ci95"]
    assert isinstance(first["mean"], float)
    assert all(isinstance(v, float) for v in first["ci95"])


def test_paired_bootstrap_refuses_bad_input() -> None:
    with pytest.raises(ValueError, match="one shape"):
        paired_bootstrap(np.zeros(5), np.zeros(6))
    with pytest.raises(ValueError, match=r"\(N,\)"):
        paired_bootstrap(np.zeros((2, 3)), np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"\(N,\)"):
        paired_bootstrap(np.zeros(0), np.zeros(0))
    with pytest.raises(ValueError, match="n_boot"):
        paired_bootstrap(np.zeros(3), np.zeros(3), n_boot=0)


def test_verdict_reads_the_interval() -> None:
    assert verdict((0.01, 0.05)) == "better"
    assert verdict((-0.05, -0.01)) == "worse"
    assert verdict((-0.01, 0.02)) == NO_DIFFERENCE
    assert verdict((0.0, 0.02)) == NO_DIFFERENCE  # touching 0 is not above it
    assert verdict([-0.02, 0.0]) == NO_DIFFERENCE
