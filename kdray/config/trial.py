"""One distillation trial's configuration (`TrialConfig`) and its validation.

A trial is described by one `TrialConfig`, built from a plain nested dict (YAML, a Ray Tune
sample, a test) through `TrialConfig.from_dict`, which is strict: an unknown key is a
`ConfigError` that names the nearest valid key, and every value is checked before any data is
read or model loaded. Defaults give a small, fast SST-2 distillation from the offline MiniLM
teacher.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from kdray.base.errors import ConfigError
from kdray.base.strict import _build, _plain, dataclass_paths, set_path
from kdray.config.recipes import with_recipe
from kdray.config.sections import (
    DEFAULT_TASK,
    DataConfig,
    StudentConfig,
    TeacherConfig,
    TeacherGateConfig,
    TrainerConfig,
    split_sizes,
)
from kdray.config.selection import (
    KnowledgeConfig,
    ProbeConfig,
    SelectorConfig,
    StageConfig,
    TeacherPolicyConfig,
)

__all__ = [
    "TrialConfig",
    "config_paths",
    "pool_names",
    "validate",
]


@dataclass(frozen=True)
class TrialConfig:
    """One distillation run."""

    #: A named preset (a published method) the rest of the config overrides. None: the
    #: defaults of every section.
    recipe: str | None = None
    data: DataConfig = field(default_factory=DataConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    student: StudentConfig = field(default_factory=StudentConfig)
    knowledge: KnowledgeConfig = field(default_factory=KnowledgeConfig)
    selector: SelectorConfig = field(default_factory=SelectorConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    #: Several teachers (a pool); each section as `teacher`, with a unique `name`. None: the
    #: one `teacher` above.
    teachers: tuple[TeacherConfig, ...] | None = None
    #: The teachers of `teachers` this trial distils from, comma-separated names (e.g.
    #: "full,three"; kept in `teachers` order). None: all of them. A sweep searches pools with
    #: `pool: {choice: ["full", "full,three", ...]}` and still prepares each teacher once.
    pool: str | None = None
    #: Per-example teacher weights (several teachers).
    teacher_policy: TeacherPolicyConfig = field(default_factory=TeacherPolicyConfig)
    #: The run's stage plan. None: one stage of trainer.max_steps, or, for selector.mode
    #: two_stage, selector.episodes learning stages that reset the student and a frozen final
    #: stage (see `kdray.training.stages.plan`).
    stages: tuple[StageConfig, ...] | None = None
    #: The teacher-quality gate (a teacher smaller than its student).
    teacher_gate: TeacherGateConfig = field(default_factory=TeacherGateConfig)
    #: Counterfactual knowledge probes (off by default).
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    #: Cache folder for tokenised data, teachers and teacher outputs. None: $KDRAY_CACHE or
    #: ~/.cache/kdray.
    cache_dir: str | None = None

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any] | None) -> TrialConfig:
        """Strictly build and validate a config from nested plain data (over its recipe's
        preset when it names one)."""
        cfg = _build(cls, with_recipe(raw or {}), "")
        if cfg.data.task is None and cfg.data.dataset is None:  # the default task
            cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, task=DEFAULT_TASK))
        validate(cfg)
        return cfg

    def teacher_list(self, everyone: bool = False) -> tuple[TeacherConfig, ...]:
        """The run's teachers, named: those of `teachers` in `pool` (all of them with
        `everyone`, or without a pool), or the one `teacher` (named "teacher")."""
        if self.teachers is None:
            return (dataclasses.replace(self.teacher, name=self.teacher.name or "teacher"),)
        named = [
            dataclasses.replace(t, name=t.name or f"t{i}") for i, t in enumerate(self.teachers)
        ]
        chosen = None if everyone else pool_names(self.pool)
        return tuple(t for t in named if chosen is None or t.name in chosen)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested data (tuples as lists) that `from_dict` reads back."""
        return _plain(dataclasses.asdict(self))

    def replace(self, **sections: Any) -> TrialConfig:
        """A copy with whole sections or dotted paths replaced, revalidated.

        `cfg.replace(**{"trainer.max_steps": 10})` or `cfg.replace(trainer=TrainerConfig(...))`.
        """
        raw = self.to_dict()
        for path, value in sections.items():
            if dataclasses.is_dataclass(value) and not isinstance(value, type):
                value = _plain(dataclasses.asdict(value))
            set_path(raw, path, value)
        return TrialConfig.from_dict(raw)


def pool_names(pool: str | None) -> list[str] | None:
    """The names in a `pool` string ("a,b" -> ["a", "b"]); None for no pool."""
    return None if pool is None else [n.strip() for n in pool.split(",") if n.strip()]


def config_paths(cls: type | None = None, prefix: str = "") -> list[str]:
    """Every dotted leaf path of a config class (default: TrialConfig), for search-space
    validation and messages."""
    return dataclass_paths(cls or TrialConfig, prefix)


# --------------------------------------------------------------------------------- validation


def _positive(path: str, value: float | None, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if value is None or value <= 0:
        raise ConfigError(f"'{path}' must be > 0, got {value!r}")


def _check_teacher(t: TeacherConfig, where: str, d: DataConfig) -> None:
    _positive(f"{where}.epochs", t.epochs)
    _positive(f"{where}.max_steps", t.max_steps, allow_none=True)
    _positive(f"{where}.batch_size", t.batch_size)
    _positive(f"{where}.learning_rate", t.learning_rate)
    _positive(f"{where}.max_train_examples", t.max_train_examples, allow_none=True)
    _positive(f"{where}.num_layers", t.num_layers, allow_none=True)
    if t.num_layers is not None and t.path is not None:
        raise ConfigError(
            f"'{where}.num_layers' keeps the first layers of a backbone before fine-tuning it, "
            f"and '{where}.path' is a teacher already fine-tuned; drop one of them (a recipe's "
            f"num_layers, e.g. dwt's, is dropped with {where}.num_layers: null)"
        )
    if t.path is None and t.max_train_examples is not None:  # fine-tuned on the same carving
        split_sizes(t.max_train_examples, d, f"{where}.max_train_examples")


def _check_names(names: list[str]) -> None:
    bad = [n for n in names if not re.fullmatch(r"[A-Za-z0-9_-]+", n)]
    if bad:
        raise ConfigError(
            f"teacher name {bad[0]!r} must be letters, digits, '_' or '-' (it names phase-log "
            f"columns and checkpoint keys)"
        )


def _check_teachers(cfg: TrialConfig) -> None:
    """`teacher` (one) or `teachers` (a pool with unique names), never both."""
    if cfg.teachers is None:
        _check_teacher(cfg.teacher, "teacher", cfg.data)
        _check_names([cfg.teacher.name or "teacher"])
        return
    if cfg.teacher != TeacherConfig():
        raise ConfigError(
            "both 'teacher' and 'teachers' are set; give one teacher as 'teacher' or a pool "
            "as 'teachers' (a list of teacher sections with a name each), not both"
        )
    if not cfg.teachers:
        raise ConfigError("'teachers' is empty; list at least one teacher section")
    for i, t in enumerate(cfg.teachers):
        _check_teacher(t, f"teachers[{i}]", cfg.data)
    names = [t.name or "" for t in cfg.teacher_list(everyone=True)]
    _check_names(names)
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(
            f"'teachers' names {', '.join(dupes)} more than once; give every teacher "
            f"a unique 'name'"
        )
    chosen = pool_names(cfg.pool)
    if chosen is not None:
        unknown_names = [n for n in chosen if n not in names]
        if not chosen or unknown_names:
            raise ConfigError(
                f"'pool' {cfg.pool!r} must name teachers of 'teachers' "
                f"({', '.join(names)}), comma-separated"
                + (f"; unknown: {', '.join(unknown_names)}" if unknown_names else "")
            )
        if len(set(chosen)) != len(chosen):
            raise ConfigError(f"'pool' {cfg.pool!r} names a teacher more than once")


def _check_pool_roles(cfg: TrialConfig) -> None:
    """Teacher names that other sections refer to exist in the run's pool."""
    names = [t.name for t in cfg.teacher_list()]
    if cfg.pool is not None and cfg.teachers is None:
        raise ConfigError("'pool' chooses among 'teachers'; there is one 'teacher' here")
    ft = cfg.knowledge.feature_teacher
    if ft is not None and ft not in ("top", "weighted") and ft not in names:
        raise ConfigError(
            f"'knowledge.feature_teacher' must be a teacher of the pool "
            f"({', '.join(map(str, names))}), top or weighted; got {ft!r}"
        )
    tp = cfg.teacher_policy
    if tp.teacher is not None and tp.teacher not in names:
        raise ConfigError(
            f"'teacher_policy.teacher' must be a teacher of the pool "
            f"({', '.join(map(str, names))}); got {tp.teacher!r}"
        )


def _check_stages(cfg: TrialConfig) -> None:
    """A stage plan: positive steps, knowledge from knowledge.types, not with two_stage."""
    if cfg.stages is None:
        return
    if not cfg.stages:
        raise ConfigError("'stages' is empty; list at least one stage or leave it unset")
    if cfg.selector.mode == "two_stage":
        raise ConfigError(
            "'stages' and 'selector.mode: two_stage' both plan the run; write the episodes as "
            "stages with reset_student: true (and a final stage with selector: frozen), or "
            "drop 'stages'"
        )
    for i, st in enumerate(cfg.stages):
        _positive(f"stages[{i}].steps", st.steps, allow_none=True)
        if st.fraction is not None and not 0.0 < st.fraction <= 1.0:
            raise ConfigError(f"'stages[{i}].fraction' must be in (0, 1], got {st.fraction}")
        if st.fraction is not None and st.steps is not None:
            raise ConfigError(
                f"'stages[{i}]' sets both steps ({st.steps}) and fraction ({st.fraction}); keep one"
            )
        if st.selector == "learn" and any(p.selector == "frozen" for p in cfg.stages[:i]):
            raise ConfigError(
                f"'stages[{i}].selector: learn' comes after a frozen stage; a frozen selector "
                f"stays frozen, so put the learning stages first"
            )
        if st.types is not None:
            if not st.types:
                raise ConfigError(f"'stages[{i}].types' is empty; list knowledge types or unset it")
            extra = [k for k in st.types if k not in cfg.knowledge.types]
            if extra:
                raise ConfigError(
                    f"'stages[{i}].types' names {', '.join(extra)}, not in knowledge.types "
                    f"({', '.join(cfg.knowledge.types)}); add them there or drop them here"
                )


def _check_probe(cfg: TrialConfig) -> None:
    pr = cfg.probe
    if pr.every < 0:
        raise ConfigError(f"'probe.every' must be >= 0 phases (0: none), got {pr.every}")
    bad = ", ".join(str(a) for a in pr.at if not 0.0 <= a < 1.0)
    if bad:
        raise ConfigError(f"'probe.at' holds points of training progress in [0, 1), got {bad}")
    _positive("probe.steps", pr.steps, allow_none=True)
    if pr.enabled and "hard" not in cfg.knowledge.types:
        raise ConfigError(
            f"probes compare each knowledge type with hard labels alone, but knowledge.types "
            f"({', '.join(cfg.knowledge.types)}) has no 'hard'; add it, or turn probes off "
            f"(probe.every: 0, probe.at: [])"
        )
    if pr.enabled and set(cfg.knowledge.types) <= {"hard"}:
        raise ConfigError(
            "probes compare knowledge types with hard labels alone, but knowledge.types has "
            "only 'hard'; add the types to probe (e.g. soft, hidden), or turn probes off"
        )


def validate(cfg: TrialConfig) -> None:
    """Structural and numeric checks: what the config alone can tell, no registry read.

    Names checked against registries (task, knowledge types, selector kind and its options)
    are `kdray.training.checks.check_trial`'s, as is data.max_length against the models' positions
    (config.json); shapes that need the teacher are checked in setup.
    """
    d, s, tr = cfg.data, cfg.student, cfg.trainer
    if d.task is not None and d.dataset is not None:
        raise ConfigError(
            f"'data.task' ({d.task}) and 'data.dataset' are both set; a run reads a GLUE task or "
            f"your own dataset: drop one of them"
        )
    _positive("data.max_length", d.max_length)
    if not cfg.teacher_gate.gap >= 0:
        raise ConfigError(f"'teacher_gate.gap' must be >= 0 points, got {cfg.teacher_gate.gap!r}")
    _positive("data.max_train_examples", d.max_train_examples, allow_none=True)
    _positive("data.max_test_examples", d.max_test_examples, allow_none=True)
    if not 0.0 < d.validation_fraction < 0.5:
        raise ConfigError(
            f"'data.validation_fraction' must be in (0, 0.5), got {d.validation_fraction}: the "
            f"validation split drives model selection, the sweep's metric and its schedulers "
            f"(ASHA pruning), so it cannot be empty; use e.g. 0.1"
        )
    if not 0.0 <= d.reward_fraction < 0.5:
        raise ConfigError(f"'data.reward_fraction' must be in [0, 0.5), got {d.reward_fraction}")
    if d.max_train_examples is not None:
        split_sizes(d.max_train_examples, d, "data.max_train_examples")
    _check_teachers(cfg)
    _check_pool_roles(cfg)
    _check_stages(cfg)
    _check_probe(cfg)
    _positive("student.num_layers", s.num_layers)
    _positive("student.hidden_size", s.hidden_size, allow_none=True)
    _positive("student.num_heads", s.num_heads, allow_none=True)
    _positive("student.intermediate_size", s.intermediate_size, allow_none=True)
    if s.hidden_size and s.num_heads and s.hidden_size % s.num_heads:
        raise ConfigError(
            f"'student.num_heads' ({s.num_heads}) must divide 'student.hidden_size' "
            f"({s.hidden_size}); pick a head count that divides the width"
        )
    if s.layer_map is not None and len(s.layer_map) != s.num_layers:
        raise ConfigError(
            f"'student.layer_map' needs one teacher layer per student layer "
            f"({s.num_layers}), got {len(s.layer_map)}"
        )
    if not 0.0 <= s.dropout < 1.0:
        raise ConfigError(f"'student.dropout' must be in [0, 1), got {s.dropout}")
    _positive("trainer.max_steps", tr.max_steps)
    _positive("trainer.batch_size", tr.batch_size)
    _positive("trainer.learning_rate", tr.learning_rate)
    _positive("trainer.eval_every", tr.eval_every)
    _positive("trainer.eval_batch_size", tr.eval_batch_size)
    _positive("trainer.max_grad_norm", tr.max_grad_norm)
    if not 0.0 <= tr.warmup_ratio < 1.0:
        raise ConfigError(f"'trainer.warmup_ratio' must be in [0, 1), got {tr.warmup_ratio}")
    if tr.weight_decay < 0:
        raise ConfigError(f"'trainer.weight_decay' must be >= 0, got {tr.weight_decay}")
