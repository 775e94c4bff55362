"""What a sweep file declares: the searched dimensions (`Distribution`), how Ray Tune runs
the trials (`SweepConfig`, `Resources`) and the whole sweep (`SweepSpec`: name, base trial,
search space, settings). `kdray.search.sweep_file` reads and checks a file into a `SweepSpec`.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from kdray.base.io import is_uri
from kdray.base.results import RESULTS_ROOT
from kdray.base.strict import _plain
from kdray.config import (
    TrialConfig,
    flat_paths,
    set_path,
)
from kdray.training.checks import check_trial

#: name -> number of parameters it takes ("list" for a non-empty list of values).
DISTRIBUTIONS = {"uniform": 2, "loguniform": 2, "int": 2, "choice": "list", "grid": "list"}
#: What each distribution samples (the configuration reference prints it).
DISTRIBUTION_DOCS = {
    "uniform": "{uniform: [low, high]}: a float, uniform on [low, high].",
    "loguniform": "{loguniform: [low, high]}: a float, uniform in log space (learning rates).",
    "int": "{int: [low, high]}: an integer in [low, high], both ends included.",
    "choice": "{choice: [a, b, ...]}: one of the values, sampled.",
    "grid": "{grid: [a, b, ...]}: every value, each crossed with every sample.",
}
#: Config keys holding local paths, and keys that hold a local path or a hub model id.
FILE_PATHS = ("data.data_dir", "cache_dir", "selector.schedule_file")
MAYBE_FILE_PATHS = ("teacher.path", "teacher.backbone", "data.dataset.path")
#: Mapping-valued config keys whose entries are searchable one by one (knowledge.weights.soft).
MAPPING_PATHS = ("knowledge.weights.", "knowledge.schedules.")
#: Metrics every trial reports with each evaluation (plus val_<metric> of the task).
GENERIC_METRICS = ("val_metric", "best_val_metric", "val_loss", "train_loss")


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

    #: CPUs per trial.
    cpu: float = 1.0
    #: GPUs per trial; a fraction packs several trials on one GPU.
    gpu: float = 0.0


@dataclass(frozen=True)
class KeepConfig:
    """What a sweep keeps of its ended trials (`kdray.search.states`). Every trial keeps its
    logs, config and results; a live trial keeps its current training state and the one
    before it, and PBT keeps its checkpoints until the sweep ends (it clones them)."""

    #: Training states (the resumable checkpoint: weights and optimiser moments) of ended
    #: trials: none, best (the best trial's last one), all (each trial's last one).
    states: Literal["none", "best", "all"] = "none"
    #: Students (Hugging Face model folders) of finished trials: finished (every one), best:K
    #: (the K best, by the sweep's metric), none.
    students: str = "finished"


@dataclass(frozen=True)
class SweepConfig:
    """How Ray Tune runs the trials."""

    #: A metric trials report with each evaluation: val_metric (the task's main metric on the
    #: validation split), val_loss, best_val_metric, train_loss or val_<metric>.
    metric: str = "val_metric"
    #: max: a higher metric is better; min: a lower one.
    mode: Literal["max", "min"] = "max"
    #: Trials the searcher samples (each one crossed with every grid value).
    num_samples: int = 8
    #: At most this many trials at once. None: as many as the resources allow.
    max_concurrent: int | None = None
    #: What samples the trials' configs (Optuna's TPE, random sampling, or the grid alone).
    searcher: str = "optuna"
    #: What stops weak trials early (ASHA, the median rule, population-based training) or
    #: lets every trial run (fifo).
    scheduler: str = "asha"
    #: Passed to the scheduler (e.g. grace_period, reduction_factor for ASHA).
    scheduler_options: Mapping[str, Any] = field(default_factory=dict)
    #: ASHA only: selector kind -> evaluation rounds its trials run before a rung may stop them
    #: (kdray.search.tune_schedulers; e.g. {acks: 3}: a learning selector is not judged while it
    #: explores).
    selector_grace: Mapping[str, int] = field(default_factory=dict)
    #: What each trial reserves (Resources).
    resources: Resources = field(default_factory=Resources)
    #: Where results and checkpoints go (a folder or a URI every node reaches).
    storage: str = RESULTS_ROOT
    #: What is kept of ended trials besides their logs and results (KeepConfig).
    keep: KeepConfig = field(default_factory=KeepConfig)
    #: Retries of a trial that raised.
    max_failures: int = 1
    #: Stop the sweep after this many seconds. None: no limit.
    time_budget_s: float | None = None
    #: Seed of Optuna's sampler (searcher: optuna); random and grid sampling are not seeded.
    seed: int = 0
    #: Where trial results are tracked, besides kdray's own files (Tune's logger callbacks).
    loggers: tuple[str, ...] = ("csv", "tensorboard")
    #: Per logger, the callback's options (e.g. mlflow: {tracking_uri: ...}).
    logger_options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class SweepSpec:
    """A whole sweep: its name, the base trial, the searched dimensions and how Tune runs it."""

    name: str
    trial: Mapping[str, Any]
    search: Mapping[str, Distribution]
    sweep: SweepConfig

    def trial_config(self, sampled: Mapping[str, Any]) -> TrialConfig:
        """The base trial with the sampled {path: value} applied, checked completely
        (`kdray.training.checks.check_trial`: a schedule file is read into selector.schedule)."""
        raw = copy.deepcopy(dict(self.trial))
        for path, value in sampled.items():
            set_path(raw, path, value)
        return check_trial(TrialConfig.from_dict(raw))

    def sampled_config(self, sampled: Mapping[str, Any]) -> dict[str, Any]:
        """The base trial with the sampled {path: value} applied, every key filled in but not
        checked against models or files (what the analysis of a sweep's trials reads: the
        trials ran, so they were checked)."""
        raw = copy.deepcopy(dict(self.trial))
        for path, value in sampled.items():
            set_path(raw, path, value)
        return TrialConfig.from_dict(raw).to_dict()

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
                or is_uri(value)
                or Path(value).expanduser().is_absolute()
            ):
                continue
            local = (base / value).resolve()
            if path in FILE_PATHS or local.exists():  # else a hub id such as bert-base-uncased
                set_path(trial, path, str(local))
        dataset = (trial.get("data") or {}).get("dataset") or {}
        files: Any = dataset.get("data_files") if isinstance(dataset, dict) else None
        for split, names in (files if isinstance(files, dict) else {}).items():  # your own data
            many = [names] if isinstance(names, str) else names
            files[split] = [
                n
                if not isinstance(n, str) or is_uri(n)
                else str((base / Path(n).expanduser()).resolve())
                for n in many
            ]
        for t in trial.get("teachers") or []:  # a pool: each teacher's path and backbone
            for key in ("path", "backbone"):
                value = t.get(key) if isinstance(t, dict) else None
                if isinstance(value, str) and not is_uri(value):
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
