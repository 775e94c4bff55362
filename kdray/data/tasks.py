"""The GLUE task table: each task as data (`TaskSpec`), by name in `TASKS`.

Kept apart from the loaders in `kdray.data.dataset` and free of torch, pandas and numpy, so that
checking a task name (config checks, sweep files) is cheap.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kdray.base.errors import unknown


@dataclass(frozen=True)
class TaskSpec:
    """One GLUE task, as data: where its files are, which columns hold what, how it is scored."""

    #: Short name, the `data.task` value: "sst2".
    name: str
    #: Folder name in the GLUE layout: "SST-2".
    glue_dir: str
    #: Config name of the `nyu-mll/glue` hub dataset: "sst2".
    hub_config: str
    #: TSV header names of the text column(s) (1, or 2 for sentence pairs).
    text_columns: tuple[str, ...]
    #: TSV label column name.
    label_column: str
    #: Hub column names of the text(s), in the order of `text_columns`.
    hub_text_columns: tuple[str, ...]
    #: TSV label strings in label-id order (= the hub's ClassLabel order); () for regression.
    labels: tuple[str, ...]
    is_regression: bool
    #: Names of `kdray.data.metrics.METRICS` reported for this task.
    metrics: tuple[str, ...]
    #: The metric used for model selection and as the sweep's objective.
    main_metric: str
    #: Test split name -> TSV file name (the GLUE dev file(s), whose labels are public).
    test_splits: dict[str, str]
    #: Test split name -> hub split name.
    hub_test_splits: dict[str, str]
    #: False for header-less files (CoLA).
    header: bool = True
    #: Column names given to header-less files.
    column_names: tuple[str, ...] | None = None
    #: Your own dataset's description (path, name, data_files, revision, sha256 of the
    #: content); None for a GLUE task.
    source: Mapping[str, Any] | None = None

    @property
    def num_labels(self) -> int:
        """Output width of a model for this task: 1 for regression, else the class count."""
        return 1 if self.is_regression else len(self.labels)

    @property
    def id2label(self) -> dict[int, str]:
        """Output index -> readable class name (the hub's ClassLabel names), for a model's
        config.json: what `transformers.pipeline` prints."""
        if self.is_regression:
            return {0: "score"}
        names = LABEL_NAMES.get(self.name, self.labels) if self.source is None else self.labels
        return dict(enumerate(names))

    @property
    def split_files(self) -> dict[str, str]:
        """Every split this loader reads -> TSV file name: "train" then the test split(s)."""
        return {"train": "train.tsv", **self.test_splits}


_DEV = {"dev": "dev.tsv"}
_HUB_DEV = {"dev": "validation"}
_BINARY = ("0", "1")
_PAIR = ("sentence1", "sentence2")

#: Readable class names in label-id order (the hub's ClassLabel names), where the TSV labels
#: are bare ids.
LABEL_NAMES: dict[str, tuple[str, ...]] = {
    "cola": ("unacceptable", "acceptable"),
    "sst2": ("negative", "positive"),
    "mrpc": ("not_equivalent", "equivalent"),
    "qqp": ("not_duplicate", "duplicate"),
    "wnli": ("not_entailment", "entailment"),
}

#: Every GLUE task by its short name.
TASKS: dict[str, TaskSpec] = {
    spec.name: spec
    for spec in (
        TaskSpec(
            name="cola",
            glue_dir="CoLA",
            hub_config="cola",
            text_columns=("sentence",),
            label_column="label",
            hub_text_columns=("sentence",),
            labels=_BINARY,
            is_regression=False,
            metrics=("matthews",),
            main_metric="matthews",
            test_splits=_DEV,
            hub_test_splits=_HUB_DEV,
            header=False,
            column_names=("source", "label", "mark", "sentence"),
        ),
        TaskSpec(
            name="sst2",
            glue_dir="SST-2",
            hub_config="sst2",
            text_columns=("sentence",),
            label_column="label",
            hub_text_columns=("sentence",),
            labels=_BINARY,
            is_regression=False,
            metrics=("accuracy",),
            main_metric="accuracy",
            test_splits=_DEV,
            hub_test_splits=_HUB_DEV,
        ),
        TaskSpec(
            name="mrpc",
            glue_dir="MRPC",
            hub_config="mrpc",
            text_columns=("#1 String", "#2 String"),
            label_column="Quality",
            hub_text_columns=_PAIR,
            labels=_BINARY,
            is_regression=False,
            metrics=("f1", "accuracy"),
            main_metric="f1",
            test_splits=_DEV,
            hub_test_splits=_HUB_DEV,
        ),
        TaskSpec(
            name="stsb",
            glue_dir="STS-B",
            hub_config="stsb",
            text_columns=_PAIR,
            label_column="score",
            hub_text_columns=_PAIR,
            labels=(),
            is_regression=True,
            metrics=("pearson", "spearman"),
            main_metric="pearson",
            test_splits=_DEV,
            hub_test_splits=_HUB_DEV,
        ),
        TaskSpec(
            name="qqp",
            glue_dir="QQP",
            hub_config="qqp",
            text_columns=("question1", "question2"),
            label_column="is_duplicate",
            hub_text_columns=("question1", "question2"),
            labels=_BINARY,
            is_regression=False,
            metrics=("f1", "accuracy"),
            main_metric="f1",
            test_splits=_DEV,
            hub_test_splits=_HUB_DEV,
        ),
        TaskSpec(
            name="mnli",
            glue_dir="MNLI",
            hub_config="mnli",
            text_columns=_PAIR,
            label_column="gold_label",
            hub_text_columns=("premise", "hypothesis"),
            labels=("entailment", "neutral", "contradiction"),
            is_regression=False,
            metrics=("accuracy",),
            main_metric="accuracy",
            test_splits={"dev_matched": "dev_matched.tsv", "dev_mismatched": "dev_mismatched.tsv"},
            hub_test_splits={
                "dev_matched": "validation_matched",
                "dev_mismatched": "validation_mismatched",
            },
        ),
        TaskSpec(
            name="qnli",
            glue_dir="QNLI",
            hub_config="qnli",
            text_columns=("question", "sentence"),
            label_column="label",
            hub_text_columns=("question", "sentence"),
            labels=("entailment", "not_entailment"),
            is_regression=False,
            metrics=("accuracy",),
            main_metric="accuracy",
            test_splits=_DEV,
            hub_test_splits=_HUB_DEV,
        ),
        TaskSpec(
            name="rte",
            glue_dir="RTE",
            hub_config="rte",
            text_columns=_PAIR,
            label_column="label",
            hub_text_columns=_PAIR,
            labels=("entailment", "not_entailment"),
            is_regression=False,
            metrics=("accuracy",),
            main_metric="accuracy",
            test_splits=_DEV,
            hub_test_splits=_HUB_DEV,
        ),
        TaskSpec(
            name="wnli",
            glue_dir="WNLI",
            hub_config="wnli",
            text_columns=_PAIR,
            label_column="label",
            hub_text_columns=_PAIR,
            labels=_BINARY,
            is_regression=False,
            metrics=("accuracy",),
            main_metric="accuracy",
            test_splits=_DEV,
            hub_test_splits=_HUB_DEV,
        ),
    )
}


def get_task(name: str) -> TaskSpec:
    """The spec of task `name`; ConfigError naming the valid tasks when it is unknown."""
    if name not in TASKS:
        raise unknown("task", name, TASKS, "data.task")
    return TASKS[name]
