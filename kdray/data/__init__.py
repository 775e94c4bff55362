"""GLUE data: the task table, reading the files (or the hub), tokenising, splits, metrics.

- `tasks`: the nine GLUE tasks as a table (columns, labels, metrics); imports no torch, so
  checking a name is cheap.
- `glue`: the classic TSV layout (`--data-dir`, `KDRAY_GLUE_DIR`) or `nyu-mll/glue` from the hub.
- `dataset`: `load_task`: the validation, reward, train and dev splits, tokenised and cached.
- `metrics`: GLUE's metrics (accuracy, F1, Matthews, Pearson, Spearman).

May import: `kdray.base`, `kdray.config`. The names below are imported on first use.
"""

from typing import TYPE_CHECKING

from kdray.base.lazy import lazy_exports

if TYPE_CHECKING:
    from kdray.data.dataset import TaskData, TokenizedSplit, load_task
    from kdray.data.glue import read_glue_tsv, resolve_data_dir
    from kdray.data.metrics import METRICS, compute_metrics, constant_score
    from kdray.data.tasks import TASKS, TaskSpec, get_task

__all__ = [
    "METRICS",
    "TASKS",
    "TaskData",
    "TaskSpec",
    "TokenizedSplit",
    "compute_metrics",
    "constant_score",
    "get_task",
    "load_task",
    "read_glue_tsv",
    "resolve_data_dir",
]

__getattr__ = lazy_exports(__name__, {
    "kdray.data.dataset": ("TaskData", "TokenizedSplit", "load_task"),
    "kdray.data.glue": ("read_glue_tsv", "resolve_data_dir"),
    "kdray.data.metrics": ("METRICS", "compute_metrics", "constant_score"),
    "kdray.data.tasks": ("TASKS", "TaskSpec", "get_task"),
})  # fmt: skip
