"""kdray: distributed search over knowledge-distillation policies for BERT-family models."""

from typing import TYPE_CHECKING

from kdray.config import (
    DataConfig,
    KnowledgeConfig,
    SelectorConfig,
    StudentConfig,
    TeacherConfig,
    TrainerConfig,
    TrialConfig,
)
from kdray.errors import ConfigError, DataError, KdrayError

if TYPE_CHECKING:
    from kdray.api import SweepRun, run_sweep, run_trial
    from kdray.checks import check_trial

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
    "run_sweep",
    "run_trial",
]

#: Names imported on first use: they load the registries (torch), which `import kdray`
#: (configs, tasks) does not need.
_LAZY = {
    "check_trial": "kdray.checks",
    "run_sweep": "kdray.api",
    "run_trial": "kdray.api",
    "SweepRun": "kdray.api",
}


def __getattr__(name: str) -> object:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'kdray' has no attribute {name!r}")
