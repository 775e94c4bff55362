"""The results contract: what one run leaves in its folder, and how to read it back.

A run (`kdray.training.trainer`, `python -m kdray.train`, one sweep trial) writes to its run folder:

    <output_dir>/
        checkpoint.pt     CHECKPOINT: the full training state (resume, PBT); torch.load with
                          weights_only=True. Kept while the run is live: a sweep deletes an
                          ended trial's (`kdray.search.states`, `sweep.keep`), as `kdray.run_trial`
                          does an ended run's; at a storage URI or under PBT a sweep trial's
                          is in Tune's checkpoint folder instead
        checkpoint.prev.pt
                          PREV_CHECKPOINT: the one before, resumed from when checkpoint.pt
                          cannot be read
        ended.json        a sweep trial whose states were settled at its end: its status, the
                          states removed (`kdray.search.states.ENDED`)
        results.json      RESULTS: the run's outcome (status, steps, validation and test
                          metrics, ...), written once when the run ends
        phases.parquet    PHASE_LOG: the phase log, one row per selector phase (schema below),
                          rewritten atomically at every checkpoint
        probes.parquet    PROBES: the counterfactual knowledge probes, one row per probe arm
                          (`kdray.training.probes`; only runs with probes), rewritten with the
                          phase log
        predictions.parquet
                          PREDICTIONS: the final student's prediction on every test (GLUE dev)
                          example: split, example (index in the split), label, prediction;
                          paired method comparisons read it (`kdray.analysis.compare`)
        student/          STUDENT_DIR: the final student in Hugging Face format
                          (trainer.save_student)

A sweep trial's run folder is `<experiment>/<trial>/run/` (TRIAL_RUN_DIR). Readers of run
folders (`kdray.analysis`, `kdray.sweep`) go through this module, never through the trainer.

Phase log columns (one row per phase; fixed columns first, then one pair per knowledge type):

    =============== ======= ===============================================================
    column          type    meaning
    =============== ======= ===============================================================
    run_id          str     the run (a sweep's trial id)
    selector        str     selector.kind
    stage           int     index of the stage of the run's plan the phase belongs to
    episode         int     segment index (stage-A episodes of two-stage ACKS, then final)
    final           bool    the phase is in the last segment (the evaluated student)
    phase           int     phase index within the run
    step            int     student step at the end of the phase, within its segment
    progress        float   training progress t/T at the end of the phase
    progress_start  float   training progress t/T at the start of the phase
    reward          float   the selector's reward for the phase (NaN: none)
    q_value         float   the critic's value of the phase's action (NaN: no critic)
    reward_loss     float   reward-split loss after the phase (NaN: not measured)
    reward_drop     float   reward-split loss before minus after the phase (NaN: not measured)
    val_metric      float   validation main metric at the phase's end (NaN: no evaluation)
    w_<type>        float   the weight a_k·w_k of knowledge <type> during the phase
    loss_<type>     float   mean loss of knowledge <type> over the phase (NaN: not computed)
    tw_<teacher>    float   a pool's runs: the mean weight the teacher policy gave <teacher>
                            over the phase's examples (NaN: no teacher output read)
    tp_reward       float   teacher policy rl: mean reward of the phase's update (NaN: none)
    tp_baseline     float   teacher policy rl: the mean baseline the update used
    =============== ======= ===============================================================

A selector may add columns of its own (`Selector.log_fields`), as may the teacher policy
(`kdray.teacher_policy`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import pandas as pd

#: Where sweeps (STORAGE/NAME) and single runs (RUNS_DIR/<name>_<time>) go by default.
RESULTS_ROOT = "~/kdray_results"
#: The folder of RESULTS_ROOT that holds single runs (`kdray.run_trial`, `python -m kdray.train`).
RUNS_DIR = "runs"
#: The training state of a run, in its run folder.
CHECKPOINT = "checkpoint.pt"
#: The checkpoint before CHECKPOINT (kept at every save), in its run folder.
PREV_CHECKPOINT = "checkpoint.prev.pt"
#: The outcome of a run, in its run folder.
RESULTS = "results.json"
#: The run's complete trial config (every key, defaults filled in), written when it starts.
RUN_CONFIG = "config.yaml"
#: The phase log of a run, in its run folder.
PHASE_LOG = "phases.parquet"
#: The counterfactual knowledge probes of a run, in its run folder.
PROBES = "probes.parquet"
#: The probe arm every other arm is compared with, and the arm of the run's own weights.
PROBE_CONTROL, PROBE_CURRENT = "control", "current"
#: The final student's per-example test predictions, in its run folder.
PREDICTIONS = "predictions.parquet"
#: The final student (Hugging Face format), in its run folder.
STUDENT_DIR = "student"
#: A sweep trial's run folder, inside the trial's folder.
TRIAL_RUN_DIR = "run"

#: The phase log's fixed columns, in order (see the module docstring).
PHASE_COLUMNS = (
    "run_id",
    "selector",
    "stage",
    "episode",
    "final",
    "phase",
    "step",
    "progress",
    "progress_start",
    "reward",
    "q_value",
    "reward_loss",
    "reward_drop",
    "val_metric",
)
#: Prefixes of the per-knowledge-type columns: w_<type> (weight), loss_<type> (mean loss).
WEIGHT_PREFIX = "w_"
LOSS_PREFIX = "loss_"
#: Prefix of the per-teacher columns of a pool's runs: tw_<teacher> (mean weight).
TEACHER_PREFIX = "tw_"


def read_results(run_dir: str | Path, fs: Any = None) -> dict[str, Any]:
    """The results.json of a run folder as a dict.

    `fs`: a pyarrow filesystem holding `run_dir` (a storage URI's); None: the local disk.
    FileNotFoundError when the run has not finished; ValueError when the file is not JSON.
    """
    path = f"{run_dir}/{RESULTS}"
    if fs is None:
        text = Path(path).read_text()
    else:
        with fs.open_input_stream(path) as f:
            text = f.read().decode()
    data = json.loads(text)
    if not isinstance(data, dict):
        raise ValueError(f"{path} holds {type(data).__name__}, not a mapping")
    return data


def read_phase_log(path: str | Path, fs: Any = None) -> pd.DataFrame:
    """A phase log (a run folder's phases.parquet, or the file itself) as a DataFrame.

    `fs`: a pyarrow filesystem holding `path` (a storage URI's); None: the local disk.
    FileNotFoundError when there is none (yet).
    """
    path = str(path)
    if not path.endswith(".parquet"):
        path = f"{path}/{PHASE_LOG}"
    return read_table(path, fs)


def read_table(path: str, fs: Any = None) -> pd.DataFrame:
    """A Parquet file of a run folder (local, or in `fs`, a pyarrow filesystem) as a DataFrame;
    FileNotFoundError when there is none (yet)."""
    import pandas as pd

    if fs is None:
        if not Path(path).is_file():
            raise FileNotFoundError(path)
        return pd.read_parquet(path)
    with fs.open_input_file(path) as f:
        return pd.read_parquet(f)


def knowledge_types(phases: pd.DataFrame) -> list[str]:
    """The knowledge types a phase log records (from its w_<type> columns), in column order."""
    return [c[len(WEIGHT_PREFIX) :] for c in phases.columns if c.startswith(WEIGHT_PREFIX)]


# ------------------------------------------------------------------------------- one run


class Reporter(Protocol):
    """Where evaluation results go: Ray's tune.report in a sweep, a list in tests."""

    def report(self, metrics: dict[str, Any], checkpoint_dir: str | None = None) -> None: ...


class ListReporter:
    """Keeps every report in memory."""

    def __init__(self) -> None:
        self.results: list[dict[str, Any]] = []

    def report(self, metrics: dict[str, Any], checkpoint_dir: str | None = None) -> None:
        self.results.append(dict(metrics))


@dataclass
class RunResult:
    """The outcome of one run, also written to output_dir/results.json."""

    status: str  # "finished" | "diverged"
    steps: int
    validation: dict[str, float]
    test: dict[str, dict[str, float]]
    main_metric: str
    wall_s: float
    output_dir: str
    student_dir: str | None = None
    #: The (first) teacher's folder, and every teacher's by name.
    teacher: str | None = None
    teachers: dict[str, str] = field(default_factory=dict)
    teacher_cache: str = "off"  # "off" | "cached" | "live (over budget)"
    history: list[dict[str, Any]] = field(default_factory=list)
    #: The teacher-quality gate (kdray.training.teacher_gate): each checked teacher's validation
    #: score and its gap in points below a hard-only student of the run's shape. None: not checked.
    teacher_gap: dict[str, Any] | None = None
    #: Counterfactual probes (kdray.training.probes): rows, probe steps and seconds, and their
    #: overhead against the run's own steps and time. None: the run did not probe.
    probes: dict[str, Any] | None = None

    @property
    def test_score(self) -> float:
        """The main metric on the (first) test split."""
        first = next(iter(self.test.values()), {})
        return float(first.get(self.main_metric, float("nan")))


def write_predictions(run_dir: str | Path, splits: dict[str, tuple[Any, Any]]) -> None:
    """PREDICTIONS of a finished run, written atomically: per test split name, (labels (N,),
    predictions (N,)) as numpy-convertible arrays."""
    import numpy as np
    import pandas as pd

    from kdray.base.io import atomic_path

    frames = [
        pd.DataFrame({"split": name, "example": np.arange(len(labels)),
                      "label": np.asarray(labels), "prediction": np.asarray(preds)})
        for name, (labels, preds) in splits.items()
    ]  # fmt: skip
    with atomic_path(Path(run_dir) / PREDICTIONS) as tmp:
        pd.concat(frames, ignore_index=True).to_parquet(tmp, index=False)


def write_run_config(run_dir: str | Path, config: dict[str, Any]) -> None:
    """`config.yaml`: the run's complete trial config (rerun it with `kdray.train --config`)."""
    import yaml

    from kdray.base.io import atomic_write_text

    atomic_write_text(Path(run_dir) / RUN_CONFIG, yaml.safe_dump(config, sort_keys=False))


def write_results(run_dir: str | Path, result: RunResult) -> None:
    """`results.json` of a finished (or diverged) run, written atomically."""
    from kdray.base.io import atomic_write_text

    atomic_write_text(Path(run_dir) / RESULTS, json.dumps(asdict(result), indent=2))
