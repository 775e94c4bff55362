"""`python -m kdray.train`: one distillation run with a progress bar; prints val and dev scores.

Rerunning with the same --output-dir resumes from the last checkpoint.
"""

from __future__ import annotations

import argparse

from kdray.cli import add_common, run_cli, trial_config


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="python -m kdray.train",
        description="Distil a teacher into a student on one GLUE task (one trial).",
    )
    add_common(parser)
    parser.add_argument(
        "--output-dir", help="run folder (checkpoint, results.json, student); resumes if present"
    )
    args = parser.parse_args()
    overrides = list(args.overrides)
    if args.output_dir:
        overrides.append(f"trainer.output_dir={args.output_dir}")
    cfg = trial_config(args.config, overrides, args.data_dir)

    from kdray.checkpoint import check_output_dir
    from kdray.teacher import resolve_teachers
    from kdray.trainer import run_trial

    check_output_dir(cfg)  # before any teacher is fine-tuned
    result = run_trial(cfg, progress=True, teacher_paths=resolve_teachers(cfg, progress=True))
    m = result.main_metric
    print(f"status: {result.status} after {result.steps} steps ({result.wall_s:.1f} s)")
    if len(result.teachers) > 1:
        pool = ", ".join(f"{n} {p}" for n, p in result.teachers.items())
        print(f"teachers: {pool}  (teacher outputs: {result.teacher_cache})")
    else:
        print(f"teacher: {result.teacher}  (teacher outputs: {result.teacher_cache})")
    if result.validation:
        print(f"validation {m}: {result.validation.get(m, float('nan')):.4f}")
    for split, metrics in result.test.items():
        extras = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if k not in (m, "loss"))
        print(f"test ({split}) {m}: {metrics[m]:.4f}" + (f"  [{extras}]" if extras else ""))
    print(f"run folder: {result.output_dir}")
    return 0 if result.status == "finished" else 1


if __name__ == "__main__":
    run_cli(main)
