"""Strict config: unknown keys, wrong types and bad values fail before any work, with the fix."""

from __future__ import annotations

import pytest

from kdray.base.errors import ConfigError
from kdray.config import TrialConfig, config_paths, set_path
from kdray.training.checks import check_trial


def checked(raw: dict) -> TrialConfig:
    """A config as every entry point loads it: structural checks, then the registry checks."""
    return check_trial(TrialConfig.from_dict(raw))


def test_defaults_are_valid_and_round_trip() -> None:
    cfg = TrialConfig.from_dict({})
    assert TrialConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.knowledge.types == ("hard", "soft", "hidden", "relation")


def test_replace_with_dotted_paths() -> None:
    cfg = TrialConfig.from_dict({}).replace(**{"trainer.max_steps": 7, "data.task": "rte"})
    assert cfg.trainer.max_steps == 7 and cfg.data.task == "rte"


def test_config_paths_lists_leaves() -> None:
    paths = config_paths()
    assert "trainer.learning_rate" in paths and "knowledge.types" in paths
    assert "trainer" not in paths


@pytest.mark.parametrize(
    ("raw", "needles"),
    [
        ({"trainer": {"max_step": 10}}, ["trainer.max_step", "did you mean 'max_steps'"]),
        ({"trainr": {}}, ["trainr", "did you mean 'trainer'"]),
        ({"data": {"task": "sst"}}, ["unknown task 'sst'", "sst2", "valid:"]),
        ({"knowledge": {"types": ["hard", "sofft"]}}, ["sofft", "did you mean 'soft'"]),
        ({"knowledge": {"types": ["hard", "hard"]}}, ["more than once"]),
        ({"knowledge": {"types": []}}, ["empty"]),
        (
            {"knowledge": {"types": ["hard"], "weights": {"soft": 1.0}}},
            ["knowledge.weights", "'soft'", "not in knowledge.types"],
        ),
        ({"trainer": {"max_steps": 0}}, ["trainer.max_steps", "> 0"]),
        ({"trainer": {"batch_size": -4}}, ["trainer.batch_size", "> 0"]),
        ({"trainer": {"learning_rate": 0}}, ["trainer.learning_rate", "> 0"]),
        ({"trainer": {"max_steps": "ten"}}, ["trainer.max_steps", "integer"]),
        ({"trainer": {"teacher_cache": "yes"}}, ["trainer.teacher_cache", "true or false"]),
        (
            {"student": {"hidden_size": 100, "num_heads": 12}},
            ["must divide", "student.hidden_size"],
        ),
        ({"student": {"init": "copy"}}, ["student.init", "random, remap, pretrained"]),
        ({"student": {"num_layers": 2, "layer_map": [6]}}, ["student.layer_map", "one teacher"]),
        ({"selector": {"kind": "magic"}}, ["unknown selector kind 'magic'", "acks"]),
        ({"selector": {"phase_length": 0}}, ["selector.phase_length", "> 0"]),
        (
            {
                "student": {"init": "pretrained"},
                "knowledge": {"types": ["hard"]},
                "selector": {"kind": "acks"},
            },
            ["selector 'acks'", "student.init: pretrained", "remap"],
        ),
        ({"data": {"validation_fraction": 0.7}}, ["data.validation_fraction"]),
        ({"data": "sst2"}, ["'data' must be a mapping"]),
        (
            {"student": {"architecture": "distilbert"}, "knowledge": {"types": ["attention"]}},
            ["BERT students only"],
        ),
    ],
)
def test_bad_config_names_key_and_fix(raw: dict, needles: list[str]) -> None:
    with pytest.raises(ConfigError) as err:
        checked(raw)
    for needle in needles:
        assert needle in str(err.value)


def test_from_dict_is_structural_and_check_trial_reads_the_registries() -> None:
    # from_dict needs no registry (a task name, knowledge types, a selector kind are names)
    raw = {"data": {"task": "sst"}, "knowledge": {"types": ["sofft"]}, "selector": {"kind": "x"}}
    cfg = TrialConfig.from_dict(raw)
    with pytest.raises(ConfigError, match="unknown task 'sst'"):
        check_trial(cfg)
    # structural errors still fail in from_dict itself
    with pytest.raises(ConfigError, match=r"trainer\.max_steps"):
        TrialConfig.from_dict({"data": {"task": "sst"}, "trainer": {"max_steps": 0}})
    good = TrialConfig.from_dict({})
    assert check_trial(good) is good  # nothing to resolve: the same config


def test_knob_ranges_are_checked_by_their_owner_whatever_the_kind() -> None:
    """ACKS owns gamma, vanilla owns alpha; their ranges hold for every kind, since one
    config carries every knob and a sweep may switch kinds between trials."""
    for kind in ("acks", "all"):
        with pytest.raises(ConfigError, match=r"'selector\.gamma' must be in \[0, 1\), got 1\.5"):
            checked({"selector": {"kind": kind, "gamma": 1.5}})
    with pytest.raises(ConfigError, match=r"'selector\.alpha' must be in \[0, 1\]"):
        checked({"selector": {"kind": "vanilla", "alpha": 2.0}})


def test_integral_floats_are_accepted_as_ints() -> None:
    # YAML and samplers hand over 100.0 for int knobs; that is not a user error
    assert TrialConfig.from_dict({"trainer": {"max_steps": 100.0}}).trainer.max_steps == 100


def test_set_path_into_an_empty_section_or_through_a_value() -> None:
    raw: dict = {"trainer": None}  # YAML's `trainer:` with its keys commented out
    set_path(raw, "trainer.max_steps", 10)
    assert raw == {"trainer": {"max_steps": 10}}
    with pytest.raises(ConfigError, match=r"'trainer\.max_steps' is a value \(10\), not a section"):
        set_path(raw, "trainer.max_steps.x", 1)
