"""`python -m kdray.teacher`: fine-tune a config's (or a sweep file's) teachers once.

    python -m kdray.teacher --task sst2 --data-dir ../shared/glue
    python -m kdray.teacher --space search_spaces/multi_teacher.yaml --data-dir ../shared/glue

Each teacher is cached by (backbone, task, recipe) under `<cache>/teachers/`; later runs and
sweeps find it there. Prints each teacher's folder and its validation and dev (test) scores.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from kdray.config import TrialConfig
from kdray.models.card import read_model_meta
from kdray.training.fine_tune import ensure_teacher, one_teacher, resolve_teachers


def space_trial(
    space: str, config: str | None, overrides: list[str], data_dir: str | None
) -> TrialConfig:
    """The trial whose teachers a sweep file's trials distil from, with --set overrides."""
    from kdray.base.errors import ConfigError
    from kdray.base.yamlio import parse_override
    from kdray.search.sweep_file import load_spec

    if config:
        raise ConfigError("give --config (a trial) or --space (a sweep file), not both")
    spec = load_spec(space)
    if data_dir is not None:
        spec = spec.with_data_dir(str(Path(data_dir).expanduser().resolve()))
    base = spec.base_trial()
    return base.replace(**dict(parse_override(o) for o in overrides)) if overrides else base


def main() -> int:
    """The command line; returns the exit status."""
    from kdray.cli import add_common
    from kdray.training.checks import trial_config

    parser = argparse.ArgumentParser(
        prog="python -m kdray.teacher",
        description="Fine-tune a teacher backbone on a GLUE task once; later runs reuse it.",
    )
    add_common(parser)
    parser.add_argument(
        "--space", help="a sweep file: prepare the teachers its trials distil from (every "
        "teacher of its pool search)",
    )  # fmt: skip
    parser.add_argument(
        "--pool", help="comma-separated names of the config's `teachers`: prepare only these",
    )  # fmt: skip
    parser.add_argument("--task", help="GLUE task (default: the config's data.task)")
    parser.add_argument("--force", action="store_true", help="fine-tune again even if cached")
    args = parser.parse_args()
    overrides = list(args.overrides) + ([f"data.task={args.task}"] if args.task else [])
    overrides += [f"pool={args.pool}"] if args.pool else []
    if args.space:
        cfg = space_trial(args.space, args.config, overrides, args.data_dir)
    else:
        cfg = trial_config(args.config, overrides, args.data_dir)
    if args.force:
        from kdray.data.specs import spec_of
        from kdray.teachers.pool import preflight

        preflight(cfg, spec_of(cfg.data))  # a bad pool costs no fine-tune
        for t in cfg.teacher_list():
            if not t.path:
                ensure_teacher(one_teacher(cfg, t), progress=True, force=True)
    for name, path in resolve_teachers(cfg, progress=True).items():
        meta = read_model_meta(path)
        main_metric = meta.get("main_metric", "")
        val = meta.get("validation", {}).get(main_metric, float("nan"))
        print(f"teacher {name}: {path}")
        print(f"  validation {main_metric}: {val:.4f}")
        for split, m in meta.get("test", {}).items():
            print(f"  test ({split}) {main_metric}: {m.get(main_metric, float('nan')):.4f}")
    return 0


if __name__ == "__main__":
    from kdray.cli import run_cli

    run_cli(main)
