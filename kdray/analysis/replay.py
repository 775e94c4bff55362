"""Replaying a probe sweep's schedule: the trial config that trains one student with the
schedule the report exported, and the command that runs it."""

from __future__ import annotations

import logging
import shlex
from pathlib import Path

from kdray.analysis.tables import Sweep
from kdray.base.errors import KdrayError
from kdray.base.io import atomic_write_text

log = logging.getLogger(__name__)

#: The trial config `write_replay` writes beside the schedule.
REPLAY_FILE = "replay.yaml"


def write_replay(sweep: Sweep, out: Path) -> Path | None:
    """out/REPLAY_FILE: the sweep's base trial (its saved sweep file's) training with the
    exported schedule (out/schedule.yaml) instead of its selector: no probes, no stages (the
    schedule is one plan), a recipe's presets already spelled out, every knowledge type the
    schedule weights. Searched knobs take their base values. None (logged) when the sweep
    file is not saved beside the results, or the sweep searched its teacher pool (the base
    trial would train with every teacher, which no trial did)."""
    import yaml

    from kdray.search.folder import load_saved_spec

    try:
        spec = load_saved_spec(sweep.path)
    except KdrayError as exc:
        log.warning("no replay config: %s", exc)
        return None
    if "pool" in spec.search:
        log.warning("no replay config: the sweep searched its teacher pool; pick the teachers "
                    "and set selector.schedule_file in a trial config of your own")  # fmt: skip
        return None
    raw = spec.base_trial().to_dict()
    schedule = yaml.safe_load((out / "schedule.yaml").read_text())["schedule"]
    weighted = [k for bucket in schedule for k in bucket["weights"]]
    raw["knowledge"]["types"] = list(dict.fromkeys([*raw["knowledge"]["types"], *weighted]))
    raw["selector"] = {"kind": "schedule", "schedule_file": str(out.resolve() / "schedule.yaml"),
                       "phase_length": raw["selector"]["phase_length"]}  # fmt: skip
    for section in ("probe", "stages", "recipe"):  # the recipe's presets are in raw already
        raw.pop(section, None)
    raw["trainer"]["output_dir"] = None  # a new run folder each time
    atomic_write_text(out / REPLAY_FILE, yaml.safe_dump(raw, sort_keys=False))
    return out.resolve() / REPLAY_FILE


def replay_command(replay: Path) -> str:
    """The command that trains one student with the exported schedule."""
    return f"python -m kdray.train --config {shlex.quote(str(replay))}"
