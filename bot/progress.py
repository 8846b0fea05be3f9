"""The one status message of a job: what it says, and edits throttled to one every few seconds."""

from __future__ import annotations

import asyncio
import io
import logging
import time

import discord

from nst_engine.api import Progress

log = logging.getLogger(__name__)

BAR_WIDTH = 20


def bar(fraction: float, width: int = BAR_WIDTH) -> str:
    """A text progress bar such as `[██████░░░░░░]`."""
    filled = round(max(0.0, min(1.0, fraction)) * width)
    return "[" + "█" * filled + "░" * (width - filled) + "]"


def duration(seconds: float) -> str:
    """`42 s`, `3 min 5 s` or `1 h 2 min`."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, secs = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {secs} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def queued_text(job_id: str, position: int, summary: str) -> str:
    ahead = "next in line" if position == 1 else f"position {position} in the queue"
    return f"⏳ Job `{job_id}` is queued: {ahead}.\n{summary}"


def starting_text(job_id: str, summary: str) -> str:
    return f"🎨 Job `{job_id}` is starting.\n{summary}"


def running_text(job_id: str, progress: Progress, summary: str) -> str:
    eta = f", about {duration(progress.eta)} left" if progress.eta is not None else ""
    return (
        f"🎨 Job `{job_id}` is painting.\n"
        f"`{bar(progress.fraction)}` {progress.fraction:.0%}: step {progress.step}/"
        f"{progress.total_steps} (scale {progress.scale}/{progress.scales}){eta}\n{summary}"
    )


class StatusMessage:
    """Edits one message with the latest text (and preview), at most once per `interval`.

    `show()` never waits for Discord: it records the newest state and a single background task
    sends it when the interval allows, so a burst of updates becomes one edit.
    """

    def __init__(
        self,
        message: discord.PartialMessage,
        *,
        interval: float = 3.0,
        view: discord.ui.View | None = None,
        job_id: str = "-",
    ) -> None:
        self.message = message
        self.interval = interval
        self.job_id = job_id
        self._view = view
        self._text: str | None = None
        self._preview: bytes | None = None
        self._last_edit = time.monotonic()
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    def show(self, text: str, preview: bytes | None = None) -> None:
        if self._closed:
            return
        self._text = text
        if preview is not None:
            self._preview = preview
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._flush(), name=f"stylebot-status-{self.job_id}")

    async def _flush(self) -> None:
        while self._text is not None and not self._closed:
            wait = self._last_edit + self.interval - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
                continue
            text, preview = self._text, self._preview
            self._text, self._preview = None, None
            await self._edit(text, preview, self._view)

    async def _edit(
        self, text: str, preview: bytes | None, view: discord.ui.View | None, *, clear: bool = False
    ) -> None:
        kwargs: dict[str, object] = {"content": text, "view": view}
        if preview is not None:
            kwargs["attachments"] = [discord.File(io.BytesIO(preview), filename="preview.jpg")]
        elif clear:
            kwargs["attachments"] = []
        self._last_edit = time.monotonic()
        try:
            await self.message.edit(**kwargs)
        except discord.HTTPException as exc:
            log.warning("job %s: editing the status message failed: %s", self.job_id, exc)

    async def finish(self, text: str, *, keep_preview: bool = False) -> None:
        """The final state: sent at once, without the Cancel button (and the preview dropped)."""
        self._closed = True
        if self._task is not None and not self._task.done():
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self._edit(text, None, None, clear=not keep_preview)
