"""Start or join Ray: the one way kdray's entry points (the sweep, the benchmarks, the tests)
do it, so a cluster that does not answer is a clear message, never an endless wait.

- `--address` (or $RAY_ADDRESS): that cluster. When it does not answer (no connection within
  `REACH_TIMEOUT_S`, or no Ray driver connects within `PROBE_TIMEOUT_S`: something else
  listens there) the run is refused (ConfigError: one line, exit 2) naming the address.
- neither: the cluster that `ray start` recorded on this machine (Ray's `ray_current_cluster`
  file in its temp folder), when it answers. A stale record (a head that ended without
  `ray stop`: a crash, an out-of-memory kill, a power loss) would make `ray.init()` retry the
  dead address forever; here it gets a one-line warning and a fresh local Ray, as does a
  machine without a record.

`resolve` decides where Ray will run before anything starts, so callers can check a local
run against this machine (`local_resources`) before paying Ray's start-up.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kdray.base.errors import ConfigError

log = logging.getLogger(__name__)

#: Seconds an address gets to accept a connection before it counts as not answering.
REACH_TIMEOUT_S = 5.0
#: Seconds the GCS then gets to answer (about 1 s for a live cluster, also a busy one);
#: with the connection's, a refusal comes within 30 s.
PROBE_TIMEOUT_S = 15.0
#: Run in a child process: a Ray client retries a dead or foreign address forever, so only a
#: child can be given up on (and its Ray warnings stay out of the user's console). The GCS
#: client is what `ray health-check` connects with (a whole driver where that API moved);
#: argv: the address and the seconds to keep trying.
PROBE = """
import sys, time
address, deadline = sys.argv[1], time.monotonic() + float(sys.argv[2])
try:
    from ray._raylet import GcsClient
except ImportError:
    GcsClient = None
if GcsClient is None:
    import ray
    ray.init(address=address, include_dashboard=False)
    sys.exit(0)
while True:  # a GCS busy starting its nodes may miss one connection's timeout
    try:
        GcsClient(address=address)
        sys.exit(0)
    except Exception as exc:
        if type(exc).__name__ == "AuthenticationError":
            sys.exit(3)  # Ray, with token authentication this process is not set up for
        if time.monotonic() > deadline:
            sys.exit(f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:120]}")
        time.sleep(0.5)
"""


@dataclass(frozen=True)
class RayTarget:
    """Where Ray runs: `address` None is a new local Ray on this machine."""

    address: str | None
    origin: str  # "--address", "$RAY_ADDRESS", "the record FILE" or "local"

    @property
    def local(self) -> bool:
        return self.address is None

    def describe(self) -> str:
        if self.address is None:
            return "a new local Ray on this machine"
        return f"the Ray cluster at {self.address} (from {self.origin})"


def record_file() -> Path:
    """Ray's record of the cluster `ray start` last started on this machine (the file its own
    lookup reads: under $RAY_TMPDIR, else $TMPDIR on Linux, else /tmp)."""
    try:
        from ray._common.utils import get_ray_address_file
    except ImportError:  # that module moved: its rule, as of Ray 2.60
        linux_tmp = os.environ.get("TMPDIR") if sys.platform.startswith("linux") else None
        root = os.environ.get("RAY_TMPDIR") or linux_tmp or "/tmp"
        return Path(root) / "ray" / "ray_current_cluster"
    return Path(get_ray_address_file(None))


def host_port(address: str) -> tuple[str, int] | None:
    """(host, port) of 'host:port', 'ray://host:port' or 'http://host:port'; None if malformed."""
    rest = address.split("://", 1)[-1].rstrip("/")
    host, sep, port = rest.rpartition(":")
    if not sep or not host or not port.isdigit():
        return None
    return host.strip("[]"), int(port)


def reachable(address: str, timeout: float = REACH_TIMEOUT_S) -> bool:
    """Whether something accepts connections at `address` within `timeout` seconds."""
    target = host_port(address)
    if target is None:
        return False
    try:
        with socket.create_connection(target, timeout=timeout):
            return True
    except OSError:
        return False


def why_not(address: str) -> str | None:
    """None when a Ray cluster answers at `address`, else why not (one phrase): first a
    connection (quick for a closed port), then a Ray driver connecting in a child process."""
    if host_port(address) is None:
        return "not an address (HOST:PORT)"
    if not reachable(address):
        return f"nothing answers there within {REACH_TIMEOUT_S:g} s"
    if address.startswith("ray://"):  # a Ray Client server: the connection is what we check
        return None
    try:  # the child gives up a little before it is given up on, saying why
        probe = subprocess.run(
            [sys.executable, "-c", PROBE, address, str(PROBE_TIMEOUT_S - 3)],
            capture_output=True, text=True, timeout=PROBE_TIMEOUT_S, stdin=subprocess.DEVNULL,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        return f"something answers there, but no Ray cluster within {PROBE_TIMEOUT_S:g} s"
    if probe.returncode == 3:  # ray.init would retry the refused token forever
        return (
            "a Ray cluster answers there, but with token authentication this process lacks "
            "(set RAY_AUTH_MODE=token and give the cluster's token: ~/.ray/auth_token or "
            "RAY_AUTH_TOKEN)"
        )
    if probe.returncode != 0:
        last = (probe.stderr.strip().splitlines() or ["no reply"])[-1]
        return f"something answers there, but no Ray cluster ({last})"
    return None


def resolve(address: str | None = None, flag: str = "--address") -> RayTarget:
    """Where Ray will run (see the module docstring); nothing is started."""
    given, origin = address, flag
    if not given and os.environ.get("RAY_ADDRESS"):
        given, origin = os.environ["RAY_ADDRESS"], "$RAY_ADDRESS"
    if given in ("local", None, ""):
        return _recorded() if not given else RayTarget(None, "local")
    if given == "auto":
        found = _recorded()
        if found.local:
            raise ConfigError(
                f"{origin} auto: no running Ray cluster answers on this machine; start one "
                f"with `ray start --head`, or leave {flag} out for a local Ray"
            )
        return found
    why = why_not(given)
    if why:
        raise ConfigError(
            f"cannot reach Ray at {origin} {given}: {why}; give a running head node's "
            f"HOST:PORT (`ray status` on the head prints it), or leave {flag} out (and unset "
            f"RAY_ADDRESS) for a local Ray"
        )
    return RayTarget(given, origin)


def _recorded() -> RayTarget:
    """The cluster `ray start` recorded on this machine if it answers, else a local Ray."""
    record = record_file()
    try:
        address = record.read_text().strip()
    except OSError:
        return RayTarget(None, "local")
    why = why_not(address) if address else "an empty record"
    if why is None:
        return RayTarget(address, f"the record {record}")
    log.warning(
        "%s names a Ray cluster at %s that does not answer (%s: a head that ended without "
        "`ray stop`?); starting a fresh local Ray instead. Clean up with `ray stop` (or "
        "delete that file)",
        record,
        address or "(empty)",
        why,
    )
    return RayTarget(None, "local")


def local_resources() -> dict[str, float]:
    """What a local Ray gets by default: the CPUs Ray counts (a container's CPU quota
    included) and the visible GPUs."""
    try:
        from ray._private.utils import get_num_cpus

        cpus: float = get_num_cpus()
    except ImportError:  # that module moved: this process's CPUs
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 0
    import torch

    return {"CPU": float(cpus or os.cpu_count() or 1), "GPU": float(torch.cuda.device_count())}


def start(target: RayTarget, **init: Any) -> None:
    """ray.init on `target` (`init`: other ray.init arguments, e.g. num_cpus for a local Ray).

    The dashboard stays off, and on localhost when a caller turns it on."""
    import ray

    settings: dict[str, Any] = {"include_dashboard": False, "dashboard_host": "127.0.0.1"}
    try:  # "local" makes Ray skip its own lookup of a recorded cluster, which resolve() did
        ray.init(address=target.address or "local", **{**settings, **init})
    except (ValueError, ConnectionError, RuntimeError) as exc:  # e.g. a head gone since resolve
        raise ConfigError(
            f"cannot start or join {target.describe()}: {str(exc).strip().splitlines()[0]}; "
            f"check the cluster (`ray status`), or leave --address out for a local Ray"
        ) from exc
