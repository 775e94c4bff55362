"""How often a paired interval reads "better" or "worse" when two methods are the same.

A method's score moves with its seed (initialisation, data order), so two runs of one method
on different seeds differ by more than the dev examples alone explain. This simulates such
comparisons: two methods with no difference between them, each run shifted by its own seed
effect, scored on the same examples of varied difficulty. A calibrated 95% interval excludes
0 in about 5% of them. Three intervals over the same draws are counted: the examples-only one
(every seed kept, the examples resampled: what kdray reported before it resampled seeds), the
Multi-Bootstrap's percentile interval, and kdray's (`kdray.analysis.stats`: a small-sample
correction for the seeds). `benchmarks/seed_noise.py` prints the rates for several seed counts.

    from kdray.analysis.calibration import PlantedNoise, false_verdict_rates
    false_verdict_rates(PlantedNoise(seeds=5), comparisons=1000)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from kdray.analysis.stats import score_bootstrap


@dataclass(frozen=True)
class PlantedNoise:
    """Two methods with no difference: example i is answered right by the run of seed s with
    probability sigmoid(z_i + u_s), z_i ~ N(difficulty_mean, difficulty_sd) shared by every
    run, u_s ~ N(0, seed_sd) one draw per run (method and seed)."""

    seeds: int = 5
    examples: int = 872  # SST-2's dev set
    seed_sd: float = 0.3
    difficulty_mean: float = 1.0  # about 0.7 accuracy
    difficulty_sd: float = 1.5

    def runs(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """(S, N) 0/1 correctness of method A and of method B."""
        z = rng.normal(self.difficulty_mean, self.difficulty_sd, self.examples)  # (N,)

        def method() -> np.ndarray:
            u = rng.normal(0.0, self.seed_sd, (self.seeds, 1))  # (S, 1)
            p = 1.0 / (1.0 + np.exp(-(z + u)))  # (S, N)
            return (rng.random(p.shape) < p).astype(np.float64)

        return method(), method()


def false_verdict_rates(
    noise: PlantedNoise, comparisons: int = 1000, n_boot: int = 1000, seed: int = 0
) -> dict[str, Any]:
    """Over `comparisons` simulated pairs of equal methods: the share whose 95% interval
    excludes 0 (a verdict "better" or "worse" that is wrong), for the examples-only interval
    (`examples_only`), the Multi-Bootstrap percentile one (`multi_bootstrap_percentile`) and
    kdray's (`seeds_and_examples`); 0.05 is what a calibrated interval gives."""
    rng = np.random.default_rng(seed)
    wrong = {"examples_only": 0, "multi_bootstrap_percentile": 0, "seeds_and_examples": 0}
    for c in range(comparisons):
        a, b = noise.runs(rng)
        new = score_bootstrap([(1.0, a), (-1.0, b)], n_boot=n_boot, seed=seed * comparisons + c)
        for name, (lo, hi) in (("examples_only", new["examples95"]),
                               ("seeds_and_examples", new["ci95"]),
                               ("multi_bootstrap_percentile", new["percentile95"])):  # fmt: skip
            wrong[name] += lo > 0 or hi < 0
    return {**asdict(noise), "comparisons": comparisons, "n_boot": n_boot,
            **{k: v / comparisons for k, v in wrong.items()}}  # fmt: skip
