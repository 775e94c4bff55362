"""Across a sweep's trials: which knowledge types help at which training steps.

    from kdray.analysis import load_sweep, knowledge_by_phase, export_schedule
    sweep = load_sweep("~/kdray_results/quickstart")        # or "s3://bucket/kdray/quickstart"
    sweep.trials, sweep.history, sweep.phases               # tidy pandas tables
    table = knowledge_by_phase(sweep, buckets=(0, 0.25, 0.5, 0.75, 1))
    export_schedule(table, "schedule.yaml")                 # replay: selector.kind schedule
    teacher_by_phase(sweep)                                 # multi-teacher pools: who, when
    compare(sweep, "acks", "all")                           # two methods, paired over seeds

- `tables`: a sweep read into pandas tables (`load_sweep`), the leaderboard, the best trial.
- `phases`: knowledge (and teachers) by training phase, the schedule export.
- `methods`: methods side by side, paired over seeds (`methods_table`, `compare`).
- `stats`: paired intervals over seeds and examples, their verdict (imported by name: it
  needs torch); `calibration`: how often each interval is wrong between equal methods.
- `prune`: the keep rules (`sweep.keep`) over a sweep on disk (`prune_sweep`).
- `report`: the report `python -m kdray.analyze` writes (figures, tables, Markdown or HTML);
  `replay`: the trial config and command that replay a probe sweep's schedule.

May import: `kdray.base`, `kdray.config`, `kdray.data`, and (inside functions) the sweep
folder of `kdray.search` and the selector table. Reads run folders; never imports the trainer.
"""

from kdray.analysis.methods import (
    METHOD_PATHS,
    SEED_PATH,
    aligned_predictions,
    compare,
    knowledge_by_method,
    method_path,
    methods_table,
)
from kdray.analysis.phases import (
    POLICY_COLUMNS,
    TEACHER_COLUMNS,
    check_buckets,
    export_schedule,
    knowledge_by_phase,
    no_phase_logs,
    policy_reward_by_phase,
    teacher_by_phase,
    teacher_names,
)
from kdray.analysis.prune import Pruned, prune_sweep
from kdray.analysis.tables import (
    DEFAULT_BUCKETS,
    STATUSES,
    AnalysisError,
    Sweep,
    best_trial,
    describe_statuses,
    leaderboard,
    load_sweep,
    param_importance,
    print_summary,
    student_path,
    trial_status,
)
from kdray.base.results import knowledge_types

__all__ = [
    "DEFAULT_BUCKETS",
    "METHOD_PATHS",
    "POLICY_COLUMNS",
    "SEED_PATH",
    "STATUSES",
    "TEACHER_COLUMNS",
    "AnalysisError",
    "Pruned",
    "Sweep",
    "aligned_predictions",
    "best_trial",
    "check_buckets",
    "compare",
    "describe_statuses",
    "export_schedule",
    "knowledge_by_method",
    "knowledge_by_phase",
    "knowledge_types",
    "leaderboard",
    "load_sweep",
    "method_path",
    "methods_table",
    "no_phase_logs",
    "param_importance",
    "policy_reward_by_phase",
    "print_summary",
    "prune_sweep",
    "student_path",
    "teacher_by_phase",
    "teacher_names",
    "trial_status",
]
