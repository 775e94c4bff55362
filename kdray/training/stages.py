"""A run's stage plan: which steps use which knowledge, what resets, when the selector learns.

A run is a list of stages. Each has its steps, the knowledge types it may use, whether it
starts again from the initial student (`reset_student`), whether it gets a fresh optimiser
and learning-rate schedule (`reset_optimizer`) and whether the selector learns or is frozen.
A stage that resets the student opens a new *segment*; the data order, the phases, progress
t/T and the student step count run over a segment, and only the last segment's student is
validated, reported and kept. So:

- one plain run: one stage of trainer.max_steps (one segment);
- ACKS two-stage (selector.mode: two_stage): E learning stages of episode_steps that reset
  the student (E segments: the stage-A episodes), then a frozen final stage that resets it;
- a two-stage recipe without reset (MLKD): two stages in one segment, e.g. `hidden` +
  `attention_relation` then `soft` + `hard`.
"""

from __future__ import annotations

from dataclasses import dataclass

from kdray.config import StageConfig, TrialConfig


@dataclass(frozen=True)
class Stage:
    """One stage as the trainer runs it."""

    index: int
    name: str
    steps: int
    #: Knowledge types it may use (the others get weight 0 and are not computed).
    types: frozenset[str]
    reset_student: bool
    reset_optimizer: bool
    learn: bool
    #: Segment number; the data order of segment s < last is seeded trainer.seed + 1000(s+1).
    segment: int
    #: In the last segment (validated, reported, kept).
    final: bool
    #: Steps of its segment before it, and the segment's total steps.
    start: int
    segment_steps: int
    #: Steps from this stage's optimiser reset to the next (the schedule's length).
    lr_steps: int
    #: Phases in its segment (a stage's end also ends a phase).
    segment_phases: int

    @property
    def end(self) -> int:
        """The segment step at which the stage ends."""
        return self.start + self.steps


def stage_configs(cfg: TrialConfig) -> tuple[StageConfig, ...]:
    """The configured stages, or the ones selector.mode implies."""
    if cfg.stages is not None:
        return cfg.stages
    sel, tr = cfg.selector, cfg.trainer
    if sel.mode == "two_stage":
        episode = StageConfig(
            steps=sel.episode_steps or tr.max_steps, reset_student=True, selector="learn"
        )
        episodes = tuple(
            StageConfig(**{**episode.__dict__, "name": f"episode {e + 1}"})
            for e in range(sel.episodes)
        )
        return (*episodes, StageConfig(name="final", reset_student=True, selector="frozen"))
    return (StageConfig(name="train"),)


def stage_steps(st: StageConfig, max_steps: int) -> int:
    """A stage's steps: its own, its fraction of trainer.max_steps, or all of them."""
    if st.steps is not None:
        return st.steps
    if st.fraction is not None:
        return max(1, round(st.fraction * max_steps))
    return max_steps


def plan(cfg: TrialConfig, types: tuple[str, ...]) -> tuple[Stage, ...]:
    """The run's stages, with segments and schedule lengths worked out. `types`: the run's
    active knowledge types (a stage's `types` narrows them)."""
    raw = stage_configs(cfg)
    steps = [stage_steps(st, cfg.trainer.max_steps) for st in raw]
    segment_of, seg = [], -1
    for i, st in enumerate(raw):
        seg += i == 0 or st.reset_student
        segment_of.append(seg)

    def opens_lr_schedule(j: int) -> bool:
        return j == 0 or raw[j].reset_optimizer or raw[j].reset_student

    out = []
    for i, st in enumerate(raw):
        same = [j for j in range(len(raw)) if segment_of[j] == segment_of[i]]
        first = max(j for j in same if j <= i and (j == same[0] or opens_lr_schedule(j)))
        end = min([j for j in same if j > i and opens_lr_schedule(j)] + [same[-1] + 1])
        out.append(
            Stage(
                index=i,
                name=st.name or f"stage {i + 1}",
                steps=steps[i],
                types=frozenset(types if st.types is None else [t for t in st.types if t in types]),
                reset_student=st.reset_student,
                reset_optimizer=opens_lr_schedule(i),
                learn=st.selector == "learn",
                segment=segment_of[i],
                final=segment_of[i] == segment_of[-1],
                start=sum(steps[j] for j in same if j < i),
                segment_steps=sum(steps[j] for j in same),
                lr_steps=sum(steps[first:end]),
                segment_phases=sum(-(-steps[j] // cfg.selector.phase_length) for j in same),
            )
        )
    return tuple(out)
