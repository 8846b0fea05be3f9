"""The handle an engine gives back for a submitted job (`api.Job`): its progress stream, its
result or typed error, and cancel. PoolJob and RayJob are these; the engine settles them.

Torch-free and loop-bound: made and settled on the engine's running loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Protocol

from .api import Progress, Result, StyleRequest


class _JobOwner(Protocol):
    """The engine side of a job."""

    def _cancel(self, job: EngineJob) -> None: ...


class EngineJob:
    """A job submitted to an engine (implements `api.Job`); PoolJob and RayJob are these.

    `worker_pid` is the painter process running (or that last ran) the job, for logs and
    diagnostics; `crashes` counts the painters it has lost (one retry, then it fails).
    """

    def __init__(
        self,
        engine: _JobOwner,
        job_id: str,
        request: StyleRequest,
        timeout: float | None,
    ) -> None:
        self.id = job_id
        self.request = request
        self.timeout = timeout
        self.worker_pid: int | None = None
        self.crashes = 0
        self._engine = engine
        self._future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._future.add_done_callback(_mark_retrieved)
        self._subscribers: list[asyncio.Queue[Progress | None]] = []

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.id} done={self.done}>"

    @property
    def done(self) -> bool:
        return self._future.done()

    async def progress(self) -> AsyncIterator[Progress]:
        """Events from now on, until the job ends (at once if it already has).

        A job retried after its painter was lost starts its steps again from the first.
        """
        if self.done:
            return
        events: asyncio.Queue[Progress | None] = asyncio.Queue()
        self._subscribers.append(events)
        try:
            while (event := await events.get()) is not None:
                yield event
        finally:
            self._subscribers.remove(events)

    async def result(self) -> Result:
        """The painted image, or the typed error that ended the job."""
        return await asyncio.shield(self._future)

    async def cancel(self) -> None:
        """Drop the job if queued, else ask its painter to stop; `result()` then raises Cancelled.

        A job that has already ended keeps its outcome.
        """
        self._engine._cancel(self)

    def _publish(self, event: Progress) -> None:
        for events in self._subscribers:
            events.put_nowait(event)

    def _finish(self, result: Result | None = None, error: Exception | None = None) -> None:
        """Settle the job once (later calls are ignored) and end every progress stream."""
        if self.done:
            return
        if error is not None:
            self._future.set_exception(error)
        else:
            self._future.set_result(result)
        for events in self._subscribers:
            events.put_nowait(None)


def _mark_retrieved(future: asyncio.Future[Result]) -> None:
    """Nobody has to await a job's result; don't log its error as never retrieved."""
    if not future.cancelled():
        future.exception()
