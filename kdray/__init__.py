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
    "TeacherConfig",
    "TrainerConfig",
    "TrialConfig",
    "__version__",
    "check_trial",
]


def __getattr__(name: str) -> object:
    """`kdray.check_trial`, imported on first use: it loads the registries (torch), which
    `import kdray` (configs, tasks) does not need."""
    if name == "check_trial":
        from kdray.checks import check_trial

        return check_trial
    raise AttributeError(f"module 'kdray' has no attribute {name!r}")
