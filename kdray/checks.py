"""Checks of a trial config against the registries: tasks, knowledge types, selector kinds.

`TrialConfig.from_dict` checks only what the config itself can tell (keys, types, ranges,
structure), so `kdray.config` imports no registry. Everything that needs a registry lives here,
in `check_trial`, which every entry point calls on the config it is about to run: the command
lines (`kdray.cli.trial_config`), sweep files (`kdray.search_space`) and the trainer's setup.
`check_trial` also reads a schedule file into `selector.schedule` (`resolve_schedule`), so a
selector never reads files and the config it returns is the one to run.
"""

from __future__ import annotations

import dataclasses

from kdray.config import TrialConfig
from kdray.errors import ConfigError
from kdray.knowledge import validate_knowledge
from kdray.selector import SELECTORS, validate_selector
from kdray.selector.baselines import ScheduleSelector, load_schedule
from kdray.tasks import get_task

__all__ = ["check_trial", "resolve_schedule"]


def check_trial(cfg: TrialConfig) -> TrialConfig:
    """Every check that needs a registry but no data or model (shapes that need the teacher
    are checked in setup); ConfigError naming the key and the fix.

    Returns the config to run: `cfg` with a `selector.schedule_file` read into
    `selector.schedule` (`resolve_schedule`); otherwise `cfg` itself.
    """
    spec = get_task(cfg.data.task)
    validate_knowledge(cfg.knowledge, spec, cfg.student)
    cfg = resolve_schedule(cfg)
    validate_selector(cfg.selector, cfg.knowledge)
    if cfg.student.init == "pretrained" and SELECTORS[cfg.selector.kind].needs_cls:
        raise ConfigError(
            f"selector '{cfg.selector.kind}' reads the teacher's [CLS] vectors, and "
            f"'student.init: pretrained' runs without a teacher; use student.init remap or "
            f"random to distil, or another selector.kind to fine-tune"
        )
    return cfg


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
