"""A trial's configuration: typed, frozen, validated before any work.

- `sections`: one dataclass per YAML section (`data`, `teacher`, `student`, `knowledge`,
  `selector`, `teacher_policy`, `stages`, `trainer`, `teacher_gate`, `probe`).
- `trial`: `TrialConfig` (the whole trial, from a nested dict) and its validation.
- `recipes`: published methods as named presets (`recipe: mlkd`).

Checks that need a registry (knowledge types, selectors, teacher policies) are
`kdray.training.checks`'.

May import: `kdray.base`. Imports no torch, pandas or numpy.
"""

from kdray.base.strict import flat_paths, set_path
from kdray.config.sections import (
    DEFAULT_BACKBONE,
    MUTABLE_PATHS,
    DataConfig,
    KnowledgeConfig,
    ProbeConfig,
    ScheduleBucket,
    SelectorConfig,
    StageConfig,
    StudentConfig,
    TeacherConfig,
    TeacherGateConfig,
    TeacherPolicyConfig,
    TrainerConfig,
    WeightSchedule,
    is_mutable,
    split_sizes,
    tiles_progress,
)
from kdray.config.trial import TrialConfig, config_paths, pool_names, validate

__all__ = [
    "DEFAULT_BACKBONE",
    "MUTABLE_PATHS",
    "DataConfig",
    "KnowledgeConfig",
    "ProbeConfig",
    "ScheduleBucket",
    "SelectorConfig",
    "StageConfig",
    "StudentConfig",
    "TeacherConfig",
    "TeacherGateConfig",
    "TeacherPolicyConfig",
    "TrainerConfig",
    "TrialConfig",
    "WeightSchedule",
    "config_paths",
    "flat_paths",
    "is_mutable",
    "pool_names",
    "set_path",
    "split_sizes",
    "tiles_progress",
    "validate",
]
