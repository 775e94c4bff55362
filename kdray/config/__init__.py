"""A trial's configuration: typed, frozen, validated before any work.

- `sections`: what a trial trains on and how (`data`, `teacher`, `student`, `trainer`,
  `teacher_gate`), one dataclass per YAML section.
- `selection`: what it transfers, and when (`knowledge`, `selector`, `teacher_policy`,
  `stages`, `probe`).
- `trial`: `TrialConfig` (the whole trial, from a nested dict) and its validation.
- `recipes`: published methods as named presets (`recipe: mlkd`).

Checks that need a registry (knowledge types, selectors, teacher policies) are
`kdray.training.checks`'.

May import: `kdray.base`. Imports no torch, pandas or numpy.
"""

from kdray.base.strict import flat_paths, set_path
from kdray.config import sections, selection, trial
from kdray.config.sections import *  # noqa: F403
from kdray.config.selection import *  # noqa: F403
from kdray.config.trial import *  # noqa: F403

__all__ = [*sections.__all__, *selection.__all__, *trial.__all__, "flat_paths", "set_path"]
