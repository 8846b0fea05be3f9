"""Painting a job: its request built from the journal, the engine's handle, its progress shown.

`Painting` owns the engine handles of the jobs being painted. It takes a job the scheduler
started, paints it, saves the result and hands it to delivery (the painter is free from then
on), or ends it as cancelled or failed. Must not touch the queue or its caps (the scheduler
decides what paints) nor post anything itself (notices and delivery do).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from typing import Any

from bot import ending, journal
from bot.delivery import TIMELAPSE, Delivery, timelapse_budget
from bot.engine import describe_engine
from bot.errors import friendly
from bot.journal import Job, Journal
from bot.notices import PAUSED, Notices
from bot.options import IMAGE
from bot.settings import Settings
from nst_engine import styles
from nst_engine.api import Cancelled, Engine, StyleRequest, StyleSource

log = logging.getLogger(__name__)


class Painting:
    """The jobs on the engine. `jobs` is the studio's map of live jobs (waiting and painting):
    a job leaves it here, when its painting ends."""

    def __init__(
        self,
        engine: Engine,
        settings: Settings,
        journal_: Journal,
        notices: Notices,
        delivery: Delivery,
        jobs: dict[str, Job],
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.journal = journal_
        self.notices = notices
        self.delivery = delivery
        self.jobs = jobs
        self.stopping = False  # a shutdown began: stopped jobs are repainted after the restart
        self._handles: dict[str, Any] = {}  # job id -> the engine's handle while painting
        self._fraction: dict[str, float] = {}

    def fraction(self, job: Job) -> float:
        return self._fraction.get(job.id, 0.0)

    async def cancel(self, job: Job) -> None:
        """Stop painting `job` (its end is told when the engine lets go of it)."""
        handle = self._handles.get(job.id)
        if handle is not None:
            await handle.cancel()

    async def stop(self) -> None:
        """Stop every painting job for a shutdown; they stay `painting` in the journal."""
        self.stopping = True
        for handle in list(self._handles.values()):
            await handle.cancel()

    def _request(self, job: Job) -> StyleRequest:
        photo, files = self.journal.inputs(job)
        o = job.options
        pending = iter(files)
        sources = []
        for part in o.parts():
            if part.name in styles.STYLES:
                sources.append(StyleSource(name=part.name, weight=part.weight))
            elif part.name == IMAGE:
                sources.append(StyleSource(image=next(pending), weight=part.weight))
            else:  # a server style: its targets are cached under its bytes' hash
                data = next(pending)
                key = hashlib.sha256(data).hexdigest()
                sources.append(StyleSource(image=data, weight=part.weight, key=key))
        return StyleRequest(
            content=photo,
            styles=tuple(sources),
            size=o.size or self.settings.default_size,
            quality=o.quality or self.settings.default_quality,
            strength=o.strength,
            preserve_colors=o.keep_colors,
            seed=o.seed,
            iterations=self.settings.max_iterations,
            input_copies=job.inputs_on_result,
            init=self.journal.start(job),
            timelapse=o.timelapse,
            timelapse_max_bytes=timelapse_budget(job.upload_limit),
        )

    async def paint(self, job: Job) -> None:
        """Paint one job; its delivery goes on without the painter."""
        try:
            if job.state != journal.WAITING:
                raise Cancelled()
            self.journal.update(job, state=journal.PAINTING)
            log.info("job %s: painting", job.id)
            self.notices.show_starting(job)
            request = await asyncio.to_thread(self._request, job)
            handle = await self.engine.submit(request)
            self._handles[job.id] = handle
            # cancelled, or a shutdown began while it was being submitted (and found no handle)
            if job.state != journal.PAINTING or self.stopping:
                await handle.cancel()
            async for event in handle.progress():
                self._fraction[job.id] = event.fraction
                self.notices.show_progress(job, event)
            result = await handle.result()
        except Exception as exc:
            await self._not_painted(job, exc)
            return
        finally:
            self._handles.pop(job.id, None)
            self._fraction.pop(job.id, None)
        meta = {
            "width": result.width,
            "height": result.height,
            "seconds": result.seconds,
            "device": result.device,
            "steps": result.iterations,
            "engine": describe_engine(self.engine),
        }
        names = ("photo", "style", "style2", "style3", "style4")
        copies = {f"{names[i]}.png": data for i, data in enumerate(result.inputs[:5])}
        copies["meta.json"] = json.dumps(meta).encode()
        if result.timelapse is not None:
            copies[TIMELAPSE] = result.timelapse
        self.jobs.pop(job.id, None)
        try:
            await asyncio.to_thread(self.journal.save_result, job, result.image, copies)
        except Exception as exc:  # a full disk (OSError) or a failing database (sqlite3.Error)
            log.error("job %s: could not store the painting: %r", job.id, exc)
            text = (
                f"⚠️ Job `{job.id}` was painted, but I couldn't store the picture "
                "(disk or database trouble on my side). Please ask again."
            )
            await ending.end(self.journal, self.notices, job, journal.FAILED, text, error=repr(exc))
            return
        log.info("job %s: painted in %.1f s on %s", job.id, result.seconds, result.device)
        # a job taken up after a restart may have been delivered before a power cut undid that
        self.delivery.start(job, resumed=self.notices.was_resumed(job))

    async def _not_painted(self, job: Job, exc: BaseException) -> None:
        if isinstance(exc, Cancelled) and self.stopping and job.state == journal.PAINTING:
            log.info("job %s: stopped for the restart; it will be repainted", job.id)
            await self.notices.finish(job, PAUSED)
            return
        self.jobs.pop(job.id, None)
        if isinstance(exc, Cancelled):
            log.info("job %s: cancelled", job.id)
            text = f"🛑 Job `{job.id}` was cancelled."
            await ending.end(self.journal, self.notices, job, journal.CANCELLED, text)
        else:
            log.warning("job %s: failed: %r", job.id, exc)
            text = f"Job `{job.id}`: {friendly(exc)}"
            await ending.end(
                self.journal, self.notices, job, journal.FAILED, text, error=str(exc) or repr(exc)
            )
