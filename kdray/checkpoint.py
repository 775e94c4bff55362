"""A run's checkpoint: written atomically, read only for a run of the same config.

The checkpoint (`kdray.results.CHECKPOINT` in the run folder) holds the whole training state
(student, projections, optimiser, schedule, selector, RNG, stage and data position, phase log
and history) as tensors and plain values, so it loads with `torch.load(weights_only=True)`
and a restarted run continues exactly where it stopped.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import torch

from kdray.config import TrialConfig, flat_paths, is_mutable
from kdray.errors import ConfigError
from kdray.io import atomic_torch_save
from kdray.results import CHECKPOINT

log = logging.getLogger(__name__)

#: A run's plain counters and records, saved and restored as they are.
RUN_FIELDS = ("step", "phase", "action", "phase_sums", "phase_steps", "last_losses",
              "reward_loss", "phase_val", "history", "best")  # fmt: skip


def _resumable(config: dict[str, Any], allow_mutation: bool = False) -> dict[str, Any]:
    """The config paths that must not change between a run and its resumption, as the run
    used them: keys an older checkpoint lacks take their defaults, and an unset selector.seed
    is trainer.seed."""
    flat = {**flat_paths(TrialConfig().to_dict()), **flat_paths(config)}
    if flat["selector.seed"] is None:
        flat["selector.seed"] = flat["trainer.seed"]
    return {
        path: v
        for path, v in flat.items()
        if path not in ("cache_dir", "trainer.output_dir")
        and not (allow_mutation and is_mutable(path))
    }


def check_resumable(
    saved: dict[str, Any], cfg: TrialConfig, allow_mutation: bool, out_dir: Path
) -> None:
    """A checkpoint in `out_dir` (of config `saved`) continues only a run of the same config."""
    before, now = (_resumable(c, allow_mutation) for c in (saved, cfg.to_dict()))
    if before != now:
        changed = sorted(p for p in before.keys() | now.keys() if before.get(p) != now.get(p))
        raise ConfigError(
            f"{out_dir} holds a checkpoint of a run with another config (differs in "
            f"{', '.join(changed)}); resume with the same config, or use a fresh "
            f"trainer.output_dir"
        )


def check_output_dir(cfg: TrialConfig, allow_mutation: bool = False) -> None:
    """Before any work: trainer.output_dir is a folder (or not there yet), and a checkpoint
    in it is of this config (only its config is read: the tensors are memory-mapped)."""
    if cfg.trainer.output_dir is None:
        return
    out = Path(cfg.trainer.output_dir).expanduser().resolve()
    if out.exists() and not out.is_dir():
        raise ConfigError(
            f"'trainer.output_dir' {out} is a file; give a folder (new, or holding this "
            f"run's checkpoint to resume)"
        )
    if (out / CHECKPOINT).is_file():
        state = torch.load(out / CHECKPOINT, weights_only=True, map_location="cpu", mmap=True)
        check_resumable(state["config"], cfg, allow_mutation, out)


def save(state: dict[str, Any], out_dir: Path) -> None:
    """Write the training state atomically (a crash leaves the previous checkpoint)."""
    atomic_torch_save(state, out_dir / CHECKPOINT)


def load(out_dir: Path, cfg: TrialConfig, allow_mutation: bool) -> dict[str, Any] | None:
    """The training state in `out_dir`, checked to be of this config; None when there is none."""
    path = out_dir / CHECKPOINT
    if not path.is_file():
        return None
    state: dict[str, Any] = torch.load(path, weights_only=True, map_location="cpu")
    check_resumable(state["config"], cfg, allow_mutation, out_dir)
    return state


def save_run(run: Any) -> None:
    """Write a `kdray.trainer.Run`'s whole training state atomically."""
    state = {
        "config": run.cfg.to_dict(),
        "stage": run.stage.index,
        **{key: getattr(run, key) for key in RUN_FIELDS},
        "phase_rows": run.log.rows,
        "wall_s": run.wall_before + (time.perf_counter() - run.t0),
        # a later segment starts from the initial student again
        "initial": run.initial if any(st.reset_student for st in run.stages) else None,
        "student": run.s.student.state_dict(),
        "knowledge": run.s.knowledge.state_dict(),
        "optimizer": run.optimizer.state_dict(),
        "schedule": run.schedule.state_dict(),
        "selector": run.selector.state_dict(),
        "rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    save(state, run.out_dir)


def restore_run(run: Any) -> bool:
    """Continue a `kdray.trainer.Run` from the checkpoint in its folder (False: none there)."""
    state = load(run.out_dir, run.cfg, run.allow_mutation)
    if state is None:
        return False
    if state["initial"] is not None:
        run.initial = state["initial"]
    run.enter_stage(state["stage"], restoring=True)  # then the saved optimiser state
    run.s.student.load_state_dict(state["student"])
    run.s.knowledge.load_state_dict(state["knowledge"])
    run.optimizer.load_state_dict(state["optimizer"])
    run.schedule.load_state_dict(state["schedule"])
    run.selector.load_state_dict(state["selector"])
    torch.set_rng_state(state["rng"])
    if state["cuda_rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    for key in RUN_FIELDS:
        setattr(run, key, state[key])
    run.log.rows = state["phase_rows"]
    run.wall_before = state["wall_s"]
    log.info("resumed %s at stage %d, step %d", run.out_dir, run.stage.index, run.step)
    return True
