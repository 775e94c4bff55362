"""The keep rules over a whole sweep (`sweep.keep`): at the sweep's end, and for sweeps
already on disk (`python -m kdray.export SWEEP --prune`).

    from kdray.analysis import prune_sweep
    pruned = prune_sweep("~/kdray_results/quickstart", students="best:1")
    print(pruned.describe())

Ended trials (finished, pruned, diverged) lose their training states but the one the rule keeps
(`states: best`: the leaderboard's first trial's; `all`: each trial's last), and the students the
rule does not keep (`students: best:K`: the leaderboard's K best finished trials'; `none`: every
one). Trials Tune has not ended (an interrupted sweep's running ones) and errored trials keep their
states: `--resume` continues them; in a PBT sweep with such trials no state is deleted (PBT may
clone any of them). Logs, configs and results are never touched. `kdray.search.states` settles each
trial as it ends; this adds the rules that need the whole sweep's ranking.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kdray.analysis.tables import Sweep, leaderboard, load_sweep
from kdray.base.errors import ConfigError, WriteError
from kdray.base.io import fs_path, storage_fs

if TYPE_CHECKING:  # kdray.search loads torch: imported where a sweep is pruned, not by --help
    from kdray.search.spec import KeepConfig
    from kdray.search.states import Freed

log = logging.getLogger(__name__)

#: Trial statuses whose states stay: Tune continues these trials on --resume.
CONTINUED = ("errored", "running", "pending", "paused")


@dataclass
class Pruned:
    """What `prune_sweep` did."""

    path: str
    keep: KeepConfig
    freed: Freed
    #: Ended trials settled (their states deleted or kept by the rule).
    settled: int = 0
    #: Trials whose states stay for --resume (errored, or not ended), by status.
    continued: dict[str, int] = field(default_factory=dict)
    #: Trials whose last state the rule kept, and whose student it kept.
    states_kept: list[str] = field(default_factory=list)
    students_kept: list[str] = field(default_factory=list)
    #: A PBT sweep with trials to --resume: every training state stays (PBT may clone them).
    states_held: bool = False
    #: Folders of errored trials that `--retry-errored` started again as new trials (Tune no
    #: longer lists them), whose states were deleted.
    replaced: int = 0

    def describe(self) -> str:
        """One paragraph for the command line."""
        mb = self.freed.bytes / 2**20
        text = (
            f"{self.path}: freed {mb:,.1f} MB ({self.freed.paths} files or folders) from "
            f"{self.settled} ended trial{'s' if self.settled != 1 else ''}; kept "
            f"{len(self.students_kept)} student{'s' if len(self.students_kept) != 1 else ''}"
            f" (students: {self.keep.students}) and {len(self.states_kept)} training "
            f"state{'s' if len(self.states_kept) != 1 else ''} (states: {self.keep.states})"
        )
        if self.replaced:
            text += f"; settled {self.replaced} errored trial(s) that --retry-errored replaced"
        if self.continued:
            waiting = ", ".join(f"{n} {status}" for status, n in self.continued.items())
            text += f"; left alone for --resume: {waiting}"
        if self.states_held:
            text += "; no training state deleted: PBT may clone any of them when the sweep resumes"
        return text


def prune_sweep(
    path: str | Path, states: str | None = None, students: str | None = None, *,
    check_running: bool = True,
) -> Pruned:  # fmt: skip
    """Apply the keep rules to the sweep at `path`: the sweep file's `sweep.keep`, with
    `states` / `students` (e.g. "best:3") given here taking its place. Refused while the
    sweep runs (`check_running`: False only for the sweep itself, at its end)."""
    from kdray.search.folder import check_not_running, saved_keep
    from kdray.search.spec import KeepConfig
    from kdray.search.states import STATES, Freed, students_rule

    if states is not None and states not in STATES:
        raise ConfigError(f"--states must be {', '.join(STATES)}; got {states!r}")
    if students is not None:
        students_rule(students, "--keep")
    sweep = load_sweep(path, phases=False, history=False)
    if check_running:
        check_not_running(sweep.path)
    try:
        keep, scheduler = saved_keep(sweep.path)
    except ConfigError:
        if states is None or students is None:  # never guess what the sweep meant to keep
            raise
        # both given: the rules are known; the scheduler is not, so assume the one (PBT) that
        # may still clone ended trials' states
        keep, scheduler = KeepConfig(), "pbt"
    given: dict[str, Any] = {"states": states, "students": students}
    keep = replace(keep, **{k: v for k, v in given.items() if v is not None})
    done = Pruned(path=sweep.path, keep=keep, freed=Freed())
    if sweep.trials.empty:
        return done
    try:
        _settle(sweep, keep, scheduler, done)
    except OSError as exc:  # a listing or a write of the storage failed
        raise WriteError(
            f"pruning {sweep.path} stopped: {exc}; what was freed so far stays freed: run the "
            f"same command again once the storage answers"
        ) from exc
    return done


def _settle(sweep: Sweep, keep: KeepConfig, scheduler: str, done: Pruned) -> None:
    """The rules applied trial by trial (`prune_sweep`), into `done`."""
    from kdray.search.states import (
        drop_student,
        end_trial,
        has_student,
        students_rule,
        trial_states,
    )

    rule, k = students_rule(keep.students)
    board = leaderboard(sweep, n=len(sweep.trials))
    best_state = {board.index[0]} if keep.states == "best" and len(board) else set()
    fs, _ = storage_fs(sweep.path)
    finished = [i for i in board[board["status"] == "finished"].index
                if has_student(fs, fs_path(str(sweep.trials.loc[i, "path"])))]  # fmt: skip
    best_students = set(finished[:k]) if rule == "best" else set(finished)
    statuses = sweep.trials["status"].astype(str)
    done.states_held = scheduler == "pbt" and bool(statuses.isin(CONTINUED).any())
    for i, trial in sweep.trials.iterrows():
        where, status = fs_path(str(trial["path"])), str(trial["status"])
        name = Path(where).name
        if status in CONTINUED:
            done.continued[status] = done.continued.get(status, 0) + 1
            continue
        if not done.states_held:
            keep_last = keep.states == "all" or i in best_state
            done.freed.add(end_trial(fs, where, status, keep_last))
            done.settled += 1
            if keep_last and trial_states(fs, where):
                done.states_kept.append(name)
        if not has_student(fs, where):
            continue
        if rule != "none" and i in best_students:
            done.students_kept.append(name)
        else:
            done.freed.add(drop_student(fs, where))
    if not done.states_held:
        for where in _replaced(fs, sweep):
            done.freed.add(end_trial(fs, where, "replaced", keep_last=False))
            done.replaced += 1


def _replaced(fs: Any, sweep: Sweep) -> list[str]:
    """Trial folders Tune no longer lists that hold training states: errored trials that
    `--retry-errored` started again (Tune restarts one as a new trial, in a new folder)."""
    import pyarrow.fs

    from kdray.search.states import trial_states

    listed = {Path(fs_path(str(p))).name for p in sweep.trials["path"]}
    folders = fs.get_file_info(pyarrow.fs.FileSelector(fs_path(sweep.path)))
    return [f.path for f in folders
            if f.type == pyarrow.fs.FileType.Directory and f.base_name not in listed
            and not f.base_name.startswith(".") and trial_states(fs, f.path)]  # fmt: skip


def prune_at_end(path: str) -> Pruned | None:
    """The keep rules at a sweep's end (logged, never a failure of the finished sweep)."""
    try:
        pruned = prune_sweep(path, check_running=False)
    except Exception as exc:  # never the finished sweep's failure
        log.warning("could not apply sweep.keep to %s: %s", path, exc)
        return None
    log.info("%s", pruned.describe())
    return pruned
