"""The Ray Tune side of a sweep: the trainable, the Tuner's settings, the teachers prepared once.

`kdray.api.run_sweep` drives these (and `python -m kdray.sweep` drives that). The driver prepares
the teacher once (fine-tuned by kdray.training.fine_tune, or taken from its cache) and, when the
search leaves the data and the teacher alone, computes the teacher outputs once and hands them to
every trial through Ray's object store (tune.with_parameters). Each trial is one
kdray.training.trainer run in its trial folder (`run/`: checkpoint, phases.parquet, results.json,
the student), reporting once per evaluation; ASHA, median stopping or FIFO decide what to prune.
Trials hand a checkpoint to Tune at every evaluation: a marker of the run folder's state, or (at a
storage URI, under PBT) the state itself, which Tune then keeps (`kdray.search.states`). A resumed
or retried trial continues from it, and PBT clones it from a strong trial into a weak one (then
changes the MUTABLE_PATHS knobs). An ended trial's states are deleted as Tune records it complete.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import kdray.search.ray_start as ray_start
import kdray.search.tracking as tracking
from kdray.base.errors import ConfigError
from kdray.base.io import is_uri
from kdray.base.results import CHECKPOINT, PREV_CHECKPOINT, TRIAL_RUN_DIR
from kdray.config import TrialConfig
from kdray.data.tasks import TASKS
from kdray.search.schedulers import create_scheduler
from kdray.search.spec import SweepSpec
from kdray.search.states import (
    MARKER,
    STAGE,
    back_to_marked,
    has_ended,
    marker_of,
    tune_owns_state,
)
from kdray.search.states import callback as state_callback
from kdray.teachers.outputs import TeacherOutputs

log = logging.getLogger(__name__)

#: Search over these paths changes the teachers themselves: each trial resolves its own (a
#: recipe may name its own teacher: dwt's is smaller than the student).
TEACHERS = ("teacher.", "teachers", "recipe")
#: Search over these paths changes which teacher teaches what: the shared outputs cover every
#: role a teacher could take in any trial.
ROLES = ("pool", "knowledge.feature_teacher")
#: Search over these paths changes the teacher outputs, so they cannot be shared up front.
UNSHAREABLE = ("data.", "teacher.", "student.num_layers", "student.layer_map", "knowledge.types",
               "cache_dir")  # fmt: skip
#: Search over these paths (trainer.seed aside: the reference trains with seed 0) changes the
#: teacher gate's reference student, so each trial checks its own.
REFERENCE_READS = ("data.", "teacher", "student.", "trainer.", "cache_dir")


class TuneReporter:
    """The trainer's Reporter inside a Tune trial: numbers once per evaluation, with the run's
    checkpoint (`kdray.search.states`): a marker naming it when the run folder owns the state,
    else the state itself, moved out of the run folder for Tune to keep.
    """

    def __init__(self, node_id: str, tune_owns: bool = False) -> None:
        self.node_id = node_id
        self.tune_owns = tune_owns
        #: Seconds spent in tune.report so far (handing over and persisting checkpoints).
        self.report_s = 0.0

    def report(self, metrics: dict[str, Any], checkpoint_dir: str | None = None) -> None:
        t0 = time.perf_counter()
        try:
            self._report(metrics, checkpoint_dir)
        finally:
            self.report_s += time.perf_counter() - t0

    def _report(self, metrics: dict[str, Any], checkpoint_dir: str | None) -> None:
        from ray import tune

        clean = {k: v for k, v in metrics.items() if isinstance(v, int | float | str | bool)}
        clean["node_id"] = self.node_id
        clean["time_report_s"] = self.report_s  # up to the previous report
        ckpt = Path(checkpoint_dir) / CHECKPOINT if checkpoint_dir else None
        if ckpt is None or not ckpt.is_file():
            tune.report(clean)
            return
        run_dir = ckpt.parent
        self.clear_stages(run_dir)
        # The folder handed to Tune: outside the trial's working folder, which Tune syncs to a
        # storage URI; Tune may stop the trial inside report, so stale ones are cleared at the
        # next report or start.
        stage = Path(tempfile.mkdtemp(dir=run_dir.parent.parent, prefix=self.prefix(run_dir)))
        if self.tune_owns:  # moved, not copied: Tune's copy becomes the only one
            os.replace(ckpt, stage / CHECKPOINT)
            (run_dir / PREV_CHECKPOINT).unlink(missing_ok=True)
        else:
            (stage / MARKER).write_text(json.dumps(marker_of(ckpt, metrics.get("step"))))
        try:
            tune.report(clean, checkpoint=tune.Checkpoint.from_directory(str(stage)))
        finally:  # also when Tune stops the trial inside report (SystemExit)
            shutil.rmtree(stage, ignore_errors=True)

    @classmethod
    def prefix(cls, run_dir: Path) -> str:
        return f"{STAGE}{run_dir.parent.name}-"

    @classmethod
    def clear_stages(cls, run_dir: Path) -> None:
        for stale in run_dir.parent.parent.glob(cls.prefix(run_dir) + "*"):
            shutil.rmtree(stale, ignore_errors=True)


def trial_run_dir(context: Any) -> tuple[Path, bool]:
    """The trainer's folder, and whether it is in the storage path itself (a local or
    mounted folder: results.json, phases.parquet and the student land there as they are
    written); else it is the trial's working folder, which Tune syncs to the storage URI."""
    import pyarrow.fs

    storage = context.get_storage()
    if isinstance(storage.storage_filesystem, pyarrow.fs.LocalFileSystem):
        return Path(storage.trial_fs_path) / TRIAL_RUN_DIR, True
    return Path(storage.trial_working_directory) / TRIAL_RUN_DIR, False  # the folder Tune syncs


def train_trial(
    config: dict[str, Any],
    spec: SweepSpec,
    teacher_paths: dict[str, str] | None = None,
    shared: dict[str, TeacherOutputs] | None = None,
) -> None:
    """One Tune trial: the sampled {path: value} on the base config, run in the trial folder.

    A restarted trial (retry, or the sweep resumed) continues from its state: the run
    folder's, or the one Tune hands back (also a PBT donor's). One that had ended already
    (its states settled, `kdray.search.states.ENDED`) stops at once.
    """
    import ray
    from ray import tune

    from kdray.training.checkpoint import check_output_dir
    from kdray.training.checkpoint import install as install_checkpoint
    from kdray.training.fine_tune import resolve_teachers
    from kdray.training.trainer import distil

    free_previous_trial()
    context = tune.get_context()
    storage = context.get_storage()
    if has_ended(storage.storage_filesystem, storage.trial_fs_path):
        log.info("trial %s had ended; nothing to run", context.get_trial_id())
        return
    run_dir, local = trial_run_dir(context)
    TuneReporter.clear_stages(run_dir)
    checkpoint = tune.get_checkpoint()  # this trial's last one, or a PBT donor's
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            if (Path(d) / CHECKPOINT).is_file():  # a state, not a marker of the run folder's
                install_checkpoint(Path(d) / CHECKPOINT, run_dir)
            elif (Path(d) / MARKER).is_file():
                marker = json.loads((Path(d) / MARKER).read_text())
                back_to_marked(run_dir, marker, context.get_trial_id())
            else:
                log.warning("trial %s: the checkpoint Tune handed back (%s) holds neither a "
                            "state nor a marker; the trial goes on from its run folder's "
                            "state, if any", context.get_trial_id(), checkpoint.path)  # fmt: skip
    cfg = spec.trial_config({**config, "trainer.output_dir": str(run_dir)})
    if teacher_paths is None:  # teachers or data searched: this trial's own (cached) teachers
        check_output_dir(cfg, allow_mutation=spec.sweep.scheduler == "pbt")
        teacher_paths = resolve_teachers(cfg)
    owner = tune_owns_state(local, spec.sweep.scheduler)
    reporter = TuneReporter(ray.get_runtime_context().get_node_id(), tune_owns=owner)
    distil(cfg, reporter, teacher_outputs=shared, run_id=context.get_trial_id(),
              allow_mutation=spec.sweep.scheduler == "pbt",
              teacher_paths=teacher_paths)  # fmt: skip


#: Tune warns when it snapshots the experiment state more often than this many seconds.
SNAPSHOT_WARNING = "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S"

#: Seconds a reused worker waits for a stopped trial's thread to unwind before Tune gives up
#: reusing it and errors the next trial (Tune's default, 2 s, is short on a busy machine).
THREAD_TIMEOUT_S = "30"


def free_previous_trial() -> None:
    """Tune reuses trial workers (reuse_actors): a worker keeps its imports, so the next trial
    starts in well under a second instead of paying a process start and a torch import. A
    pruned trial ends at its report (Tune stops its thread there); what it held is freed here,
    before the next trial on this worker allocates, GPU cache included."""
    os.environ.setdefault("TUNE_FUNCTION_THREAD_TIMEOUT_S", THREAD_TIMEOUT_S)  # read by Tune
    gc.collect()
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def tune_config(spec: SweepSpec, search_alg: Any, scheduler: Any = None) -> Any:
    """The sweep's TuneConfig (also what benchmarks/sweep.py runs); `scheduler`: one built
    already (default: `create_scheduler`)."""
    from ray import tune

    s = spec.sweep
    return tune.TuneConfig(
        metric=s.metric,
        mode=s.mode,
        num_samples=s.num_samples,
        max_concurrent_trials=s.max_concurrent,
        search_alg=search_alg,
        scheduler=scheduler or create_scheduler(spec),
        time_budget_s=s.time_budget_s,
        reuse_actors=True,  # see free_previous_trial
    )


def run_config(spec: SweepSpec, name: str, storage: str, **overrides: Any) -> Any:
    """The sweep's RunConfig: storage, retries, checkpoints kept (`overrides`: other
    RunConfig fields, e.g. verbose)."""
    from ray import tune

    # Every report is a checkpoint (resume, PBT), so Tune snapshots the experiment state at
    # most once a report, by design; its "snapshotting ... may become a bottleneck" warning
    # advises against that every few seconds. A user's setting wins.
    os.environ.setdefault(SNAPSHOT_WARNING, "0")
    s = spec.sweep
    settings: dict[str, Any] = {
        "name": name,
        "storage_path": storage,
        "failure_config": tune.FailureConfig(max_failures=s.max_failures),
        # the last two (markers, or the states Tune owns: kdray.search.states): the one before
        # the last is what a restored experiment names when the driver died between Tune
        # registering a checkpoint and writing its experiment state; PBT clones checkpoints of
        # other trials, which must not be deleted meanwhile
        "checkpoint_config": tune.CheckpointConfig(num_to_keep=None if s.scheduler == "pbt" else 2),
        # a storage URI gets the trial folders (phase logs, students) by syncing
        "sync_config": tune.SyncConfig(sync_artifacts=is_uri(storage)),
        "callbacks": [
            *tracking.callbacks(spec, f"{storage.rstrip('/')}/{name}"),
            state_callback(spec),
        ],
    }
    return tune.RunConfig(**{**settings, **overrides})


#: Written by `ray up` on the head node: the node types the autoscaler may still start.
AUTOSCALING_CONFIG = "~/ray_bootstrap_config.yaml"


def node_shapes() -> list[dict[str, float]]:
    """Resources of every live node, and of every node type the autoscaler can add."""
    import ray
    import yaml

    shapes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    boot = Path(AUTOSCALING_CONFIG).expanduser()
    if boot.is_file():
        types = (yaml.safe_load(boot.read_text()) or {}).get("available_node_types", {})
        shapes += [t.get("resources", {}) for t in types.values()]
    return shapes


def check_resources(spec: SweepSpec, shapes: list[dict[str, float]], where: str) -> None:
    """A trial that asks for more than any node has would stay PENDING forever. `where`:
    what `shapes` are, for the message ("this machine", "the Ray cluster at ...")."""
    need = spec.sweep.resources
    if not any(r.get("CPU", 0) >= need.cpu and r.get("GPU", 0) >= need.gpu for r in shapes):
        have = ", ".join(f"{r.get('CPU', 0):g} CPU / {r.get('GPU', 0):g} GPU" for r in shapes)
        raise ConfigError(
            f"each trial asks for {need.cpu:g} CPU and {need.gpu:g} GPU, but no node of "
            f"{where} has that (checked: {have}); lower sweep.resources"
        )


def prepare_teachers(
    spec: SweepSpec,
) -> tuple[dict[str, str] | None, dict[str, TeacherOutputs] | None]:
    """Fine-tune (or find) every teacher once; compute their shareable outputs once. None
    where the trials differ in what they would need (their teachers or data are searched):
    then each trial resolves its own teachers (fine-tuned once per recipe, cached)."""
    from kdray.training.build import shared_teacher_outputs
    from kdray.training.fine_tune import resolve_teachers
    from kdray.training.teacher_gate import check_teachers
    from kdray.training.trainer import distil

    base: TrialConfig = spec.base_trial()
    if base.student.init == "pretrained" or any(p.startswith(TEACHERS) for p in spec.search):
        return None, None
    if "data.task" in spec.search:
        return None, None
    paths = resolve_teachers(base, progress=True)
    if not any(p.startswith(REFERENCE_READS) and p != "trainer.seed" for p in spec.search):
        check_teachers(base, paths, distil, progress=True)  # the reference once, up front
    if any(p.startswith(UNSHAREABLE) for p in spec.search):
        return paths, None
    every_role = any(p in spec.search for p in ROLES)
    return paths, shared_teacher_outputs(base, paths, progress=True, every_role=every_role)


def check_data(spec: SweepSpec) -> None:
    """Every task the sweep can run has its GLUE files (when read from a folder, not the hub)."""
    from kdray.data.glue import glue_files, resolve_data_dir

    base = spec.trial_config({})
    data_dir = resolve_data_dir(base.data.data_dir)
    if data_dir is None or base.data.dataset is not None:  # the hub, or your own data
        return
    dim = spec.search.get("data.task")
    for task in dim.candidates() if dim else [base.data.task]:
        glue_files(TASKS[str(task)], data_dir)


def start_tuner(
    spec: SweepSpec,
    target: ray_start.RayTarget,
    resume: str | None,
    retry_errored: bool,
    search_alg: Any,
    scheduler: Any,
    name: str,
    storage: str,
) -> Any:
    """Start or join Ray, prepare the teachers once, and build (or restore) the Tuner."""
    import ray
    from ray import tune

    ray_start.start(target)
    check_resources(spec, node_shapes(), target.describe())  # the nodes Ray has (and may add)
    if spec.sweep.resources.gpu > 0:  # fine-tune and run the teacher on a GPU node, not the head
        gpu_task = ray.remote(num_cpus=spec.sweep.resources.cpu, num_gpus=1)(prepare_teachers)
        teachers, shared = ray.get(gpu_task.remote(spec))
    else:
        teachers, shared = prepare_teachers(spec)
    trainable = tune.with_resources(
        tune.with_parameters(train_trial, spec=spec, teacher_paths=teachers, shared=shared),
        {"cpu": spec.sweep.resources.cpu, "gpu": spec.sweep.resources.gpu},
    )
    if resume:
        return tune.Tuner.restore(
            resume, trainable=trainable, resume_errored=not retry_errored,
            restart_errored=retry_errored,
        )  # fmt: skip
    return tune.Tuner(
        trainable,
        param_space=spec.param_space(),
        tune_config=tune_config(spec, search_alg, scheduler),
        run_config=run_config(spec, name, storage),
    )
