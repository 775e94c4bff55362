"""Where a model runs: the device `trainer.device` names, and bf16 autocast on it."""

from __future__ import annotations

import contextlib
from typing import Any

import torch

from kdray.base.errors import ConfigError


def pick_device(name: str) -> torch.device:
    """The device `trainer.device` names: `auto` is CUDA when one is visible, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("'trainer.device: cuda' but no CUDA device is visible; use auto or cpu")
    return torch.device(name)


def autocast(device: torch.device, bf16: bool) -> contextlib.AbstractContextManager[Any]:
    """bf16 autocast on CUDA when asked; nothing elsewhere."""
    if device.type == "cuda" and bf16:
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()
