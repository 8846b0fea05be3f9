"""RayEngine on a real multi-node Ray cluster on this machine (ray.cluster_utils.Cluster).

The cluster (on loopback, `ray_local.loopback_cluster`, its sockets watched) has a head that
paints nothing (num_cpus=0) and two one-CPU worker nodes, so either worker node can be killed.
It serves the whole module and is shut down at its end; each test connects its own engine (one
Ray connection per process) and closes it. After the module no raylet, GCS or painter process of
this process may be left.
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from pydantic import ValidationError

ray = pytest.importorskip("ray")

from ray.cluster_utils import Cluster  # noqa: E402

from bot.app import build_bot  # noqa: E402
from bot.engine import describe_engine  # noqa: E402
from bot.settings import Settings  # noqa: E402
from nst_engine import images, ray_local  # noqa: E402
from nst_engine.ray_engine import PainterSpec, RayEngine, painter_spec  # noqa: E402
from tests.engines import BOUND, SHORT, outcome, request, wait_no_child_processes  # noqa: E402
from tests.fakecord import FakeDiscord, Message  # noqa: E402
from tests.loopback_watch import LoopbackWatch  # noqa: E402

on_module_loop = pytest.mark.asyncio(loop_scope="module")

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
# Fast detection of a dead node: a missed health check per second, three in a row.
HEAD_CONFIG = {
    "health_check_initial_delay_ms": 0,
    "health_check_period_ms": 1000,
    "health_check_failure_threshold": 3,
}


def test_ray_engine_keeps_torch_out_of_the_calling_process() -> None:
    code = "import sys, nst_engine.ray_engine, bot.app; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_painters_go_to_gpus_when_the_cluster_has_any_else_to_cpus() -> None:
    gpu_node = {"CPU": 16.0, "GPU": 2.0}
    assert painter_spec(gpu_node, 1, use_gpus=True) == PainterSpec(2, 0, 1.0, 8)
    assert painter_spec(gpu_node, 2, use_gpus=True) == PainterSpec(4, 0, 0.5, 4)
    assert painter_spec({"CPU": 8.0}, 1, use_gpus=True) is None  # CPU nodes idle beside GPUs
    assert painter_spec({"CPU": 8.0}, 2, use_gpus=False) == PainterSpec(2, 4, 0, 4)
    assert painter_spec({"CPU": 1.0}, 3, use_gpus=False) == PainterSpec(1, 1, 0, 1)
    assert painter_spec({"CPU": 0.0}, 1, use_gpus=False) is None  # a head kept free


def test_engine_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    defaults = Settings(_env_file=None)  # type: ignore[call-arg]
    assert (defaults.engine, defaults.ray_address, defaults.ray_painters) == ("local", None, 1)
    assert defaults.workers_per_device == 1
    monkeypatch.setenv("STYLEBOT_ENGINE", "ray")
    monkeypatch.setenv("STYLEBOT_RAY_ADDRESS", "ray://head:10001")
    monkeypatch.setenv("STYLEBOT_RAY_PAINTERS", "3")
    monkeypatch.setenv("STYLEBOT_WORKERS_PER_DEVICE", "2")
    s = Settings(_env_file=None)  # type: ignore[call-arg]
    assert (s.engine, s.ray_address, s.ray_painters) == ("ray", "ray://head:10001", 3)
    assert s.workers_per_device == 2
    monkeypatch.setenv("STYLEBOT_ENGINE", "dask")
    with pytest.raises(ValidationError):
        Settings(_env_file=None)  # type: ignore[call-arg]


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    """The cluster, on loopback; every socket of its processes is watched while it lives."""
    with LoopbackWatch() as watch:
        cluster = ray_local.loopback_cluster(num_cpus=0, _system_config=HEAD_CONFIG)
        try:
            for _ in range(2):
                cluster.add_node(num_cpus=1)
            yield cluster
        finally:
            if ray.is_initialized():
                ray.shutdown()
            cluster.shutdown()
            assert wait_no_child_processes() == [], "the cluster left processes behind"
    watch.check([])


@pytest_asyncio.fixture(loop_scope="module")
async def engine(cluster: Cluster) -> AsyncIterator[RayEngine]:
    async with RayEngine(
        address=cluster.address, job_timeout=120, preview_interval=0.2, poll_interval=1.0
    ) as engine:
        yield engine


def worker_node(cluster: Cluster, node_id: str) -> Any:
    return next(n for n in cluster.worker_nodes if n.node_id == node_id)


async def until(predicate: Any, bound: float = BOUND) -> None:
    async def poll() -> None:
        while not predicate():
            await asyncio.sleep(0.05)

    await asyncio.wait_for(poll(), bound)


@on_module_loop
async def test_jobs_land_on_both_nodes_and_survive_losing_one(
    cluster: Cluster, engine: RayEngine
) -> None:
    stats = engine.stats()
    assert (stats.painters, stats.nodes) == (2, 2)
    assert describe_engine(engine).startswith(f"ray at {cluster.address}, 2 painters on 2 nodes")

    jobs = [await engine.submit(request(SHORT)) for _ in range(2)]
    assert len({job.node_id for job in jobs}) == 2
    for job in jobs:
        assert (await outcome(job)).iterations == SHORT

    # Kill the node under a running job: it is retried on the other node and finishes there.
    lost = await engine.submit(request(4 * SHORT))
    await until(lambda: lost.id in engine.placements())
    doomed = lost.node_id
    assert doomed is not None
    await asyncio.get_running_loop().run_in_executor(
        None, lambda: cluster.remove_node(worker_node(cluster, doomed), allow_graceful=False)
    )
    result = await outcome(lost)
    assert result.iterations == 4 * SHORT
    assert lost.crashes == 1
    assert lost.node_id not in (None, doomed)
    await until(lambda: engine.stats().nodes == 1)
    assert engine.stats().painters == 1

    # A node that joins gets a painter of its own.
    cluster.add_node(num_cpus=1)  # only from the main thread (it sets signal handlers)
    await until(lambda: engine.stats().nodes == 2, 2 * BOUND)
    assert engine.stats().painters == 2


def bot_settings(token: str, address: str, cdn: str) -> Settings:
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        discord_token=token,
        engine="ray",
        ray_address=address,
        default_size=64,
        max_size=128,
        default_quality="draft",
        max_iterations=120,  # long enough to lose a node mid-paint
        status_interval=0.2,
        download_hosts=(cdn,),  # fakecord's CDN: scheme, host and port
        data_dir=tempfile.mkdtemp(prefix="stylebot-ray-"),
    )


def results(discord: FakeDiscord) -> list[Message]:
    """The bot's messages carrying a painting (not a status preview)."""
    return [m for m in discord.bot_messages() if any("stylized" in f.filename for f in m.files)]


@on_module_loop
async def test_the_bot_paints_through_ray_once_despite_a_node_loss(
    cluster: Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="nst_engine.ray_engine")
    photo = images.encode(
        images.fit_long_side(images.decode((SAMPLES / "chelsea.png").read_bytes()), 80), "PNG"
    )
    async with FakeDiscord() as discord:
        bot = build_bot(bot_settings(discord.token, cluster.address, discord.url))
        runner = asyncio.create_task(bot.start(discord.token))
        try:
            await asyncio.wait_for(bot.wait_until_ready(), 2 * BOUND)
            engine = bot.engine
            assert isinstance(engine, RayEngine)
            await until(lambda: engine.stats().nodes == 2)
            user = discord.add_user("ray-user")
            await discord.post(user, "!stylize starry-night", files=[("cat.png", photo)])
            await until(lambda: engine.placements())
            (node_id,) = engine.placements().values()
            await asyncio.get_running_loop().run_in_executor(
                None,
                lambda: cluster.remove_node(worker_node(cluster, node_id), allow_graceful=False),
            )
            (painting,) = await discord.wait_for(lambda: results(discord), 2 * BOUND)
            assert f"<@{user.id}>" in painting.content
            await until(lambda: not engine.stats().busy)
            await asyncio.sleep(1.0)  # time for a duplicate delivery to show
            assert len(results(discord)) == 1
            assert any("lost its painter; retrying" in r.message for r in caplog.records)
        finally:
            await bot.close()
            await runner
    assert not ray.is_initialized(), "the bot's engine disconnected when the bot closed"
