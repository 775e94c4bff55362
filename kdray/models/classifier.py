"""Teacher loading, student construction (shape, layer map, `remap` init) and feature extraction.

The student is an HF sequence classifier built from the teacher's config with the overrides of
`StudentConfig`. `remap` copies teacher weights key by key with shape checks (nanoGPT's
`from_pretrained` pattern). `encode` runs a model once and returns the `Features` that the
chosen knowledge types asked for: logits, hidden states, attention probabilities and attention
context vectors (captured by forward hooks on the self-attention blocks).
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

if TYPE_CHECKING:  # the model classes are imported where they are built: a command line
    # checking a config reads config.json alone (AutoConfig), and the modelling code of
    # transformers takes seconds to import
    from transformers import PretrainedConfig, PreTrainedModel

from kdray.base.errors import ConfigError
from kdray.config import StudentConfig
from kdray.data.tasks import TASKS, TaskSpec
from kdray.models.features import Features, Needs, Shape
from kdray.models.source import resolve_backbone

log = logging.getLogger(__name__)


def uniform_layer_map(student_layers: int, teacher_layers: int) -> tuple[int, ...]:
    """g(n) = max(1, round(n * M / N)) for n = 1..N (halves round up). The floor of 1 matters
    only for a student more than twice as deep as its teacher (a weak teacher, docs/methods.md §5),
    whose first layers would otherwise map to layer 0, the embeddings."""
    return tuple(
        max(1, int(n * teacher_layers / student_layers + 0.5)) for n in range(1, student_layers + 1)
    )


def layer_map(cfg: StudentConfig, teacher_layers: int) -> tuple[int, ...]:
    """The configured map, checked, or the uniform one."""
    if cfg.layer_map is None:
        return uniform_layer_map(cfg.num_layers, teacher_layers)
    bad = [g for g in cfg.layer_map if not 1 <= g <= teacher_layers]
    if bad:
        raise ConfigError(
            f"'student.layer_map' entries must be teacher layers 1..{teacher_layers}, got {bad}"
        )
    return cfg.layer_map


def student_shape(cfg: StudentConfig, teacher: Shape) -> Shape:
    """The student's shape: the config's values, the teacher's where the config says None."""
    s = Shape(
        cfg.num_layers,
        cfg.hidden_size or teacher.width,
        cfg.num_heads or teacher.heads,
        cfg.intermediate_size or teacher.intermediate,
        cfg.architecture,
    )
    if s.width % s.heads:
        raise ConfigError(
            f"student heads ({s.heads}) must divide the student width ({s.width}); set "
            f"'student.num_heads' to a divisor of {s.width}"
        )
    if cfg.init == "remap":
        if s.architecture != teacher.architecture:
            raise ConfigError(
                f"'student.init: remap' copies teacher layers, so the student must be a "
                f"{teacher.architecture} like the teacher (got {s.architecture}); use init: random"
            )
        if (s.width, s.intermediate) != (teacher.width, teacher.intermediate):
            raise ConfigError(
                f"'student.init: remap' needs the teacher's hidden_size ({teacher.width}) and "
                f"intermediate_size ({teacher.intermediate}); got {s.width} and {s.intermediate}. "
                f"Leave them unset or use init: random"
            )
    if cfg.init == "remap" and s.heads != teacher.heads:
        log.warning(
            "remap copies attention weights of %d teacher heads into %d student heads: the "
            "projections are re-split, not selected head by head",
            teacher.heads,
            s.heads,
        )
    if cfg.init == "pretrained" and (
        replace(s, layers=teacher.layers) != teacher or s.layers > teacher.layers
    ):
        raise ConfigError(
            f"'student.init: pretrained' takes the backbone as it is ({teacher.layers} layers, "
            f"width {teacher.width}, {teacher.heads} heads; fewer layers keep the first ones); "
            f"leave the student's shape at the backbone's or use init: remap"
        )
    return s


# ------------------------------------------------------------------------------------ loading


def load_classifier(
    name_or_path: str, num_labels: int | None = None, eager: bool = False, layers: int | None = None
) -> PreTrainedModel:
    """A sequence classifier. `eager` when attention probabilities must be returned; `layers`
    keeps only the first encoder layers of the checkpoint."""
    from transformers import AutoConfig, AutoModelForSequenceClassification

    # torch's default dtype (float32 unless changed) whatever dtype the checkpoint was saved
    # in (autocast handles bf16)
    kwargs: dict[str, Any] = {
        "attn_implementation": "eager" if eager else "sdpa",
        "dtype": torch.get_default_dtype(),
    }
    if num_labels is not None:
        kwargs["num_labels"] = num_labels
        kwargs["problem_type"] = "regression" if num_labels == 1 else None
    if layers is not None:
        config = AutoConfig.from_pretrained(resolve_backbone(name_or_path))
        if config.model_type == "distilbert":
            kwargs["n_layers"] = layers
        else:
            kwargs["num_hidden_layers"] = layers
    if layers is None:
        return AutoModelForSequenceClassification.from_pretrained(
            resolve_backbone(name_or_path), **kwargs
        )
    from transformers.utils import logging as hf_logging

    before = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the dropped layers' weights are "unexpected": by design
    try:
        return AutoModelForSequenceClassification.from_pretrained(
            resolve_backbone(name_or_path), **kwargs
        )
    finally:
        hf_logging.set_verbosity(before)


def build_student(
    cfg: StudentConfig,
    teacher_config: PretrainedConfig,
    spec: TaskSpec,
    teacher: PreTrainedModel | None = None,
    backbone: str | None = None,
    eager: bool = False,
) -> PreTrainedModel:
    """A student classifier; `remap` copies from `teacher`, `pretrained` loads `backbone`."""
    from transformers import (
        BertConfig,
        BertForSequenceClassification,
        DistilBertConfig,
        DistilBertForSequenceClassification,
    )

    t_shape = Shape.of(teacher_config)
    s = student_shape(cfg, t_shape)
    attn = "eager" if eager else "sdpa"
    if cfg.init == "pretrained":
        if backbone is None:
            raise ConfigError("'student.init: pretrained' needs a backbone")
        model = load_classifier(backbone, spec.num_labels, eager, layers=s.layers)
        _set_dropout(model, cfg.dropout)
        return model
    common = {
        "num_labels": spec.num_labels,
        "problem_type": "regression" if spec.is_regression else "single_label_classification",
        "vocab_size": teacher_config.vocab_size,
        "max_position_embeddings": teacher_config.max_position_embeddings,
        "pad_token_id": teacher_config.pad_token_id,
    }
    config: PretrainedConfig
    if s.architecture == "distilbert":
        config = DistilBertConfig(
            n_layers=s.layers,
            dim=s.width,
            n_heads=s.heads,
            hidden_dim=s.intermediate,
            dropout=cfg.dropout,
            attention_dropout=cfg.dropout,
            **common,
        )
        config._attn_implementation = attn
        model = DistilBertForSequenceClassification(config)
    else:
        config = BertConfig(
            num_hidden_layers=s.layers,
            hidden_size=s.width,
            num_attention_heads=s.heads,
            intermediate_size=s.intermediate,
            hidden_dropout_prob=cfg.dropout,
            attention_probs_dropout_prob=cfg.dropout,
            type_vocab_size=getattr(teacher_config, "type_vocab_size", 2),
            hidden_act=getattr(teacher_config, "hidden_act", "gelu"),
            layer_norm_eps=getattr(teacher_config, "layer_norm_eps", 1e-12),
            **common,
        )
        config._attn_implementation = attn
        model = BertForSequenceClassification(config)
    if cfg.init == "remap":
        if teacher is None:
            raise ConfigError("'student.init: remap' needs the teacher's weights")
        remap_from_teacher(model, teacher, remap_sources(s.layers, t_shape.layers, cfg))
    return model


def remap_sources(student_layers: int, teacher_layers: int, cfg: StudentConfig) -> tuple[int, ...]:
    """Teacher layer (1-based) copied into each student layer.

    Smaller students: the layer map (uniform by default, DistilBERT/PKD style). Larger ones
    (docs/methods.md §5): student layer i <- teacher layer i while i <= M, later ones <- layer M.
    """
    if student_layers <= teacher_layers:
        return layer_map(cfg, teacher_layers)
    return tuple(min(n, teacher_layers) for n in range(1, student_layers + 1))


_LAYER_KEY = re.compile(r"^(.*\.layer\.)(\d+)(\..*)$")


def remap_from_teacher(
    student: nn.Module, teacher: nn.Module, sources: tuple[int, ...]
) -> list[str]:
    """Copy teacher weights into the student key by key; layer n <- teacher layer sources[n-1].

    Every student tensor must find a teacher tensor of the same shape; returns the copied keys.
    """
    t_state = teacher.state_dict()
    s_state = student.state_dict()
    copied: list[str] = []
    with torch.no_grad():
        for key, value in s_state.items():
            src = key
            m = _LAYER_KEY.match(key)
            if m:
                src = f"{m.group(1)}{sources[int(m.group(2))] - 1}{m.group(3)}"
            if src not in t_state:
                if key.endswith("position_ids") or "classifier" in key or "pooler" in key:
                    continue  # buffers and a head the teacher may not have
                raise ConfigError(f"'student.init: remap' found no teacher weight for '{key}'")
            if t_state[src].shape != value.shape:
                raise ConfigError(
                    f"'student.init: remap' cannot copy teacher '{src}' {tuple(t_state[src].shape)}"
                    f" into student '{key}' {tuple(value.shape)}; use init: random or match shapes"
                )
            value.copy_(t_state[src])
            copied.append(key)
    return copied


def _set_dropout(model: nn.Module, p: float) -> None:
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = p


# ---------------------------------------------------------------------------------- features


def self_attention_blocks(model: PreTrainedModel) -> list[nn.Module]:
    """The self-attention module of each transformer layer (its output is the context)."""
    base = getattr(model, model.base_model_prefix, model)
    encoder = getattr(base, "encoder", None)
    if encoder is None or not hasattr(encoder, "layer"):
        raise ConfigError(
            f"attention context is only captured from BERT-style encoders, not "
            f"{model.config.model_type}; drop 'attention_relation' or use a BERT student"
        )
    return [layer.attention.self for layer in encoder.layer]


@contextlib.contextmanager
def _capture_context(model: PreTrainedModel, layers: frozenset[int]) -> Iterator[dict[int, Any]]:
    captured: dict[int, torch.Tensor] = {}
    handles = []
    if layers:
        blocks = self_attention_blocks(model)
        for n in layers:

            def hook(_m: nn.Module, _i: Any, out: Any, n: int = n) -> None:
                captured[n] = out[0] if isinstance(out, tuple) else out

            handles.append(blocks[n - 1].register_forward_hook(hook))
    try:
        yield captured
    finally:
        for h in handles:
            h.remove()


def encode(model: PreTrainedModel, batch: dict[str, torch.Tensor], needs: Needs) -> Features:
    """One forward pass returning the requested features."""
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    if model.config.model_type == "bert" and "token_type_ids" in batch:
        inputs["token_type_ids"] = batch["token_type_ids"]
    want_hidden = bool(needs.hidden)
    want_attn = bool(needs.attn_probs)
    with _capture_context(model, needs.attn_context) as context:
        out = model(**inputs, output_hidden_states=want_hidden, output_attentions=want_attn)
    feats = Features(logits=out.logits)
    if want_hidden:
        feats.hidden = {n: out.hidden_states[n] for n in needs.hidden}
    if want_attn:
        if out.attentions is None or out.attentions[0] is None:
            raise ConfigError(
                "the model returned no attention probabilities; load it with "
                "attn_implementation='eager' (kdray does this when 'attention' is chosen)"
            )
        feats.attn_probs = {n: out.attentions[n - 1] for n in needs.attn_probs}
    feats.attn_context = dict(context)
    return feats


def save_model_folder(
    model: PreTrainedModel, tokenizer: Any, folder: Path, meta: dict[str, Any]
) -> None:
    """A complete Hugging Face folder, written atomically: weights, config (with the task's
    `id2label`/`label2id`), tokenizer, a model card (README.md) and kdray's metadata
    (TEACHER_META: task, scores). `transformers.pipeline` loads it, and a kdray student
    saved so is a valid `teacher.path`."""
    from kdray.base.io import atomic_dir
    from kdray.models.card import write_model_meta

    names = meta.get("labels") or list(TASKS[meta["task"]].id2label.values())
    id2label = dict(enumerate(names))
    model.config.id2label = id2label
    model.config.label2id = {name: i for i, name in id2label.items()}
    with atomic_dir(folder) as tmp:  # never a half-written folder
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        write_model_meta(tmp, meta, model.config)
