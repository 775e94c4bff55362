"""Checks of a trial config against the registries: tasks, knowledge types, selector kinds.

`TrialConfig.from_dict` checks only what the config itself can tell (keys, types, ranges,
structure), so `kdray.config` imports no registry. Everything that needs a registry lives here,
in `check_trial`, which every entry point calls on the config it is about to run: the command
lines and `kdray.run_trial` (`trial_config`), sweep files (`kdray.search_space`) and the
trainer's setup.
`check_trial` also reads a schedule file into `selector.schedule` (`resolve_schedule`), so a
selector never reads files and the config it returns is the one to run, and checks
data.max_length against every model's positions from config.json alone (`check_models`), so
a sweep's every edge is checked before Ray starts.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeAlias

from kdray.config import TeacherConfig, TrialConfig, set_path
from kdray.errors import ConfigError
from kdray.knowledge import validate_knowledge
from kdray.model_source import check_max_length, config_offline
from kdray.selector import SELECTORS, validate_selector
from kdray.selector.baselines import ScheduleSelector, load_schedule
from kdray.tasks import get_task
from kdray.teacher_policy import validate_teacher_policy
from kdray.yamlio import load_yaml, parse_override

__all__ = [
    "check_models",
    "check_trial",
    "model_sources",
    "resolve_schedule",
    "teacher_sources",
    "trial_config",
]


def check_trial(cfg: TrialConfig) -> TrialConfig:
    """Every check that needs a registry but no data or weights (shapes that need the teacher
    are checked in setup; model configs are read only where that needs no network,
    `check_models`); ConfigError naming the key and the fix.

    Returns the config to run: `cfg` with a `selector.schedule_file` read into
    `selector.schedule` (`resolve_schedule`); otherwise `cfg` itself.
    """
    spec = get_task(cfg.data.task)
    validate_knowledge(cfg.knowledge, spec, cfg.student)
    cfg = resolve_schedule(cfg)
    validate_selector(cfg.selector, cfg.knowledge)
    validate_teacher_policy(cfg)
    if cfg.student.init == "pretrained" and SELECTORS[cfg.selector.kind].needs_cls:
        raise ConfigError(
            f"selector '{cfg.selector.kind}' reads the teacher's [CLS] vectors, and "
            f"'student.init: pretrained' runs without a teacher; use student.init remap or "
            f"random to distil, or another selector.kind to fine-tune"
        )
    check_models(cfg)
    return cfg


#: The fix a message about an unreadable model gives, by the key that names it.
FIXES = {
    "path": "give a fine-tuned HF model folder or hub id",
    "backbone": "give a Hugging Face model folder or hub id, or 'minilm' (the offline default)",
    "fine-tuned folder": "fine-tune it again (python -m kdray.teacher --force)",
}


def teacher_where(cfg: TrialConfig, t: TeacherConfig, key: str) -> str:
    """How a message names a teacher's key: 'teacher.path' for the one teacher of a run,
    "teacher 'b': path" in a pool."""
    return f"teacher.{key}" if cfg.teachers is None else f"teacher '{t.name}': {key}"


@dataclasses.dataclass(frozen=True)
class ModelSource:
    """A model config the run reads: `name` (a folder or hub id) given at config key `where`,
    `who` it is in a message about data.max_length, and the `fix` when it cannot be read."""

    name: str
    where: str
    who: str
    fix: str


def model_sources(cfg: TrialConfig) -> list[ModelSource]:
    """Every model config a run reads: its teachers' (`teacher_sources`), or with
    student.init pretrained only the first teacher's backbone, the student itself."""
    if cfg.student.init != "pretrained":
        return teacher_sources(cfg)
    t = cfg.teacher_list()[0]
    who = f"the student (init: pretrained, backbone {t.backbone})"
    return [ModelSource(t.backbone, teacher_where(cfg, t, "backbone"), who, FIXES["backbone"])]


def teacher_sources(cfg: TrialConfig) -> list[ModelSource]:
    """One per teacher: its `path`, or the backbone kdray fine-tunes (whose positions the
    fine-tune keeps); the first one also shapes the student."""
    out = []
    for i, t in enumerate(cfg.teacher_list()):
        key = "path" if t.path else "backbone"
        name = "the teacher" if cfg.teachers is None else f"teacher '{t.name}'"
        shown = t.path if t.path else f"fine-tuned from backbone {t.backbone}"
        also = " and the student shaped after it" if i == 0 else ""
        source = t.path or t.backbone
        out.append(
            ModelSource(source, teacher_where(cfg, t, key), f"{name} ({shown}){also}", FIXES[key])
        )
    return out


def check_models(cfg: TrialConfig) -> None:
    """data.max_length against every model the run reads (`model_sources`), from config.json
    alone and without the network: a longer input crashes inside the embeddings once teacher
    outputs are computed. A local path that is not there is "not found" here too. What does
    not read offline (a hub id outside the hub cache, a folder without a config.json) is left
    to `kdray.teachers.preflight`, which runs before any fine-tune or data and says what is
    wrong."""
    for src in model_sources(cfg):
        config = config_offline(src.name, src.where, src.fix)
        if config is not None:
            check_max_length(cfg.data.max_length, config, src.who)


def resolve_schedule(cfg: TrialConfig) -> TrialConfig:
    """`cfg` with the buckets of `selector.schedule_file` in `selector.schedule` (the file
    name is kept, for the record); `cfg` itself when there is no file to read.

    Only a schedule selector reads a file; for other kinds a schedule is refused by
    `validate_selector`.
    """
    sel = cfg.selector
    if sel.kind != ScheduleSelector.kind or sel.schedule_file is None:
        return cfg
    buckets = load_schedule(sel)
    return dataclasses.replace(cfg, selector=dataclasses.replace(sel, schedule=buckets))


#: Overrides: {dotted key: value}, or the command lines' "KEY=VALUE" strings (values read as
#: YAML).
Overrides: TypeAlias = Mapping[str, Any] | Sequence[str] | None


def override_pairs(overrides: Overrides) -> list[tuple[str, Any]]:
    """(dotted key, value) pairs from a mapping or from "KEY=VALUE" strings."""
    if overrides is None:
        return []
    if isinstance(overrides, Mapping):
        return [(str(k), v) for k, v in overrides.items()]
    if isinstance(overrides, str):
        raise ConfigError(
            f"overrides must be a mapping {{key: value}} or a list of 'KEY=VALUE' strings, got "
            f"the string {overrides!r}; wrap it in a list"
        )
    return [parse_override(str(o)) for o in overrides]


def trial_config(
    config: str | Path | Mapping[str, Any] | TrialConfig | None = None,
    overrides: Overrides = None,
    data_dir: str | Path | None = None,
) -> TrialConfig:
    """A trial config from a YAML file, a mapping, a TrialConfig or the defaults (None), with
    `overrides` and `data_dir` set, checked completely (`kdray.checks.check_trial`)."""
    if isinstance(config, TrialConfig):
        raw = config.to_dict()
    elif isinstance(config, Mapping):
        raw = dict(config)
    elif config is None:
        raw = {}
    elif isinstance(config, str | Path):
        raw = load_yaml(config)
    else:
        raise ConfigError(
            f"a trial config is a YAML path, a mapping or a kdray.TrialConfig, got "
            f"{type(config).__name__}"
        )
    for key, value in override_pairs(overrides):
        set_path(raw, key, value)
    if data_dir is not None:
        set_path(raw, "data.data_dir", str(Path(data_dir).expanduser().resolve()))
    return check_trial(TrialConfig.from_dict(raw))
