"""Which engine paints: a local process pool or painters on a Ray cluster (STYLEBOT_ENGINE)."""

from __future__ import annotations

import logging
from typing import Any

from bot.settings import Settings
from nst_engine.api import Engine, EngineError

log = logging.getLogger(__name__)


async def start_engine(settings: Settings) -> Engine:
    """A started engine with its painters ready, as STYLEBOT_ENGINE says: a local process pool,
    or painters on a Ray cluster. Logs `engine: ...` (see describe_engine)."""
    engine: Any
    if settings.engine == "ray":
        try:
            from nst_engine.ray_engine import RayEngine
        except ImportError as exc:
            raise EngineError("STYLEBOT_ENGINE=ray needs Ray: pip install 'stylebot[ray]'") from exc
        engine = RayEngine(
            address=settings.ray_address,
            painters_per_node=settings.ray_painters,
            job_timeout=settings.job_timeout,
            preview_interval=settings.status_interval,
            nice=settings.painter_nice,
        )
    else:
        from nst_engine.pool import ProcessPoolEngine

        engine = ProcessPoolEngine(
            workers=settings.workers,
            devices=settings.devices or None,
            per_device=settings.workers_per_device,
            job_timeout=settings.job_timeout,
            preview_interval=settings.status_interval,
            batch_max=settings.batch_max,
            nice=settings.painter_nice,
        )
    try:
        await engine.start()
        await engine.wait_ready()
    except BaseException:
        await engine.close()
        raise
    log.info("engine: %s", describe_engine(engine))
    devices = engine.stats().devices
    if any(d.startswith("cuda") for d in settings.devices) and not any(
        d.startswith("cuda") for d in devices
    ):
        log.warning("a GPU was asked for (STYLEBOT_DEVICES) but painting runs on %s", devices)
    return engine


def describe_engine(engine: Engine) -> str:
    """One line on what paints and where, for the start log and `about`: e.g. `ray at
    10.0.0.5:6379, 4 painters on 2 nodes (cuda:0)` or `local process pool, 1 worker(s) on cuda:0,
    batches of up to 8 jobs each` (STYLEBOT_BATCH_MAX)."""
    describe = getattr(engine, "describe", None)
    if callable(describe):
        return str(describe())
    stats = engine.stats()
    return f"{type(engine).__name__}, {stats.painters} painters on {stats.nodes} nodes"
