"""Ray on one machine: every Ray process on loopback (127.0.0.1), no usage statistics.

Ray gives a node the local address that routes outward, even when told `127.0.0.1`
(`ray._private.services.resolve_ip_for_localhost`), and a driver rewrites a `127.0.0.1:PORT`
address to that outward one before connecting. The one switch that holds for every Ray process
is RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 in its environment: the GCS, raylets, object stores,
agents and workers then use 127.0.0.1 and listen on it only. RAY_USAGE_STATS_ENABLED=0 stops a
head from posting usage statistics. Both are in LOOPBACK_ENV; a process that starts or joins a
Ray cluster on this machine calls `pin_to_loopback()` first. The engine does it for its own
cluster and for a loopback address; the tests and benches build multi-node clusters with
`loopback_cluster()`; `python -m nst_engine.ray_local` (`make ray-head`) starts a head for
`STYLEBOT_RAY_ADDRESS=127.0.0.1:6390`. A cluster of several machines is never pinned: its
addresses are the operator's choice (README, "Scaling out").
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import shutil
import sys
from typing import Any

import ray
from ray._private import ray_constants

from .api import EngineError

LOOPBACK = "127.0.0.1"
LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}
HEAD_PORT = 6390


def is_loopback(address: str) -> bool:
    """Whether a Ray address ("host:port", "[::1]:port") names this machine's loopback."""
    host = address.rpartition(":")[0].strip("[]") if ":" in address else address
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def pin_to_loopback() -> None:
    """Keep this process's Ray, and every Ray process it starts from now on, on loopback.

    The processes inherit LOOPBACK_ENV; this one's Ray read the switch when it was imported,
    so it is told too.
    """
    os.environ.update(LOOPBACK_ENV)
    ray_constants.ENABLE_RAY_CLUSTER = False


def check_on_loopback() -> None:
    """Raise EngineError unless this process's Ray connection is on loopback."""
    gcs = ray.get_runtime_context().gcs_address
    if not is_loopback(gcs):
        raise EngineError(f"The one-machine Ray cluster is at {gcs}, not on loopback.")


def loopback_cluster(**head_args: Any) -> Any:
    """A multi-node `ray.cluster_utils.Cluster` on this machine, on loopback (tests, benches).

    head_args go to the head node (e.g. num_cpus=0); add nodes with `cluster.add_node`.
    """
    pin_to_loopback()
    from ray.cluster_utils import Cluster

    return Cluster(initialize_head=True, head_node_args={"include_dashboard": False, **head_args})


def head_command(port: int, num_cpus: int) -> list[str]:
    """`ray start` for a one-machine head that listens on 127.0.0.1 only, until stopped."""
    ray_cli = shutil.which("ray", path=os.path.dirname(sys.executable)) or "ray"
    return [
        ray_cli,
        "start",
        "--head",
        "--block",
        f"--node-ip-address={LOOPBACK}",
        f"--port={port}",
        f"--num-cpus={num_cpus}",
        "--num-gpus=0",
        "--include-dashboard=false",
        "--disable-usage-stats",
    ]


def main(argv: list[str] | None = None) -> None:
    """Run a one-machine Ray head on loopback in the foreground (Ctrl-C stops it)."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--port", type=int, default=HEAD_PORT)
    parser.add_argument("--num-cpus", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args(argv)
    command = head_command(args.port, args.num_cpus)
    print(f"STYLEBOT_RAY_ADDRESS={LOOPBACK}:{args.port}; running: {' '.join(command)}", flush=True)
    os.execvpe(command[0], command, os.environ | LOOPBACK_ENV)


if __name__ == "__main__":
    main()
