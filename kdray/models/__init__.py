"""Models: where a model comes from, what it computes, and the student built after a teacher.

- `source`: a model's folder or hub id, its config.json read before any weights, and the
  checks that config allows (`data.max_length` against its positions, its labels).
- `features`: what a forward pass is asked for (`Needs`) and returns (`Features`), and a
  model's `Shape`.
- `classifier`: loading a classifier, building a student (layer map, remapped init), `encode`,
  saving a Hugging Face model folder.
- `card`: the model card written beside a saved model.
- `device`: the device `trainer.device` names, bf16 autocast.

May import: `kdray.base`, `kdray.config`, `kdray.data`.
"""

from kdray.models.card import TEACHER_META, model_card, read_model_meta, write_model_meta
from kdray.models.classifier import (
    build_student,
    encode,
    layer_map,
    load_classifier,
    save_model_folder,
    student_shape,
)
from kdray.models.device import autocast, pick_device
from kdray.models.features import Features, Needs, Shape
from kdray.models.source import load_config, resolve_backbone

__all__ = [
    "TEACHER_META",
    "Features",
    "Needs",
    "Shape",
    "autocast",
    "build_student",
    "encode",
    "layer_map",
    "load_classifier",
    "load_config",
    "model_card",
    "pick_device",
    "read_model_meta",
    "resolve_backbone",
    "save_model_folder",
    "student_shape",
    "write_model_meta",
]
