"""The teacher-quality gate (docs/methods.md §5, distillation from a weak teacher).

A teacher smaller than its student can still help, or hurt: Lee et al. (2023) saw +1.44 GLUE
points from a teacher 2.2 points below the student's stand-alone score, and losses from
teachers 13 and 26 points below. Before such a run, `check_teachers` compares each teacher's
validation score, on the run's own validation split, with a *reference*: a hard-only student of
the run's shape, initialisation, data and training budget (seed 0), trained once and cached
under `<cache>/references/<task>-<key>/reference.json` like teachers are. A teacher more than
`teacher_gate.gap` points below the reference is a warning (logged, and `teacher_gap` in the
run's results.json), or a refusal with `teacher_gate.strict`.

Runs that read no teacher knowledge (hard labels only) are never checked, so the reference
runs themselves never ask for a reference.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kdray.base.errors import KdrayError
from kdray.base.io import atomic_write_text, cache_root, content_key
from kdray.config import TrialConfig
from kdray.data.specs import data_identity, spec_of
from kdray.models.classifier import student_shape
from kdray.models.features import Shape
from kdray.models.source import load_config
from kdray.teachers.outputs import cache_lock
from kdray.teachers.pool import named_paths

if TYPE_CHECKING:
    from kdray.base.results import RunResult

log = logging.getLogger(__name__)

#: How the gate trains its reference: `kdray.training.trainer.distil(cfg, progress=,
#: teacher_paths=)`.
Train = Callable[..., "RunResult"]

#: The reference student's outcome, in its cache folder.
REFERENCE = "reference.json"
#: Config sections of the run that a hard-only reference does not read (reset to defaults).
NOT_READ = ("recipe", "knowledge", "selector", "stages", "teacher_policy", "teacher_gate", "probe")


def gate_applies(cfg: TrialConfig) -> bool:
    """False for a run the gate never checks: `check: off`, a backbone fine-tune (no
    teacher), or a run that reads hard labels only."""
    off = cfg.teacher_gate.check == "off" or cfg.student.init == "pretrained"
    return not off and not set(cfg.knowledge.types) <= {"hard"}


def gated_teachers(cfg: TrialConfig, paths: Mapping[str, str]) -> list[str]:
    """The teachers the gate checks: with `check: smaller`, those with fewer layers or a
    narrower width than the student (every one with `always`; none with `off`, for a run that
    fine-tunes a backbone, or for one that reads hard labels only)."""
    g = cfg.teacher_gate
    if not gate_applies(cfg):
        return []
    configs = {t.name or "": load_config(paths[t.name or ""]) for t in cfg.teacher_list()}
    student = student_shape(cfg.student, Shape.of(next(iter(configs.values()))))
    shapes = {name: Shape.of(c) for name, c in configs.items()}
    return [n for n, t in shapes.items() if g.check == "always"
            or t.layers < student.layers or t.width < student.width]  # fmt: skip


def reference_config(cfg: TrialConfig, output_dir: str | Path) -> TrialConfig:
    """The run's hard-only twin: same data, teachers (tokenizer, remap source), student and
    trainer, knowledge `hard` alone, seed 0, no student saved."""
    raw = cfg.to_dict()
    for key in NOT_READ:
        raw.pop(key)
    raw["knowledge"] = {"types": ["hard"]}
    raw["selector"] = {"kind": "all"}
    raw["trainer"] |= {"seed": 0, "output_dir": str(output_dir), "save_student": False}
    return TrialConfig.from_dict(raw)


def reference_dir(cfg: TrialConfig, paths: Mapping[str, str]) -> Path:
    """The reference's cache folder: keyed by its config (output folder aside), the resolved
    data folder and what the student takes from the teachers: their folders for a `remap`
    student (its weights), the first teacher's HF config but its depth and name for a random
    one (its template), so that teachers of one backbone share a random-init reference."""
    raw = reference_config(cfg, "").to_dict()
    raw["trainer"].pop("output_dir")
    raw["teacher"] = raw["teachers"] = None
    raw["data"] = data_identity(cfg.data)
    if cfg.student.init == "remap":
        teachers: Any = dict(paths)
    else:
        first = cfg.teacher_list()[0].name or ""
        teachers = load_config(paths[first]).to_dict()
        for key in ("_name_or_path", "name_or_path", "transformers_version", "num_hidden_layers"):
            teachers.pop(key, None)
    key = content_key({"config": raw, "teachers": teachers}, 12)
    return cache_root(cfg) / "references" / f"{spec_of(cfg.data).name}-{key}"


def reference_score(
    cfg: TrialConfig, paths: Mapping[str, str], train: Train, progress: bool = False
) -> float:
    """The reference student's validation main metric: read from the cache, or trained first
    with `train` (once; another process training it is waited for)."""
    final = reference_dir(cfg, paths)
    final.parent.mkdir(parents=True, exist_ok=True)
    with cache_lock(final, f"reference student {final.name}"):
        if not (final / REFERENCE).is_file():
            work = final.parent / f".{final.name}.run"
            ref = reference_config(cfg, work)
            print(f"teacher gate: training the reference student (hard labels only, "
                  f"{ref.trainer.max_steps} steps) -> {final}", flush=True)  # fmt: skip
            result = train(ref, progress=progress, teacher_paths=dict(paths))
            meta = {
                "status": result.status,
                "steps": result.steps,
                "wall_s": result.wall_s,
                "validation": result.validation,
                "main_metric": result.main_metric,
                "config": ref.to_dict(),
            }
            final.mkdir(exist_ok=True)
            atomic_write_text(final / REFERENCE, json.dumps(meta, indent=2))
            shutil.rmtree(work, ignore_errors=True)
        meta = json.loads((final / REFERENCE).read_text())
    return float(meta["validation"].get(meta["main_metric"], float("nan")))


def teacher_validation(
    cfg: TrialConfig, paths: Mapping[str, str], names: list[str]
) -> dict[str, float]:
    """Each named teacher's main metric on the run's validation split."""
    from transformers import AutoTokenizer

    from kdray.data.dataset import load_task
    from kdray.models.classifier import load_classifier
    from kdray.models.device import pick_device
    from kdray.training.loop import evaluate

    spec, tr = spec_of(cfg.data), cfg.trainer
    first = cfg.teacher_list()[0].name or ""
    tokenizer = AutoTokenizer.from_pretrained(paths[first])
    split = load_task(cfg.data, tokenizer, cache_root(cfg)).validation
    device = pick_device(tr.device)
    out = {}
    for name in names:
        model = load_classifier(paths[name]).to(device).eval()
        metrics = evaluate(model, split, spec, device, tr.eval_batch_size, tr.bf16)
        out[name] = metrics[spec.main_metric]
    return out


def check_teachers(
    cfg: TrialConfig,
    teacher_paths: Mapping[str, str] | str | None,
    train: Train,
    progress: bool = False,
) -> dict[str, Any] | None:
    """The gate, before any distillation (`train`: `kdray.training.trainer.distil`, which calls it,
    so that this module does not import the trainer): None when no teacher is checked, else
    {"metric", "reference", "allowed_gap", "teachers": {name: {"validation", "gap"}}, "below"}
    (gaps in points, reference minus teacher). Warns, or with `strict` raises `KdrayError`,
    when a teacher is more than `gap` points below the reference."""
    if not gate_applies(cfg):
        return None
    paths = named_paths(cfg, teacher_paths)
    names = gated_teachers(cfg, paths)
    if not names:
        return None
    g = cfg.teacher_gate
    scores = teacher_validation(cfg, paths, names)
    reference = reference_score(cfg, paths, train, progress)
    teachers = {n: {"validation": v, "gap": 100.0 * (reference - v)} for n, v in scores.items()}
    below = [n for n, t in teachers.items() if t["gap"] > g.gap]

    metric = spec_of(cfg.data).main_metric
    out = {"metric": metric, "reference": reference, "allowed_gap": g.gap,
           "teachers": teachers, "below": below}  # fmt: skip
    if below:
        what = "; ".join(
            f"teacher '{n}' validation {metric} {teachers[n]['validation']:.4f} is "
            f"{teachers[n]['gap']:.1f} points below" for n in below
        )  # fmt: skip
        message = (
            f"{what} a hard-only student of this shape ({reference:.4f}), more than "
            f"teacher_gate.gap {g.gap:g}: a teacher this weak is likely to hurt the student "
            f"(use a stronger teacher, or raise teacher_gate.gap)"
        )
        if g.strict:
            raise KdrayError(message + "; refused because teacher_gate.strict is set")
        log.warning(message)
    return out
