"""A run's checkpoint: written atomically, read only for a run of the same config.

The checkpoint (`kdray.base.results.CHECKPOINT` in the run folder) holds the whole training state
(student, projections, optimiser, schedule, selector, RNG, stage and data position, phase log
and history) as tensors and plain values, so it loads with `torch.load(weights_only=True)`
and a restarted run continues exactly where it stopped.

Every save keeps the checkpoint before it (`kdray.base.results.PREV_CHECKPOINT`): the new state is
written to a temporary file, the current checkpoint hard-linked to the previous one's name,
then the temporary file renamed onto the current one, so a crash at any point leaves a
readable checkpoint. A resumed run whose checkpoint cannot be read (truncated, overwritten,
incomplete) says so and continues from the previous one.
"""

from __future__ import annotations

import filecmp
import logging
import re
import shutil
import time
import zipfile
from pathlib import Path
from typing import Any

import torch

from kdray.base.errors import ConfigError
from kdray.base.io import atomic_path, atomic_torch_save, keep_copy, write_error
from kdray.base.results import CHECKPOINT, PREV_CHECKPOINT
from kdray.config import TrialConfig, flat_paths, is_mutable
from kdray.training.state import RUN_FIELDS, RunState

log = logging.getLogger(__name__)

#: What a checkpoint holds; one lacking any of these cannot be resumed from.
STATE_KEYS = ("config", "stage", *RUN_FIELDS, "phase_rows", "wall_s", "initial", "student",
              "knowledge", "optimizer", "schedule", "selector", "teacher_policy", "rng",
              "cuda_rng")  # fmt: skip


def _resumable(config: dict[str, Any], allow_mutation: bool = False) -> dict[str, Any]:
    """The config paths that must not change between a run and its resumption, as the run
    used them: keys an older checkpoint lacks take their defaults, and an unset selector.seed
    or teacher_policy.seed is trainer.seed."""
    flat = {**flat_paths(TrialConfig().to_dict()), **flat_paths(config)}
    for seeded in ("selector.seed", "teacher_policy.seed"):
        if flat[seeded] is None:
            flat[seeded] = flat["trainer.seed"]
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


def _reason(exc: Exception) -> str:
    """Why a zip checkpoint could not be loaded, in one line (torch's own messages run to pages
    and suggest weights_only=False, which would not help)."""
    lines = [re.sub(r"\x1b\[[0-9;]*m", "", ln).strip() for ln in str(exc).splitlines()]
    lines = [ln for ln in lines if ln]
    detail = next((ln for ln in lines if ln.startswith("WeightsUnpickler error")), "")
    detail = detail or (lines[0] if lines else "")
    return f"{type(exc).__name__}: {detail[:160]}" if detail else type(exc).__name__


def _read(path: Path, mmap: bool) -> tuple[dict[str, Any] | None, str]:
    """(the training state in `path`, "") or (None, why it cannot be resumed from)."""
    try:
        size = path.stat().st_size
        if size == 0:
            return None, "the file is empty"
        if not zipfile.is_zipfile(path):  # torch.save writes a zip, its directory at the end
            return None, f"not a complete checkpoint ({size} bytes, no zip directory: truncated?)"
        state = torch.load(path, weights_only=True, map_location="cpu", mmap=mmap)
    except Exception as exc:  # unreadable, or refused by the safe unpickler
        return None, _reason(exc)
    if not isinstance(state, dict):
        return None, f"holds a {type(state).__name__}, not a training state"
    missing = [k for k in STATE_KEYS if k not in state]
    if missing:
        return None, f"incomplete: no {', '.join(missing)}"
    if not isinstance(state["config"], dict):
        return None, "incomplete: its config is not a mapping"
    return state, ""


#: (file, mtime, size) of the unreadable checkpoints already warned about: check_output_dir
#: and load read the same folder one after the other.
_warned: set[tuple[str, int, int]] = set()


def _warn_once(path: Path, why: str, fallback: Path) -> None:
    try:
        st = path.stat()
        key = (str(path), st.st_mtime_ns, st.st_size)
    except OSError:
        key = (str(path), -1, -1)
    if key not in _warned:
        _warned.add(key)
        log.warning(
            "checkpoint %s cannot be read (%s); resuming from the previous one, %s",
            path,
            why,
            fallback,
        )


def _readable(out_dir: Path, mmap: bool) -> tuple[dict[str, Any], Path] | None:
    """The newest readable checkpoint in `out_dir` and its file: CHECKPOINT, else (warned)
    PREV_CHECKPOINT; None when there is neither; ConfigError when neither can be read."""
    paths = [out_dir / CHECKPOINT, out_dir / PREV_CHECKPOINT]
    bad: list[tuple[Path, str]] = []
    for path in paths:
        if not path.is_file():
            if path.name == CHECKPOINT and paths[1].is_file():
                bad.append((path, "missing"))
            continue
        state, why = _read(path, mmap)
        if state is not None:
            for b, reason in bad:
                _warn_once(b, reason, path)
            return state, path
        bad.append((path, why))
    if not bad:
        return None
    named = "; ".join(f"{p} ({why})" for p, why in bad)
    remove = " and ".join(str(p) for p in paths if p.is_file())
    raise ConfigError(
        f"no readable checkpoint in {out_dir}: {named}; to start this run over, delete "
        f"{remove} (or use a fresh trainer.output_dir)"
    )


def check_output_dir(cfg: TrialConfig, allow_mutation: bool = False) -> None:
    """Before any work: trainer.output_dir is a folder (or not there yet), and a checkpoint
    in it is readable and of this config (only its config is read: the tensors are
    memory-mapped)."""
    if cfg.trainer.output_dir is None:
        return
    out = Path(cfg.trainer.output_dir).expanduser().resolve()
    if out.exists() and not out.is_dir():
        raise ConfigError(
            f"'trainer.output_dir' {out} is a file; give a folder (new, or holding this "
            f"run's checkpoint to resume)"
        )
    found = _readable(out, mmap=True) if out.is_dir() else None
    if found is not None:
        check_resumable(found[0]["config"], cfg, allow_mutation, out)


def save(state: dict[str, Any], out_dir: Path) -> None:
    """Write the training state atomically, the checkpoint there now kept as the previous one
    (a crash at any point leaves a readable checkpoint; a full disk, a WriteError)."""
    atomic_torch_save(state, out_dir / CHECKPOINT, keep=out_dir / PREV_CHECKPOINT)


def drop_states(out_dir: Path) -> None:
    """Delete the training states of an ended run's folder (its checkpoint and the previous
    one); the student, logs and results stay."""
    for name in (CHECKPOINT, PREV_CHECKPOINT):
        (out_dir / name).unlink(missing_ok=True)


def install(src: Path, out_dir: Path) -> None:
    """Make `src`, a checkpoint from elsewhere (Ray Tune's copy of a trial's last one, or a
    PBT donor's), the checkpoint of `out_dir`, through the same rotation as `save`. The same
    file as the one there already changes nothing, so both kept versions stay."""
    src, cur = Path(src), out_dir / CHECKPOINT
    if cur.is_file() and filecmp.cmp(src, cur, shallow=False):
        return
    with (
        open(src, "rb") as f,
        atomic_path(cur, keep=out_dir / PREV_CHECKPOINT) as tmp,
        open(tmp, "wb") as g,
    ):
        shutil.copyfileobj(f, g, 1 << 20)


def load(out_dir: Path, cfg: TrialConfig, allow_mutation: bool) -> dict[str, Any] | None:
    """The training state in `out_dir`, checked to be of this config; None when there is none.

    When CHECKPOINT cannot be read the previous one is used (warned), and copied over it:
    otherwise the next save would keep the unreadable file as the previous one."""
    found = _readable(out_dir, mmap=False)
    if found is None:
        return None
    state, path = found
    check_resumable(state["config"], cfg, allow_mutation, out_dir)
    if path.name != CHECKPOINT:
        cur = out_dir / CHECKPOINT
        try:
            keep_copy(path, cur)
        except OSError as exc:
            raise write_error(cur, exc) from exc
        log.info("%s replaced by the previous checkpoint %s", cur, path)
    return state


def save_run(run: RunState) -> None:
    """Write a `kdray.training.trainer.Run`'s whole training state atomically."""
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
        "schedule": run.lr_schedule.state_dict(),  # the LR schedule
        "selector": run.selector.state_dict(),
        "teacher_policy": run.policy.state_dict(),
        "rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "probes": run.prober.state_dict(),  # optional: older checkpoints lack it
    }
    save(state, run.out_dir)


def restore_run(run: RunState) -> bool:
    """Continue a run (a `kdray.training.trainer.Run`) from the checkpoint in its folder (False:
    none there)."""
    state = load(run.out_dir, run.cfg, run.allow_mutation)
    if state is None:
        return False
    if state["initial"] is not None:
        run.initial = state["initial"]
    run.enter_stage(state["stage"], restoring=True)  # then the saved optimiser state
    run.s.student.load_state_dict(state["student"])
    run.s.knowledge.load_state_dict(state["knowledge"])
    run.optimizer.load_state_dict(state["optimizer"])
    run.lr_schedule.load_state_dict(state["schedule"])
    run.selector.load_state_dict(state["selector"])
    run.policy.load_state_dict(state["teacher_policy"])
    torch.set_rng_state(state["rng"])
    if state["cuda_rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    for key in RUN_FIELDS:
        setattr(run, key, state[key])
    run.log.rows = state["phase_rows"]
    if "probes" in state:
        run.prober.load_state_dict(state["probes"])
    run.wall_before = state["wall_s"]
    log.info("resumed %s at stage %d, step %d", run.out_dir, run.stage.index, run.step)
    return True
