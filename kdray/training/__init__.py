"""One distillation run, from a checked config to a saved student.

- `checks`: `check_trial`, every check of a config that needs a registry (knowledge types,
  selectors, teacher policies, model configs); `trial_config` reads a YAML file with overrides.
- `build`: `setup`, everything a run trains with (data, student, teachers, knowledge modules).
- `loop`: the batch order, the optimiser step, evaluation and prediction.
- `stages`: a run's stage plan (MLKD-BERT's two stages, or one).
- `phaselog`, `probes`: what each phase did, and the counterfactual knowledge probes.
- `checkpoint`: saving and restoring a run atomically.
- `trainer`: `Run` and `distil(cfg)`; `finish`: its results and its student folder.
- `policy_wiring`: what the trainer hands a teacher policy.
- `fine_tune`: a teacher fine-tuned once per (backbone, task, recipe); `teacher_gate`: a
  weak teacher checked against a reference before a run distils from it.

May import: every package below it (`base`, `config`, `data`, `models`, `knowledge`,
`selector`, `teacher_policy`, `teachers`). The names below are imported on first use.
"""

from typing import TYPE_CHECKING

from kdray.base.lazy import lazy_exports

if TYPE_CHECKING:  # the names _EXPORTS re-exports, for type checkers
    from kdray.training.checks import check_trial, trial_config  # noqa: F401
    from kdray.training.fine_tune import ensure_teacher, resolve_teachers  # noqa: F401
    from kdray.training.trainer import Run, distil  # noqa: F401


_EXPORTS = {
    "kdray.training.checks": ("check_trial", "trial_config"),
    "kdray.training.fine_tune": ("ensure_teacher", "resolve_teachers"),
    "kdray.training.trainer": ("Run", "distil"),
}  # fmt: skip
__all__ = sorted(name for names in _EXPORTS.values() for name in names)
__getattr__ = lazy_exports(__name__, _EXPORTS)
