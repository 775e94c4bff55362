"""`python -m kdray.train` (or `kdray-train`): one distillation run with a progress bar;
prints val and dev scores. A thin wrapper over `kdray.run_trial` (kdray.api).

The run lands in --output-dir (default: a new folder ~/kdray_results/runs/<task>_<time>).
Rerunning an interrupted run with the same --output-dir resumes from its last checkpoint; a run
that ended keeps its student, logs and results, and its training state only with --keep-state.
"""

from __future__ import annotations

import argparse

from kdray.api import run_trial
from kdray.cli import add_common, run_cli


def main() -> int:
    """The command line; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m kdray.train",
        description="Distil a teacher into a student on one GLUE task (one trial).",
    )
    add_common(parser)
    parser.add_argument(
        "--output-dir",
        help="run folder (checkpoint, results.json, student); resumes if present "
        "(default: a new folder ~/kdray_results/runs/<task>_<time>)",
    )
    parser.add_argument(
        "--keep-state", action="store_true",
        help="keep the resumable training state (checkpoint.pt) after the run ends",
    )  # fmt: skip
    args = parser.parse_args()
    overrides = list(args.overrides)
    if args.output_dir:
        overrides.append(f"trainer.output_dir={args.output_dir}")
    result = run_trial(
        args.config, overrides, data_dir=args.data_dir, progress=True, keep_state=args.keep_state
    )
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
    if result.student_dir:
        print(f"student: {result.student_dir}  (a Hugging Face model folder)")
    return 0 if result.status == "finished" else 1


def cli() -> None:
    """The `kdray-train` console script."""
    run_cli(main)


if __name__ == "__main__":
    cli()
