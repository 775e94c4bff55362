"""Teacher policies: kind -> class table, validation, construction, and what the trainer
hands them (`policy_context`, `rescorer`). The interface and every kind's weights are in
`kdray.teacher_policy.base`, `.fixed` and `.rl`."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from kdray.config import TrialConfig
from kdray.errors import ConfigError, unknown
from kdray.features import Needs
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

if TYPE_CHECKING:
    from kdray.build import Setup
    from kdray.data import TokenizedSplit

__all__ = ["POLICIES", "BatchView", "PolicyContext", "Rescore", "TeacherPolicy", "auroc",
           "build_policy", "gold_loss", "kd_loss", "measures_reward_split", "policy_context",
           "rescorer", "teacher_scores", "validate_teacher_policy"]  # fmt: skip

POLICIES: dict[str, type[TeacherPolicy]] = {
    c.kind: c for c in (Single, Average, Weighted, RandSingle, BestSingle, RL)
}


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
    if tp.warmup_phases < 0:
        raise ConfigError(f"'teacher_policy.warmup_phases' must be >= 0, got {tp.warmup_phases}")
    if tp.hidden_size < 0:
        raise ConfigError(f"'teacher_policy.hidden_size' must be >= 0, got {tp.hidden_size}")
    if tp.reward_examples is not None and tp.reward_examples <= 0:
        raise ConfigError(
            f"'teacher_policy.reward_examples' must be > 0 or unset, got {tp.reward_examples}"
        )
    POLICIES[tp.kind].validate(cfg)


def build_policy(cfg: TrialConfig, ctx: PolicyContext) -> TeacherPolicy:
    seed = cfg.teacher_policy.seed if cfg.teacher_policy.seed is not None else cfg.trainer.seed
    return POLICIES[cfg.teacher_policy.kind](cfg.teacher_policy, ctx, seed)


def measures_reward_split(cfg: TrialConfig) -> bool:
    """The policy is rewarded on the reward split (r3): the trainer measures it each phase."""
    tp = cfg.teacher_policy
    return tp.kind == "rl" and tp.reward == "r3" and len(cfg.teacher_list()) > 1


def teacher_scores(s: Setup, split: TokenizedSplit) -> dict[str, float]:
    """Each teacher's main metric on `split`, its classifier loaded for it (the weighted
    policy's validation scores)."""
    from kdray.loop import evaluate
    from kdray.models import load_classifier

    tr = s.cfg.trainer
    out = {}
    for t in s.teachers:
        model = t.model or load_classifier(t.path).to(s.device).eval()  # type: ignore[arg-type]
        metrics = evaluate(model, split, s.spec, s.device, tr.eval_batch_size, tr.bf16)
        out[t.name] = metrics[s.spec.main_metric]
    return out


def policy_context(s: Setup) -> PolicyContext:
    """What the run's policy knows of it (the weighted kind: each teacher's validation score)."""
    weighted = s.cfg.teacher_policy.kind == "weighted" and len(s.teachers) > 1
    return PolicyContext(
        names=tuple(t.name for t in s.teachers),
        is_regression=s.spec.is_regression,
        num_labels=s.spec.num_labels,
        student_width=s.student_shape.width,
        temperature=s.cfg.knowledge.temperature,
        scores=teacher_scores(s, s.data.validation) if weighted else None,
    )


def rescorer(s: Setup) -> Rescore:
    """`rescore(idx)`: the student's logits (eval mode, as it is now), each teacher's logits
    and the labels of train examples `idx`: what the rl policy's per-example rewards read."""
    from kdray.loop import autocast
    from kdray.models import encode

    @torch.no_grad()
    def rescore(idx: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
        tr = s.cfg.trainer
        was_training = s.student.training
        s.student.eval()
        zs, zt = [], []
        for start in range(0, len(idx), tr.eval_batch_size):
            chunk = idx[start : start + tr.eval_batch_size]
            batch = {k: v.to(s.device) for k, v in s.data.train.batch(chunk).items()}
            with autocast(s.device, tr.bf16):
                zs.append(encode(s.student, batch, Needs()).logits.float().cpu())
            zt.append({t.name: t.features(batch, Needs(), s.device, tr.bf16).logits.float().cpu()
                       for t in s.teachers})  # fmt: skip
        s.student.train(was_training)
        teachers = {t.name: torch.cat([z[t.name] for z in zt]) for t in s.teachers}
        return torch.cat(zs), teachers, s.data.train.labels[idx]

    return rescore
