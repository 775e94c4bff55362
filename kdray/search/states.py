"""A sweep trial's training states: one owner while the trial runs, none left after it ends.

A training state (`kdray.training.checkpoint`: weights, optimiser moments, selector, RNG) is
three times the student's weights, so a sweep keeps as few as it safely can:

- **While a trial runs** its state has one owner. With the storage a local or mounted folder (and
  any scheduler but PBT) the owner is the run folder: `run/checkpoint.pt` and the one before it,
  which guards against a torn write; what the trial hands Tune at each report is a marker of a few
  bytes (`MARKER`), so Tune still counts the trial's iterations and restarts it, and a report copies
  nothing. A restarted trial goes on from the state the marker names (`back_to_marked`), so an
  evaluation whose report was lost is reported again. With the storage at a URI (the trial's working
  folder is synced there, so a state in it would be uploaded a second time) or under PBT (which
  clones a strong trial's state into a weak one) the owner is Tune: each report moves the state out
  of the run folder into Tune's checkpoint folder (`checkpoint_NNNNNN/`). Tune keeps the last two
  (the one before guards a restore after a crash of the driver; under PBT every one, until the
  sweep ends).
- **When a trial ends** (`StateCallback`, as Tune records it complete) the trial's ending is
  written into its run folder (`ENDED`) and its states are deleted, or all but its last one
  where `sweep.keep.states` keeps it. A trial Tune starts again after a crash of the driver
  finds `ENDED` and stops at once: the state it would need is the one just deleted. Errored
  trials keep theirs: `--resume` continues them. `kdray.analysis.prune` applies the rules
  that need the whole sweep (the best trial's state, the best K students) at its end, and to
  sweeps already on disk (`python -m kdray.export SWEEP --prune`).
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kdray.base.errors import ConfigError
from kdray.base.io import atomic_write_text, write_error
from kdray.base.results import (
    CHECKPOINT,
    PREV_CHECKPOINT,
    STUDENT_DIR,
    TRIAL_RUN_DIR,
    read_results,
)
from kdray.search.spec import KeepConfig, SweepSpec

log = logging.getLogger(__name__)

#: What a trial hands Tune at a report when its run folder owns the state: the step and where.
MARKER = "kdray_state.json"
#: Written into an ended trial's run folder before its states are deleted: its status, what
#: was removed, when.
ENDED = "ended.json"
#: The prefix of Tune's checkpoint folders in a trial folder.
TUNE_CHECKPOINT = "checkpoint_"
#: The prefix of a folder being handed to Tune at a report, beside the trial folders (then the
#: trial folder's name and a random part).
STAGE = ".to-tune-"
#: The values of sweep.keep.students, for messages.
STUDENT_RULES = "finished, none or best:K (K >= 1, e.g. best:3)"
#: The values of sweep.keep.states.
STATES = ("none", "best", "all")


def marker_of(state: Path, step: Any) -> dict[str, Any]:
    """The MARKER of the run folder's state `state` as a report hands it to Tune: the step,
    the file, and its inode (the checkpoint rotation hard-links a state to its previous name,
    so the inode tells which file holds it after a later save)."""
    st = state.stat()
    return {"step": step, "state": str(state), "inode": st.st_ino, "size": st.st_size}


def back_to_marked(run_dir: Path, marker: dict[str, Any], trial_id: str) -> None:
    """A restarted trial whose run folder owns its state goes on from the state Tune recorded
    (`marker`) where that file is still there: a state saved after it (at a later report that
    never reached Tune, the node or process dying in between, or between two reports) is set
    aside for the marked one, now the previous checkpoint, and the steps after the marked one
    run, and are reported, again. Where neither file is the marked one (a filesystem without
    hard links, or a marker older than both) the run folder's newest state is used."""
    current, previous = run_dir / CHECKPOINT, run_dir / PREV_CHECKPOINT

    def marked(path: Path) -> bool:
        try:
            st = path.stat()
        except FileNotFoundError:
            return False
        return (st.st_ino, st.st_size) == (marker.get("inode"), marker.get("size"))

    if not current.is_file() and not previous.is_file():
        log.warning("trial %s: its last checkpoint names %s, which is gone; the trial starts "
                    "over", trial_id, current)  # fmt: skip
    elif not marked(current) and marked(previous):
        os.replace(previous, current)
        log.info("trial %s: back to step %s, the last Tune recorded (the state saved after it "
                 "was never reported)", trial_id, marker.get("step"))  # fmt: skip


def tune_owns_state(storage_is_local: bool, scheduler: str) -> bool:
    """Whether Tune's checkpoint folders hold a live trial's state (else the run folder)."""
    return not storage_is_local or scheduler == "pbt"


def students_rule(value: str, where: str = "sweep.keep.students") -> tuple[str, int]:
    """("finished" | "none" | "best", K) from `finished`, `none`, `best:K` (or `best`: K=1)."""
    text = str(value).strip().replace(" ", "")
    if text in ("finished", "none"):
        return text, 0
    if text == "best" or text.startswith("best:"):
        k = text[5:] or "1"
        if k.isdigit() and int(k) >= 1:
            return "best", int(k)
    raise ConfigError(f"'{where}' must be {STUDENT_RULES}; got {value!r}")


def check_keep(keep: KeepConfig, where: str = "sweep.keep") -> None:
    """`sweep.keep` checked before any work (the states value is checked by its type)."""
    students_rule(keep.students, f"{where}.students")


# --------------------------------------------------------------------------- files of a trial


def _exists(fs: Any, path: str) -> bool:
    import pyarrow.fs

    return bool(fs.get_file_info(path).type != pyarrow.fs.FileType.NotFound)


def _size(fs: Any, path: str) -> int:
    """Bytes under `path` (a file or a folder; 0 when it is not there)."""
    import pyarrow.fs

    info = fs.get_file_info(path)
    if info.type == pyarrow.fs.FileType.File:
        return int(info.size or 0)
    if info.type != pyarrow.fs.FileType.Directory:
        return 0
    found = fs.get_file_info(pyarrow.fs.FileSelector(path, recursive=True))
    return sum(int(i.size or 0) for i in found if i.type == pyarrow.fs.FileType.File)


def trial_states(fs: Any, trial: str) -> list[str]:
    """The training states of the trial folder `trial`, newest first: the run folder's
    checkpoint and the one before it, then Tune's checkpoint folders that hold a state (not a
    marker), highest number first."""
    import pyarrow.fs

    run = f"{trial}/{TRIAL_RUN_DIR}"
    found = [p for p in (f"{run}/{CHECKPOINT}", f"{run}/{PREV_CHECKPOINT}") if _exists(fs, p)]
    try:
        infos = fs.get_file_info(pyarrow.fs.FileSelector(trial))
    except FileNotFoundError:
        return found
    tune = sorted(
        (i.path for i in infos
         if i.type == pyarrow.fs.FileType.Directory and i.base_name.startswith(TUNE_CHECKPOINT)),
        reverse=True,
    )  # fmt: skip
    return found + [d for d in tune if _exists(fs, f"{d}/{CHECKPOINT}")]


@dataclass
class Freed:
    """What deleting gave back: bytes and paths."""

    bytes: int = 0
    paths: int = 0

    def add(self, other: Freed) -> None:
        self.bytes += other.bytes
        self.paths += other.paths


def delete(fs: Any, paths: Iterable[str]) -> Freed:
    """Delete files and folders, counting their bytes; one that cannot be deleted is logged
    (the sweep goes on; `python -m kdray.export SWEEP --prune` can try again)."""
    import pyarrow.fs

    freed = Freed()
    for path in paths:
        size = _size(fs, path)
        try:
            if fs.get_file_info(path).type == pyarrow.fs.FileType.Directory:
                fs.delete_dir(path)
            else:
                fs.delete_file(path)
        except FileNotFoundError:
            continue
        except OSError as exc:
            log.warning("could not delete %s: %s", path, exc)
            continue
        freed.bytes += size
        freed.paths += 1
    return freed


def write_ended(fs: Any, trial: str, status: str, removed: Sequence[str]) -> None:
    """The ENDED record of a trial, written (atomically where the folder is local) before its
    states are removed."""
    import pyarrow.fs

    text = json.dumps({"status": status, "removed": list(removed),
                       "at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}, indent=1)  # fmt: skip
    path = f"{trial}/{TRIAL_RUN_DIR}/{ENDED}"
    if isinstance(fs, pyarrow.fs.LocalFileSystem):
        atomic_write_text(Path(path), text)
        return
    try:
        fs.create_dir(f"{trial}/{TRIAL_RUN_DIR}", recursive=True)
        with fs.open_output_stream(path) as f:  # an object store writes an object whole
            f.write(text.encode())
    except OSError as exc:
        raise write_error(Path(path), exc) from exc


def has_ended(fs: Any, trial: str) -> bool:
    """Whether the trial was ended and its states settled (`ENDED` in its run folder)."""
    return _exists(fs, f"{trial}/{TRIAL_RUN_DIR}/{ENDED}")


def leftovers(fs: Any, trial: str) -> list[str]:
    """Partial files a killed process can leave of a trial's states: a checkpoint's temporary
    file in the run folder (`kdray.base.io.atomic_path`), a folder staged for Tune beside the
    trial folder (`kdray.search.tuner.TuneReporter`)."""
    import pyarrow.fs

    def listing(folder: str) -> list[Any]:
        try:
            return list(fs.get_file_info(pyarrow.fs.FileSelector(folder)))
        except (FileNotFoundError, NotADirectoryError):
            return []

    run, (parent, _, name) = f"{trial}/{TRIAL_RUN_DIR}", trial.rpartition("/")
    partial = tuple(f".{n}." for n in (CHECKPOINT, PREV_CHECKPOINT))
    found = [i.path for i in listing(run)
             if i.base_name.startswith(partial) and i.base_name.endswith(".tmp")]  # fmt: skip
    return found + [i.path for i in listing(parent) if i.base_name.startswith(f"{STAGE}{name}-")]


def end_trial(fs: Any, trial: str, status: str, keep_last: bool) -> Freed:
    """Settle an ended trial: ENDED written, then its states deleted (all but the newest with
    `keep_last`), partial ones too. Nothing is deleted before the record is on disk."""
    states = trial_states(fs, trial)
    drop = (states[1:] if keep_last else states) + leftovers(fs, trial)
    if not drop and has_ended(fs, trial):
        return Freed()
    write_ended(fs, trial, status, drop)
    return delete(fs, drop)


def has_student(fs: Any, trial: str) -> bool:
    """Whether the trial folder holds a student."""
    return _exists(fs, f"{trial}/{TRIAL_RUN_DIR}/{STUDENT_DIR}")


def drop_student(fs: Any, trial: str) -> Freed:
    """Delete a trial's student folder."""
    path = f"{trial}/{TRIAL_RUN_DIR}/{STUDENT_DIR}"
    return delete(fs, [path] if _exists(fs, path) else [])


def trial_status_of(fs: Any, trial: str) -> str:
    """An ended trial's status from its run folder: results.json's (finished, diverged), else
    stopped by the scheduler (pruned)."""
    try:
        return str(read_results(f"{trial}/{TRIAL_RUN_DIR}", fs)["status"])
    except (OSError, ValueError, KeyError):  # none (or unreadable): stopped before its end
        return "pruned"


def callback(spec: SweepSpec) -> Any:
    """The Tune callback that settles each trial as Tune records it complete."""
    from ray.tune import Callback

    s = spec.sweep
    keep_last = s.keep.states != "none"
    rule, k = students_rule(s.keep.students)

    class StateCallback(Callback):
        """Deletes an ended trial's training states (PBT: none before the sweep's end, it
        may still clone them) and, under `students: best:K`, the students of finished trials
        that K others beat already (the sweep's end applies the rule again, over every trial).
        An error here is logged, never a failure of the sweep."""

        def __init__(self) -> None:
            #: (score, trial id, filesystem, trial folder) of the K best finished trials
            self.finished: list[tuple[float, str, Any, str]] = []

        def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any,
                              **info: Any) -> None:  # fmt: skip
            if s.scheduler == "pbt":
                return
            try:
                fs, path = trial.storage.storage_filesystem, trial.storage.trial_fs_path
                status = trial_status_of(fs, path)
                freed = end_trial(fs, path, status, keep_last)
                if rule == "best" and status == "finished":
                    freed.add(self.rank(trial, fs, path))
                elif rule == "none":
                    freed.add(drop_student(fs, path))
                log.debug("trial %s ended: %d bytes freed", trial.trial_id, freed.bytes)
            except Exception as exc:  # never the sweep's failure
                log.warning("could not settle the states of trial %s: %s", trial, exc)

        def rank(self, trial: Any, fs: Any, path: str) -> Freed:
            """Enter a finished trial among the best (ties by trial id, as the leaderboard);
            drop the student pushed past K."""
            value = (trial.last_result or {}).get(s.metric)
            score = -math.inf  # no metric: last (the leaderboard leaves such trials out)
            if isinstance(value, int | float) and not math.isnan(value):  # ±inf: as sorted there
                score = float(value) if s.mode == "max" else -float(value)
            self.finished.append((score, str(trial.trial_id), fs, path))
            self.finished.sort(key=lambda t: (-t[0], t[1]))
            freed = Freed()
            for _, _, fs_out, out in self.finished[k:]:
                freed.add(drop_student(fs_out, out))
            del self.finished[k:]
            return freed

    return StateCallback()
