"""Teachers as a list: what each one is (path, shape, layer map) and its outputs or live model.

The trainer never resolves or fine-tunes a teacher: its callers do that
(`kdray.training.fine_tune`), and hand it the folders. Here, before any data or weights are read,
every teacher's HF config is checked against the task and the student (`preflight`); the pool must
share one tokenizer and one label set. Then each teacher becomes a `Teacher`: its outputs cached
once under its own fingerprint (`kdray.teachers.outputs.prepare_outputs`), or its model run live.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

import torch
from transformers import PretrainedConfig, PreTrainedModel

from kdray.base.errors import ConfigError
from kdray.config import TeacherConfig, TrialConfig
from kdray.data.tasks import TaskSpec
from kdray.models.classifier import encode, layer_map, student_shape
from kdray.models.device import autocast
from kdray.models.features import Features, Needs, Shape
from kdray.models.source import (
    FIXES,
    MODEL_FIX,
    check_max_length,
    check_teacher_task,
    load_config,
    resolve_backbone,
    teacher_sources,
    teacher_where,
)
from kdray.teachers.outputs import TeacherOutputs


@dataclass
class Teacher:
    """One teacher of the run: where it is, its shape, the layer map to it, and either its
    cached outputs or its live model (eval mode, no gradients)."""

    name: str
    path: str
    config: PretrainedConfig
    shape: Shape
    #: Teacher layer g(n) for student layers n = 1..N.
    layer_map: tuple[int, ...]
    outputs: TeacherOutputs | None = None
    model: PreTrainedModel | None = None

    def features(
        self, batch: dict[str, torch.Tensor], needs: Needs, device: torch.device, bf16: bool
    ) -> Features:
        """Its outputs for this batch: gathered from the cache, or one live forward pass."""
        if self.outputs is not None:
            return self.outputs.features(batch["index"], device, needs)
        assert self.model is not None, f"teacher {self.name} has neither outputs nor a model"
        with torch.no_grad(), autocast(device, bf16):
            return encode(self.model, batch, needs)


def source_of(t: TeacherConfig, path: str | None = None) -> str:
    """Where a teacher's config and tokenizer are read: its fine-tuned folder when known,
    else its backbone (whose tokenizer and shape a kdray fine-tune keeps)."""
    return resolve_backbone(path or t.path or t.backbone)


def teacher_config(
    t: TeacherConfig, path: str | None = None, where: str | None = None, fix: str = MODEL_FIX
) -> PretrainedConfig:
    """The teacher's HF config (a backbone's with `num_layers` applied: what fine-tuning
    it will give). `where` and `fix` name it in a message about a missing or unreadable model
    (default: "teacher '<name>': path" or "...: backbone")."""
    key = "path" if path or t.path else "backbone"
    config = load_config(source_of(t, path), where or f"teacher '{t.name}': {key}", fix)
    if path is None and t.path is None and t.num_layers is not None:
        layers = Shape.of(config).layers
        if t.num_layers > layers:
            raise ConfigError(
                f"teacher '{t.name}': 'num_layers' {t.num_layers} is more than the backbone "
                f"{t.backbone} has ({layers}); choose 1..{layers}"
            )
        config.num_hidden_layers = t.num_layers
    return config


def _vocab(source: str) -> dict[str, int]:
    from transformers import AutoTokenizer

    return dict(AutoTokenizer.from_pretrained(source).get_vocab())


def preflight(
    cfg: TrialConfig, spec: TaskSpec, paths: Mapping[str, str] | None = None
) -> tuple[Shape, dict[str, PretrainedConfig]]:
    """Every check the teachers' HF configs allow, before data, weights or a fine-tune: each
    teacher's folder or hub id is there, data.max_length fits its positions (and the
    student's, shaped after the first), each fine-tuned teacher fits the task, the pool shares
    label set and tokenizer, the student shape and the knowledge types fit every teacher.
    Returns the student's shape (from the first teacher) and each teacher's config. `paths`:
    teacher name -> resolved folder."""
    from kdray.knowledge import check_shapes

    paths = paths or {}
    teachers = cfg.teacher_list()
    configs: dict[str, PretrainedConfig] = {}
    for t, src in zip(teachers, teacher_sources(cfg), strict=True):
        assert t.name is not None
        path = paths.get(t.name)
        where, fix = src.where, src.fix
        if path and not t.path:  # the folder kdray fine-tuned it into
            where, fix = teacher_where(cfg, t, "fine-tuned folder"), FIXES["fine-tuned folder"]
        configs[t.name] = teacher_config(t, path, where, fix)
        check_max_length(cfg.data.max_length, configs[t.name], src.who)
    first = teachers[0]
    assert first.name is not None
    c0 = configs[first.name]
    for t in teachers[1:]:
        assert t.name is not None
        c = configs[t.name]
        if c.vocab_size != c0.vocab_size or _vocab(source_of(t, paths.get(t.name))) != _vocab(
            source_of(first, paths.get(first.name))
        ):
            raise ConfigError(
                f"teachers '{first.name}' ({source_of(first, paths.get(first.name))}, "
                f"{c0.vocab_size} tokens) and '{t.name}' ({source_of(t, paths.get(t.name))}, "
                f"{c.vocab_size} tokens) use different vocabularies; the student reads one "
                f"tokenizer, so every teacher of a pool must share it"
            )
        fine_tuned = (paths.get(t.name) or t.path) and (paths.get(first.name) or first.path)
        if fine_tuned and c.num_labels != c0.num_labels:
            raise ConfigError(
                f"teachers '{first.name}' ({c0.num_labels} labels) and '{t.name}' "
                f"({c.num_labels} labels) have different label sets; give teachers "
                f"fine-tuned on the same task"
            )
    for t in teachers:  # each fine-tuned teacher fits the task
        path = paths.get(t.name or "")
        if path or t.path:
            check_teacher_task(source_of(t, path), configs[t.name or ""], spec)
    s_shape = student_shape(cfg.student, Shape.of(c0))
    for i, (name, c) in enumerate(configs.items()):
        t_shape = Shape.of(c)
        try:
            check_shapes(cfg.knowledge, s_shape, t_shape)
            layer_map(cfg.student, t_shape.layers)
        except ConfigError as exc:
            if len(configs) == 1:
                raise
            shaped = " (the student is shaped after it)" if i == 0 else ""
            raise ConfigError(f"teacher '{name}'{shaped}: {exc}") from None
    return s_shape, configs


def named_paths(cfg: TrialConfig, paths: Mapping[str, str] | str | None) -> dict[str, str]:
    """Teacher name -> folder: `paths` as given (one path for a one-teacher run), else each
    teacher's own `path`. A teacher left without one has not been fine-tuned yet."""
    if isinstance(paths, str):
        paths = {cfg.teacher_list()[0].name or "teacher": paths}
    out = dict(paths or {})
    for t in cfg.teacher_list():
        assert t.name is not None
        if t.name not in out and t.path:
            out[t.name] = resolve_backbone(t.path)
    missing = [t.name for t in cfg.teacher_list() if t.name not in out]
    if missing:
        raise ConfigError(
            f"teacher {', '.join(map(str, missing))} has no fine-tuned model: resolve it first "
            f"(kdray.training.fine_tune.resolve_teachers, which fine-tunes a backbone once and "
            f"caches it; "
            f"`python -m kdray.teacher`) or give its 'path'"
        )
    return out


def with_paths(cfg: TrialConfig, paths: Mapping[str, str]) -> tuple[TeacherConfig, ...]:
    """The pool with each teacher's resolved folder filled in."""
    return tuple(replace(t, path=paths[t.name or ""]) for t in cfg.teacher_list())
