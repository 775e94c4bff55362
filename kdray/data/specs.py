"""The task a config's data describes: a GLUE row of `kdray.data.tasks.TASKS`, or your own
dataset described by `kdray.data.own` (read once per process, only when it is asked for)."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from kdray.data.glue import resolve_data_dir
from kdray.data.tasks import TaskSpec, get_task

if TYPE_CHECKING:
    from kdray.config import DataConfig


def spec_of(data: DataConfig) -> TaskSpec:
    """`data.task`'s row, or `data.dataset` read and checked (DataError on bad data)."""
    if data.dataset is None:
        assert data.task is not None  # TrialConfig.from_dict sets the default task
        return get_task(data.task)
    from kdray.data.own import describe

    return describe(data.dataset)


def data_identity(data: DataConfig) -> dict[str, Any]:
    """The data settings as cache keys read them: the GLUE folder resolved; your own dataset
    by its content, columns, labels and problem rather than its file names."""
    out = dataclasses.asdict(data)
    source = resolve_data_dir(data.data_dir)
    out["data_dir"] = str(source) if source else None
    if data.dataset is None:
        out.pop("dataset")  # GLUE keys stay as they were before datasets existed
    else:
        spec = spec_of(data)
        out["data_dir"] = None  # the GLUE folder plays no part
        out["dataset"] = {
            **{k: v for k, v in out["dataset"].items() if k not in ("path", "data_files")},
            "content": dict(spec.source or {}).get("sha256"),
            "labels": list(spec.labels),
            "regression": spec.is_regression,
        }
    return out
