"""Delivering a painted job: fit it into the upload limit, post it once, record it.

`Delivery` owns a painted job until its result is in the channel: each delivery is a task of its
own (a painter is free once its painting is saved), posted with a fixed nonce, and after a restart
it first looks in the channel for a result that was already posted. Must not touch the queue, the
engine or the job's status message (notices tell people; this module only hands them the news).

Fitting: PNG first; if it is too big, high-quality JPEG then WebP; then the same picture smaller.
A 413 (payload too large) re-encodes under a tighter budget. Server errors, rate limits
discord.py gave up on, connection resets and timeouts are retried with backoff; the result is
sent with a fixed nonce, so a retry of an upload Discord already took returns that message
instead of a second one. A refusal that will not change (403, another 4xx) or too many failures
raise `DeliveryFailed`, whose message says what failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import io
import json
import logging
import sqlite3
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp
import discord

from bot import ending, journal, progress
from bot.buttons import result_view
from bot.journal import Job, Journal
from bot.notices import Notices
from bot.traffic import RESULT, Traffic
from nst_engine import images
from nst_engine.api import MIN_TIMELAPSE_BYTES, StyleBotError

log = logging.getLogger(__name__)

T = TypeVar("T")

MIN_LONG_SIDE = 64
SHRINK_STEPS = (0.85, 0.7, 0.55, 0.4, 0.3, 0.2, 0.12)
RETRY_413 = 6
MESSAGE_TOTAL = 25 * 1024 * 1024  # Discord's cap on all files of one message together
TIMELAPSE = "timelapse.webp"
RESULT_STEM = "stylized"  # the result's file name, before its extension


class DeliveryFailed(StyleBotError):
    """The painting could not be posted; the message says why, for its owner."""


@dataclass(frozen=True)
class Encoded:
    """An encoded result ready to upload, with a short note on how it was made to fit."""

    data: bytes
    filename: str
    note: str = ""


@dataclass(frozen=True)
class Retry:
    """How often and how patiently a failing upload is tried again."""

    attempts: int = 5
    base: float = 1.0
    cap: float = 30.0

    def delay(self, failures: int) -> float:
        return min(self.cap, self.base * 2 ** (failures - 1))


def fit(png: bytes, limit: int, *, stem: str = RESULT_STEM) -> Encoded:
    """The best encoding of `png` whose size is at most `limit` bytes."""
    if len(png) <= limit:
        return Encoded(png, f"{stem}.png")
    img = images.decode(png, max_bytes=len(png) + 1)
    for fmt, quality, ext in (("JPEG", 95, "jpg"), ("WEBP", 90, "webp"), ("JPEG", 85, "jpg")):
        data = images.encode(img, fmt, quality=quality)
        if len(data) <= limit:
            return Encoded(data, f"{stem}.{ext}", f"{fmt} to fit the upload limit")
    long_side = max(img.size)
    for scale in SHRINK_STEPS:
        side = round(long_side * scale)
        if side < MIN_LONG_SIDE:
            break
        smaller = images.fit_long_side(img, side)
        data = images.encode(smaller, "JPEG", quality=85)
        if len(data) <= limit:
            w, h = smaller.size
            return Encoded(data, f"{stem}.jpg", f"JPEG at {w}×{h} to fit the upload limit")
    raise DeliveryFailed("the picture doesn't fit this channel's upload limit, even made small.")


def _transient(exc: BaseException) -> tuple[str, float] | None:
    """(what failed, seconds Discord asked to wait) for a failure worth retrying, else None."""
    if isinstance(exc, discord.RateLimited):
        return "rate limited", exc.retry_after
    if isinstance(exc, discord.Forbidden):
        return None
    if isinstance(exc, discord.HTTPException):
        if exc.status == 429 or exc.status >= 500:
            return f"HTTP {exc.status}", 0.0
        return None
    if isinstance(exc, aiohttp.ClientError | OSError | TimeoutError):
        return type(exc).__name__, 0.0
    return None


def _permanent(exc: BaseException) -> DeliveryFailed:
    if isinstance(exc, discord.Forbidden):
        return DeliveryFailed(
            "Discord refused the upload: I'm missing a permission here "
            "(Send Messages, Attach Files or Read Message History)."
        )
    if isinstance(exc, discord.HTTPException):
        return DeliveryFailed(f"Discord refused the upload (HTTP {exc.status}: {exc.text}).")
    return DeliveryFailed(f"the upload failed ({type(exc).__name__}).")


async def send_fitted(
    send: Callable[[Encoded, int], Awaitable[T]],
    png: bytes,
    limit: int,
    *,
    job_id: str = "-",
    retry: Retry = Retry(),
) -> tuple[T, Encoded]:
    """Send the result through `send(encoded, limit)` until it arrives or cannot.

    `limit` is the byte budget per file that `send` should also hold any other files to.
    """
    encoded = await asyncio.to_thread(fit, png, limit)
    too_large = failures = 0
    while True:
        try:
            return await send(encoded, limit), encoded
        except Exception as exc:
            if isinstance(exc, discord.HTTPException) and exc.status == 413:
                if too_large >= RETRY_413:
                    raise DeliveryFailed(
                        "the picture doesn't fit this channel's upload limit, even made small."
                    ) from exc
                too_large += 1
                limit = max(1, int(len(encoded.data) * 0.7))
                log.warning(
                    "job %s: upload of %d bytes refused (413); re-encoding under %d bytes",
                    job_id,
                    len(encoded.data),
                    limit,
                )
                encoded = await asyncio.to_thread(fit, png, limit)
                continue
            transient = _transient(exc)
            if transient is None:
                raise _permanent(exc) from exc
            what, asked = transient
            failures += 1
            if failures >= retry.attempts:
                raise DeliveryFailed(
                    f"the upload to Discord kept failing ({what}, {failures} tries)."
                ) from exc
            wait = max(asked, retry.delay(failures))
            log.warning(
                "job %s: upload failed (%s); retry %d in %.1f s", job_id, what, failures, wait
            )
            await asyncio.sleep(wait)


def result_header(job: Job) -> str:
    """The first line of a job's result message, and of no other message of the bot."""
    return f"<@{job.owner_id}> here is your painting (job `{job.id}`)."


def is_result(message: discord.Message, job: Job, me: int) -> bool:
    """Whether `message` is the bot's result for `job`: it begins with the result header and
    carries the picture (an echo of the text alone is not a result)."""
    return (
        message.author.id == me
        and message.content.startswith(result_header(job) + "\n")
        and any(a.filename.startswith(f"{RESULT_STEM}.") for a in message.attachments)
    )


def _reason(exc: BaseException) -> str:
    """Why a painted job could not be delivered, for its owner."""
    if isinstance(exc, DeliveryFailed):
        return str(exc)
    if isinstance(exc, FileNotFoundError):
        return "its picture is missing from the bot's disk."
    if isinstance(exc, OSError | sqlite3.Error):
        return "the bot's disk or job journal failed."
    return "something went wrong on my side (it has been logged)."


def timelapse_budget(upload_limit: int) -> int:
    """The bytes a job's timelapse may weigh: half of what one file may, and half of what one
    message may carry, so the picture beside it always has room."""
    return max(MIN_TIMELAPSE_BYTES, min(upload_limit, MESSAGE_TOTAL) // 2)


def nonce_of(job: Job) -> str:
    """The fixed nonce of a job's result message (Discord: at most 25 characters)."""
    return f"stylebot-{job.id}"


class Delivery:
    """The deliveries under way: each painted job's result, posted once and recorded."""

    def __init__(
        self,
        client: discord.Client,
        journal_: Journal,
        traffic: Traffic,
        notices: Notices,
        *,
        retry: Retry,
        max_size: int,
    ) -> None:
        self.client = client
        self.journal = journal_
        self.traffic = traffic
        self.notices = notices
        self.retry = retry
        self.max_size = max_size
        self.tasks: set[asyncio.Task[None]] = set()

    def start(self, job: Job, *, resumed: bool = False) -> None:
        """Deliver a painted job in a task of its own (`resumed`: look for it first)."""
        task = asyncio.create_task(self._deliver(job, resumed), name=f"stylebot-deliver-{job.id}")
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _deliver(self, job: Job, resumed: bool) -> None:
        try:
            posted = await self._already_posted(job) if resumed else None
            if posted is None:
                posted = await self._upload(job)
        except Exception as exc:  # whatever it was, the job ends and its owner hears of it
            log.error("job %s: delivery failed: %r", job.id, exc)
            text = f"⚠️ Job `{job.id}` was painted, but {_reason(exc)} Please ask again."
            await ending.end(self.journal, self.notices, job, journal.FAILED, text, error=repr(exc))
            return
        # the result is in the channel: if the journal cannot say so now, the look-back finds it
        await ending.record(self.journal, job, journal.DELIVERED, result_id=posted.id)
        log.info("job %s: delivered as message %s", job.id, posted.id)
        await self.notices.delivered(job, posted.jump_url)

    async def _already_posted(self, job: Job) -> discord.Message | None:
        """The bot's result for `job` if it is already in the channel (a crash after the upload
        and before the journal heard of it): the saved result message, or a look back through
        the channel, newest first, as far as the job's anchor. Read errors are retried; if the
        channel stays unreadable, the result is posted (its nonce may still catch a repeat)."""
        failures = 0
        while True:
            try:
                return await self._look_back(job)
            except Exception as exc:
                transient = _transient(exc)
                failures += 1
                if transient is None or failures >= self.retry.attempts:
                    log.warning("job %s: could not read the channel: %r", job.id, exc)
                    return None
                await asyncio.sleep(max(transient[1], self.retry.delay(failures)))

    async def _look_back(self, job: Job) -> discord.Message | None:
        me = self.client.user
        if me is None:
            return None
        channel = self.notices.channel(job)
        if job.result_id is not None:
            with contextlib.suppress(discord.NotFound):
                saved = await channel.fetch_message(job.result_id)
                if is_result(saved, job, me.id):
                    log.info("job %s: its saved result message is there", job.id)
                    return saved
        since = dt.datetime.fromtimestamp(job.created - 60, tz=dt.UTC)
        anchor = discord.Object(
            job.status_id or job.source_id or discord.utils.time_snowflake(since)
        )
        async for message in channel.history(limit=None, after=anchor, oldest_first=False):
            if is_result(message, job, me.id):
                log.info("job %s: its result was already posted", job.id)
                return message
        return None

    async def _upload(self, job: Job) -> discord.Message:
        png, copies = await asyncio.to_thread(self.journal.result, job)
        meta = json.loads(copies.pop("meta.json", b"{}"))
        animation = copies.pop(TIMELAPSE, None)  # encoded by the painter within its budget
        # one over the budget (painted before the budget had a cap) never crowds out the picture
        kept = (
            animation
            if animation and len(animation) <= timelapse_budget(job.upload_limit)
            else None
        )
        channel = self.notices.channel(job)
        code = await asyncio.to_thread(self._keep_recipe, job, meta)
        header = result_text(job, meta, code)
        reference = (
            discord.MessageReference(
                message_id=job.reply_to_id, channel_id=job.channel_id, fail_if_not_exists=False
            )
            if job.reply_to_id is not None
            else None
        )
        # Input copies share the message with the result: each file within the per-file limit,
        # all of them within Discord's total per message; refitted when a 413 lowers the limit.
        total = MESSAGE_TOTAL - len(kept or b"")
        per_file = min(job.upload_limit, total // (1 + len(copies)))
        fitted: list[Encoded] = []

        async def send(encoded: Encoded, limit: int) -> discord.Message:
            if len(fitted) < len(copies) or any(len(c.data) > limit for c in fitted):
                fitted[:] = [
                    await asyncio.to_thread(fit, data, limit, stem=name.removesuffix(".png"))
                    for name, data in copies.items()
                ]
            note = f" · {encoded.note}" if encoded.note else ""
            extra = [] if kept is None or len(kept) > limit else [kept]
            if animation is not None and not extra:
                note += " · the timelapse was too large for this channel"

            def post() -> Coroutine[Any, Any, discord.Message]:
                files = [discord.File(io.BytesIO(encoded.data), filename=encoded.filename)]
                files += [discord.File(io.BytesIO(c.data), filename=c.filename) for c in fitted]
                files += [discord.File(io.BytesIO(a), filename=TIMELAPSE) for a in extra]
                return channel.send(
                    header + note,
                    files=files,
                    view=result_view(
                        job.owner_id,
                        None if job.inputs_on_result else job.source_id,  # inputs ride along
                        job.options,
                        job.id,
                        self.max_size,
                    ),
                    reference=reference,  # type: ignore[arg-type]
                    allowed_mentions=discord.AllowedMentions(users=True, replied_user=False),
                    nonce=nonce_of(job),
                )

            return await self.traffic.send(job.channel_id, RESULT, post)

        message, _ = await send_fitted(send, png, per_file, job_id=job.id, retry=self.retry)
        return message

    def _keep_recipe(self, job: Job, meta: dict[str, Any]) -> str | None:
        """The job's recipe code (kept on its first delivery attempt, with its picture styles);
        None when its inputs are unreadable (the result still goes out, without one)."""
        try:
            _, style_files = self.journal.inputs(job)
            return self.journal.recipes.keep(job.id, job.guild_id, job.options, style_files, meta)
        except (OSError, ValueError, sqlite3.Error) as exc:
            log.warning("job %s: no recipe kept: %r", job.id, exc)
            return None


def result_text(job: Job, meta: dict[str, Any], code: str | None) -> str:
    """A result's text: its header (how a restart finds it), how it was painted and its
    recipe, exactly `recipe:CODE`, to paste back."""
    recipe = "" if code is None else f" · `recipe:{code}`"
    return (
        f"{result_header(job)}\n"
        f"-# {job.options.summary()} · {meta.get('width')}×{meta.get('height')} · "
        f"{progress.duration(meta.get('seconds', 0))} on {meta.get('device', '?')}{recipe}"
    )
