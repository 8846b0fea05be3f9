"""What a job's status message says, and its edits, paced and routed through the channel's lane."""

from __future__ import annotations

import asyncio
import io
import logging
import time

import discord

from bot.traffic import ANSWER, POSITION, PROGRESS, Traffic
from nst_engine.api import Progress

log = logging.getLogger(__name__)

BAR_WIDTH = 20
# Queue places shown exactly; further back a job shows a coarse count, so that a queue moving
# by one does not edit every waiting job's status (each edit costs the channel's budget).
EXACT_PLACES = 3
COARSE_PLACES = (5, 10, 20, 50, 100)


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


def place_label(position: int) -> str:
    """How a waiting job's place reads: exact near the front, coarse further back."""
    if position == 1:
        return "next in line"
    if position <= EXACT_PLACES:
        return f"position {position} in the queue"
    bound = next((b for b in COARSE_PLACES if position <= b), None)
    return f"up to {bound} jobs ahead" if bound else f"more than {COARSE_PLACES[-1]} jobs ahead"


def queued_text(job_id: str, position: int, summary: str) -> str:
    return f"⏳ Job `{job_id}` is queued: {place_label(position)}.\n{summary}"


def starting_text(job_id: str, summary: str) -> str:
    return f"🎨 Job `{job_id}` is starting.\n{summary}"


def running_text(job_id: str, progress: Progress, summary: str) -> str:
    eta = f", about {duration(progress.eta)} left" if progress.eta is not None else ""
    return (
        f"🎨 Job `{job_id}` is painting.\n"
        f"`{bar(progress.fraction)}` {progress.fraction:.0%}: step {progress.step}/"
        f"{progress.total_steps} (scale {progress.scale}/{progress.scales}){eta}\n{summary}"
    )


class Status:
    """One job's status message, edited with the latest state at most once per `interval`.

    `show()` never waits for Discord: it records the newest text (and preview) and hands the
    lane one edit, which reads whatever is newest when its turn comes. Queue places go at the
    lowest priority, progress above them; `finish()` is a first-answer-priority edit that
    replaces anything still pending and drops the Cancel button.
    """

    def __init__(
        self,
        traffic: Traffic,
        message: discord.PartialMessage,
        *,
        interval: float,
        view: discord.ui.View | None,
        job_id: str,
    ) -> None:
        self.traffic = traffic
        self.message = message
        self.interval = interval
        self.job_id = job_id
        self._view = view
        self._text: str | None = None
        self._preview: bytes | None = None
        self._last_edit = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._closed = False
        self._priority = POSITION

    @property
    def channel_id(self) -> int:
        return self.message.channel.id

    @property
    def key(self) -> tuple[str, int]:
        return ("status", self.message.id)

    def show(self, text: str, preview: bytes | None = None, *, queued: bool = False) -> None:
        if self._closed:
            return
        self._text = text
        self._priority = POSITION if queued else PROGRESS
        if preview is not None:
            self._preview = preview
        if self._timer is None:
            wait = max(0.0, self._last_edit + self.interval - time.monotonic())
            self._timer = asyncio.get_running_loop().call_later(wait, self._submit)

    def _submit(self) -> None:
        self._timer = None
        if self._closed or self._text is None:
            return
        self.traffic.send(self.channel_id, self._priority, self._edit_latest, key=self.key)

    async def _edit_latest(self) -> None:
        text, preview = self._text, self._preview
        if self._closed or text is None:
            return
        self._text, self._preview = None, None
        self._last_edit = time.monotonic()
        await self._edit(text, preview, self._view, clear=False)

    async def _edit(
        self, text: str, preview: bytes | None, view: discord.ui.View | None, *, clear: bool
    ) -> None:
        kwargs: dict[str, object] = {"content": text, "view": view}
        if preview is not None:
            kwargs["attachments"] = [discord.File(io.BytesIO(preview), filename="preview.jpg")]
        elif clear:
            kwargs["attachments"] = []
        try:
            await self.message.edit(**kwargs)
        except discord.NotFound:
            log.info("job %s: the status message is gone", self.job_id)
        except (discord.HTTPException, OSError, TimeoutError) as exc:
            log.warning("job %s: editing the status message failed: %r", self.job_id, exc)

    async def finish(self, text: str) -> None:
        """The final state: without the Cancel button, the preview dropped."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

        async def final() -> None:
            await self._edit(text, None, None, clear=True)

        await self.traffic.send(self.channel_id, ANSWER, final, key=self.key)
