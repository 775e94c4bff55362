"""`python -m kdray.export SWEEP_DIR --best OUT_DIR` (or `kdray-export`): the best trial's
student out of a sweep, as a Hugging Face model folder.

    python -m kdray.export ~/kdray_results/quickstart --best ./sst2-student
    python -c "from transformers import pipeline; print(pipeline('text-classification',
               model='./sst2-student')('a gripping film'))"

The best trial is the one `python -m kdray.sweep` names at its end: finished trials first, then
by the sweep's metric (`sweep.metric`, `sweep.mode`: the validation split, never GLUE dev).
The folder is copied whole (weights, config with the task's labels, tokenizer, model card)
and atomically: OUT_DIR appears complete or not at all. OUT_DIR must not exist yet.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from kdray.analysis import best_trial, load_sweep, student_path
from kdray.base.errors import ConfigError, KdrayError
from kdray.base.io import atomic_dir, is_uri, storage_fs


def export_best(sweep_dir: str, out: str | Path) -> tuple[str, Path]:
    """Copy the best trial's student to `out`; returns (trial folder name, `out`)."""
    out = Path(out).expanduser().resolve()
    if out.exists():
        raise ConfigError(f"{out} exists; give a new folder for the student (nothing written)")
    sweep = load_sweep(sweep_dir, phases=False)
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
    p.add_argument("--best", metavar="OUT_DIR", required=True,
                   help="copy the best trial's student (best validation metric) here")  # fmt: skip
    args = p.parse_args(argv)
    name, out = export_best(args.path, args.best)
    print(f"best trial {name}: student copied to {out}")
    return 0


def cli() -> None:
    """The `kdray-export` console script."""
    from kdray.cli import run_cli

    run_cli(main)


if __name__ == "__main__":
    cli()
