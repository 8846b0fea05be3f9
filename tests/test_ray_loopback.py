"""Ray on one machine stays on loopback: every socket of every Ray process, while it paints.

Each test runs real Ray work (the engine's own one-machine cluster, a multi-node
`ray.cluster_utils` cluster, a head started as `make ray-head` does) under a LoopbackWatch that
samples the sockets of this process and all its descendants, and fails on any one outside
127.0.0.0/8 and ::1, listening on 0.0.0.0 or :: included. It also checks that every Ray process
got the loopback switches (which turn usage statistics off too) and leaves no process behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys

import psutil
import pytest

ray = pytest.importorskip("ray")

from ray._common.usage import usage_lib  # noqa: E402

from nst_engine import ray_local  # noqa: E402
from nst_engine.ray_engine import RayEngine  # noqa: E402
from tests.engines import (  # noqa: E402
    BOUND,
    SHORT,
    child_processes,
    first_event,
    outcome,
    request,
    wait_no_child_processes,
)
from tests.loopback_watch import LoopbackWatch  # noqa: E402


async def paint_once(engine: RayEngine, watch: LoopbackWatch) -> list[int]:
    """One small job; the sockets are sampled while it runs. Returns the painters' pids."""
    job = await engine.submit(request(SHORT))
    await asyncio.wait_for(first_event(job), BOUND)
    watch.sample()
    assert (await outcome(job)).iterations == SHORT
    return engine.pids()


def assert_ray_processes_pinned() -> None:
    """The GCS and every raylet (whose environment the workers get) have the loopback switches,
    and usage statistics are off here. (Python processes of Ray retitle themselves over their
    /proc environ, so only the native ones can be read.)"""
    natives = []
    for process in child_processes():
        with contextlib.suppress(psutil.Error):
            if process.name() in ("gcs_server", "raylet"):
                env = process.environ()
                natives.append(process.name())
                missing = {k: v for k, v in ray_local.LOOPBACK_ENV.items() if env.get(k) != v}
                assert not missing, f"{process.name()} (pid {process.pid}) lacks {missing}"
    assert {"gcs_server", "raylet"} <= set(natives)
    assert not usage_lib.usage_stats_enabled()


def engine_for(address: str | None) -> RayEngine:
    return RayEngine(
        address, job_timeout=120, preview_interval=0.2, poll_interval=1.0, num_cpus=1, nice=19
    )


def test_only_loopback_addresses_are_pinned() -> None:
    for address in ("127.0.0.1:6390", "127.3.0.1:6379", "localhost:6379", "[::1]:6379"):
        assert ray_local.is_loopback(address), address
    for address in ("10.0.0.5:6379", "head:6379", "auto", "ray://127.0.0.1:10001", "[::]:6379"):
        assert not ray_local.is_loopback(address), address


async def test_the_engines_own_cluster_paints_on_loopback_only() -> None:
    with LoopbackWatch() as watch:
        async with engine_for(None) as engine:
            pids = await paint_once(engine, watch)
            assert_ray_processes_pinned()
            for pid in pids:  # painters yield the CPU to the bot (STYLEBOT_PAINTER_NICE)
                assert psutil.Process(pid).nice() == 19
        assert wait_no_child_processes() == []
    watch.check(pids)


async def test_a_cluster_utils_cluster_paints_on_loopback_only() -> None:
    with LoopbackWatch() as watch:
        cluster = ray_local.loopback_cluster(num_cpus=0)
        try:
            cluster.add_node(num_cpus=1)
            async with engine_for(cluster.address) as engine:
                pids = await paint_once(engine, watch)
                assert_ray_processes_pinned()
            # Without an address the engine starts a cluster of its own, even though Ray would
            # join the one started last on this machine (this one) for a plain ray.init().
            async with engine_for(None) as own:
                assert not own.describe().startswith(f"ray at {cluster.address},")
                assert ray_local.is_loopback(ray.get_runtime_context().gcs_address)
        finally:
            if ray.is_initialized():
                ray.shutdown()
            cluster.shutdown()
        assert wait_no_child_processes() == []
    watch.check(pids)


def free_port() -> int:
    with socket.socket() as s:
        s.bind((ray_local.LOOPBACK, 0))
        return int(s.getsockname()[1])


async def test_a_head_from_make_ray_head_serves_the_bot_on_loopback_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RAY_AUTH_MODE", "token")  # as the README's demo command sets it
    port = free_port()
    with LoopbackWatch() as watch:
        head = subprocess.Popen(
            [sys.executable, "-m", "nst_engine.ray_local", f"--port={port}", "--num-cpus=1"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        try:
            assert head.stdout is not None
            for line in head.stdout:  # ends when the head exits (a failed start)
                if "Ray runtime started" in line:
                    break
            assert head.poll() is None, "the head did not start"
            async with engine_for(f"{ray_local.LOOPBACK}:{port}") as engine:
                pids = await paint_once(engine, watch)
                assert_ray_processes_pinned()
        finally:
            os.killpg(head.pid, signal.SIGTERM)
            head.wait(BOUND)
        assert wait_no_child_processes() == []
    watch.check(pids)
