"""Sweep files: YAML -> validated `SweepSpec` -> Ray Tune param_space.

A sweep file has three sections:

    name: sst2_acks
    trial:            # a complete base trial config (kdray.config.TrialConfig)
      data: {task: sst2, max_train_examples: 8000}
      selector: {kind: acks}
    search:           # dotted config path -> one distribution
      trainer.learning_rate: {loguniform: [3.0e-5, 3.0e-4]}
      knowledge.temperature: {uniform: [1.0, 4.0]}
      student.num_layers: {int: [1, 4]}          # inclusive bounds
      selector.kind: {choice: [all, vanilla, acks]}
      trainer.seed: {grid: [0, 1, 2]}            # every value, crossed with the samples
    sweep:            # kdray.search.spec.SweepConfig
      metric: val_metric
      num_samples: 8

Everything is checked before Ray starts: the YAML (with its line), every search path against
the config's keys, each distribution's bounds, and each end of every range and every choice
merged into the base config and validated as a whole trial.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from kdray.base.errors import ConfigError, suggest, unknown
from kdray.base.strict import _build
from kdray.base.yamlio import load_yaml
from kdray.config import (
    MUTABLE_PATHS,
    TrialConfig,
    config_paths,
    is_mutable,
    set_path,
)
from kdray.data.specs import spec_of
from kdray.search.schedulers import check_scheduler
from kdray.search.searchers import check_searcher
from kdray.search.spec import (
    DISTRIBUTIONS,
    GENERIC_METRICS,
    MAPPING_PATHS,
    Distribution,
    SweepConfig,
    SweepSpec,
)
from kdray.search.states import check_keep
from kdray.search.tracking import check_loggers
from kdray.selector import SELECTORS
from kdray.training.checks import check_trial

#: The sections of a sweep file, and what each holds.
SECTIONS = {
    "name": "The experiment's name: results land in STORAGE/NAME. Default: the file's name.",
    "trial": "The base trial config, every section of a trial as in a trial file.",
    "search": "Dotted trial keys (trainer.learning_rate, knowledge.weights.soft) -> one "
    "distribution each; every other key keeps the trial's value.",
    "sweep": "How Ray Tune runs the trials: metric, searcher, scheduler, resources, storage.",
}


def parse_distribution(path: str, raw: Any) -> Distribution:
    """The distribution at search path `path` (`{kind: args}`), its bounds checked."""
    where = f"search.{path}"
    if not isinstance(raw, Mapping) or len(raw) != 1:
        raise ConfigError(
            f"'{where}' must be one distribution such as {{uniform: [low, high]}}; valid kinds: "
            f"{', '.join(DISTRIBUTIONS)}"
        )
    kind, args = next(iter(raw.items()))
    if kind not in DISTRIBUTIONS:
        raise ConfigError(
            f"'{where}' has unknown distribution '{kind}'{suggest(str(kind), DISTRIBUTIONS)}; "
            f"valid: {', '.join(DISTRIBUTIONS)}"
        )
    if not isinstance(args, list) or not args:
        raise ConfigError(f"'{where}.{kind}' must be a non-empty list, got {args!r}")
    if DISTRIBUTIONS[kind] == 2:
        if len(args) != 2 or not all(
            isinstance(a, int | float) and not isinstance(a, bool) for a in args
        ):
            raise ConfigError(f"'{where}.{kind}' must be [low, high] numbers, got {args!r}")
        low, high = args
        if not low < high:
            raise ConfigError(f"'{where}.{kind}' needs low < high, got [{low}, {high}]")
        if kind == "loguniform" and low <= 0:
            raise ConfigError(f"'{where}.loguniform' needs low > 0, got {low}")
        if kind == "int" and not all(float(a).is_integer() for a in args):
            raise ConfigError(f"'{where}.int' needs integer bounds, got {args!r}")
        if not all(math.isfinite(a) for a in args):
            raise ConfigError(f"'{where}.{kind}' bounds must be finite, got {args!r}")
    return Distribution(str(kind), tuple(args))


def parse_sweep(raw: Mapping[str, Any], default_name: str) -> SweepSpec:
    """Validate a sweep mapping completely (no Ray needed)."""
    unknown = [k for k in raw if k not in SECTIONS]
    if unknown:
        hint = suggest(unknown[0], SECTIONS)
        raise ConfigError(
            f"unknown sweep section '{unknown[0]}'{hint}; valid: {', '.join(SECTIONS)}"
        )
    trial = raw.get("trial") or {}
    if not isinstance(trial, Mapping):
        raise ConfigError("'trial' must be a mapping of trial config sections")
    check_trial(TrialConfig.from_dict(trial))  # the base alone must be valid
    paths = config_paths()
    raw_search = raw.get("search") or {}
    if not isinstance(raw_search, Mapping):
        raise ConfigError(
            "'search' must be a mapping of dotted config keys to distributions, e.g. "
            "'trainer.learning_rate: {loguniform: [1.0e-5, 1.0e-3]}'"
        )
    search: dict[str, Distribution] = {}
    for path, spec in raw_search.items():
        if path not in paths and not path.startswith(MAPPING_PATHS):
            raise ConfigError(
                f"search path '{path}' is not a config key{suggest(path, paths)}; search over "
                f"dotted leaf keys such as trainer.learning_rate"
            )
        search[path] = parse_distribution(path, spec)
    sweep = _build(SweepConfig, raw.get("sweep") or {}, "sweep")
    spec = SweepSpec(str(raw.get("name") or default_name), trial, search, sweep)
    for path, dist in search.items():  # every edge of every dimension makes a valid trial
        for value in dist.candidates():
            try:
                spec.trial_config({path: value})
            except ConfigError as exc:
                raise ConfigError(
                    f"search.{path} = {value!r} gives an invalid trial: {exc}"
                ) from exc
    validate_sweep_settings(spec)
    return spec


def validate_sweep_settings(spec: SweepSpec) -> None:
    """The `sweep` section checked as a whole, before Ray starts (ConfigError naming the key)."""
    s = spec.sweep
    check_searcher(s.searcher)
    check_scheduler(s.scheduler)
    if s.num_samples < 1:
        raise ConfigError(f"'sweep.num_samples' must be >= 1, got {s.num_samples}")
    if s.max_concurrent is not None and s.max_concurrent < 1:
        raise ConfigError(f"'sweep.max_concurrent' must be >= 1, got {s.max_concurrent}")
    if s.resources.cpu <= 0 or s.resources.gpu < 0:
        raise ConfigError(
            f"'sweep.resources' needs cpu > 0 and gpu >= 0, got cpu={s.resources.cpu}, "
            f"gpu={s.resources.gpu}"
        )
    if s.max_failures < 0:
        raise ConfigError(f"'sweep.max_failures' must be >= 0, got {s.max_failures}")
    if s.time_budget_s is not None and s.time_budget_s <= 0:
        raise ConfigError(f"'sweep.time_budget_s' must be > 0, got {s.time_budget_s}")
    if s.searcher == "grid" and any(d.kind not in ("grid", "choice") for d in spec.search.values()):
        raise ConfigError(
            "'sweep.searcher: grid' enumerates values; give every search dimension as "
            "{grid: [...]} or use searcher optuna / random"
        )
    if s.scheduler == "pbt":
        validate_pbt(spec)
    check_loggers(s.loggers, s.logger_options)
    check_keep(s.keep)
    check_selector_grace(spec)
    allowed = list(GENERIC_METRICS)
    if "data.task" not in spec.search:  # one task: its own metrics are reported too
        allowed += [f"val_{m}" for m in spec_of(spec.base_trial().data).metrics]
    if s.metric not in allowed:
        hint = suggest(s.metric, allowed)
        raise ConfigError(
            f"'sweep.metric: {s.metric}' is never reported by the trials{hint}; they report "
            f"{', '.join(allowed)}"
        )


def check_selector_grace(spec: SweepSpec) -> None:
    """`sweep.selector_grace`: selector kinds -> evaluation rounds in 1..rounds, asha only."""
    s = spec.sweep
    if not s.selector_grace:
        return
    if s.scheduler != "asha":
        raise ConfigError(
            f"'sweep.selector_grace' delays ASHA's rungs; it needs 'sweep.scheduler: asha' "
            f"(got {s.scheduler}); remove it or switch the scheduler"
        )
    rounds = spec.evaluation_rounds()
    for kind, value in s.selector_grace.items():
        if kind not in SELECTORS:
            raise unknown("selector kind", kind, SELECTORS, "sweep.selector_grace")
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= rounds:
            raise ConfigError(
                f"'sweep.selector_grace.{kind}' must be a whole number of evaluation rounds in "
                f"1..{rounds} (a trial has {rounds}: trainer.max_steps / trainer.eval_every), "
                f"got {value!r}"
            )


def validate_pbt(spec: SweepSpec) -> None:
    """PBT changes knobs mid-run by cloning checkpoints: only MUTABLE_PATHS may be explored."""
    s = spec.sweep
    if s.searcher != "random":
        raise ConfigError(
            f"'sweep.scheduler: pbt' samples and mutates the population itself; set "
            f"'sweep.searcher: random' (got {s.searcher})"
        )
    if not any(is_mutable(p) for p in spec.search):
        raise ConfigError(
            f"'sweep.scheduler: pbt' needs at least one searched knob that may change mid-run: "
            f"{', '.join(MUTABLE_PATHS)} (knowledge.weights.<type> for one weight)"
        )
    if s.num_samples < 2:
        raise ConfigError(
            f"'sweep.scheduler: pbt' needs a population: 'sweep.num_samples' >= 2, got "
            f"{s.num_samples}"
        )


def load_spec(path: str | Path, overrides: Sequence[tuple[str, Any]] = ()) -> SweepSpec:
    """Read and validate a sweep YAML file (yaml.safe_load; errors name the line), with
    `overrides` (dotted key of the file, e.g. trial.trainer.max_steps -> value) set first."""
    path = Path(path)
    raw = load_yaml(path)
    for key, value in overrides:
        set_path(raw, key, value)
    return parse_sweep(raw, default_name=path.stem)
