"""`python -m kdray.export SWEEP_DIR --best OUT_DIR` (or `kdray-export`): the best trial's
student out of a sweep, as a Hugging Face model folder; `--prune` gives back the disk space of
a sweep's ended trials.

    python -m kdray.export ~/kdray_results/quickstart --best ./sst2-student
    python -m kdray.export ~/kdray_results/quickstart --prune --keep best:1
    python -c "from transformers import pipeline; print(pipeline('text-classification',
               model='./sst2-student')('a gripping film'))"

The best trial is the one `python -m kdray.sweep` names at its end: finished trials first, then
by the sweep's metric (`sweep.metric`, `sweep.mode`: the validation split, never GLUE dev).
The folder is copied whole (weights, config with the task's labels, tokenizer, model card)
and atomically: OUT_DIR appears complete or not at all. OUT_DIR must not exist yet.

`--prune` applies the keep rules (`kdray.analysis.prune`; the sweep file's `sweep.keep`, with
`--keep` for the students and `--states` for the training states) to a sweep that is not running,
and says how much it freed.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from kdray.analysis import best_trial, load_sweep, student_path
from kdray.analysis.prune import prune_sweep
from kdray.base.errors import ConfigError, KdrayError
from kdray.base.io import atomic_dir, is_uri, storage_fs


def export_best(sweep_dir: str, out: str | Path) -> tuple[str, Path]:
    """Copy the best trial's student to `out`; returns (trial folder name, `out`)."""
    out = Path(out).expanduser().resolve()
    if out.exists():
        raise ConfigError(f"{out} exists; give a new folder for the student (nothing written)")
    sweep = load_sweep(sweep_dir, phases=False, history=False)
    best = best_trial(sweep)
    if best is None:
        raise KdrayError(f"{sweep.path}: no trial reported {sweep.metric}; nothing to export")
    source = student_path(best)
    name = Path(str(best["path"])).name
    if source is None:
        raise KdrayError(
            f"the best trial {name} ({best['status']}) saved no student: it was stopped before "
            f"its end or ran with trainer.save_student: false"
        )
    fs, root = storage_fs(source)
    with atomic_dir(out) as tmp:
        if is_uri(source):  # a storage URI: through pyarrow's filesystem
            import pyarrow.fs

            pyarrow.fs.copy_files(root, str(tmp), source_filesystem=fs)
        else:
            shutil.copytree(source, tmp, dirs_exist_ok=True)
    return name, out


def main(argv: list[str] | None = None) -> int:
    """The command line; returns the exit status."""
    p = argparse.ArgumentParser(prog="python -m kdray.export", description=__doc__.split("\n")[0])
    p.add_argument("path", metavar="SWEEP_DIR", help="a sweep folder STORAGE/NAME (or its URI)")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument(
        "--best",
        metavar="OUT_DIR",
        help="copy the best trial's student (best validation metric) here",
    )
    what.add_argument(
        "--prune",
        action="store_true",
        help="delete the training states (and students --keep does not keep) of "
        "the sweep's ended trials; refused while the sweep runs",
    )
    p.add_argument(
        "--keep",
        metavar="STUDENTS",
        help="with --prune: students to keep: finished, best:K or none (default: the "
        "sweep's sweep.keep.students)",
    )
    p.add_argument(
        "--states",
        choices=("none", "best", "all"),
        help="with --prune: training states to keep (default: sweep.keep.states)",
    )
    args = p.parse_args(argv)
    if not args.prune and (args.keep or args.states):
        p.error("--keep and --states go with --prune")
    if args.prune:
        print(prune_sweep(args.path, states=args.states, students=args.keep).describe())
        return 0
    name, out = export_best(args.path, args.best)
    print(f"best trial {name}: student copied to {out}")
    return 0


def cli() -> None:
    """The `kdray-export` console script."""
    from kdray.cli import run_cli

    run_cli(main)


if __name__ == "__main__":
    cli()
