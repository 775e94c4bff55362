"""Fine-tune a teacher once per (backbone, task, recipe) and reuse it everywhere.

`python -m kdray.teacher --task sst2 --data-dir ../shared/glue` fine-tunes the default offline
backbone (all-MiniLM-L6-v2) on the task's training split, with the recipe in `TeacherConfig`,
and saves it with its validation and dev (test) scores under
`<cache>/teachers/<task>-<key>/`. Later runs and sweeps find it there. The teacher trains on
the same split carving as the students (validation, reward and dev are never trained on) and
uses kdray's own trainer (init `pretrained`, knowledge `hard`).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

from kdray.card import model_card
from kdray.config import TeacherConfig, TrialConfig
from kdray.data import load_task, resolve_data_dir
from kdray.io import atomic_dir, cache_root
from kdray.model_source import TEACHER_META, load_config, resolve_backbone
from kdray.models import Shape
from kdray.teacher_cache import cache_lock


def teacher_data(cfg: TrialConfig) -> dict[str, Any]:
    """The data settings the teacher is trained with."""
    data = asdict(cfg.data)
    data["max_train_examples"] = cfg.teacher.max_train_examples
    data["max_test_examples"] = None
    source = resolve_data_dir(cfg.data.data_dir)
    data["data_dir"] = str(source) if source else None
    return data


def teacher_key(cfg: TrialConfig) -> str:
    """The cache key of `cfg.teacher`'s recipe on `cfg.data` (its name is not part of it, and
    num_layers and group_by_length only when set, so keys of earlier caches stay valid)."""
    recipe = asdict(cfg.teacher)
    recipe.pop("path")
    recipe.pop("name")
    for key in ("num_layers", "group_by_length"):  # only when set: earlier keys stay valid
        if not recipe[key]:
            recipe.pop(key)
    recipe["backbone"] = resolve_backbone(cfg.teacher.backbone)
    payload = json.dumps({"recipe": recipe, "data": teacher_data(cfg)}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:12]


def teacher_dir(cfg: TrialConfig) -> Path:
    return cache_root(cfg) / "teachers" / f"{cfg.data.task}-{teacher_key(cfg)}"


def teacher_trial(cfg: TrialConfig, n_train: int, output_dir: Path) -> TrialConfig:
    """The trainer config that fine-tunes the backbone."""
    t = cfg.teacher
    steps = t.max_steps or max(1, math.ceil(t.epochs * n_train / t.batch_size))
    layers = t.num_layers or Shape.of(load_config(t.backbone)).layers
    return TrialConfig.from_dict(
        {
            "data": teacher_data(cfg),
            "teacher": {**asdict(t), "name": None, "num_layers": None},
            "student": {"init": "pretrained", "num_layers": layers, "dropout": 0.1},
            "knowledge": {"types": ["hard"]},
            "trainer": {
                **asdict(cfg.trainer),
                "max_steps": steps,
                "batch_size": t.batch_size,
                "learning_rate": t.learning_rate,
                "warmup_ratio": 0.1,
                # once, at the end: the fine-tune keeps its last weights whatever validation
                # says, and four rounds on the teacher's 10% validation split took as long as
                # the training steps of the quickstart's 200-step recipe
                "eval_every": steps,
                "group_by_length": t.group_by_length,
                "seed": t.seed,
                "teacher_cache": False,
                "output_dir": str(output_dir),
                "save_student": True,
            },
            "cache_dir": cfg.cache_dir,
        }
    )


def ensure_teacher(cfg: TrialConfig, progress: bool = False, force: bool = False) -> str:
    """The fine-tuned teacher's folder, fine-tuning it first when it is not cached."""
    from transformers import AutoConfig, AutoTokenizer

    from kdray.trainer import run_trial

    final = teacher_dir(cfg)
    final.parent.mkdir(parents=True, exist_ok=True)
    with cache_lock(final, f"teacher {final.name}"):
        if (final / TEACHER_META).is_file() and not force:
            return str(final)
        backbone = resolve_backbone(cfg.teacher.backbone)
        tokenizer = AutoTokenizer.from_pretrained(backbone)
        probe = TrialConfig.from_dict({"data": teacher_data(cfg)})
        n_train = len(load_task(probe.data, tokenizer, cache_root(cfg)).train)
        work = final.parent / f".{final.name}.run"
        trial = teacher_trial(cfg, n_train, work)
        if progress:
            layers = f", first {t.num_layers} layers" if (t := cfg.teacher).num_layers else ""
            named = f" '{t.name}'" if t.name and t.name != "teacher" else ""
            print(
                f"fine-tuning teacher{named} ({t.backbone}{layers}) on {cfg.data.task} "
                f"({trial.trainer.max_steps} steps) -> {final}"
            )
        result = run_trial(trial, progress=progress, label="teacher fine-tune")
        if result.status != "finished":
            from kdray.errors import KdrayError

            raise KdrayError(
                f"teacher fine-tuning diverged at step {result.steps}; lower "
                f"teacher.learning_rate (now {cfg.teacher.learning_rate})"
            )
        with atomic_dir(final) as tmp:
            assert result.student_dir is not None
            for f in Path(result.student_dir).iterdir():
                f.rename(tmp / f.name)
            tokenizer.save_pretrained(tmp)
            meta = {
                "task": cfg.data.task,
                "backbone": cfg.teacher.backbone,
                "recipe": asdict(cfg.teacher),
                "steps": result.steps,
                "wall_s": result.wall_s,
                "validation": result.validation,
                "test": result.test,
                "main_metric": result.main_metric,
            }
            (tmp / TEACHER_META).write_text(json.dumps(meta, indent=2))
            card = model_card({**meta, "role": "teacher"}, AutoConfig.from_pretrained(tmp))
            (tmp / "README.md").write_text(card)
        import shutil

        shutil.rmtree(work, ignore_errors=True)
        return str(final)


def resolve_teachers(cfg: TrialConfig, progress: bool = False) -> dict[str, str]:
    """Teacher name -> fine-tuned folder for every teacher of the run: its `path`, or its
    backbone fine-tuned once (cached). The pool is checked against the task and the student
    first (HF configs only), so a bad pool costs no fine-tune."""
    from kdray.tasks import TASKS
    from kdray.teachers import preflight, source_of

    if cfg.student.init == "pretrained":
        return {}
    preflight(cfg, TASKS[cfg.data.task])
    out = {}
    for t in cfg.teacher_list():
        assert t.name is not None
        out[t.name] = source_of(t) if t.path else ensure_teacher(_one(cfg, t), progress)
    return out


def _one(cfg: TrialConfig, t: TeacherConfig) -> TrialConfig:
    """`cfg` as a one-teacher config of teacher `t` (what its cache key reads)."""
    from dataclasses import replace

    return replace(cfg, teacher=t, teachers=None)


def teacher_meta(path: str | Path) -> dict[str, Any]:
    meta = Path(path) / TEACHER_META
    return json.loads(meta.read_text()) if meta.is_file() else {}


def space_trial(
    space: str, config: str | None, overrides: list[str], data_dir: str | None
) -> TrialConfig:
    """The trial whose teachers a sweep file's trials distil from, with --set overrides."""
    from kdray.errors import ConfigError
    from kdray.search_space import load_sweep
    from kdray.yamlio import parse_override

    if config:
        raise ConfigError("give --config (a trial) or --space (a sweep file), not both")
    spec = load_sweep(space)
    if data_dir is not None:
        spec = spec.with_data_dir(str(Path(data_dir).expanduser().resolve()))
    base = spec.base_trial()
    return base.replace(**dict(parse_override(o) for o in overrides)) if overrides else base


def main() -> int:
    from kdray.checks import trial_config
    from kdray.cli import add_common

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
        from kdray.tasks import TASKS
        from kdray.teachers import preflight

        preflight(cfg, TASKS[cfg.data.task])  # a bad pool costs no fine-tune
        for t in cfg.teacher_list():
            if not t.path:
                ensure_teacher(_one(cfg, t), progress=True, force=True)
    for name, path in resolve_teachers(cfg, progress=True).items():
        meta = teacher_meta(path)
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
