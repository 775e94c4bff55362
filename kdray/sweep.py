"""`python -m kdray.sweep` (or `kdray-sweep`): many distillation trials on Ray Tune, pruned,
resumable.

    python -m kdray.sweep --space search_spaces/quickstart.yaml --data-dir ../shared/glue
    python -m kdray.sweep --resume ~/kdray_results/quickstart      # after an interruption

A thin wrapper over `kdray.run_sweep` (kdray.api): the sweep file is validated completely
before Ray starts (kdray.search.spec), the teacher is prepared once and the trials run on Ray
Tune (kdray.search.tuner). The sweep file is saved beside the results (`kdray_sweep.yaml`), so
`--resume DIR` needs nothing else. Run it on a cluster with
`ray submit cluster.yaml kdray/sweep.py -- --space ...` or `ray job submit` (see docs/sweeps.md,
"On a cluster").
"""

from __future__ import annotations

import argparse

from kdray.api import run_sweep
from kdray.cli import add_set, run_cli


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line's arguments."""
    parser = argparse.ArgumentParser(
        prog="python -m kdray.sweep",
        description="Search distillation policies and hyperparameters with Ray Tune. The sweep "
        "file is checked completely before Ray starts; results land in STORAGE/NAME.",
    )
    parser.add_argument(
        "--space", metavar="FILE", help="sweep YAML (see search_spaces/); optional with --resume"
    )
    parser.add_argument(
        "--data-dir",
        metavar="DIR",
        help="GLUE folder in the classic TSV layout (default: $KDRAY_GLUE_DIR, else the hub)",
    )
    parser.add_argument(
        "--storage",
        metavar="DIR",
        help="results folder or URI every node reaches (default: the file's sweep.storage, "
        "~/kdray_results)",
    )
    parser.add_argument("--name", help="experiment name (default: the sweep's name)")
    parser.add_argument(
        "--resume",
        metavar="DIR",
        help="continue an interrupted sweep from its folder STORAGE/NAME: finished trials are "
        "kept, unfinished ones continue from their last checkpoint",
    )
    parser.add_argument(
        "--retry-errored", action="store_true", help="with --resume: rerun errored trials"
    )
    add_set(parser, "override one key of the sweep file, e.g. --set trial.trainer.max_steps=60 "
            "or --set sweep.num_samples=2")  # fmt: skip
    parser.add_argument(
        "--address", help="Ray cluster address (default: $RAY_ADDRESS, a running cluster, or a "
        "new local one)"
    )  # fmt: skip
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """The command line; returns the exit status."""
    args = parse_args(argv)
    run_sweep(args.space, data_dir=args.data_dir, storage=args.storage, name=args.name,
              overrides=args.overrides, address=args.address, resume=args.resume,
              retry_errored=args.retry_errored)  # fmt: skip
    return 0


def cli() -> None:
    """The `kdray-sweep` console script."""
    run_cli(main)


if __name__ == "__main__":
    cli()
