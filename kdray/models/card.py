"""What kdray writes beside a model it saves: its metadata (`TEACHER_META`: task, role, scores,
how it was made) and its model card (README.md: what it is, how it was made, what it scored,
and how to load it; Hugging Face's hub and `huggingface_hub.ModelCard` read the YAML front
matter). `write_model_meta` writes both, `read_model_meta` reads the metadata back."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from kdray.data.tasks import TASKS

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


def model_card(meta: dict[str, Any], model_config: Any) -> str:
    """README.md for a student (or teacher) folder. `meta`: the folder's kdray metadata (task,
    role, teachers, steps, validation, test, main_metric, knowledge, selector, config);
    `model_config`: the model's HF config (shape and labels)."""
    spec = TASKS[meta["task"]]
    metric = meta.get("main_metric") or spec.main_metric
    role = meta.get("role", "student")
    layers = getattr(model_config, "num_hidden_layers", getattr(model_config, "n_layers", "?"))
    width = getattr(model_config, "hidden_size", getattr(model_config, "dim", "?"))
    heads = getattr(model_config, "num_attention_heads", getattr(model_config, "n_heads", "?"))
    arch = getattr(model_config, "model_type", "bert")
    labels = ", ".join(str(v) for _, v in sorted(model_config.id2label.items()))
    front = {
        "library_name": "transformers",
        "pipeline_tag": "text-classification",
        "tags": ["kdray", "knowledge-distillation", "glue", spec.name],
        "datasets": [GLUE_DATASET],
        "metrics": list(spec.metrics),
    }
    teachers = meta.get("teachers") or {}
    rows = [
        ("task", f"GLUE {spec.name} ({labels})"),
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
            (f"GLUE {test[0]} {metric} (measured, never tuned on)", _score(test[1], metric))
        )
    what = "distilled" if role == "student" else "fine-tuned"
    pair = '{"text": "The cat sat on the mat.", "text_pair": "A cat was sitting."}'
    example = pair if len(spec.text_columns) == 2 else '"a gripping, funny and touching film"'
    lines = [
        "---",
        yaml.safe_dump(front, sort_keys=False).strip(),
        "---",
        "",
        f"# {spec.name} {role} ({what} by kdray)",
        "",
        f"A {layers}-layer {arch} classifier for GLUE {spec.name}, {what} by kdray. The "
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
