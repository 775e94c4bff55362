"""`python -m kdray.sweep`: many distillation trials on Ray Tune, pruned, resumable.

    python -m kdray.sweep --space search_spaces/quickstart.yaml --data-dir ../shared/glue
    python -m kdray.sweep --resume ~/kdray_results/quickstart      # after an interruption

The sweep file is validated completely before Ray starts (kdray.search_space). The driver then
prepares the teacher once (fine-tuned by kdray.teacher, or taken from its cache) and, when the
search leaves the data and the teacher alone, computes the teacher outputs once and hands them
to every trial through Ray's object store (tune.with_parameters). Each trial is one
kdray.trainer run in its trial folder (`run/`: checkpoint, phases.parquet, results.json, the
student), reporting once per evaluation; ASHA, median stopping or FIFO decide what to prune.
Run it on a cluster with `ray submit cluster.yaml` (see the README) or `ray job submit`.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
from pathlib import Path
from typing import Any

from kdray.config import TrialConfig
from kdray.errors import ConfigError
from kdray.search_space import SweepSpec, load_sweep
from kdray.teacher_cache import TeacherOutputs

log = logging.getLogger(__name__)

#: Search over these paths changes the teacher outputs, so they cannot be shared up front.
UNSHAREABLE = ("data.", "teacher.", "student.num_layers", "student.layer_map", "knowledge.types",
               "cache_dir")  # fmt: skip


class TuneReporter:
    """The trainer's Reporter inside a Tune trial: numbers only, once per evaluation."""

    def report(self, metrics: dict[str, Any], checkpoint_dir: str | None = None) -> None:
        from ray import tune

        clean = {k: v for k, v in metrics.items() if isinstance(v, int | float | str | bool)}
        tune.report(clean)


def train_trial(
    config: dict[str, Any],
    spec: SweepSpec,
    teacher_path: str | None = None,
    shared: TeacherOutputs | None = None,
) -> None:
    """One Tune trial: the sampled {path: value} on the base config, run in the trial folder.

    A restarted trial (retry, or the sweep resumed) finds its checkpoint in the same folder
    and continues from it.
    """
    from ray import tune

    from kdray.trainer import run_trial

    run_dir = Path(tune.get_context().get_trial_dir()) / "run"
    overrides: dict[str, Any] = {**config, "trainer.output_dir": str(run_dir)}
    if teacher_path and "teacher.path" not in config:
        overrides["teacher.path"] = teacher_path
    cfg = spec.trial_config(overrides)
    run_trial(cfg, TuneReporter(), teacher_outputs=shared)


def evaluations_per_trial(spec: SweepSpec) -> int:
    """Evaluation rounds of a full trial: the time axis of the schedulers."""
    cfg = spec.trial_config({})
    return math.ceil(cfg.trainer.max_steps / cfg.trainer.eval_every)


def build_scheduler(spec: SweepSpec) -> Any:
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, MedianStoppingRule

    s = spec.sweep
    opts = dict(s.scheduler_options)
    try:
        if s.scheduler == "asha":
            return ASHAScheduler(
                time_attr="training_iteration", max_t=evaluations_per_trial(spec), **opts
            )
        if s.scheduler == "median":
            return MedianStoppingRule(time_attr="training_iteration", **opts)
        if s.scheduler == "fifo":
            return FIFOScheduler(**opts)
    except TypeError as exc:  # an option the scheduler does not take
        raise ConfigError(f"'sweep.scheduler_options' for {s.scheduler}: {exc}") from exc
    raise ConfigError(
        "'sweep.scheduler: pbt' is not available yet in kdray; use asha, median or fifo"
    )


def build_searcher(spec: SweepSpec) -> Any:
    s = spec.sweep
    if s.searcher != "optuna":
        return None  # random and grid: Tune's own variant generator
    if any(d.kind == "grid" for d in spec.search.values()):
        raise ConfigError(
            "'sweep.searcher: optuna' samples; give grid dimensions as {choice: [...]} or use "
            "searcher: random (grid values are then crossed with the samples)"
        )
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    sampler = optuna.samplers.TPESampler(seed=s.seed)
    return OptunaSearch(metric=s.metric, mode=s.mode, sampler=sampler)


def check_resources(spec: SweepSpec) -> None:
    """A trial that asks for more than any node has would stay PENDING forever."""
    import ray

    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    need = spec.sweep.resources
    fits = any(r.get("CPU", 0) >= need.cpu and r.get("GPU", 0) >= need.gpu for r in nodes)
    if not fits:
        have = ", ".join(f"{r.get('CPU', 0):g} CPU / {r.get('GPU', 0):g} GPU" for r in nodes)
        raise ConfigError(
            f"each trial asks for {need.cpu:g} CPU and {need.gpu:g} GPU, but no node of this "
            f"Ray cluster has that (nodes: {have}); lower sweep.resources"
        )


def storage_path(spec: SweepSpec, override: str | None) -> str:
    raw = override or spec.sweep.storage
    if "://" in raw:
        return raw
    path = Path(raw).expanduser().resolve()
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


def prepare_teacher(spec: SweepSpec) -> tuple[str | None, TeacherOutputs | None]:
    """Fine-tune (or find) the teacher once; compute shareable teacher outputs once."""
    from kdray.teacher import ensure_teacher
    from kdray.trainer import setup

    base: TrialConfig = spec.trial_config({})
    if base.student.init == "pretrained" or any(p.startswith("teacher.") for p in spec.search):
        return None, None
    teacher = base.teacher.path or (
        None if "data.task" in spec.search else ensure_teacher(base, progress=True)
    )
    if any(p.startswith(UNSHAREABLE) for p in spec.search) or teacher is None:
        return teacher, None
    shared_cfg = base.replace(**{"teacher.path": teacher, "selector.kind": "acks"})
    return teacher, setup(shared_cfg, progress=True).teacher_outputs


def summarize(results: Any, spec: SweepSpec) -> None:
    s = spec.sweep
    best = results.get_best_result(metric=s.metric, mode=s.mode, scope="all")
    where = results.experiment_path
    print(f"\n{len(results)} trials, {results.num_errors} errored; results in {where}")
    if best is None or best.metrics is None:
        print("no trial reported a result")
        return
    m = best.metrics
    print(f"best trial: {best.path}")
    print(f"  config: {best.config}")
    print(f"  {s.metric}: {m.get(s.metric)}   test (dev) score: {m.get('test_metric')}")
    student = Path(best.path) / "run" / "student"
    print(f"  student: {student if student.exists() else '(not saved)'}")


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="python -m kdray.sweep",
        description="Search distillation policies and hyperparameters with Ray Tune.",
    )
    parser.add_argument("--space", help="sweep YAML (see search_spaces/)")
    parser.add_argument(
        "--data-dir",
        help="GLUE folder in the classic TSV layout (default: $KDRAY_GLUE_DIR, else the hub)",
    )
    parser.add_argument("--storage", help="results folder or URI (default: sweep.storage)")
    parser.add_argument("--name", help="experiment name (default: the sweep's name)")
    parser.add_argument("--resume", metavar="DIR", help="continue an interrupted sweep")
    parser.add_argument(
        "--retry-errored", action="store_true", help="with --resume: rerun errored trials"
    )
    parser.add_argument("--address", help="Ray cluster address (default: local or $RAY_ADDRESS)")
    args = parser.parse_args()
    if not args.space:
        raise ConfigError(
            "--space FILE is required (the sweep's YAML, e.g. search_spaces/quickstart.yaml)"
        )
    if args.data_dir:
        os.environ["KDRAY_GLUE_DIR"] = str(Path(args.data_dir).expanduser().resolve())
    spec = load_sweep(args.space)
    if args.data_dir:
        trial = {
            **spec.trial,
            "data": {**spec.trial.get("data", {}), "data_dir": os.environ["KDRAY_GLUE_DIR"]},
        }
        spec = SweepSpec(spec.name, trial, spec.search, spec.sweep)
    storage = storage_path(spec, args.storage)
    name = args.name or spec.name
    if args.resume:
        resume = Path(args.resume).expanduser().resolve()
        from ray.tune import Tuner

        if not Tuner.can_restore(str(resume)):
            raise ConfigError(f"--resume {resume} is not a sweep folder (no Tune experiment state)")

    import ray
    from ray import tune

    ray.init(address=args.address, dashboard_host="127.0.0.1", include_dashboard=False,
             log_to_driver=True)  # fmt: skip
    check_resources(spec)
    teacher, shared = prepare_teacher(spec)
    trainable = tune.with_resources(
        tune.with_parameters(train_trial, spec=spec, teacher_path=teacher, shared=shared),
        {"cpu": spec.sweep.resources.cpu, "gpu": spec.sweep.resources.gpu},
    )
    if args.resume:
        tuner = tune.Tuner.restore(
            str(resume), trainable=trainable, resume_errored=not args.retry_errored,
            restart_errored=args.retry_errored,
        )  # fmt: skip
    else:
        s = spec.sweep
        tuner = tune.Tuner(
            trainable,
            param_space=spec.param_space(),
            tune_config=tune.TuneConfig(
                metric=s.metric,
                mode=s.mode,
                num_samples=s.num_samples,
                max_concurrent_trials=s.max_concurrent,
                search_alg=build_searcher(spec),
                scheduler=build_scheduler(spec),
                time_budget_s=s.time_budget_s,
            ),
            run_config=tune.RunConfig(
                name=name,
                storage_path=storage,
                failure_config=tune.FailureConfig(max_failures=s.max_failures),
            ),
        )
    results = tuner.fit()
    summarize(results, spec)
    return 0


if __name__ == "__main__":
    from kdray.cli import run_cli

    run_cli(main)
