"""What a trial transfers, and when: the knowledge types and their weights (`knowledge`), the
selector that picks them per phase (`selector`), the per-example teacher weights of a pool
(`teacher_policy`), the stage plan (`stages`) and the counterfactual probes (`probe`). One
frozen dataclass per YAML section, with its defaults and documentation (the `#:` comment above
each field, which the configuration reference prints); `kdray.config.trial` assembles them with
`kdray.config.sections` into a `TrialConfig`.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

__all__ = [
    "KnowledgeConfig",
    "ProbeConfig",
    "ScheduleBucket",
    "SelectorConfig",
    "StageConfig",
    "TeacherPolicyConfig",
    "WeightSchedule",
    "tiles_progress",
]


@dataclass(frozen=True)
class WeightSchedule:
    """A knowledge type's weight over training (DWT's time-varying α_s), read at the
    start of every phase from progress t of the segment: constant `start`, or linear / cosine
    from `start` to `end` over the first `horizon` of training, `end` after it. It multiplies
    the type's `knowledge.weights` entry and the selector's action."""

    #: constant: `start` throughout; linear or cosine: from `start` to `end` over `horizon`.
    kind: Literal["constant", "linear", "cosine"] = "constant"
    #: The weight at the start of the segment (throughout, for constant).
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

    #: The knowledge types the run may transfer (docs/methods.md, section 1); hard is the gold
    #: labels.
    types: tuple[str, ...] = ("hard", "soft", "hidden", "relation")
    #: Static scale w_k per knowledge type (default 1); a key must be one of `types`.
    weights: Mapping[str, float] = field(default_factory=dict)
    #: A weight over training per knowledge type (`WeightSchedule`), multiplying w_k; a key
    #: must be one of `types`. E.g. {soft: {kind: linear, start: 4, end: 1}} (DWT).
    schedules: Mapping[str, WeightSchedule] = field(default_factory=dict)
    #: Distillation temperature τ of soft labels: KL of softmax(z/τ), scaled by τ².
    temperature: float = 2.0
    #: Temperature of the `contrastive` type's InfoNCE.
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

    #: Training progress t/T where the bucket starts (the first bucket starts at 0).
    start: float
    #: Training progress where it ends (the last bucket ends at 1).
    end: float
    #: Knowledge type -> weight a_k while the bucket lasts (a type not named: 0).
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

    #: all, none, vanilla, random_soft, random_hard, schedule or acks (above).
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
    #: schedule: a YAML or JSON file of buckets, instead of `schedule` inline (a probe sweep's
    #: report writes one).
    schedule_file: str | None = None
    # ---- acks
    #: soft: a in [0, 1]^K used as weights; hard: a_k = 1[â_k > threshold], unselected skipped.
    action: Literal["soft", "hard"] = "soft"
    #: acks with action hard: â_k above it selects knowledge type k.
    threshold: float = 0.5
    #: online: the agent learns during the one run; two_stage: E episodes from fresh copies
    #: of the initial student (stage A), then a final run with the frozen actor (stage B).
    mode: Literal["online", "two_stage"] = "online"
    #: two_stage: stage-A episodes E before the final run.
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
    #: acks: width the state encoder projects the student's and teacher's representations to.
    feature_size: int = 32
    #: acks: hidden width of the actor and critic networks.
    hidden_size: int = 64
    #: acks: discount γ of the critic's temporal-difference target.
    gamma: float = 0.9
    #: Soft target-network update rate ρ.
    target_update: float = 0.05
    #: acks: learning rate of the actor (Adam).
    actor_lr: float = 1e-3
    #: acks: learning rate of the critic (Adam).
    critic_lr: float = 1e-3
    #: Std of the Gaussian exploration noise on actions while learning (clipped to [0, 1]).
    exploration_noise: float = 0.2
    #: acks: transitions the replay buffer holds.
    buffer_size: int = 1000
    #: acks: transitions drawn for each agent update.
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

    #: single, average, weighted, rand_single, best_single or rl (above).
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

    #: The stage's name in the phase log and messages. None: stage <i>.
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
