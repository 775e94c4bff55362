"""Bad inputs fail before any work with one clear line: the cause, not the symptom, and the fix.

Each case runs the entry points' own order (config checks, then the teacher pool's preflight
that precedes any fine-tune) and checks that nothing started: no run folder, no data cache,
no teacher fine-tune.
"""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from kdray.base.errors import ConfigError
from kdray.config import TrialConfig
from kdray.data.tasks import TASKS
from kdray.search.sweep_file import parse_sweep
from kdray.teachers.pool import preflight
from kdray.training.checks import check_trial
from kdray.training.fine_tune import resolve_teachers
from kdray.training.trainer import distil

#: The tiny teacher's max_position_embeddings (tests/conftest.py).
TINY_POSITIONS = 128


@pytest.fixture
def fresh(tiny_cfg: dict, tmp_path: Path) -> dict[str, Any]:
    """tiny_cfg with its own cache folder, so that any data or teacher work would show."""
    raw = copy.deepcopy(tiny_cfg)
    raw["cache_dir"] = str(tmp_path / "cache")
    return raw


def refusal(raw: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> str:
    """The ConfigError the train CLI's order of work gives (config checks, output folder,
    teachers resolved), checking that no teacher fine-tune started."""
    with pytest.raises(ConfigError) as err:
        resolve_teachers(check_trial(TrialConfig.from_dict(raw)), progress=True)
    assert "fine-tuning teacher" not in capsys.readouterr().out
    message = str(err.value)
    assert "\n" not in message
    return message


def untouched(raw: dict[str, Any]) -> None:
    """No run folder and no cache (tokenised data, fine-tuned teachers) was written."""
    assert not Path(raw["trainer"]["output_dir"]).exists()
    assert not Path(raw["cache_dir"]).exists()


def test_validation_fraction_zero_is_refused_with_why_and_the_fix() -> None:
    with pytest.raises(ConfigError) as err:
        TrialConfig.from_dict({"data": {"validation_fraction": 0}})
    for needle in ("'data.validation_fraction'", "(0, 0.5)", "model selection", "ASHA", "0.1"):
        assert needle in str(err.value)


@pytest.mark.parametrize(
    ("section", "needles"),
    [
        ({"data": {"max_train_examples": 4}}, ["'data.max_train_examples' 4", "no validation"]),
        (  # a teacher kdray fine-tunes is carved the same way
            {"teacher": {"backbone": "minilm", "max_train_examples": 3}},
            ["'teacher.max_train_examples' 3", "no validation"],
        ),
        (
            {"data": {"max_train_examples": 4, "validation_fraction": 0.45,
                      "reward_fraction": 0.45}},
            ["'data.max_train_examples' 4", "nothing to train on"],
        ),
    ],
)  # fmt: skip
def test_splits_that_would_be_empty_are_refused_at_config_time(
    section: dict, needles: list[str]
) -> None:
    with pytest.raises(ConfigError) as err:
        TrialConfig.from_dict(section)
    for needle in needles:
        assert needle in str(err.value)


def test_a_teacher_with_a_path_is_not_carved() -> None:
    """teacher.max_train_examples only shapes a fine-tune, which a teacher with a path skips."""
    cfg = TrialConfig.from_dict({"teacher": {"path": "x", "max_train_examples": 3}})
    assert cfg.teacher.max_train_examples == 3


def test_max_length_over_the_teacher_positions_is_refused_before_any_work(
    fresh: dict, tiny_teacher: str, capsys: pytest.CaptureFixture[str]
) -> None:
    fresh["data"]["max_length"] = 200
    message = refusal(fresh, capsys)
    for needle in ("'data.max_length' is 200", tiny_teacher, "student", "data.max_length <= 128"):
        assert needle in message
    with pytest.raises(ConfigError, match=r"data\.max_length <= 128"):
        distil(TrialConfig.from_dict(fresh))
    # preflight holds it too, for a model that no config check could read offline
    with pytest.raises(ConfigError, match=r"data\.max_length <= 128"):
        preflight(TrialConfig.from_dict(fresh), TASKS["sst2"])
    untouched(fresh)


def test_max_length_over_a_backbone_is_refused_before_its_fine_tune(
    fresh: dict, tiny_teacher: str, capsys: pytest.CaptureFixture[str]
) -> None:
    fresh["data"]["max_length"] = 200
    fresh["teacher"] = {"backbone": tiny_teacher, "max_steps": 3, "max_train_examples": 200}
    message = refusal(fresh, capsys)
    assert f"fine-tuned from backbone {tiny_teacher}" in message
    assert "data.max_length <= 128" in message
    with pytest.raises(ConfigError, match=r"data\.max_length <= 128"):  # no check_trial first
        resolve_teachers(TrialConfig.from_dict(fresh), progress=True)
    assert "fine-tuning teacher" not in capsys.readouterr().out
    untouched(fresh)


def test_max_length_names_the_short_teacher_of_a_pool(
    fresh: dict, tiny_teacher: str, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = {k: v for k, v in fresh.items() if k != "teacher"}
    raw["data"]["max_length"] = 200
    raw["teachers"] = [
        {"name": "big", "backbone": "minilm"},
        {"name": "small", "path": tiny_teacher},
    ]
    message = refusal(raw, capsys)
    assert f"teacher 'small' ({tiny_teacher}) can embed" in message  # not the student's limit
    assert "data.max_length <= 128" in message
    untouched(raw)


def test_max_length_over_a_pretrained_student_is_refused(fresh: dict, tiny_teacher: str) -> None:
    fresh["data"]["max_length"] = 200
    fresh["teacher"] = {"backbone": tiny_teacher}
    fresh["student"] = {"init": "pretrained", "num_layers": 2}
    fresh["knowledge"] = {"types": ["hard"]}
    with pytest.raises(ConfigError) as err:
        distil(TrialConfig.from_dict(fresh))
    assert "the student (init: pretrained" in str(err.value)
    assert "data.max_length <= 128" in str(err.value)
    untouched(fresh)


def test_a_sweep_edge_over_the_positions_is_refused_before_ray(fresh: dict) -> None:
    raw = {"trial": fresh, "search": {"data.max_length": {"choice": [32, 200]}}}
    with pytest.raises(ConfigError) as err:
        parse_sweep(raw, "x")
    assert "search.data.max_length = 200 gives an invalid trial" in str(err.value)
    assert "data.max_length <= 128" in str(err.value)


@pytest.mark.parametrize(
    ("teacher", "needles"),
    [
        ({"path": "/no/such/teacher"}, ["teacher.path /no/such/teacher not found (no such folder)",
                                        "fine-tuned HF model folder or hub id"]),
        ({"path": "./no-such-teacher"}, ["teacher.path ./no-such-teacher not found", "at /"]),
        ({"path": "EMPTY"}, ["has no config.json (not a Hugging Face model folder)"]),
        ({"path": "kdray-test/no-such-model"}, ["kdray-test/no-such-model", "no local folder",
                                                "not in the hub cache"]),
        ({"backbone": "/no/such/backbone"}, ["teacher.backbone /no/such/backbone not found",
                                             "'minilm'"]),
    ],
)  # fmt: skip
def test_a_teacher_that_is_not_there_says_not_found(
    fresh: dict,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    teacher: dict,
    needles: list[str],
) -> None:
    if teacher.get("path") == "EMPTY":
        (tmp_path / "empty").mkdir()
        teacher = {"path": str(tmp_path / "empty")}
    fresh["teacher"] = teacher
    message = refusal(fresh, capsys)
    for needle in needles:
        assert needle in message
    assert "Repo id" not in message and "Unrecognized model" not in message
    untouched(fresh)


def test_a_pool_teacher_that_is_not_there_is_named(
    fresh: dict, tiny_teacher: str, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = {k: v for k, v in fresh.items() if k != "teacher"}
    raw["teachers"] = [{"name": "a", "path": tiny_teacher}, {"name": "x", "path": "/a/b"}]
    message = refusal(raw, capsys)
    assert message.startswith("teacher 'x': path /a/b not found (no such folder)")


def write_config(raw: dict, tmp_path: Path) -> Path:
    path = tmp_path / "trial.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"data.max_length": 200}, "data.max_length <= 128"),
        ({"teacher.path": "/no/such/teacher"}, "teacher.path /no/such/teacher not found"),
    ],
)
def test_the_train_cli_prints_one_line_and_exits_2(
    fresh: dict, tmp_path: Path, change: dict, needle: str
) -> None:
    (key, value), = change.items()  # fmt: skip
    section, name = key.split(".")
    fresh[section][name] = value
    proc = subprocess.run(
        [sys.executable, "-m", "kdray.train", "--config", str(write_config(fresh, tmp_path))],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-2000:]
    assert needle in lines[0]
    assert "Traceback" not in proc.stderr and "fine-tuning teacher" not in proc.stdout
    untouched(fresh)
