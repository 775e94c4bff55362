"""`python -m kdray.analyze DIR`: a Markdown (or HTML) report beside a sweep's results.

    python -m kdray.analyze ~/kdray_results/quickstart
    python -m kdray.analyze ~/kdray_results/quickstart --buckets 0,0.5,1 --format html

Writes DIR/analysis/ (or --out): report.md (report.html), knowledge_by_phase.csv,
trials.csv, schedule.yaml (the top trials' weights per bucket, for `selector: schedule`) and
the figures: the knowledge × phase effect heatmap (* where the CI excludes 0), the weight
trajectories of the top trials, the metric against trial cost, and the leaderboard. A sweep of
multi-teacher runs also gets teacher_by_phase.csv and teacher_weights.png (each teacher's mean
weight per bucket, top trials against bottom ones). Prints a short summary.

Exit status: 0 when the full report was written; 1 when the report lacks the knowledge-by-phase
analysis (no phase logs, or none with phase rewards: the reason is printed); 2 on bad input.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from kdray.analysis import (
    DEFAULT_BUCKETS,
    AnalysisError,
    check_buckets,
    describe_statuses,
    load_sweep,
    method_path,
    methods_table,
)
from kdray.analysis.replay import replay_command
from kdray.analysis.report import print_knowledge, write_report
from kdray.base.errors import ConfigError
from kdray.base.io import is_uri


def main(argv: list[str] | None = None) -> int:
    """The command line; returns the exit status (see the module docstring)."""
    p = argparse.ArgumentParser(prog="python -m kdray.analyze", description=__doc__.split("\n")[0])
    p.add_argument("path", metavar="DIR", help="a sweep folder STORAGE/NAME (or its URI)")
    p.add_argument("--buckets", default=",".join(f"{b:g}" for b in DEFAULT_BUCKETS),
                   help="progress bucket edges from 0 to 1 (default: %(default)s)")  # fmt: skip
    p.add_argument("--format", choices=["md", "html"], default="md")
    p.add_argument("--out", help="report folder (default: DIR/analysis)")
    args = p.parse_args(argv)
    try:
        buckets = [float(b) for b in args.buckets.split(",")]
    except ValueError as exc:
        raise ConfigError(
            f"--buckets must be numbers separated by commas, got {args.buckets}"
        ) from exc
    check_buckets(buckets)
    sweep = load_sweep(args.path)
    if sweep.trials.empty:
        raise AnalysisError(f"{sweep.path}: the sweep has no trials yet; nothing to analyse")
    if is_uri(sweep.path) and not args.out:
        raise ConfigError("a sweep at a URI needs --out DIR (a local folder for the report)")
    out = Path(args.out or Path(sweep.path) / "analysis")
    summary = write_report(sweep, out, buckets, args.format)
    board = summary["board"]
    print(f"{describe_statuses(sweep.trials)}; best:")
    print(board.head(3).to_string(index=False))
    methods = methods_table(sweep)
    if "reference" in methods:
        columns = ["method", "finished", "val_mean", "test_mean", "test_std", "test_diff",
                   "paired_seeds", "ci_low", "ci_high", "verdict"]  # fmt: skip
        reference = methods["reference"].iloc[0]
        print(f"\n{method_path(sweep)} compared (test_diff: per-seed against {reference}; 95% "
              "interval over seeds and dev examples):")  # fmt: skip
        print(methods[[c for c in columns if c in methods]].to_string(index=False))
    table = summary["table"]
    report = out / f"report.{args.format}"
    if table is None:
        print(f"\nreport (without knowledge by phase): {report}")
        print(f"no knowledge-by-phase analysis: {summary['missing']}", file=sys.stderr)
        return 1
    print_knowledge(table)
    print(f"\nreport: {report}")
    if summary["replay"] is not None:
        print(f"replay the schedule: {replay_command(summary['replay'])}")
    return 0


def cli() -> None:
    """The `kdray-analyze` console script."""
    from kdray.cli import run_cli

    run_cli(main)


if __name__ == "__main__":
    cli()
