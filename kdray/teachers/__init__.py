"""The teachers of a run: the pool (loaded, checked against each other and the student) and
their outputs, computed once per (teacher, data) and cached on disk.

- `pool`: `Teacher`, `preflight` (a pool's tokenizer, labels and shapes checked before any
  work), the pool's named folders.
- `outputs`: `TeacherOutputs`, the teachers' logits and features over the training split,
  computed once, cached and shared by a sweep's trials.

Fine-tuning a teacher runs a training, so it is `kdray.training.fine_tune`'s.

May import: `kdray.base`, `kdray.config`, `kdray.data`, `kdray.models`, `kdray.knowledge`.
The names below are imported on first use.
"""

from typing import TYPE_CHECKING

from kdray.base.lazy import lazy_exports

if TYPE_CHECKING:  # the names _EXPORTS re-exports, for type checkers
    from kdray.teachers.outputs import TeacherOutputs, prepare_outputs  # noqa: F401
    from kdray.teachers.pool import Teacher, named_paths, preflight  # noqa: F401


_EXPORTS = {
    "kdray.teachers.outputs": ("TeacherOutputs", "prepare_outputs"),
    "kdray.teachers.pool": ("Teacher", "named_paths", "preflight"),
}  # fmt: skip
__all__ = sorted(name for names in _EXPORTS.values() for name in names)
__getattr__ = lazy_exports(__name__, _EXPORTS)
