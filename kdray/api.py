"""kdray from Python: `run_sweep` and `run_trial`, the code paths the command lines wrap.

    import kdray

    sweep = kdray.run_sweep("search_spaces/quickstart.yaml", data_dir="../shared/glue",
                            overrides={"sweep.num_samples": 4})
    sweep.results            # Ray Tune's ResultGrid
    sweep.best.metrics       # the best trial's last report (a ray.tune.Result)
    sweep.best_student       # its student: a Hugging Face model folder
    sweep.analysis().trials  # the tables `kdray.analysis` reads (pandas)

    result = kdray.run_trial("search_spaces/trial_sst2_small.yaml",
                             overrides={"trainer.max_steps": 100}, data_dir="../shared/glue")

Bad input raises `kdray.ConfigError` (or `kdray.DataError`) before any work starts, with the
same message the command lines print.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kdray.base.errors import ConfigError
from kdray.config import TrialConfig, set_path
from kdray.training.checks import Overrides, override_pairs, trial_config

if TYPE_CHECKING:
    import pandas as pd

    from kdray.analysis import Sweep
    from kdray.base.results import RunResult
    from kdray.search.spec import SweepSpec

log = logging.getLogger(__name__)


def run_trial(
    config: str | Path | Mapping[str, Any] | TrialConfig | None = None,
    overrides: Overrides = None,
    *,
    data_dir: str | Path | None = None,
    progress: bool = False,
    keep_state: bool = False,
) -> RunResult:
    """One distillation run, without Ray: the teachers are fine-tuned (or taken from the
    cache) first, then the student is trained in `trainer.output_dir` (resumed when that
    folder holds a checkpoint of the same config; default: a new folder
    `~/kdray_results/runs/<task>_<time>`). Returns the run's `RunResult`, whose
    `output_dir` and `student_dir` say where it landed.

    A run that ended (finished or diverged) keeps its student, logs and results; its training
    state (the resumable checkpoint, three times the student's size) only with `keep_state`,
    as a sweep's `sweep.keep.states: all`. An interrupted run keeps it: the same call with
    `trainer.output_dir` set to its folder continues it (the default folder is new each
    call, so it is logged as the run starts)."""
    from kdray.training.checkpoint import check_output_dir, drop_states
    from kdray.training.fine_tune import resolve_teachers
    from kdray.training.trainer import distil

    cfg = trial_config(config, overrides, data_dir)
    if cfg.trainer.output_dir is None:
        cfg = cfg.replace(**{"trainer.output_dir": str(new_run_folder(cfg))})
        log.info("run folder: %s (to continue it if interrupted: trainer.output_dir=%s)",
                 cfg.trainer.output_dir, cfg.trainer.output_dir)  # fmt: skip
    check_output_dir(cfg)  # before any teacher is fine-tuned
    teachers = resolve_teachers(cfg, progress=progress)
    result = distil(cfg, progress=progress, teacher_paths=teachers)
    if not keep_state:
        drop_states(Path(result.output_dir))
    return result


def new_run_folder(cfg: TrialConfig) -> Path:
    """RESULTS_ROOT/RUNS_DIR/<task or dataset>_<time>, made (never one that exists)."""
    import time

    from kdray.base.results import RESULTS_ROOT, RUNS_DIR
    from kdray.data.specs import spec_of

    root = Path(RESULTS_ROOT).expanduser() / RUNS_DIR
    name = f"{spec_of(cfg.data).name}_{time.strftime('%Y-%m-%d_%H-%M-%S')}"
    for i in range(1, 100):
        folder = root / (name if i == 1 else f"{name}_{i}")
        try:
            folder.mkdir(parents=True)
            return folder
        except FileExistsError:
            continue
    raise ConfigError(f"{root} holds too many runs named {name}*; give trainer.output_dir")


@dataclass
class SweepRun:
    """What `run_sweep` returns: Tune's ResultGrid and kdray's view of the same folder."""

    #: Ray Tune's ResultGrid (`results.get_dataframe()`, `results[i].metrics`, ...).
    results: Any
    #: The experiment folder (or URI): STORAGE/NAME.
    path: str

    def analysis(self) -> Sweep:
        """The sweep's tables (`kdray.analysis.load_sweep`): trials, history, phase logs,
        probes; the input of every `kdray.analysis` function."""
        from kdray.analysis import load_sweep

        return load_sweep(self.path)

    @property
    def best_trial(self) -> pd.Series | None:
        """The best trial's row of `analysis().trials` (finished trials first, then by the
        sweep's metric), or None when no trial reported it."""
        from kdray.analysis import best_trial, load_sweep

        return best_trial(load_sweep(self.path, phases=False, history=False))

    @property
    def best(self) -> Any:
        """The best trial's `ray.tune.Result` (the same trial as `best_trial`), or None."""
        row = self.best_trial
        if row is None:
            return None
        return next(r for r in self.results if Path(r.path).name == Path(row["path"]).name)

    @property
    def best_student(self) -> str | None:
        """The best trial's student folder (load it with transformers), or None."""
        from kdray.analysis import student_path

        row = self.best_trial
        return None if row is None else student_path(row)


def run_sweep(
    space: str | Path | Mapping[str, Any] | SweepSpec | None = None,
    *,
    data_dir: str | Path | None = None,
    storage: str | None = None,
    name: str | None = None,
    overrides: Overrides = None,
    address: str | None = None,
    resume: str | None = None,
    retry_errored: bool = False,
    report: bool = True,
) -> SweepRun:
    """Run a sweep on Ray Tune: `space` is a sweep YAML path, a mapping of the same sections
    (name, trial, search, sweep) or a parsed `SweepSpec`; `resume` continues an interrupted
    sweep from its folder instead. Everything is checked before Ray starts. With `report`,
    prints the summary and writes the analysis report (`<experiment>/analysis/`), as the
    command line does."""
    import kdray.search.ray_start as ray_start
    import kdray.search.tracking as tracking
    import kdray.search.tuner as tuning
    from kdray.analysis.prune import prune_at_end
    from kdray.search.folder import (
        claim_name,
        load_saved_spec,
        release_claim,
        running,
        storage_path,
        sweep_folder,
    )
    from kdray.search.schedulers import create_scheduler
    from kdray.search.searchers import create_searcher
    from kdray.search.spec import SweepSpec
    from kdray.search.sweep_file import load_spec, parse_sweep

    if space is None and not resume:
        raise ConfigError(
            "--space FILE is required (the sweep's YAML, e.g. search_spaces/quickstart.yaml; "
            "from Python: run_sweep(space), a path, a mapping or a SweepSpec)"
        )
    if retry_errored and not resume:
        raise ConfigError(
            "--retry-errored (retry_errored) reruns the errored trials of an earlier sweep; "
            "give its folder with --resume STORAGE/NAME"
        )
    pairs = override_pairs(overrides)
    if pairs and resume:
        raise ConfigError(
            "--set changes the sweep file (overrides, from Python), and a resumed sweep runs as "
            "it was saved; drop --set or start a new sweep with --space"
        )
    folder = sweep_folder(resume, "--resume") if resume else None
    glue = str(Path(data_dir).expanduser().resolve()) if data_dir else None
    if isinstance(space, SweepSpec):
        spec = parse_sweep(_with(space.to_dict(), pairs), space.name)
    elif isinstance(space, Mapping):
        spec = parse_sweep(_with(dict(space), pairs), "sweep")
    elif space is not None:
        spec = load_spec(space, pairs)
    else:
        spec = load_saved_spec(str(folder))
    spec = spec.absolute()
    if glue:
        spec = spec.with_data_dir(glue)
    root = storage_path(spec, storage)
    with _env({"KDRAY_GLUE_DIR": glue} if glue else {}):
        tuning.check_data(spec)
        search_alg = scheduler = None
        if not folder:  # what Tune would refuse later, refused before Ray and the teacher
            search_alg, scheduler = create_searcher(spec), create_scheduler(spec)
        target = ray_start.resolve(address)  # a cluster that does not answer: refused now
        if target.local:  # a local Ray gets this machine's resources
            check = [ray_start.local_resources()]
            tuning.check_resources(spec, check, "this machine (a local Ray)")
        exp = "" if folder else claim_name(spec, root, name or spec.name, bool(name))
        experiment = folder or f"{root.rstrip('/')}/{exp}"
        try:
            tracking.prepare(spec, experiment)
            tuner = tuning.start_tuner(spec, target, folder, retry_errored, search_alg,
                                       scheduler, exp, root)  # fmt: skip
        except BaseException:
            if exp:
                release_claim(root, exp)
            raise
        with _env(tracking.driver_env(spec)), running(experiment):
            results = tuner.fit()
    # Tune's experiment_path is a path in the storage's filesystem: a URI loses its scheme
    run = SweepRun(results=results, path=experiment)
    prune_at_end(run.path)  # sweep.keep: the best trial's state, the best students
    if report:
        from kdray.analysis import print_summary
        from kdray.analysis.report import end_of_sweep

        print_summary(run.path)
        end_of_sweep(run.path)  # the report: which knowledge helped when
        tracking.log_analysis(spec, run.path)
    return run


def _with(raw: dict[str, Any], pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    for key, value in pairs:
        set_path(raw, key, value)
    return raw


@contextlib.contextmanager
def _env(values: Mapping[str, str]) -> Iterator[None]:
    """Set environment variables for the block; restore them after (a notebook's process
    outlives the sweep)."""
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
