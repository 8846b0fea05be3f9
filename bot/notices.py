"""Telling people: a job's status message, its queue place, its line on the queue board and
its last word.

Owns what the bot says about a job while it waits, paints and ends (the result itself is
delivery's). Every message it sends goes out through `Notices.send`, the one door to the
channel's lane. Must not touch the journal, the queue or the engine: it is told what to say.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import discord

from bot import progress
from bot.board import Boards
from bot.buttons import cancel_view
from bot.journal import Job
from bot.traffic import ANSWER, Traffic
from nst_engine.api import Progress

log = logging.getLogger(__name__)

T = TypeVar("T")

RESUMED = "🔁 Resumed after a restart."
PAUSED = "⏸️ Paused: the bot is restarting; this job will be back after the restart."


class Notices:
    """The status messages of the live jobs, and every other word the bot says about a job."""

    def __init__(self, client: discord.Client, traffic: Traffic, *, interval: float) -> None:
        self.client = client
        self.traffic = traffic
        self.interval = interval
        self._statuses: dict[str, progress.Status] = {}
        self._shown: dict[str, str] = {}  # the queue text last shown per waiting job
        self._resumed: set[str] = set()
        self.tasks: set[asyncio.Task[None]] = set()  # notices sent in the background
        self.boards = Boards(traffic)  # where a crowd's commands are answered together

    def channel(self, job: Job) -> discord.PartialMessageable:
        return self.client.get_partial_messageable(job.channel_id, guild_id=job.guild_id)

    async def send(self, channel_id: int, priority: int, make: Callable[[], Awaitable[T]]) -> T:
        """The one way a notice leaves the bot: through the channel's lane."""
        return await self.traffic.send(channel_id, priority, make)

    # ------------------------------------------------------------------ the status message

    def attach(self, job: Job) -> None:
        """Follow the job's status message (it has one: `job.status_id`)."""
        assert job.status_id is not None
        self._statuses[job.id] = progress.Status(
            self.traffic,
            self.channel(job).get_partial_message(job.status_id),
            interval=self.interval,
            view=cancel_view(job.id),
            job_id=job.id,
        )

    def has_status(self, job: Job) -> bool:
        return job.id in self._statuses

    def mark_resumed(self, job: Job) -> None:
        """The job came back after a restart: its status says so until it ends."""
        self._resumed.add(job.id)

    def was_resumed(self, job: Job) -> bool:
        return job.id in self._resumed

    def summary(self, job: Job) -> str:
        resumed = f"\n{RESUMED}" if job.id in self._resumed else ""
        return f"-# {job.options.summary()}{resumed}"

    def first_text(self, job: Job, position: int | None) -> str:
        """The first answer: the job's place in the queue, or that it starts."""
        if position is None:
            return progress.starting_text(job.id, self.summary(job))
        return progress.queued_text(job.id, position, self.summary(job))

    def show_place(self, job: Job, position: int) -> None:
        status = self._statuses.get(job.id)
        if status is None:
            return
        text = progress.queued_text(job.id, position, self.summary(job))
        if self._shown.get(job.id) != text:  # coarse places: most moves change nothing
            self._shown[job.id] = text
            status.show(text, queued=True)

    def show_starting(self, job: Job) -> None:
        self._shown.pop(job.id, None)
        status = self._statuses.get(job.id)
        if status is not None:
            status.show(progress.starting_text(job.id, self.summary(job)))

    def show_progress(self, job: Job, event: Progress) -> None:
        status = self._statuses.get(job.id)
        if status is not None:
            status.show(progress.running_text(job.id, event, self.summary(job)), event.preview)

    async def finish(self, job: Job, text: str) -> None:
        """The status message's last edit (when the job has one being followed)."""
        self._shown.pop(job.id, None)
        status = self._statuses.pop(job.id, None)
        if status is not None:
            await status.finish(text)

    # ------------------------------------------------------------------ the end of a job

    async def tell(self, job: Job, text: str) -> None:
        """The end of a job, in its status message, or in a reply when it has none."""
        self._resumed.discard(job.id)
        self.leave_board(job)
        if job.status_id is not None:
            if job.id not in self._statuses:
                self.attach(job)
            await self.finish(job, text)
            return
        channel = self.channel(job)
        reference = (
            discord.MessageReference(
                message_id=job.source_id, channel_id=job.channel_id, fail_if_not_exists=False
            )
            if job.source_id is not None
            else None
        )
        try:
            await self.send(
                job.channel_id,
                ANSWER,
                lambda: channel.send(
                    f"<@{job.owner_id}> {text}",
                    reference=reference,  # type: ignore[arg-type]
                    allowed_mentions=discord.AllowedMentions(users=True, replied_user=False),
                ),
            )
        except (discord.HTTPException, OSError, TimeoutError) as exc:
            log.warning("job %s: could not tell the owner: %r", job.id, exc)

    async def delivered(self, job: Job, jump_url: str) -> None:
        """The result is in the channel: the status says where, or the job leaves the board."""
        self._resumed.discard(job.id)
        self.leave_board(job)
        if job.status_id is not None:
            if job.id not in self._statuses:  # resumed after a restart: not followed yet
                self.attach(job)
            await self.finish(job, f"✅ Job `{job.id}` is done: {jump_url}")

    def leave_board(self, job: Job) -> None:
        """The job has ended: its command no longer waits on the queue board (if it was)."""
        if job.source_id is not None:
            self.boards.remove(job.channel_id, job.source_id)

    def background(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
