"""What the trainer hands a teacher policy, built from the run's `Setup`: its context
(`policy_context`, with each teacher's validation score for the weighted kind) and the phase-end
rescoring the rl kind's rewards read (`rescorer`). Kept apart from the package's `__init__` so
that the policy kinds never import the run's set-up (`kdray.training.build` imports them)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from kdray.base.tensors import default_float
from kdray.models.features import Needs
from kdray.teacher_policy.base import PolicyContext, Rescore

if TYPE_CHECKING:
    from kdray.data.dataset import TokenizedSplit
    from kdray.training.build import Setup


def teacher_scores(s: Setup, split: TokenizedSplit) -> dict[str, float]:
    """Each teacher's main metric on `split`, its classifier loaded for it (the weighted
    policy's validation scores)."""
    from kdray.models.classifier import load_classifier
    from kdray.training.loop import evaluate

    tr = s.cfg.trainer
    out = {}
    for t in s.teachers:
        model = t.model or load_classifier(t.path).to(s.device).eval()
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
    from kdray.models.classifier import encode
    from kdray.models.device import autocast

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
                zs.append(default_float(encode(s.student, batch, Needs()).logits).cpu())
            feats = {t.name: t.features(batch, Needs(), s.device, tr.bf16) for t in s.teachers}
            zt.append({name: default_float(f.logits).cpu() for name, f in feats.items()})
        s.student.train(was_training)
        teachers = {t.name: torch.cat([z[t.name] for z in zt]) for t in s.teachers}
        return torch.cat(zs), teachers, s.data.train.labels[idx]

    return rescore
