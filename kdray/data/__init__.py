"""The data a run distils on: a GLUE task or your own dataset, tokenised, split and cached.

- `tasks`: the nine GLUE tasks as a table (columns, labels, metrics); imports no torch, so
  checking a name is cheap.
- `glue`: the classic TSV layout (`--data-dir`, `KDRAY_GLUE_DIR`) or `nyu-mll/glue` from the hub.
- `own`: your own dataset (`data.dataset`), read as `datasets.load_dataset` reads it, checked,
  tokenised through `Dataset.map`.
- `specs`: `spec_of`, the task any data config describes (a GLUE row, or your dataset's).
- `tokens`: ragged token storage (`TokenizedSplit`).
- `dataset`: `load_task`: the validation, reward, train and test splits, tokenised and cached.
- `metrics`: accuracy, F1 (binary, macro, micro), Matthews, Pearson, Spearman.

May import: `kdray.base`, `kdray.config`. The names below are imported on first use.
"""

from typing import TYPE_CHECKING

from kdray.base.lazy import lazy_exports

if TYPE_CHECKING:  # the names _EXPORTS re-exports, for type checkers
    from kdray.data.dataset import TaskData, TokenizedSplit, load_task  # noqa: F401
    from kdray.data.glue import read_glue_tsv, resolve_data_dir  # noqa: F401
    from kdray.data.metrics import METRICS, compute_metrics, constant_score  # noqa: F401
    from kdray.data.specs import spec_of  # noqa: F401
    from kdray.data.tasks import TASKS, TaskSpec, get_task  # noqa: F401


_EXPORTS = {
    "kdray.data.dataset": ("TaskData", "TokenizedSplit", "load_task"),
    "kdray.data.glue": ("read_glue_tsv", "resolve_data_dir"),
    "kdray.data.metrics": ("METRICS", "compute_metrics", "constant_score"),
    "kdray.data.specs": ("spec_of",),
    "kdray.data.tasks": ("TASKS", "TaskSpec", "get_task"),
}  # fmt: skip
__all__ = sorted(name for names in _EXPORTS.values() for name in names)
__getattr__ = lazy_exports(__name__, _EXPORTS)
