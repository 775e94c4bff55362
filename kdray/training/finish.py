"""The end of a run: its dev (test) scores and per-example predictions, the student as a
Hugging Face model folder with its card, results.json, and the final report to the caller."""

from __future__ import annotations

import time
from pathlib import Path

from kdray.base.results import (
    STUDENT_DIR,
    RunResult,
    write_predictions,
    write_results,
)
from kdray.data.metrics import predictions
from kdray.models.card import selector_name, task_meta
from kdray.models.classifier import save_model_folder
from kdray.training.loop import scored
from kdray.training.state import RunState


def score_dev(run: RunState) -> dict[str, dict[str, float]]:
    """Metrics per test split; each example's prediction goes to PREDICTIONS."""
    s, tr = run.s, run.cfg.trainer
    metrics, preds = {}, {}
    for name, split in s.data.test.items():
        metrics[name], z = scored(s.student, split, s.spec, s.device, tr.eval_batch_size, tr.bf16)
        preds[name] = (split.labels.numpy(), predictions(s.spec, z))
    write_predictions(run.out_dir, preds)
    return metrics


def finish_run(run: RunState, status: str) -> RunResult:
    """The end of a run: dev (test) metrics and predictions when it finished, its student
    folder, phase log, probes and results.json written, and the final report."""
    s, tr = run.s, run.cfg.trainer
    test = score_dev(run) if status == "finished" else {}
    student_dir = None
    if status == "finished" and tr.save_student:
        student_dir = str(run.out_dir / STUDENT_DIR)
        meta = {
            **task_meta(s.spec),
            "role": "student",
            "teachers": {t.name: t.path for t in s.teachers},
            "steps": run.step,
            "validation": {k[4:]: v for k, v in run.history[-1].items()
                           if k.startswith("val_")} if run.history else {},
            "test": test,
            "knowledge": list(run.cfg.knowledge.types),
            "selector": selector_name(run.cfg.selector),
            "config": run.cfg.to_dict(),
        }  # fmt: skip
        save_model_folder(s.student, s.tokenizer, Path(student_dir), meta)
    run.log.write(run.out_dir)
    run.prober.write(run.out_dir)
    last = run.history[-1] if run.history else {}
    wall = run.wall_before + (time.perf_counter() - run.t0)
    result = RunResult(
        status=status,
        steps=run.step,
        validation={k[4:]: v for k, v in last.items() if k.startswith("val_")},
        test=test,
        main_metric=s.spec.main_metric,
        wall_s=wall,
        output_dir=str(run.out_dir),
        student_dir=student_dir,
        teacher=s.teachers[0].path if s.teachers else None,
        teachers={t.name: t.path for t in s.teachers},
        teacher_cache=s.cache_mode,
        history=run.history,
        teacher_gap=run.teacher_gap,
        probes=run.prober.summary(run.steps_done(), wall),
    )
    final = {
        **last,
        "status": status,
        "step": run.step,
        "done": True,
        "resumed_from_step": run.resumed_from,
        "wall_s": wall,
        **{f"test_{name}_{k}": v for name, m in test.items() for k, v in m.items()},
    }
    if test:
        final["test_metric"] = result.test_score
    if status == "diverged":
        final.setdefault("val_metric", float("nan"))
    write_results(run.out_dir, result)
    run.reporter.report(final, checkpoint_dir=str(run.out_dir))
    return result
