"""Checks of a trial config against the registries: tasks, knowledge types, selector kinds.

`TrialConfig.from_dict` checks only what the config itself can tell (keys, types, ranges,
structure), so `kdray.config` imports no registry. Everything that needs a registry lives here,
in `check_trial`, which every entry point calls on the config it is about to run: the command
lines and `kdray.run_trial` (`trial_config`), sweep files (`kdray.search.spec`) and the
trainer's setup.
`check_trial` also reads a schedule file into `selector.schedule` (`read_schedule_file`), so a
selector never reads files and the config it returns is the one to run, and checks
data.max_length against every model's positions from config.json alone (`check_models`), so
a sweep's every edge is checked before Ray starts.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeAlias

from kdray.base.errors import ConfigError
from kdray.base.yamlio import load_yaml, parse_override
from kdray.config import TrialConfig, set_path
from kdray.data.specs import spec_of
from kdray.knowledge import validate_knowledge
from kdray.models.source import check_models
from kdray.selector import SELECTORS, validate_selector
from kdray.selector.baselines import ScheduleSelector, load_schedule
from kdray.teacher_policy import validate_teacher_policy

__all__ = ["check_trial", "override_pairs", "read_schedule_file", "trial_config"]


def check_trial(cfg: TrialConfig) -> TrialConfig:
    """Every check that needs a registry but no data or weights (shapes that need the teacher
    are checked in setup; model configs are read only where that needs no network,
    `check_models`); ConfigError naming the key and the fix.

    Returns the config to run: `cfg` with a `selector.schedule_file` read into
    `selector.schedule` (`read_schedule_file`); otherwise `cfg` itself.
    """
    spec = spec_of(cfg.data)
    validate_knowledge(cfg.knowledge, spec, cfg.student)
    cfg = read_schedule_file(cfg)
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


def read_schedule_file(cfg: TrialConfig) -> TrialConfig:
    """`cfg` with the buckets of `selector.schedule_file` in `selector.schedule` (the file
    name is kept, for the record); `cfg` itself when there is no file to read.

    Only a schedule selector reads a file; for other kinds a schedule is refused by
    `validate_selector`.
    """
    sel = cfg.selector
    if sel.kind != ScheduleSelector.name or sel.schedule_file is None:
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
    `overrides` and `data_dir` set, checked completely (`kdray.training.checks.check_trial`)."""
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
