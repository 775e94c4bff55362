"""kdray: distributed search over knowledge-distillation policies for BERT-family models."""

from typing import TYPE_CHECKING

from kdray.base.errors import ConfigError, DataError, KdrayError
from kdray.base.lazy import lazy_exports
from kdray.config import (
    DataConfig,
    KnowledgeConfig,
    SelectorConfig,
    StudentConfig,
    TeacherConfig,
    TrainerConfig,
    TrialConfig,
)

if TYPE_CHECKING:
    from kdray.analysis import load_sweep
    from kdray.api import SweepRun, run_sweep, run_trial
    from kdray.training.checks import check_trial

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "DataConfig",
    "DataError",
    "KdrayError",
    "KnowledgeConfig",
    "SelectorConfig",
    "StudentConfig",
    "SweepRun",
    "TeacherConfig",
    "TrainerConfig",
    "TrialConfig",
    "__version__",
    "check_trial",
    "load_sweep",
    "run_sweep",
    "run_trial",
]

#: Names imported on first use: they load the registries (torch), which `import kdray`
#: (configs, tasks) does not need.
__getattr__ = lazy_exports(__name__, {
    "kdray.analysis": ("load_sweep",),
    "kdray.api": ("SweepRun", "run_sweep", "run_trial"),
    "kdray.training.checks": ("check_trial",),
})  # fmt: skip
