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
    sweep:            # kdray.search_space.SweepConfig
      metric: val_metric
      num_samples: 8

Everything is checked before Ray starts: the YAML (with its line), every search path against
the config's keys, each distribution's bounds, and each end of every range and every choice
merged into the base config and validated as a whole trial.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from kdray.checks import check_trial
from kdray.config import (
    MUTABLE_PATHS,
    DataConfig,
    TrialConfig,
    _build,
    _plain,
    config_paths,
    flat_paths,
    is_mutable,
    set_path,
)
from kdray.errors import ConfigError, suggest, unknown
from kdray.io import atomic_write_text, storage_fs, storage_location, write_error
from kdray.selector import SELECTORS
from kdray.tasks import TASKS
from kdray.tracking import check_loggers
from kdray.yamlio import load_yaml, parse_yaml

#: name -> number of parameters it takes ("list" for a non-empty list of values).
DISTRIBUTIONS = {"uniform": 2, "loguniform": 2, "int": 2, "choice": "list", "grid": "list"}
#: Config keys holding local paths, and keys that hold a local path or a hub model id.
FILE_PATHS = ("data.data_dir", "cache_dir", "selector.schedule_file")
MAYBE_FILE_PATHS = ("teacher.path", "teacher.backbone")
#: Mapping-valued config keys whose entries are searchable one by one (knowledge.weights.soft).
MAPPING_PATHS = ("knowledge.weights.", "knowledge.schedules.")
#: Metrics every trial reports with each evaluation (plus val_<metric> of the task).
GENERIC_METRICS = ("val_metric", "best_val_metric", "val_loss", "train_loss")
#: The sweep file as run, saved in the experiment folder (for --resume and kdray.analysis).
SPEC_FILE = "kdray_sweep.yaml"


@dataclass(frozen=True)
class Distribution:
    """One searched dimension."""

    kind: str
    args: tuple[Any, ...]

    def candidates(self) -> list[Any]:
        """Values that together exercise every edge of the dimension (for validation)."""
        return list(self.args)

    def to_tune(self) -> Any:
        from ray import tune

        if self.kind == "uniform":
            return tune.uniform(*self.args)
        if self.kind == "loguniform":
            return tune.loguniform(*self.args)
        if self.kind == "int":
            return tune.randint(self.args[0], self.args[1] + 1)  # inclusive upper bound
        if self.kind == "choice":
            return tune.choice(list(self.args))
        return tune.grid_search(list(self.args))


@dataclass(frozen=True)
class Resources:
    """Per trial. Fractional GPUs pack several trials on one GPU."""

    cpu: float = 1.0
    gpu: float = 0.0


@dataclass(frozen=True)
class SweepConfig:
    """How Ray Tune runs the trials."""

    #: A metric trials report with each evaluation: val_metric (the task's main metric on the
    #: validation split), val_loss, best_val_metric, train_loss or val_<metric>.
    metric: str = "val_metric"
    mode: Literal["max", "min"] = "max"
    num_samples: int = 8
    max_concurrent: int | None = None
    searcher: Literal["optuna", "random", "grid"] = "optuna"
    scheduler: Literal["asha", "median", "pbt", "fifo"] = "asha"
    #: Passed to the scheduler (e.g. grace_period, reduction_factor for ASHA).
    scheduler_options: Mapping[str, Any] = field(default_factory=dict)
    #: ASHA only: selector kind -> evaluation rounds its trials run before a rung may stop
    #: them (kdray.schedulers; e.g. {acks: 3}: a learning selector is not judged while it
    #: explores).
    selector_grace: Mapping[str, int] = field(default_factory=dict)
    resources: Resources = field(default_factory=Resources)
    #: Where results and checkpoints go (a folder or a URI every node reaches).
    storage: str = "~/kdray_results"
    #: Retries of a trial that raised.
    max_failures: int = 1
    time_budget_s: float | None = None
    seed: int = 0
    #: Tune logger callbacks (kdray.tracking): csv, tensorboard, mlflow, wandb.
    loggers: tuple[Literal["csv", "tensorboard", "mlflow", "wandb"], ...] = ("csv", "tensorboard")
    #: Per logger, the callback's options (e.g. mlflow: {tracking_uri: ...}).
    logger_options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class SweepSpec:
    name: str
    trial: Mapping[str, Any]
    search: Mapping[str, Distribution]
    sweep: SweepConfig

    def trial_config(self, sampled: Mapping[str, Any]) -> TrialConfig:
        """The base trial with the sampled {path: value} applied, checked completely
        (`kdray.checks.check_trial`: a schedule file is read into selector.schedule)."""
        raw = copy.deepcopy(dict(self.trial))
        for path, value in sampled.items():
            set_path(raw, path, value)
        return check_trial(TrialConfig.from_dict(raw))

    def base_trial(self) -> TrialConfig:
        """The trial config the teachers are prepared for: the base trial, with every teacher
        of `teachers` when the search chooses among them (`pool`)."""
        return self.trial_config({"pool": None} if "pool" in self.search else {})

    def to_dict(self) -> dict[str, Any]:
        """Plain data that `parse_sweep` reads back (saved beside a sweep's results)."""
        return {
            "name": self.name,
            "trial": copy.deepcopy(dict(self.trial)),
            "search": {p: {d.kind: list(d.args)} for p, d in self.search.items()},
            "sweep": _plain(dataclasses.asdict(self.sweep)),
        }

    def with_data_dir(self, data_dir: str) -> SweepSpec:
        """The same sweep reading GLUE from `data_dir`."""
        trial = copy.deepcopy(dict(self.trial))
        set_path(trial, "data.data_dir", data_dir)
        return dataclasses.replace(self, trial=trial)

    def absolute(self, base: Path | None = None) -> SweepSpec:
        """Relative file paths of the base trial made absolute against `base` (default: the
        working directory): trials run in their own folders, possibly on other machines."""
        base = Path.cwd() if base is None else base
        trial = copy.deepcopy(dict(self.trial))
        flat = flat_paths(trial)
        for path in (*FILE_PATHS, *MAYBE_FILE_PATHS):
            value = flat.get(path)
            if (
                not isinstance(value, str)
                or "://" in value
                or Path(value).expanduser().is_absolute()
            ):
                continue
            local = (base / value).resolve()
            if path in FILE_PATHS or local.exists():  # else a hub id such as bert-base-uncased
                set_path(trial, path, str(local))
        for t in trial.get("teachers") or []:  # a pool: each teacher's path and backbone
            for key in ("path", "backbone"):
                value = t.get(key) if isinstance(t, dict) else None
                if isinstance(value, str) and "://" not in value:
                    local = (base / Path(value).expanduser()).resolve()
                    if not Path(value).expanduser().is_absolute() and local.exists():
                        t[key] = str(local)
        return dataclasses.replace(self, trial=trial)

    def evaluation_rounds(self) -> int:
        """Evaluation rounds of a full trial: the time axis of the schedulers."""
        tr = self.trial_config({}).trainer
        return math.ceil(tr.max_steps / tr.eval_every)

    def param_space(self) -> dict[str, Any]:
        """Flat {dotted path: Tune distribution} (Tune passes it back as the trial's config)."""
        return {path: dist.to_tune() for path, dist in self.search.items()}

    def fixed(self, path: str) -> Any:
        """The base value of a config path that is not searched."""
        node: Any = self.trial
        for part in path.split("."):
            node = node.get(part) if isinstance(node, Mapping) else None
        return node


def parse_distribution(path: str, raw: Any) -> Distribution:
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
    unknown = [k for k in raw if k not in ("name", "trial", "search", "sweep")]
    if unknown:
        hint = suggest(unknown[0], ["trial", "search", "sweep"])
        raise ConfigError(
            f"unknown sweep section '{unknown[0]}'{hint}; valid: name, trial, search, sweep"
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
    s = spec.sweep
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
    check_selector_grace(spec)
    allowed = list(GENERIC_METRICS)
    if "data.task" not in spec.search:  # one task: its own metrics are reported too
        task = spec.fixed("data.task") or DataConfig().task
        allowed += [f"val_{m}" for m in TASKS[task].metrics]
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


def load_sweep(path: str | Path, overrides: Sequence[tuple[str, Any]] = ()) -> SweepSpec:
    """Read and validate a sweep YAML file (yaml.safe_load; errors name the line), with
    `overrides` (dotted key of the file, e.g. trial.trainer.max_steps -> value) set first."""
    path = Path(path)
    raw = load_yaml(path)
    for key, value in overrides:
        set_path(raw, key, value)
    return parse_sweep(raw, default_name=path.stem)


def save_spec(spec: SweepSpec, experiment: str, claim: bool = False) -> bool:
    """The sweep as run, beside its results (local folder or a pyarrow-reachable URI).

    `claim`: in a local folder, write it only if the folder has none yet (an exclusive
    create, so of two sweeps started together one wins); False when one was there."""
    import os

    import yaml

    text = yaml.safe_dump(spec.to_dict(), sort_keys=False)
    if "://" in experiment:
        fs, path = storage_fs(experiment)
        fs.create_dir(path, recursive=True)
        with fs.open_output_stream(f"{path}/{SPEC_FILE}") as f:
            f.write(text.encode())
        return True
    if not claim:
        atomic_write_text(Path(experiment) / SPEC_FILE, text)
        return True
    spec_file = Path(experiment) / SPEC_FILE
    try:
        spec_file.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(spec_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(fd, "w") as f:
            f.write(text)
    except FileExistsError:
        return False
    except OSError as exc:  # a full disk, no permission: one line, not a traceback
        spec_file.unlink(missing_ok=True)
        raise write_error(spec_file, exc) from exc
    return True


def sweep_folder(path: str, flag: str) -> str:
    """The sweep folder STORAGE/NAME at `path` (a folder or a storage URI), made absolute;
    a local one that does not exist, or holds no sweep, is refused naming `flag` and `path`."""
    from ray.tune import Tuner

    location = storage_location(path)
    if "://" not in location and not Path(location).is_dir():
        raise ConfigError(
            f"{flag} {location}: not found (no such folder); give the folder STORAGE/NAME "
            f"that `python -m kdray.sweep` printed"
        )
    if not Tuner.can_restore(location):
        raise ConfigError(
            f"{flag} {location} is not a sweep folder (no Tune experiment state in it); give "
            f"the folder STORAGE/NAME that `python -m kdray.sweep` printed"
        )
    return location


def load_saved_spec(experiment: str) -> SweepSpec:
    """The sweep file saved beside a sweep's results (`save_spec`), validated."""
    fs, path = storage_fs(experiment)
    try:
        with fs.open_input_stream(f"{path}/{SPEC_FILE}") as f:
            text = f.read().decode()
    except (FileNotFoundError, OSError) as exc:
        raise ConfigError(
            f"--resume {experiment} has no {SPEC_FILE} (a sweep started before kdray saved "
            f"it?); pass the sweep's --space FILE as well"
        ) from exc
    return parse_sweep(parse_yaml(text, f"{experiment}/{SPEC_FILE}"), Path(path).name)


# ------------------------------------------------ the experiment folder STORAGE/NAME


def storage_path(spec: SweepSpec, override: str | None) -> str:
    """The sweep's storage (`override`, else sweep.storage): a URI as given, a local folder
    made and checked to be writable."""
    location = storage_location(override or spec.sweep.storage)
    if "://" in location:
        return location
    path = Path(location)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".kdray-write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(
            f"storage path {path} is not writable ({exc.strerror}); pass --storage DIR"
        ) from exc
    return str(path)


def claim_name(spec: SweepSpec, storage: str, name: str, explicit: bool) -> str:
    """STORAGE/NAME for a new sweep, claimed by writing the sweep file into it (created only
    if absent, so two sweeps started together never share a folder). Where NAME holds a sweep
    or another one's claim, a default name gets a timestamp and an explicit --name is refused:
    an earlier sweep is never written over."""
    from ray.tune import Tuner

    stamp = time.strftime("%Y-%m-%d_%H-%M-%S")
    names = [name] if explicit else [name, f"{name}_{stamp}"]
    names += [] if explicit else [f"{name}_{stamp}_{i}" for i in range(2, 100)]
    for candidate in names:
        folder = f"{storage}/{candidate}"
        if Tuner.can_restore(folder):
            if explicit:
                raise ConfigError(
                    f"{folder} already holds a sweep; continue it with --resume {folder}, or "
                    f"give another --name"
                )
            continue
        if save_spec(spec, folder, claim=True):  # a URI has no exclusive create: just saved
            return candidate
        if explicit:
            raise ConfigError(
                f"{folder} is claimed by another sweep starting now (its {SPEC_FILE} is there, "
                f"Tune's state not yet; delete the folder if no sweep is starting); give "
                f"another --name"
            )
    raise ConfigError(f"{storage} holds too many sweeps named {name}*; give another --name")


def release_claim(storage: str, name: str) -> None:
    """Remove a claimed folder that Tune never wrote into (the sweep failed before it)."""
    folder = Path(f"{storage}/{name}")
    if "://" not in storage and [p.name for p in folder.iterdir()] == [SPEC_FILE]:
        shutil.rmtree(folder, ignore_errors=True)
