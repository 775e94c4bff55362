"""The sweep folder STORAGE/NAME: where a sweep's results, its saved sweep file and its
report live. `storage_path` checks the storage, `claim_name` claims a new folder (never one
that holds a sweep), `save_spec` and `load_saved_spec` keep the sweep file beside the results
(for `--resume` and the analysis), `sweep_folder` finds a sweep again, and `running` marks a
folder whose sweep runs (`check_not_running` refuses to prune it meanwhile).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from kdray.base.errors import ConfigError
from kdray.base.io import atomic_write_text, is_uri, storage_fs, storage_location, write_error
from kdray.base.strict import _build
from kdray.base.yamlio import parse_yaml
from kdray.search.spec import KeepConfig, SweepConfig, SweepSpec
from kdray.search.states import check_keep
from kdray.search.sweep_file import parse_sweep

#: The sweep file as run, saved in the experiment folder (for --resume and kdray.analysis).
SPEC_FILE = "kdray_sweep.yaml"
#: In the experiment folder while its sweep runs: the driver's host, process id and start.
RUNNING_FILE = "kdray_running.json"


def save_spec(spec: SweepSpec, experiment: str, claim: bool = False) -> bool:
    """The sweep as run, beside its results (local folder or a pyarrow-reachable URI).

    `claim`: in a local folder, write it only if the folder has none yet (an exclusive
    create, so of two sweeps started together one wins); False when one was there."""
    import yaml

    text = yaml.safe_dump(spec.to_dict(), sort_keys=False)
    if is_uri(experiment):
        fs, path = storage_fs(experiment)
        fs.create_dir(path, recursive=True)
        with fs.open_output_stream(f"{path}/{SPEC_FILE}") as f:
            f.write(text.encode())
        return True
    if not claim:
        atomic_write_text(Path(experiment) / SPEC_FILE, text)
        return True
    spec_file = Path(experiment) / SPEC_FILE
    try:
        spec_file.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(spec_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(fd, "w") as f:
            f.write(text)
    except FileExistsError:
        return False
    except OSError as exc:  # a full disk, no permission: one line, not a traceback
        spec_file.unlink(missing_ok=True)
        raise write_error(spec_file, exc) from exc
    return True


def sweep_folder(path: str, flag: str) -> str:
    """The sweep folder STORAGE/NAME at `path` (a folder or a storage URI), made absolute;
    a local one that does not exist, or holds no sweep, is refused naming `flag` and `path`."""
    from ray.tune import Tuner

    location = storage_location(path)
    if not is_uri(location) and not Path(location).is_dir():
        raise ConfigError(
            f"{flag} {location}: not found (no such folder); give the folder STORAGE/NAME "
            f"that `python -m kdray.sweep` printed"
        )
    if not Tuner.can_restore(location):
        raise ConfigError(
            f"{flag} {location} is not a sweep folder (no Tune experiment state in it); give "
            f"the folder STORAGE/NAME that `python -m kdray.sweep` printed"
        )
    return location


def _saved_raw(experiment: str, fix: str) -> dict[str, Any]:
    """The sweep file saved beside a sweep's results, as its YAML mapping (`fix`: what to do
    when there is none, for the message)."""
    fs, path = storage_fs(experiment)
    try:
        with fs.open_input_stream(f"{path}/{SPEC_FILE}") as f:
            text = f.read().decode()
    except (FileNotFoundError, OSError) as exc:
        raise ConfigError(
            f"{experiment} has no {SPEC_FILE} (a sweep started before kdray saved it?); {fix}"
        ) from exc
    raw = parse_yaml(text, f"{experiment}/{SPEC_FILE}")
    if not isinstance(raw, dict):
        raise ConfigError(f"{experiment}/{SPEC_FILE} is not a sweep file (not a mapping)")
    return raw


def load_saved_spec(experiment: str) -> SweepSpec:
    """The sweep file saved beside a sweep's results (`save_spec`), validated."""
    raw = _saved_raw(experiment, "pass the sweep's --space FILE as well")
    return parse_sweep(raw, Path(storage_fs(experiment)[1]).name)


def saved_keep(experiment: str) -> tuple[KeepConfig, str]:
    """The saved sweep file's `sweep.keep` and `sweep.scheduler`, read alone: pruning needs
    these two, not the rest of the sweep to validate again (its trackers installed, its
    models and data at hand)."""
    raw = _saved_raw(experiment, "pass both --states and --keep")
    sweep = raw.get("sweep") or {}
    if not isinstance(sweep, dict):
        raise ConfigError(f"'sweep' in {experiment}/{SPEC_FILE} must be a mapping")
    keep = _build(KeepConfig, sweep.get("keep") or {}, "sweep.keep")
    check_keep(keep)
    return keep, str(sweep.get("scheduler", SweepConfig.scheduler))


def storage_path(spec: SweepSpec, override: str | None) -> str:
    """The sweep's storage (`override`, else sweep.storage): a URI as given, a local folder
    made and checked to be writable."""
    location = storage_location(override or spec.sweep.storage)
    if is_uri(location):
        return location
    path = Path(location)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".kdray-write-test-"):
            pass  # a name of its own: two sweeps starting together each probe their own
    except OSError as exc:
        raise ConfigError(
            f"storage path {path} is not writable ({exc.strerror}); pass --storage DIR"
        ) from exc
    return str(path)


def claim_name(spec: SweepSpec, storage: str, name: str, explicit: bool) -> str:
    """STORAGE/NAME for a new sweep, claimed by writing the sweep file into it (created only
    if absent, so two sweeps started together never share a folder). Where NAME holds a sweep
    or another one's claim, a default name gets a timestamp and an explicit --name is refused:
    an earlier sweep is never written over."""
    from ray.tune import Tuner

    stamp = time.strftime("%Y-%m-%d_%H-%M-%S")
    names = [name] if explicit else [name, f"{name}_{stamp}"]
    names += [] if explicit else [f"{name}_{stamp}_{i}" for i in range(2, 100)]
    for candidate in names:
        folder = f"{storage}/{candidate}"
        if Tuner.can_restore(folder):
            if explicit:
                raise ConfigError(
                    f"{folder} already holds a sweep; continue it with --resume {folder}, or "
                    f"give another --name"
                )
            continue
        if save_spec(spec, folder, claim=True):  # a URI has no exclusive create: just saved
            return candidate
        if explicit:
            raise ConfigError(
                f"{folder} is claimed by another sweep starting now (its {SPEC_FILE} is there, "
                f"Tune's state not yet; delete the folder if no sweep is starting); give "
                f"another --name"
            )
    raise ConfigError(f"{storage} holds too many sweeps named {name}*; give another --name")


def release_claim(storage: str, name: str) -> None:
    """Remove a claimed folder that Tune never wrote into (the sweep failed before it)."""
    folder = Path(f"{storage}/{name}")
    if not is_uri(storage) and [p.name for p in folder.iterdir()] == [SPEC_FILE]:
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def running(experiment: str) -> Iterator[None]:
    """Mark `experiment` as running for the block (RUNNING_FILE: host, pid, start)."""
    fs, path = storage_fs(experiment)
    claim = f"{path}/{RUNNING_FILE}"
    text = json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                       "started": time.strftime("%Y-%m-%d %H:%M:%S")})  # fmt: skip
    fs.create_dir(path, recursive=True)
    with fs.open_output_stream(claim) as f:
        f.write(text.encode())
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            fs.delete_file(claim)


def check_not_running(experiment: str) -> None:
    """ConfigError when the sweep at `experiment` runs now (its RUNNING_FILE names a live
    driver; one left by a driver of this machine that is gone is stale, and ignored)."""
    fs, path = storage_fs(experiment)
    try:
        with fs.open_input_stream(f"{path}/{RUNNING_FILE}") as f:
            claim = json.loads(f.read().decode())
    except (FileNotFoundError, OSError, ValueError):
        return
    host, pid = claim.get("host"), int(claim.get("pid", -1))
    if host == socket.gethostname() and not _alive(pid):
        return
    raise ConfigError(
        f"{experiment} is running (its {RUNNING_FILE}: driver {pid} on {host}, started "
        f"{claim.get('started')}); wait until the sweep ends, or delete {RUNNING_FILE} if "
        f"no sweep runs there"
    )


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)  # signal 0: is it there
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True
