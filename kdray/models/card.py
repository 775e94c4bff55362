"""What kdray writes beside a model it saves: its metadata (`TEACHER_META`: task, role, scores,
how it was made) and its model card (README.md: what it is, how it was made, what it scored,
and how to load it; Hugging Face's hub and `huggingface_hub.ModelCard` read the YAML front
matter). `write_model_meta` writes both, `read_model_meta` reads the metadata back."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from kdray.data.reader import FORMATS
from kdray.data.tasks import TASKS, TaskSpec

#: The hub's id of the GLUE datasets kdray trains on.
GLUE_DATASET = "nyu-mll/glue"
#: What kdray writes beside a fine-tuned teacher (or a saved student): its task and scores.
TEACHER_META = "kdray_teacher.json"


def read_model_meta(folder: str | Path) -> dict[str, Any]:
    """The kdray metadata of a model folder ({} for a folder kdray did not write)."""
    meta = Path(folder) / TEACHER_META
    return json.loads(meta.read_text()) if meta.is_file() else {}


def write_model_meta(folder: Path, meta: dict[str, Any], model_config: Any) -> None:
    """`meta` (TEACHER_META) and the model card made from it into `folder`."""
    (folder / TEACHER_META).write_text(json.dumps(meta, indent=2))
    (folder / "README.md").write_text(model_card(meta, model_config))


def selector_name(selector: Any) -> str:
    """'acks (two_stage)' for ACKS, else the kind: how a card names a run's selector."""
    return f"{selector.kind} ({selector.mode})" if selector.kind == "acks" else selector.kind


def _score(scores: dict[str, Any], metric: str) -> str:
    value = scores.get(metric)
    return "—" if value is None else f"{float(value):.4f}"


def task_meta(spec: TaskSpec) -> dict[str, Any]:
    """What a saved model's metadata says of its task: name, class names in id order, metrics
    and, for your own dataset, where it came from (path, files, revision, content sha256)."""
    out: dict[str, Any] = {
        "task": spec.name,
        "text_columns": list(spec.text_columns),
        "labels": list(spec.id2label.values()),
        "metrics": list(spec.metrics),
        "main_metric": spec.main_metric,
    }
    if spec.source is not None:
        out["dataset"] = dict(spec.source)
    return out


def _described(meta: dict[str, Any]) -> tuple[str, list[str], str, int, list[str]]:
    """(name, metrics, what the data is, text columns, the card's datasets) of a meta."""
    if meta.get("dataset") is None:  # a GLUE task (also metadata written before datasets)
        spec = TASKS[meta["task"]]
        return spec.name, list(spec.metrics), f"GLUE {spec.name}", len(spec.text_columns), [
            GLUE_DATASET
        ]  # fmt: skip
    d = meta["dataset"]
    files = d.get("data_files") or {}
    where = ", ".join(f"{k}: {Path(v[0]).name}" for k, v in files.items()) or d["path"]
    ident = f"revision {d['revision']}" if d.get("revision") else f"sha256 {d['sha256'][:12]}"
    local = files or d["path"] in FORMATS or Path(d["path"]).expanduser().exists()
    hub = [] if local else [d["path"]]  # the front matter's datasets: hub ids only
    texts = len(meta.get("text_columns", [""]))
    return meta["task"], list(meta["metrics"]), f"{meta['task']} ({where}; {ident})", texts, hub


def model_card(meta: dict[str, Any], model_config: Any) -> str:
    """README.md for a student (or teacher) folder. `meta`: the folder's kdray metadata (task,
    role, teachers, steps, validation, test, main_metric, knowledge, selector, config);
    `model_config`: the model's HF config (shape and labels)."""
    name, metrics, described, n_texts, hub = _described(meta)
    metric = meta.get("main_metric") or metrics[0]
    role = meta.get("role", "student")
    layers = getattr(model_config, "num_hidden_layers", getattr(model_config, "n_layers", "?"))
    width = getattr(model_config, "hidden_size", getattr(model_config, "dim", "?"))
    heads = getattr(model_config, "num_attention_heads", getattr(model_config, "n_heads", "?"))
    arch = getattr(model_config, "model_type", "bert")
    labels = ", ".join(str(v) for _, v in sorted(model_config.id2label.items()))
    front = {
        "library_name": "transformers",
        "pipeline_tag": "text-classification",
        "tags": [
            "kdray",
            "knowledge-distillation",
            *(["glue"] if hub == [GLUE_DATASET] else []),
            name,
        ],
        **({"datasets": hub} if hub else {}),
        "metrics": metrics,
    }
    teachers = meta.get("teachers") or {}
    rows = [
        ("task", f"{described} ({labels})"),
        ("model", f"{arch}, {layers} layers, width {width}, {heads} heads"),
    ]
    if role == "student":
        rows += [
            ("teacher" if len(teachers) == 1 else "teachers",
             ", ".join(f"`{p}`" if n == "teacher" else f"{n}: `{p}`"
                       for n, p in teachers.items()) or "—"),
            ("knowledge", ", ".join(meta.get("knowledge", [])) or "—"),
            ("selector", str(meta.get("selector", "—"))),
        ]  # fmt: skip
    else:
        rows.append(("backbone", f"`{meta.get('backbone', '—')}` (fine-tuned on the task)"))
    test = next(iter((meta.get("test") or {}).items()), None)
    rows += [
        ("training steps", str(meta.get("steps", "—"))),
        (f"validation {metric} (10% of train, model selection)",
         _score(meta.get("validation") or {}, metric)),
    ]  # fmt: skip
    if test is not None:
        rows.append(
            (
                f"{'GLUE ' if hub == [GLUE_DATASET] else ''}{test[0]} {metric} (measured, never "
                f"tuned on)",
                _score(test[1], metric),
            )
        )
    what = "distilled" if role == "student" else "fine-tuned"
    pair = '{"text": "The cat sat on the mat.", "text_pair": "A cat was sitting."}'
    example = pair if n_texts == 2 else '"a gripping, funny and touching film"'
    lines = [
        "---",
        yaml.safe_dump(front, sort_keys=False).strip(),
        "---",
        "",
        f"# {name} {role} ({what} by kdray)",
        "",
        f"A {layers}-layer {arch} classifier for {described}, {what} by kdray. The "
        f"scores below were measured by the run that wrote this folder.",
        "",
        "| | |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in rows],
        "",
        "## Use",
        "",
        "```python",
        "from transformers import pipeline",
        "",
        'classify = pipeline("text-classification", model="PATH/TO/THIS/FOLDER")',
        f"print(classify({example}))",
        "```",
    ]
    if meta.get("config"):
        lines += [
            "",
            "## Training config",
            "",
            "The kdray trial config of the run (`python -m kdray.train --config FILE` reruns it):",
            "",
            "```yaml",
            yaml.safe_dump(meta["config"], sort_keys=False).strip(),
            "```",
        ]
    return "\n".join(lines) + "\n"
