"""The knowledge types: every kind of teacher knowledge kdray can transfer (docs/methods.md §1),
their table (`KNOWLEDGE_TYPES`), the checks a config's `knowledge` section needs, and the
modules a run trains with (`build_knowledge`). `base` holds the interface, `logits`, `layers`
and `relations` the types.

May import: `kdray.base`, `kdray.config`, `kdray.data`, `kdray.models`.

>>> sorted(KNOWLEDGE_TYPES)  # doctest: +NORMALIZE_WHITESPACE
['attention', 'attention_relation', 'contrastive', 'embedding_relation', 'hard', 'hidden',
 'relation', 'sample_relation', 'soft']
"""

from __future__ import annotations

import logging

from torch import nn

from kdray.base.errors import ConfigError, unknown
from kdray.base.registry import name_table
from kdray.config import KnowledgeConfig, StudentConfig
from kdray.data.tasks import TaskSpec
from kdray.knowledge.base import Knowledge, KnowledgeContext
from kdray.knowledge.layers import Attention, Hidden, Relation
from kdray.knowledge.logits import Hard, Soft
from kdray.knowledge.relations import (
    AttentionRelation,
    Contrastive,
    EmbeddingRelation,
    SampleRelation,
)
from kdray.models.features import Needs, Shape

__all__ = [
    "KNOWLEDGE_TYPES",
    "Knowledge",
    "KnowledgeContext",
    "build_knowledge",
    "validate_knowledge",
]

log = logging.getLogger(__name__)

#: `knowledge.types` name -> its class (each class carries its `name`).
KNOWLEDGE_TYPES: dict[str, type[Knowledge]] = name_table(
    Hidden,
    Relation,
    Attention,
    Hard,
    Soft,
    EmbeddingRelation,
    AttentionRelation,
    SampleRelation,
    Contrastive,
)


def validate_knowledge(cfg: KnowledgeConfig, spec: TaskSpec, student: StudentConfig) -> None:
    """Checks that need no model: names, weights, knobs, architecture support."""
    if not cfg.types:
        raise ConfigError("'knowledge.types' is empty; choose at least one of " + _names())
    for name in cfg.types:
        if name not in KNOWLEDGE_TYPES:
            raise unknown("knowledge type", name, KNOWLEDGE_TYPES, "knowledge.types")
    dupes = sorted({n for n in cfg.types if cfg.types.count(n) > 1})
    if dupes:
        raise ConfigError(f"'knowledge.types' lists {', '.join(dupes)} more than once")
    for name, w in cfg.weights.items():
        if name not in cfg.types:
            raise ConfigError(
                f"'knowledge.weights' names '{name}', which is not in knowledge.types "
                f"({', '.join(cfg.types)}); add it to the types or drop its weight"
            )
        if w < 0:
            raise ConfigError(f"'knowledge.weights.{name}' must be >= 0, got {w}")
    for name, sched in cfg.schedules.items():
        where = f"knowledge.schedules.{name}"
        if name not in cfg.types:
            raise ConfigError(
                f"'knowledge.schedules' names '{name}', which is not in knowledge.types "
                f"({', '.join(cfg.types)}); add it to the types or drop its schedule"
            )
        if min(sched.start, sched.start if sched.end is None else sched.end) < 0:
            raise ConfigError(f"'{where}': start and end must be >= 0, got {sched}")
        if not 0.0 < sched.horizon <= 1.0:
            raise ConfigError(
                f"'{where}.horizon' is the fraction of training the weight moves over; it must "
                f"be in (0, 1], got {sched.horizon}"
            )
        if sched.kind == "constant" and sched.end not in (None, sched.start):
            raise ConfigError(
                f"'{where}' is constant but sets end ({sched.end}) apart from start "
                f"({sched.start}); use kind linear or cosine, or drop end"
            )
    if cfg.weights and all(cfg.weights.get(k, 1.0) == 0 for k in cfg.types):
        raise ConfigError(
            "every knowledge type has weight 0 in 'knowledge.weights'; nothing "
            "would be trained. Give at least one a positive weight"
        )
    if not active_types(cfg, spec.is_regression, quiet=True):
        labelled = [n for n in cfg.types if KNOWLEDGE_TYPES[n].needs_labels]
        raise ConfigError(
            f"{', '.join(repr(n) for n in labelled)} {'needs' if len(labelled) == 1 else 'need'} "
            f"class labels and {spec.name} is a regression task; add another knowledge type "
            f"(e.g. hard)"
        )
    if student.init == "pretrained" and set(cfg.types) != {"hard"}:
        raise ConfigError(
            "'student.init: pretrained' fine-tunes the backbone itself, with no "
            "teacher; use knowledge.types: [hard], or init remap / random to distil"
        )
    for cls in KNOWLEDGE_TYPES.values():  # each type owns its knobs; checked whatever is chosen
        cls.check_options(cfg)
    if cfg.label_smoothing and spec.is_regression:
        raise ConfigError(
            f"'knowledge.label_smoothing' smooths class labels and {spec.name} is a regression "
            f"task; set it to 0"
        )
    if student.architecture != "bert":
        bad = [n for n in cfg.types if KNOWLEDGE_TYPES[n].reads_attention]
        if bad:
            raise ConfigError(
                f"knowledge {', '.join(bad)} reads attention internals, which kdray captures "
                f"from BERT students only; use student.architecture: bert or drop them"
            )


def check_shapes(cfg: KnowledgeConfig, student: Shape, teacher: Shape) -> None:
    """Checks that need the two models' shapes (read from configs, before any weights)."""
    per_head = [
        n for n in cfg.types if n in KNOWLEDGE_TYPES and KNOWLEDGE_TYPES[n].needs_equal_heads
    ]
    if per_head and student.heads != teacher.heads:
        raise ConfigError(
            f"knowledge '{per_head[0]}' compares attention maps head by head, but the student "
            f"has {student.heads} heads and the teacher {teacher.heads}; use "
            f"'attention_relation', which works for any head count, or set student.num_heads: "
            f"{teacher.heads}"
        )
    if teacher.architecture != "bert" or student.architecture != "bert":
        bad = [n for n in cfg.types if n in KNOWLEDGE_TYPES and KNOWLEDGE_TYPES[n].reads_attention]
        if bad:
            raise ConfigError(
                f"knowledge {', '.join(bad)} reads attention internals, which kdray captures "
                f"from BERT models only (teacher: {teacher.architecture}, student: "
                f"{student.architecture}); drop them or use BERT models"
            )
    if "attention_relation" in cfg.types and teacher.width % student.heads:
        raise ConfigError(
            f"'attention_relation' splits the teacher width ({teacher.width}) into one group "
            f"per student head ({student.heads}); choose student.num_heads dividing "
            f"{teacher.width}"
        )


def active_types(cfg: KnowledgeConfig, is_regression: bool, quiet: bool = False) -> tuple[str, ...]:
    """The configured types less those undefined for the task (those that need class labels,
    e.g. contrastive, on regression)."""
    if not is_regression:
        return cfg.types
    skipped = [n for n in cfg.types if n in KNOWLEDGE_TYPES and KNOWLEDGE_TYPES[n].needs_labels]
    if not quiet:
        for n in skipped:
            log.warning("knowledge '%s' needs class labels; skipped for regression", n)
    return tuple(n for n in cfg.types if n not in skipped)


def build_knowledge(ctx: KnowledgeContext) -> nn.ModuleDict:
    """One module per active knowledge type, in config order."""
    return nn.ModuleDict(
        {name: KNOWLEDGE_TYPES[name](ctx) for name in active_types(ctx.cfg, ctx.is_regression)}
    )


def needs_of(modules: nn.ModuleDict) -> tuple[Needs, Needs]:
    """Union of what the modules read from the (student, teacher)."""
    s, t = Needs(), Needs()
    for m in modules.values():
        assert isinstance(m, Knowledge)
        s, t = s | m.student_needs, t | m.teacher_needs
    return s, t


def _names() -> str:
    return ", ".join(sorted(KNOWLEDGE_TYPES))
