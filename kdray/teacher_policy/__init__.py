"""Teacher policies: how much each teacher of a pool teaches each example (RL-KD).

The table `POLICIES` (`teacher_policy.kind` -> class), validation and construction. The
interface and every kind's weights are in `kdray.teacher_policy.base`, `.fixed` and `.rl`; what
the trainer hands a policy (`policy_context`, `rescorer`) is `kdray.training.policy_wiring`'s.

May import: `kdray.base`, `kdray.config`, `kdray.models`, `kdray.selector`.
"""

from __future__ import annotations

from kdray.base.errors import ConfigError, unknown
from kdray.base.registry import name_table
from kdray.config import TrialConfig
from kdray.teacher_policy.base import (
    BatchView,
    PolicyContext,
    Rescore,
    TeacherPolicy,
    auroc,
    gold_loss,
    kd_loss,
)
from kdray.teacher_policy.fixed import Average, BestSingle, RandSingle, Single, Weighted
from kdray.teacher_policy.rl import RL

__all__ = ["POLICIES", "BatchView", "PolicyContext", "Rescore", "TeacherPolicy", "auroc",
           "build_policy", "gold_loss", "kd_loss", "measures_reward_split",
           "validate_teacher_policy"]  # fmt: skip

#: `teacher_policy.kind` -> its class.
POLICIES: dict[str, type[TeacherPolicy]] = name_table(
    Single, Average, Weighted, RandSingle, BestSingle, RL
)


def validate_teacher_policy(cfg: TrialConfig) -> None:
    """Every teacher-policy check that needs no data or model."""
    tp = cfg.teacher_policy
    if tp.kind not in POLICIES:
        raise unknown("teacher policy kind", tp.kind, POLICIES, "teacher_policy.kind")
    if tp.teacher is not None and tp.kind != "single":
        raise ConfigError(
            f"'teacher_policy.teacher' is only read by teacher_policy.kind: single (kind is "
            f"{tp.kind}); drop it or use kind single"
        )
    if tp.lr <= 0:
        raise ConfigError(f"'teacher_policy.lr' must be > 0, got {tp.lr}")
    if not 0.0 <= tp.baseline_decay < 1.0:
        raise ConfigError(
            f"'teacher_policy.baseline_decay' must be in [0, 1), got {tp.baseline_decay}"
        )
    if tp.warmup_phases is not None and tp.warmup_phases < 0:
        raise ConfigError(f"'teacher_policy.warmup_phases' must be >= 0, got {tp.warmup_phases}")
    if tp.hidden_size < 0:
        raise ConfigError(f"'teacher_policy.hidden_size' must be >= 0, got {tp.hidden_size}")
    if tp.reward_examples is not None and tp.reward_examples <= 0:
        raise ConfigError(
            f"'teacher_policy.reward_examples' must be > 0 or unset, got {tp.reward_examples}"
        )
    POLICIES[tp.kind].validate(cfg)


def build_policy(cfg: TrialConfig, ctx: PolicyContext) -> TeacherPolicy:
    """The teacher policy `teacher_policy.kind` names, seeded by `teacher_policy.seed` (else
    `trainer.seed`)."""
    seed = cfg.teacher_policy.seed if cfg.teacher_policy.seed is not None else cfg.trainer.seed
    return POLICIES[cfg.teacher_policy.kind](cfg.teacher_policy, ctx, seed)


def measures_reward_split(cfg: TrialConfig) -> bool:
    """The policy is rewarded on the reward split (r3): the trainer measures it each phase."""
    tp = cfg.teacher_policy
    return tp.kind == "rl" and tp.reward == "r3" and len(cfg.teacher_list()) > 1
