"""ProcessPoolEngine's own behaviour, with real worker processes, real weights and tiny images.

What every engine must do is in tests/test_contract.py; here is what only the pool has: how it
deals workers over devices, that it keeps torch out of the caller, orphaned workers, stuck and
unstartable workers, and no leak (threads, fds) and a backoff when workers keep dying.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import psutil
import pytest

from nst_engine import pool as pool_module
from nst_engine.api import EngineError, JobTimeout
from nst_engine.placement import plan_workers
from nst_engine.pool import ProcessPoolEngine
from tests.engines import BOUND, LONG, TINY, first_event, outcome, request

on_module_loop = pytest.mark.asyncio(loop_scope="module")


def test_workers_are_dealt_out_over_the_devices() -> None:
    gpus = ["cuda:0", "cuda:1"]
    assert plan_workers(gpus, None, 1) == gpus
    assert plan_workers(gpus, None, 2) == ["cuda:0", "cuda:1", "cuda:0", "cuda:1"]
    assert plan_workers(gpus, 3, 1) == ["cuda:0", "cuda:1", "cuda:0"]
    assert plan_workers(["cpu"], None, 1) == ["cpu"]
    assert plan_workers(["cpu"], 3, 1) == ["cpu"] * 3


def test_the_pool_keeps_torch_out_of_the_calling_process() -> None:
    code = "import sys, nst_engine.pool; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


HOST = """
import asyncio
from nst_engine.pool import ProcessPoolEngine

async def main():
    engine = ProcessPoolEngine(workers=1, devices=["cpu"])
    await engine.wait_ready()
    print(*engine.pids(), flush=True)
    await asyncio.sleep(600)

if __name__ == "__main__":
    asyncio.run(main())
"""


def test_workers_exit_when_their_parent_is_killed(tmp_path: Path) -> None:
    script = tmp_path / "host.py"
    script.write_text(textwrap.dedent(HOST))
    host = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        assert host.stdout is not None
        pids = [int(pid) for pid in host.stdout.readline().split()]
        assert pids, "the host process did not start its pool"
    finally:
        host.kill()
        host.wait()
    deadline = time.monotonic() + BOUND
    while any(_running(pid) for pid in pids):
        assert time.monotonic() < deadline, "an orphaned worker kept running"
        time.sleep(0.1)


def _running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@on_module_loop
async def test_stuck_worker_is_killed_and_replaced() -> None:
    # With no grace at all, the worker is killed the moment its job times out.
    async with ProcessPoolEngine(
        workers=1, devices=["cpu"], job_timeout=1.0, stop_grace=0.0
    ) as engine:
        (pid,) = engine.pids()
        slow = await engine.submit(request(LONG))
        error = await outcome(slow)
        assert isinstance(error, JobTimeout)
        assert "longer than 1 s" in str(error)
        assert engine.stats().painters == 0, "a condemned worker does not count"
        await asyncio.wait_for(engine.wait_ready(), BOUND)
        (replacement,) = engine.pids()
        assert replacement != pid
        quick = await engine.submit(request(TINY), timeout=BOUND)
        assert (await outcome(quick)).iterations == TINY
    assert not psutil.pid_exists(replacement)


@on_module_loop
async def test_a_worker_that_cannot_start_fails_its_jobs_clearly() -> None:
    engine = ProcessPoolEngine(devices=["cuda:99"])  # no machine here has that GPU
    job = await engine.submit(request(TINY))
    with pytest.raises(EngineError, match="could not start"):
        await asyncio.wait_for(engine.wait_ready(), BOUND)
    error = await outcome(job)
    assert isinstance(error, EngineError)
    assert "cuda:99" in str(error)
    with pytest.raises(EngineError, match="could not start"):
        await engine.submit(request(TINY))
    await engine.close()
    assert engine.pids() == []


def _pool_threads() -> list[str]:
    return sorted(t.name for t in threading.enumerate() if t.name.startswith("nst-pool-"))


@on_module_loop
async def test_worker_deaths_leak_nothing_and_a_crash_loop_backs_off(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="nst_engine.pool")
    me = psutil.Process()
    async with ProcessPoolEngine(workers=1, devices=["cpu"], job_timeout=BOUND) as engine:
        fds, threads = me.num_fds(), len(_pool_threads())
        assert threads == 2  # a reader and a writer for the one worker
        for _ in range(5):
            (pid,) = engine.pids()
            job = await engine.submit(request(LONG))
            await asyncio.wait_for(first_event(job), BOUND)
            os.kill(pid, signal.SIGKILL)
            await asyncio.wait_for(_gone(engine, pid), BOUND)
            await asyncio.wait_for(engine.wait_ready(), BOUND)
            await job.cancel()  # its retry is running on the replacement
            await asyncio.wait_for(_idle(engine), BOUND)
            assert me.num_fds() == fds
            assert len(_pool_threads()) == threads
    assert _pool_threads() == []
    delays = [
        float(m.group(1))
        for r in caplog.records
        if (m := re.search(r"crashed \d+ times in a row; respawning in ([\d.]+) s", r.message))
    ]
    # The first death is replaced at once; then each death in a row waits twice as long.
    assert delays == [pool_module.CRASH_BACKOFF * 2**i for i in range(4)]


async def _idle(engine: ProcessPoolEngine) -> None:
    while engine.stats().busy:
        await asyncio.sleep(0.05)


async def _gone(engine: ProcessPoolEngine, pid: int) -> None:
    while pid in engine.pids():
        await asyncio.sleep(0.05)
