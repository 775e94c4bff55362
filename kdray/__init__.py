"""kdray: distributed search over knowledge-distillation policies for BERT-family models."""

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
]
