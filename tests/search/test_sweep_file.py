"""Sweep files: the shipped ones are valid; bad ones fail before Ray starts, with the fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from kdray.base.errors import ConfigError
from kdray.search.sweep_file import load_spec, parse_sweep
from tests.helpers import REPO

SPACES = sorted((REPO / "search_spaces").glob("*.yaml"))
SWEEPS = [p for p in SPACES if not p.name.startswith("trial_")]


def test_the_shipped_sweeps_are_there() -> None:
    names = {p.stem for p in SWEEPS}
    assert {"quickstart", "sst2_acks", "glue_acks", "selector_ablation"} <= names


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.stem)
def test_shipped_sweeps_are_valid(path: Path) -> None:
    spec = load_spec(path)
    assert spec.search and spec.sweep.num_samples >= 1
    space = spec.param_space()
    assert set(space) == set(spec.search)


def test_param_space_distributions() -> None:
    from ray.tune.search.sample import Categorical, Float, Integer

    spec = parse_sweep(
        {
            "search": {
                "trainer.learning_rate": {"loguniform": [1e-5, 1e-3]},
                "knowledge.temperature": {"uniform": [1, 4]},
                "student.num_layers": {"int": [1, 3]},
                "selector.kind": {"choice": ["all", "acks"]},
                "trainer.seed": {"grid": [0, 1]},
            }
        },
        "t",
    )
    space = spec.param_space()
    assert isinstance(space["trainer.learning_rate"], Float)
    assert isinstance(space["student.num_layers"], Integer)
    assert space["student.num_layers"].upper == 4  # inclusive bound, Tune's randint excludes it
    assert isinstance(space["selector.kind"], Categorical)
    assert space["trainer.seed"] == {"grid_search": [0, 1]}
    cfg = spec.trial_config({"student.num_layers": 3, "selector.kind": "acks"})
    assert cfg.student.num_layers == 3 and cfg.selector.kind == "acks"


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        ({"search": {"trainer.learnig_rate": {"uniform": [0, 1]}}}, "'trainer.learning_rate'"),
        ({"search": {"trainer": {"uniform": [0, 1]}}}, "not a config key"),
        ({"search": {"trainer.learning_rate": {"normal": [0, 1]}}}, "distribution 'normal'"),
        ({"search": {"trainer.learning_rate": {"uniform": [1, 0.1]}}}, "low < high"),
        ({"search": {"trainer.learning_rate": {"loguniform": [0, 1]}}}, "low > 0"),
        ({"search": {"trainer.learning_rate": {"uniform": [0.1]}}}, "[low, high]"),
        ({"search": {"student.num_layers": {"int": [1.5, 3]}}}, "integer bounds"),
        ({"search": {"selector.kind": {"choice": []}}}, "non-empty list"),
        ({"search": {"selector.kind": {"choice": ["acks", "magic"]}}}, "selector.kind = 'magic'"),
        ({"search": {"trainer.learning_rate": {"uniform": [-1, 1]}}}, "learning_rate = -1"),
        ({"search": {"trainer.max_steps": {"choice": ["ten"]}}}, "integer"),
        ({"sweep": {"metric": "val_acc"}}, "never reported"),
        ({"sweep": {"metric": "accuracy"}}, "val_accuracy"),
        ({"sweep": {"scheduler": "hyperband"}}, "'hyperband' in sweep.scheduler; valid: asha"),
        ({"sweep": {"searcher": "tpe"}}, "searcher 'tpe' in sweep.searcher; valid: grid, optuna"),
        ({"sweep": {"num_sample": 3}}, "did you mean 'num_samples'"),
        ({"sweep": {"resources": {"gpu": -1}}}, "gpu >= 0"),
        (
            {"sweep": {"searcher": "grid"},
             "search": {"trainer.learning_rate": {"uniform": [0.1, 1]}}},
            "{grid: [...]}",
        ),
        ({"sweep": {"scheduler": "fifo", "selector_grace": {"acks": 2}}}, "scheduler: asha"),
        ({"sweep": {"selector_grace": {"akcs": 2}}}, "did you mean 'acks'"),
        ({"sweep": {"selector_grace": {"acks": 0}}}, "evaluation rounds in 1..3"),
        ({"sweep": {"selector_grace": {"acks": 1.5}}}, "selector_grace.acks' must be an integer"),
        ({"serach": {}}, "did you mean 'search'"),
        ({"trial": {"trainer": {"max_step": 3}}}, "did you mean 'max_steps'"),
    ],
)  # fmt: skip
def test_bad_sweeps(raw: dict, needle: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_sweep(raw, "bad")
    assert needle in str(err.value)


def test_malformed_yaml_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("trial:\n  data: {task: sst2\nsearch: {}\n")
    with pytest.raises(ConfigError, match="line"):
        load_spec(path)


def test_exponent_floats_read_as_numbers(tmp_path: Path) -> None:
    """`1e-4` (no dot) is a float in files and in --set, not YAML 1.1's string."""
    from kdray.base.yamlio import parse_override
    from kdray.training.checks import trial_config

    path = tmp_path / "sweep.yaml"
    path.write_text(
        "trial:\n  trainer: {learning_rate: 1e-4}\n"
        "search:\n  trainer.learning_rate: {loguniform: [3e-5, 3E-4]}\n"
    )
    spec = load_spec(path)
    assert spec.trial_config({}).trainer.learning_rate == 1e-4
    assert spec.search["trainer.learning_rate"].args == (3e-5, 3e-4)
    assert parse_override("teacher.learning_rate=1e-4") == ("teacher.learning_rate", 1e-4)
    cfg = trial_config(None, ["trainer.learning_rate=2e-5", "trainer.max_steps=20"])
    assert cfg.trainer.learning_rate == 2e-5 and cfg.trainer.max_steps == 20


def test_a_task_dimension_allows_only_generic_metrics() -> None:
    raw = {"search": {"data.task": {"grid": ["sst2", "mrpc"]}}, "sweep": {"metric": "val_f1"}}
    with pytest.raises(ConfigError, match="never reported"):
        parse_sweep(raw, "x")
    parse_sweep({**raw, "sweep": {"metric": "val_metric"}}, "x")


def test_a_pool_search_prepares_every_teacher_of_the_pool() -> None:
    """Searched pools choose among `teachers`: the teachers are prepared (and their outputs
    shared) for all of them, covering any role a teacher takes in a trial; a fixed pool is
    prepared as it is."""
    from kdray.search.tuner import ROLES

    spec = load_spec(REPO / "search_spaces" / "multi_teacher.yaml")
    assert "pool" in spec.search and "pool" in ROLES
    names = [t.name for t in spec.base_trial().teacher_list()]
    assert names == ["full", "three", "seed1", "weak"]
    for pool in spec.search["pool"].args:  # every searched pool is a valid trial
        cfg = spec.trial_config({"pool": pool})
        assert [t.name for t in cfg.teacher_list()] == pool.split(",")
    raw = spec.to_dict()
    raw["trial"]["pool"] = "full,weak"
    raw["search"].pop("pool")
    fixed = parse_sweep(raw, "fixed")
    assert [t.name for t in fixed.base_trial().teacher_list()] == ["full", "weak"]


def test_selector_grace_keeps_graced_trials_out_of_the_rungs_below_it() -> None:
    from ray.tune.schedulers import TrialScheduler

    from kdray.search.schedulers import create_scheduler
    from kdray.search.tune_schedulers import SelectorGraceASHA

    class Trial:
        def __init__(self, i: int, kind: str | None) -> None:
            self.trial_id = str(i)
            self.config = {"selector.kind": kind} if kind else {}

    raw = {
        "trial": {"trainer": {"max_steps": 90, "eval_every": 10}},
        "search": {"selector.kind": {"choice": ["all", "acks"]}},
        "sweep": {
            "scheduler_options": {"grace_period": 1, "reduction_factor": 3},
            "selector_grace": {"acks": 3},
            "metric": "val_metric",
            "mode": "max",
        },
    }
    sched = create_scheduler(parse_sweep(raw, "g"))  # fmt: skip
    assert isinstance(sched, SelectorGraceASHA) and sched.grace == {"acks": 3}
    bracket = sched._brackets[0]
    rungs = lambda: {m: dict(r) for m, r in bracket._rungs}  # noqa: E731
    assert list(rungs()) == [9, 3, 1]
    for i, value in enumerate([0.5, 0.6, 0.7]):  # base selector (all): judged at round 1
        bracket.on_result(Trial(i, None), 1, value)
    assert bracket.on_result(Trial(3, "all"), 1, 0.1) == TrialScheduler.STOP
    acks = Trial(9, "acks")
    for round_ in (1, 2):  # far below the cut-off, but inside its grace: not judged, not kept
        assert bracket.on_result(acks, round_, 0.1) == TrialScheduler.CONTINUE
    assert rungs()[1] == {"0": 0.5, "1": 0.6, "2": 0.7, "3": 0.1}
    assert bracket.on_result(acks, 3, 0.8) == TrialScheduler.CONTINUE  # its first rung
    assert bracket.on_result(acks, 4, 0.8) == TrialScheduler.CONTINUE
    assert rungs()[3] == {"9": 0.8} and "9" not in rungs()[1]  # never in the rung below
