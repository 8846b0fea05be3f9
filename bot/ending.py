"""How a job ends: its end written to the journal as far as the journal allows, its owner told.

Every path that ends a job comes through here, so a failing journal (disk full, database locked:
`sqlite3.OperationalError`, which is no `OSError`) never leaves a job half-ended in memory or its
owner waiting for word. Must not touch the queue, the engine or the upload.
"""

from __future__ import annotations

import asyncio
import logging

from bot.journal import Job, Journal
from bot.notices import Notices

log = logging.getLogger(__name__)


async def record(
    journal: Journal,
    job: Job,
    state: str,
    *,
    error: str | None = None,
    result_id: int | None = None,
) -> bool:
    """Write the job's end (its state, error or result message) in one transaction; False when
    the journal failed. The job has ended either way; a record the journal never took is taken
    up again at the next start. It runs in a worker thread: removing the job's folder waits on
    the disk, which the event loop must not."""
    try:
        await asyncio.to_thread(journal.end, job, state, error=error, result_id=result_id)
    except Exception as exc:
        log.error("job %s: the journal could not record its end (%s): %r", job.id, state, exc)
        job.state = state
        return False
    return True


def write(journal: Journal, job: Job, **changes: object) -> bool:
    """Journal a change that the job can live without (its status message, a cancel); on a
    failure the change holds in memory only."""
    try:
        journal.update(job, **changes)
    except Exception as exc:
        log.error("job %s: the journal could not record %s: %r", job.id, sorted(changes), exc)
        for name, value in changes.items():
            setattr(job, name, value)
        return False
    return True


async def end(
    journal: Journal,
    notices: Notices,
    job: Job,
    state: str,
    text: str,
    *,
    error: str | None = None,
) -> None:
    """Record the end of a job and tell its owner `text`."""
    await record(journal, job, state, error=error)
    await notices.tell(job, text)
