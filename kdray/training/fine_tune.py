"""Fine-tune a teacher once per (backbone, task, recipe) and reuse it everywhere.

`ensure_teacher` (and `python -m kdray.teacher --task sst2 --data-dir ../shared/glue`) fine-tunes
the default offline backbone (all-MiniLM-L6-v2) on the task's training split, with the recipe in
`TeacherConfig`, and saves it with its validation and dev (test) scores under
`<cache>/teachers/<task>-<key>/`. Later runs and sweeps find it there. The teacher trains on the
same split carving as the students (validation, reward and dev are never trained on) and uses
kdray's own trainer (init `pretrained`, knowledge `hard`).
"""

from __future__ import annotations

import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

from kdray.base.io import atomic_dir, cache_root, content_key
from kdray.config import TeacherConfig, TrialConfig
from kdray.data.dataset import load_task
from kdray.data.glue import resolve_data_dir
from kdray.data.specs import data_identity, spec_of
from kdray.models.card import TEACHER_META, task_meta, write_model_meta
from kdray.models.features import Shape
from kdray.models.source import load_config, resolve_backbone
from kdray.teachers.outputs import cache_lock


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
    data = {**data_identity(cfg.data), "max_train_examples": cfg.teacher.max_train_examples,
            "max_test_examples": None}  # fmt: skip
    return content_key({"recipe": recipe, "data": data}, 12)


def teacher_dir(cfg: TrialConfig) -> Path:
    """The cache folder of `cfg.teacher`'s fine-tune: `<cache>/teachers/<task>-<key>`."""
    return cache_root(cfg) / "teachers" / f"{spec_of(cfg.data).name}-{teacher_key(cfg)}"


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

    from kdray.training.trainer import distil

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
                f"fine-tuning teacher{named} ({t.backbone}{layers}) on {spec_of(cfg.data).name} "
                f"({trial.trainer.max_steps} steps) -> {final}"
            )
        result = distil(trial, progress=progress, label="teacher fine-tune")
        if result.status != "finished":
            from kdray.base.errors import KdrayError

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
                **task_meta(spec_of(cfg.data)),
                "role": "teacher",
                "backbone": cfg.teacher.backbone,
                "recipe": asdict(cfg.teacher),
                "steps": result.steps,
                "wall_s": result.wall_s,
                "validation": result.validation,
                "test": result.test,
            }
            write_model_meta(tmp, meta, AutoConfig.from_pretrained(tmp))
        import shutil

        shutil.rmtree(work, ignore_errors=True)
        return str(final)


def resolve_teachers(cfg: TrialConfig, progress: bool = False) -> dict[str, str]:
    """Teacher name -> fine-tuned folder for every teacher of the run: its `path`, or its
    backbone fine-tuned once (cached). The pool is checked against the task and the student
    first (HF configs only), so a bad pool costs no fine-tune."""
    from kdray.teachers.pool import preflight, source_of

    if cfg.student.init == "pretrained":
        return {}
    preflight(cfg, spec_of(cfg.data))
    out = {}
    for t in cfg.teacher_list():
        assert t.name is not None
        out[t.name] = source_of(t) if t.path else ensure_teacher(one_teacher(cfg, t), progress)
    return out


def one_teacher(cfg: TrialConfig, t: TeacherConfig) -> TrialConfig:
    """`cfg` as a one-teacher config of teacher `t` (what its cache key reads)."""
    from dataclasses import replace

    return replace(cfg, teacher=t, teachers=None)
