"""Starting or joining Ray (kdray.search.ray_start): a stale record of a dead head gives a fresh
local Ray with a warning, an address that does not answer a one-line refusal within seconds. A
whole sweep on a machine with a stale record:
tests/search/test_sweep.py::test_single_node_sweep_end_to_end."""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from kdray.base.errors import ConfigError
from kdray.search import ray_start
from tests.helpers import ENV, closed_port


def test_stale_record_gives_a_local_ray_with_a_warning(
    ray_tmp: Path, caplog: pytest.LogCaptureFixture
) -> None:
    dead = f"127.0.0.1:{closed_port()}"
    (ray_tmp / "ray" / "ray_current_cluster").write_text(dead)
    with caplog.at_level(logging.WARNING):
        target = ray_start.resolve(None)
    assert target.local
    assert dead in caplog.text and "ray_current_cluster" in caplog.text
    assert "ray stop" in caplog.text


@pytest.mark.slow
def test_a_record_of_a_live_head_is_joined(ray_tmp: Path) -> None:
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    address = cluster.address
    try:
        (ray_tmp / "ray" / "ray_current_cluster").write_text(address)
        target = ray_start.resolve(None)
    finally:
        cluster.shutdown()
    assert target.address == address and "ray_current_cluster" in target.origin
    assert ray_start.resolve("local").local  # asked for: a local Ray whatever is recorded


def test_no_record_is_a_local_ray(ray_tmp: Path) -> None:
    assert ray_start.resolve(None).local
    with pytest.raises(ConfigError, match="no running Ray cluster"):
        ray_start.resolve("auto")


@pytest.mark.parametrize("env", [False, True])
def test_an_address_that_does_not_answer_is_refused(
    ray_tmp: Path, monkeypatch: pytest.MonkeyPatch, env: bool
) -> None:
    dead = f"127.0.0.1:{closed_port()}"
    if env:
        monkeypatch.setenv("RAY_ADDRESS", dead)
    t0 = time.monotonic()
    with pytest.raises(ConfigError) as err:
        ray_start.resolve(None if env else dead)
    # refused, not retried for ever as ray.init would (generous: a busy machine is slow)
    assert time.monotonic() - t0 < 30
    message = str(err.value)
    assert dead in message and ("$RAY_ADDRESS" if env else "--address") in message
    assert "\n" not in message


def test_sweep_with_an_unreachable_address_exits_2(tmp_path: Path) -> None:
    """The whole command, on a closed port (a listener that is not Ray: the next test)."""
    space = tmp_path / "ok.yaml"
    space.write_text(yaml.safe_dump({"search": {"trainer.seed": {"choice": [0, 1]}}}))
    check_refused(space, tmp_path, f"127.0.0.1:{closed_port()}", "nothing answers")


def test_a_listener_that_is_not_ray_is_refused_within_the_probe_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(ray_start, "PROBE_TIMEOUT_S", 4.0)  # 15 s by default
    timeouts = []
    run = subprocess.run

    def spy(*args: Any, **kwargs: Any) -> Any:
        timeouts.append(kwargs.get("timeout"))
        return run(*args, **kwargs)

    monkeypatch.setattr(ray_start.subprocess, "run", spy)
    with socket.socket() as foreign:
        foreign.bind(("127.0.0.1", 0))
        foreign.listen()
        t0 = time.monotonic()
        why = ray_start.why_not(f"127.0.0.1:{foreign.getsockname()[1]}")
    assert why is not None and "something answers there" in why
    assert timeouts == [4.0]  # the probe is given up on after PROBE_TIMEOUT_S
    assert time.monotonic() - t0 < 30  # not waited on for ever (room for a busy machine)


def check_refused(space: Path, tmp_path: Path, address: str, why: str) -> None:
    """`python -m kdray.sweep --address ADDRESS` exits 2 with one line. Within 30 s: the
    connection and the probe are given up on after REACH_TIMEOUT_S + PROBE_TIMEOUT_S, which
    is asserted rather than timed (the command's start-up alone varies with the machine's
    load); a command that hung would hit the run's timeout."""
    assert ray_start.REACH_TIMEOUT_S + ray_start.PROBE_TIMEOUT_S <= 30
    proc = subprocess.run(
        [sys.executable, "-m", "kdray.sweep", "--space", str(space), "--storage",
         str(tmp_path / "out"), "--address", address],
        capture_output=True, text=True, env=ENV, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert address in proc.stderr and why in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
