"""A watch on the network connections of this process and all its descendants (Ray's included).

    with LoopbackWatch() as watch:
        ...                       # start Ray, paint; call watch.sample() at moments that matter
    watch.check(pids)             # fails on any connection off loopback; pids must have been seen

A thread samples every TCP and UDP socket (psutil) of the tree every SAMPLE_EVERY seconds while
the block runs. A socket is off loopback when its local or remote address is outside
127.0.0.0/8 and ::1 (IPv4-mapped IPv6 addresses count as IPv4): listening on 0.0.0.0 or :: is a
breach too.
"""

from __future__ import annotations

import contextlib
import ipaddress
import threading
from collections import Counter
from typing import Any

import psutil

SAMPLE_EVERY = 0.2
JOIN_BOUND = 60.0


def on_loopback(ip: str) -> bool:
    address = ipaddress.ip_address(ip.split("%")[0])
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


class LoopbackWatch:
    """Counts sockets seen and those off loopback, by process name, status and addresses."""

    def __init__(self) -> None:
        self.seen = 0
        self.samples = 0
        self.pids: set[int] = set()  # processes seen with at least one socket
        self.names: set[str] = set()
        self.outside: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="loopback-watch", daemon=True)

    def __enter__(self) -> LoopbackWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._done.set()
        self._thread.join(JOIN_BOUND)
        self.sample()

    def _run(self) -> None:
        while not self._done.wait(SAMPLE_EVERY):
            self.sample()

    def sample(self) -> None:
        """Look at every socket of this process and its descendants once."""
        me = psutil.Process()
        found: list[tuple[int, str, Any]] = []
        for process in [me, *me.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                name = process.name()
                found += [(process.pid, name, c) for c in process.net_connections(kind="inet")]
        with self._lock:
            self.samples += 1
            for pid, name, conn in found:
                self.seen += 1
                self.pids.add(pid)
                self.names.add(name)
                ends = [conn.laddr, *([conn.raddr] if conn.raddr else [])]
                if not all(on_loopback(end.ip) for end in ends):
                    remote = f"{conn.raddr.ip}:{conn.raddr.port}" if conn.raddr else "-"
                    self.outside[f"{name} {conn.status} {conn.laddr.ip} -> {remote}"] += 1

    def summary(self) -> str:
        return f"{sum(self.outside.values())} of {self.seen} sockets off loopback"

    def check(self, pids: list[int]) -> None:
        """Fail if any socket was off loopback, or if the watch missed Ray or these processes."""
        assert not self.outside, f"{self.summary()}:\n" + "\n".join(
            f"{count:6d}  {what}" for what, count in self.outside.most_common(15)
        )
        assert {"gcs_server", "raylet"} <= self.names, f"Ray was not watched: {self.names}"
        assert set(pids) <= self.pids, "the painters were not watched"
