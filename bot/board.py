"""The queue board: in a crowd, one message answers many commands at once.

A status reply per command costs a create and then edits of the channel's budget (Discord: 5
creates and edits per 5 s, and one reaction per second). So when commands crowd in (more than
half the channel's budget within its window: with Discord's, a fourth command within 5 s), or
the budget has no room, a prefix command is answered on the channel's board instead: a message
that lists the waiting commands, each by its jump link, so that every user can tell theirs is
among them. A page is sent when it is full (Discord's 2000 characters) or `gather` seconds
after its first command, ahead of results, and names every command that joined it until the
lane actually sends it. A job leaves the board when it ends (its result or its last word
replies to the command); its page is then edited, at most every `interval` s and at the lowest
priority, and deleted once empty. Boards live in memory only: after a restart, results and
statuses carry on without them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass, field

import discord

from bot.traffic import BOARD, POSITION, Traffic

log = logging.getLogger(__name__)

HEADER = "⏳ Queued; results reply to each:"  # short: 22 jump links fit on a page
LIMIT = 2000  # Discord's message content limit
GATHER = 1.0
INTERVAL = 5.0


@dataclass
class Page:
    """One board message: the commands it names, and the message once sent."""

    channel: discord.abc.Messageable
    channel_id: int
    number: int
    links: dict[int, str] = field(default_factory=dict)  # command message id -> jump url
    message: discord.Message | None = None
    sent: bool = False  # the create has gone out (or found nothing to name)
    submitted: bool = False
    edit_due: asyncio.TimerHandle | None = None

    def text(self) -> str:
        return "\n".join([HEADER, *self.links.values()])

    def fits(self, link: str) -> bool:
        return len(self.text()) + 1 + len(link) <= LIMIT


class Boards:
    """The boards of every channel; all sends go through the channel's lane."""

    def __init__(
        self, traffic: Traffic, *, gather: float = GATHER, interval: float = INTERVAL
    ) -> None:
        self.traffic = traffic
        self.gather = gather
        self.interval = interval
        self._pages: dict[int, list[Page]] = {}  # channel id -> its pages, oldest first
        self._arrivals: dict[int, deque[float]] = {}  # channel id -> when commands came
        self._numbers = 0

    def crowded(self, channel_id: int) -> bool:
        """Note a command to answer in the channel now; whether it should join the board: a
        page there is still taking commands, or half the channel's budget (rounded up) worth of
        commands came within its window."""
        budget = self.traffic.lane(channel_id).budget
        now = time.monotonic()
        arrivals = self._arrivals.setdefault(channel_id, deque())
        while arrivals and arrivals[0] < now - budget.window:
            arrivals.popleft()
        crowd = len(arrivals) >= (budget.limit + 1) // 2
        arrivals.append(now)
        pages = self._pages.get(channel_id)
        return crowd or (bool(pages) and not pages[-1].sent)

    def add(self, command: discord.Message) -> None:
        """Name `command` on its channel's board (it is answered once that page is sent)."""
        channel_id = command.channel.id
        pages = self._pages.setdefault(channel_id, [])
        link = command.jump_url
        page = pages[-1] if pages else None
        if page is None or page.sent or not page.fits(link):
            self._numbers += 1
            page = Page(command.channel, channel_id, self._numbers)
            pages.append(page)
            asyncio.get_running_loop().call_later(self.gather, self._submit, page)
        page.links[command.id] = link
        if not page.fits(link):  # full: no need to wait for more
            self._submit(page)

    def remove(self, channel_id: int, command_id: int) -> None:
        """`command` no longer waits (its job started, or ended): take it off the board."""
        for page in self._pages.get(channel_id, []):
            if page.links.pop(command_id, None) is not None:
                if page.message is not None:
                    self._schedule_edit(page)
                return

    def _submit(self, page: Page) -> None:
        if page.submitted:
            return
        page.submitted = True
        # Ahead of results: in a crowd, results wait in the lane all the time, and a page (one
        # per ~20 commands) that waited behind them would answer nobody for minutes.
        future = self.traffic.send(page.channel_id, BOARD, lambda: self._create(page))
        future.add_done_callback(lambda f: f.cancelled() or f.exception())

    async def _create(self, page: Page) -> None:
        page.sent = True
        if not page.links:
            self._drop(page)
            return
        text = page.text()
        try:
            page.message = await page.channel.send(
                text, allowed_mentions=discord.AllowedMentions.none()
            )
        except (discord.HTTPException, OSError, TimeoutError) as exc:
            log.warning("channel %s: the queue board could not be sent: %r", page.channel_id, exc)
            self._drop(page)
            return
        if page.text() != text:  # some left while it was being sent
            self._schedule_edit(page)

    def _schedule_edit(self, page: Page) -> None:
        if page.edit_due is None:
            page.edit_due = asyncio.get_running_loop().call_later(
                self.interval, self._submit_edit, page
            )

    def _submit_edit(self, page: Page) -> None:
        page.edit_due = None
        key = ("board", page.number)
        future = self.traffic.send(page.channel_id, POSITION, lambda: self._edit(page), key=key)
        future.add_done_callback(lambda f: f.cancelled() or f.exception())

    async def _edit(self, page: Page) -> None:
        if page.message is None:
            return
        try:
            if page.links:
                await page.message.edit(content=page.text())
                return
            await page.message.delete()
        except discord.NotFound:
            pass
        except (discord.HTTPException, OSError, TimeoutError) as exc:
            log.warning("channel %s: the queue board could not be edited: %r", page.channel_id, exc)
            return
        if not page.links:
            self._drop(page)

    def _drop(self, page: Page) -> None:
        pages = self._pages.get(page.channel_id, [])
        if page in pages:
            pages.remove(page)
        if not pages:
            self._pages.pop(page.channel_id, None)

    def close(self) -> None:
        """Forget every board (the lanes, closed with the bot, drop what they still hold)."""
        for pages in self._pages.values():
            for page in pages:
                if page.edit_due is not None:
                    page.edit_due.cancel()
        self._pages.clear()
        self._arrivals.clear()
