"""kdray's Tune schedulers on a real local Ray (the ASHA grace period is covered by the sweeps)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import ray_in_this_process


def wait_for(path: Path) -> None:
    deadline = time.monotonic() + 120
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def paced_trainable(marks: Path) -> Any:
    """A Tune Trainable whose two trials meet PBT's first perturbation point (iteration 2) in a
    fixed order, whatever the machine's speed: the weaker one (a=0) reports first and is
    paused; its save then waits until the stronger one (a=1) reported, completed the round and
    was saved for cloning. So the weaker one is exploited while Tune still saves it."""
    from ray import tune

    class Trainable(tune.Trainable):
        def setup(self, config: dict[str, Any]) -> None:
            self.it = 0
            self.a = config["a"]

        def step(self) -> dict[str, Any]:
            self.it += 1
            if self.it == 2 and self.a == 1:
                wait_for(marks / "weaker-saving")
            return {"score": float(self.a * self.it), "done": self.it >= 4}

        def save_checkpoint(self, checkpoint_dir: str) -> None:
            if self.it == 2 and self.a == 0 and not (marks / "weaker-saving").exists():
                (marks / "weaker-saving").touch()
                wait_for(marks / "stronger-saved")
            (Path(checkpoint_dir) / "it").write_text(str(self.it))
            if self.it == 2 and self.a == 1:
                (marks / "stronger-saved").touch()

        def load_checkpoint(self, checkpoint_dir: str) -> None:
            self.it = int((Path(checkpoint_dir) / "it").read_text())

    return Trainable


@pytest.mark.slow
def test_a_trial_exploited_while_it_saves_runs_to_its_end(tmp_path: Path, ray_tmp: Path) -> None:
    """Ray Tune's own PBT terminates the weaker trial at its next save (iteration 3 of 4);
    ExploitingPBT lets it run its 4 iterations from the clone."""
    import ray
    from ray import tune

    from kdray.search.tune_schedulers import ExploitingPBT

    scheduler = ExploitingPBT(
        time_attr="training_iteration", perturbation_interval=2, synch=True,
        quantile_fraction=0.5, hyperparam_mutations={"b": [0, 1]},
    )  # fmt: skip
    with ray_in_this_process():
        ray.init(num_cpus=2, include_dashboard=False)
        tuner = tune.Tuner(
            paced_trainable(tmp_path),
            param_space={"a": tune.grid_search([0, 1]), "b": 0},
            tune_config=tune.TuneConfig(metric="score", mode="max", scheduler=scheduler),
            run_config=tune.RunConfig(
                storage_path=str(tmp_path / "results"), verbose=0,
                checkpoint_config=tune.CheckpointConfig(checkpoint_frequency=1),
            ),
        )  # fmt: skip
        results = tuner.fit()
    assert not results.errors
    frame = results.get_dataframe()
    assert list(frame["config/a"]) == [1, 1], "the weaker trial was not exploited"
    assert list(frame["training_iteration"]) == [4, 4], frame[["training_iteration"]]
