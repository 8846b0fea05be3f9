"""The bot's own life: taking up the journal's jobs at start, following the engine's capacity,
and a shutdown that loses nothing.

Owns the order of those steps and nothing else: it asks the studio's parts to queue, paint,
deliver and tell. Must not touch a job's journal record, the engine's handles or Discord
directly.
"""

from __future__ import annotations

import asyncio
import logging
import time

from bot import journal
from bot.notices import PAUSED
from bot.studio import Studio
from nst_engine.api import Engine

log = logging.getLogger(__name__)


class Lifecycle:
    """Start, capacity and shutdown of one studio."""

    def __init__(self, studio: Studio, engine: Engine) -> None:
        self.studio = studio
        self.engine = engine

    async def resume(self) -> int:
        """Take up every unfinished job of the journal, oldest first; returns how many."""
        studio = self.studio
        pruned = await asyncio.to_thread(studio.journal.prune)
        if pruned:
            log.info("pruned %d old job record(s)", pruned)
        jobs = studio.journal.unfinished()
        for job in jobs:
            log.info("job %s: resuming (%s)", job.id, job.state)
            studio.notices.mark_resumed(job)
            if job.state == journal.PAINTED:
                studio.delivery.start(job, resumed=True)
                continue
            if job.status_id is not None:
                studio.notices.attach(job)
            studio.requeue(job)
        studio.show_places()
        return len(jobs)

    async def follow_capacity(self, every: float = 5.0) -> None:
        """Keep as many jobs painting as the engine has painters (a cluster grows and shrinks)."""
        scheduler = self.studio.scheduler
        while scheduler.accepting:
            await asyncio.sleep(every)
            painters = self.engine.stats().painters
            if painters and painters != scheduler.slots:
                log.info("the engine has %d painter(s) now", painters)
                scheduler.resize(painters)

    async def shutdown(self, grace: float = 20.0) -> None:
        """Stop taking jobs; keep the waiting ones for the next start and say so; stop the
        painting ones (they are repainted after the restart); let deliveries finish within
        `grace`, after which the unfinished stay painted in the journal."""
        studio = self.studio
        deadline = time.monotonic() + grace
        waiting = studio.stop_taking()
        pauses = []
        for job in waiting:
            log.info("job %s: kept for the next start", job.id)
            if studio.notices.has_status(job):
                pauses.append(studio.notices.finish(job, PAUSED))
        await studio.painting.stop()
        pending = [*pauses, studio.scheduler.join(), studio.intakes_done()]
        pending_tasks = [asyncio.ensure_future(c) for c in pending]
        pending_tasks += [*studio.delivery.tasks, *studio.notices.tasks]
        if pending_tasks:
            _, late = await asyncio.wait(
                pending_tasks, timeout=max(0.1, deadline - time.monotonic())
            )
            for task in late:
                task.cancel()
            if late:
                log.warning("%d task(s) did not end within the shutdown grace", len(late))
                await asyncio.gather(*late, return_exceptions=True)
        await studio.downloader.close()
