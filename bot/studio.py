"""The studio: owns a job's life from the moment its ask is taken until it is delivered.

    take(ask) → reserve a place under the caps → download → journal (accepted, waiting)
              → first answer → fair queue → paint (painting) → painted: the painter is free
              → delivery: its own task, retried, sent once (fixed nonce) → delivered

Every state change is journalled before the bot acts on it, so `resume()` at start-up can pick
up whatever a crash, a deploy or SIGTERM interrupted: waiting jobs queue again in their old
order, painting ones are repainted, painted ones are delivered (after looking for a result that
may already be in the channel).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import io
import json
import logging
import secrets
import time
from collections.abc import Coroutine
from typing import Any

import discord

from bot import delivery, journal, progress
from bot.ask import QUEUED_REACTION, Ask, missing_permissions
from bot.buttons import cancel_view, result_view
from bot.errors import friendly
from bot.intake import Downloader, IntakeLimits
from bot.journal import Job, Journal
from bot.options import IMAGE, Options
from bot.scheduler import Limits, Scheduler
from bot.settings import Settings
from bot.traffic import ANSWER, RESULT, Traffic
from nst_engine import styles
from nst_engine.api import (
    MIN_TIMELAPSE_BYTES,
    Cancelled,
    Engine,
    InputError,
    StyleRequest,
    StyleSource,
)

log = logging.getLogger(__name__)

RESUMED = "🔁 Resumed after a restart."
TIMELAPSE = "timelapse.webp"
PAUSED = "⏸️ Paused: the bot is restarting; this job will be back after the restart."


def new_job_id(journal_: Journal, live: dict[str, Job]) -> str:
    while (job_id := secrets.token_hex(4)) in live or journal_.exists(job_id):
        continue
    return job_id


def nonce_of(job: Job) -> str:
    """The fixed nonce of a job's result message (Discord: at most 25 characters)."""
    return f"stylebot-{job.id}"


class Studio:
    """The jobs of one bot: intake, journal, scheduler, painting, delivery and their messages."""

    def __init__(
        self,
        engine: Engine,
        settings: Settings,
        client: discord.Client,
        journal_: Journal,
        *,
        slots: int,
        traffic: Traffic,
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.client = client
        self.journal = journal_
        self.traffic = traffic
        self.limits = IntakeLimits(
            max_bytes=settings.max_attachment_bytes,
            max_pixels=settings.max_pixels,
            timeout=settings.download_timeout,
            hosts=settings.download_hosts,
        )
        self.downloader = Downloader(self.limits, settings.max_downloads)
        self.retry = delivery.Retry(attempts=settings.upload_attempts)
        self.scheduler: Scheduler[Job] = Scheduler(
            Limits(
                user_running=settings.user_running,
                user_waiting=settings.user_waiting,
                guild_jobs=settings.guild_jobs,
                total_jobs=settings.total_jobs,
            ),
            slots=slots,
            run=self._paint,
            on_moved=self._moved,
        )
        self.jobs: dict[str, Job] = {}  # waiting and painting
        self._statuses: dict[str, progress.Status] = {}
        self._handles: dict[str, Any] = {}  # job id -> the engine's handle while painting
        self._ready: dict[str, asyncio.Event] = {}
        self._fraction: dict[str, float] = {}
        self._shown: dict[str, str] = {}  # the queue text last shown per waiting job
        self._resumed: set[str] = set()
        self._deliveries: set[asyncio.Task[None]] = set()
        self._stopping = False
        self._intakes = 0  # takes under way (downloading, journalling, answering)
        self._no_intakes = asyncio.Event()
        self._no_intakes.set()

    # ------------------------------------------------------------------ taking asks

    def resolve(self, options: Options, guild_id: int | None) -> Options:
        """Defaults and caps filled in, names checked against built-ins and the server's own."""
        s = self.settings
        return options.resolved(
            default_size=s.default_size,
            max_size=s.max_size,
            default_quality=s.default_quality,
            server_styles=self.journal.style_names(guild_id),
        )

    def _style_files(self, ask: Ask, attached: list[bytes]) -> list[bytes]:
        """The job's style image files in blend order: each attached style image, and a copy of
        each server style (so a job in the queue survives its style being removed)."""
        files = []
        pending = iter(attached)
        for part in ask.options.parts():
            if part.name == IMAGE:
                files.append(next(pending))
            elif part.name not in styles.STYLES:
                found = (
                    None
                    if ask.guild_id is None
                    else self.journal.style_image(ask.guild_id, part.name)
                )
                if found is None:
                    raise InputError(f"This server has no style `{part.name}` (any more).")
                files.append(found[0])
        return files

    async def take(self, ask: Ask) -> Job | None:
        """Check, download and accept an ask; every refusal goes to its asker in one line."""
        self._intakes += 1
        self._no_intakes.clear()
        try:
            return await self._take(ask)
        finally:
            self._intakes -= 1
            if self._intakes == 0:
                self._no_intakes.set()

    async def _take(self, ask: Ask) -> Job | None:
        try:
            missing = missing_permissions(ask.permissions, in_thread=ask.in_thread)
            if missing:
                raise InputError(
                    f"I can't paint in this channel: I'm missing {', '.join(missing)}. "
                    "A server admin can grant it."
                )
            place = self.scheduler.reserve(ask.owner_id, ask.guild_id)
        except InputError as exc:
            await ask.front.refuse(friendly(exc))
            return None
        try:
            await ask.front.acknowledge()
            photo = await self.downloader.read(ask.photo)
            attached = [await self.downloader.read(att) for att in ask.style_images]
            start = None if ask.start is None else await self.downloader.read(ask.start)
            style_files = await asyncio.to_thread(self._style_files, ask, attached)
            if not self.scheduler.accepting:
                raise InputError("The bot is restarting and is not taking new jobs right now.")
        except Exception as exc:
            self.scheduler.queue.release(place)
            await ask.front.refuse(friendly(exc))
            return None
        job = Job(
            id=new_job_id(self.journal, self.jobs),
            owner_id=ask.owner_id,
            guild_id=ask.guild_id,
            channel_id=ask.channel_id,
            options=ask.options,
            upload_limit=ask.upload_limit,
            source_id=ask.source_id,
            reply_to_id=ask.source_id,
            inputs_on_result=ask.inputs_on_result,
        )
        try:
            await asyncio.to_thread(self.journal.add, job, photo, style_files, start)
        except OSError as exc:
            self.scheduler.queue.release(place)
            log.error("job %s: could not journal it: %s", job.id, exc)
            await ask.front.refuse("⚠️ I couldn't store your job (disk trouble); please try again.")
            return None
        del photo, attached, style_files, start
        self._queue(job, place)
        position = self.scheduler.queue.positions().get(job.id)
        text = (
            progress.starting_text(job.id, self._summary(job))
            if position is None
            else progress.queued_text(job.id, position, self._summary(job))
        )
        try:
            status_id = await ask.front.answer(text, cancel_view(job.id))
        except Exception as exc:  # the job stands; only its first answer failed
            log.warning("job %s: the first answer failed: %r", job.id, exc)
            status_id = None
        if status_id is not None:
            self.journal.update(job, status_id=status_id)
            if job.reply_to_id is None:
                self.journal.update(job, reply_to_id=status_id)
            self._attach_status(job)
            if self._stopping and job.state == journal.WAITING:
                # a shutdown kept it for the next start before its status existed
                await self._finish_status(job, PAUSED)
        self._ready[job.id].set()
        log.info(
            "job %s: accepted for user %s in guild %s (%s), position %s",
            job.id,
            job.owner_id,
            job.guild_id,
            job.options.summary(),
            position or "painting",
        )
        return job

    def _queue(self, job: Job, place: Any) -> None:
        self.journal.update(job, state=journal.WAITING)
        self.jobs[job.id] = job
        self._ready[job.id] = asyncio.Event()
        self.scheduler.submit(job, place)

    def _channel(self, job: Job) -> discord.PartialMessageable:
        return self.client.get_partial_messageable(job.channel_id, guild_id=job.guild_id)

    def _attach_status(self, job: Job) -> None:
        assert job.status_id is not None
        self._statuses[job.id] = progress.Status(
            self.traffic,
            self._channel(job).get_partial_message(job.status_id),
            interval=self.settings.status_interval,
            view=cancel_view(job.id),
            job_id=job.id,
        )

    def _summary(self, job: Job) -> str:
        resumed = f"\n{RESUMED}" if job.id in self._resumed else ""
        return f"-# {job.options.summary()}{resumed}"

    def _moved(self, positions: dict[str, int]) -> None:
        for job_id, position in positions.items():
            status = self._statuses.get(job_id)
            job = self.jobs.get(job_id)
            if status is None or job is None or job.state != journal.WAITING:
                continue
            text = progress.queued_text(job_id, position, self._summary(job))
            if self._shown.get(job_id) != text:  # coarse places: most moves change nothing
                self._shown[job_id] = text
                status.show(text, queued=True)

    # ------------------------------------------------------------------ painting

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
            # the animation rides beside the result: half of what one file may weigh
            timelapse_max_bytes=max(MIN_TIMELAPSE_BYTES, job.upload_limit // 2),
        )

    async def _paint(self, job: Job) -> None:
        """The scheduler's runner: paint one job; delivery goes on without the painter."""
        await self._ready[job.id].wait()
        status = self._statuses.get(job.id)
        try:
            if job.state != journal.WAITING:
                raise Cancelled()
            self.journal.update(job, state=journal.PAINTING)
            log.info("job %s: painting", job.id)
            self._shown.pop(job.id, None)
            if status is not None:
                status.show(progress.starting_text(job.id, self._summary(job)))
            request = await asyncio.to_thread(self._request, job)
            handle = await self.engine.submit(request)
            self._handles[job.id] = handle
            # cancelled, or a shutdown began while it was being submitted (and found no handle)
            if job.state != journal.PAINTING or self._stopping:
                await handle.cancel()
            async for event in handle.progress():
                self._fraction[job.id] = event.fraction
                if status is not None:
                    status.show(
                        progress.running_text(job.id, event, self._summary(job)), event.preview
                    )
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
        }
        names = ("photo", "style", "style2", "style3", "style4")
        copies = {f"{names[i]}.png": data for i, data in enumerate(result.inputs[:5])}
        copies["meta.json"] = json.dumps(meta).encode()
        if result.timelapse is not None:
            copies[TIMELAPSE] = result.timelapse
        await asyncio.to_thread(self.journal.save_result, job, result.image, copies)
        self.jobs.pop(job.id, None)
        log.info("job %s: painted in %.1f s on %s", job.id, result.seconds, result.device)
        self._start_delivery(job)

    async def _not_painted(self, job: Job, exc: BaseException) -> None:
        status = self._statuses.get(job.id)
        if isinstance(exc, Cancelled) and self._stopping and job.state == journal.PAINTING:
            log.info("job %s: stopped for the restart; it will be repainted", job.id)
            if status is not None:
                await self._finish_status(job, PAUSED)
            return
        self.jobs.pop(job.id, None)
        self._resumed.discard(job.id)
        if isinstance(exc, Cancelled):
            log.info("job %s: cancelled", job.id)
            self.journal.end(job, journal.CANCELLED)
            text = f"🛑 Job `{job.id}` was cancelled."
        else:
            log.warning("job %s: failed: %r", job.id, exc)
            text = f"Job `{job.id}`: {friendly(exc)}"
            self.journal.end(job, journal.FAILED, error=str(exc))
        await self._tell(job, text)

    # ------------------------------------------------------------------ delivering

    def _start_delivery(self, job: Job, *, resumed: bool = False) -> None:
        task = asyncio.create_task(self._deliver(job, resumed), name=f"stylebot-deliver-{job.id}")
        self._deliveries.add(task)
        task.add_done_callback(self._deliveries.discard)

    async def _deliver(self, job: Job, resumed: bool) -> None:
        try:
            posted = await self._already_posted(job) if resumed else None
            if posted is None:
                posted = await self._upload(job)
        except delivery.DeliveryFailed as exc:
            log.error("job %s: delivery failed: %s", job.id, exc)
            self._resumed.discard(job.id)
            self.journal.end(job, journal.FAILED, error=str(exc))
            await self._tell(job, f"⚠️ Job `{job.id}` was painted, but {exc} Please ask again.")
            return
        self._resumed.discard(job.id)
        self.journal.update(job, result_id=posted.id)
        self.journal.end(job, journal.DELIVERED)
        log.info("job %s: delivered as message %s", job.id, posted.id)
        done = f"✅ Job `{job.id}` is done: {posted.jump_url}"
        if job.status_id is not None:
            if job.id not in self._statuses:  # resumed after a restart: no status object yet
                self._attach_status(job)
            await self._finish_status(job, done)
        elif job.source_id is not None:
            self._unreact(job)

    async def _already_posted(self, job: Job) -> discord.Message | None:
        """The bot's result for `job` if it is already in the channel (a crash after the upload
        and before the journal heard of it)."""
        me = self.client.user
        since = dt.datetime.fromtimestamp(job.created - 60, tz=dt.UTC)
        after = discord.Object(
            job.status_id or job.source_id or discord.utils.time_snowflake(since)
        )
        marker = f"(job `{job.id}`)"
        try:
            async for message in self._channel(job).history(limit=100, after=after):
                if me is not None and message.author.id == me.id and marker in message.content:
                    log.info("job %s: its result was already posted", job.id)
                    return message
        except discord.HTTPException as exc:
            log.warning("job %s: could not read the channel's history: %s", job.id, exc)
        return None

    async def _upload(self, job: Job) -> discord.Message:
        png, copies = await asyncio.to_thread(self.journal.result, job)
        meta = json.loads(copies.pop("meta.json", b"{}"))
        animation = copies.pop(TIMELAPSE, None)  # encoded by the painter within its budget
        channel = self._channel(job)
        header = (
            f"<@{job.owner_id}> here is your painting (job `{job.id}`).\n"
            f"-# {job.options.summary()} · {meta.get('width')}×{meta.get('height')} · "
            f"{progress.duration(meta.get('seconds', 0))} on {meta.get('device', '?')}"
        )
        reference = (
            discord.MessageReference(
                message_id=job.reply_to_id, channel_id=job.channel_id, fail_if_not_exists=False
            )
            if job.reply_to_id is not None
            else None
        )
        # Input copies share the message with the result: each file within the per-file limit,
        # all of them within Discord's total per message; refitted when a 413 lowers the limit.
        total = delivery.MESSAGE_TOTAL - len(animation or b"")
        per_file = min(job.upload_limit, total // (1 + len(copies)))
        fitted: list[delivery.Encoded] = []

        async def send(encoded: delivery.Encoded, limit: int) -> discord.Message:
            if len(fitted) < len(copies) or any(len(c.data) > limit for c in fitted):
                fitted[:] = [
                    await asyncio.to_thread(
                        delivery.fit, data, limit, stem=name.removesuffix(".png")
                    )
                    for name, data in copies.items()
                ]
            note = f" · {encoded.note}" if encoded.note else ""
            extra = [] if animation is None or len(animation) > limit else [animation]
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
                        job.owner_id, job.source_id, job.options, job.id, self.settings.max_size
                    ),
                    reference=reference,  # type: ignore[arg-type]
                    allowed_mentions=discord.AllowedMentions(users=True, replied_user=False),
                    nonce=nonce_of(job),
                )

            return await self.traffic.send(job.channel_id, RESULT, post)

        message, _ = await delivery.send_fitted(
            send, png, per_file, job_id=job.id, retry=self.retry
        )
        return message

    # ------------------------------------------------------------------ telling people

    async def _finish_status(self, job: Job, text: str) -> None:
        status = self._statuses.pop(job.id, None)
        if status is not None:
            await status.finish(text)

    async def _tell(self, job: Job, text: str) -> None:
        """The end of a job, in its status message, or in a reply when it has none."""
        if job.status_id is not None:
            if job.id not in self._statuses:
                self._attach_status(job)
            await self._finish_status(job, text)
            return
        channel = self._channel(job)
        reference = (
            discord.MessageReference(
                message_id=job.source_id, channel_id=job.channel_id, fail_if_not_exists=False
            )
            if job.source_id is not None
            else None
        )
        try:
            await self.traffic.send(
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

    def _unreact(self, job: Job) -> None:
        """Take back the 'queued' reaction of a job answered with one (its result is there)."""
        me = self.client.user
        if job.source_id is None or me is None:
            return
        message = self._channel(job).get_partial_message(job.source_id)
        self._background(self._quietly(message.remove_reaction(QUEUED_REACTION, me)))

    @staticmethod
    async def _quietly(coro: Coroutine[Any, Any, Any]) -> None:
        with contextlib.suppress(discord.HTTPException, OSError, TimeoutError):
            await coro

    # ------------------------------------------------------------------ cancelling, queue

    def find(self, job_id: str) -> Job | None:
        return self.jobs.get(job_id)

    def jobs_of(self, user_id: int) -> list[Job]:
        return [job for job in self.jobs.values() if job.owner_id == user_id]

    def fraction(self, job: Job) -> float:
        return self._fraction.get(job.id, 0.0)

    def is_painting(self, job: Job) -> bool:
        return self.scheduler.queue.is_running(job)

    @staticmethod
    def may_cancel(job: Job, user: discord.abc.User, guild_id: int | None) -> bool:
        """The owner may; a server admin may cancel jobs of the server they typed in only."""
        if job.owner_id == user.id:
            return True
        if job.guild_id is None or job.guild_id != guild_id:
            return False
        perms = getattr(user, "guild_permissions", None)
        return bool(perms and (perms.administrator or perms.manage_guild))

    async def cancel(self, job: Job) -> None:
        """Cancel a waiting or painting job; its status message says so (in the background)."""
        if self.scheduler.cancel_waiting(job):
            self.jobs.pop(job.id, None)
            self.journal.end(job, journal.CANCELLED)
            log.info("job %s: removed from the queue", job.id)
            self._background(self._tell(job, f"🛑 Job `{job.id}` was cancelled before it started."))
            return
        self.journal.update(job, state=journal.CANCELLED)  # ends when the painter stops
        handle = self._handles.get(job.id)
        if handle is not None:
            await handle.cancel()

    def _background(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._deliveries.add(task)
        task.add_done_callback(self._deliveries.discard)

    async def cancel_from_button(self, interaction: discord.Interaction, job_id: str) -> None:
        job = self.find(job_id)
        if job is None:
            await interaction.response.send_message(
                "That job has already finished or was cancelled.", ephemeral=True
            )
            return
        if not self.may_cancel(job, interaction.user, interaction.guild_id):
            await interaction.response.send_message(
                "Only the person who started this job (or an admin of this server) can cancel it.",
                ephemeral=True,
            )
            return
        await interaction.response.send_message(f"Cancelling job `{job.id}`.", ephemeral=True)
        await self.cancel(job)

    # ------------------------------------------------------------------ restarts

    async def resume(self) -> int:
        """Take up every unfinished job of the journal, oldest first; returns how many."""
        pruned = await asyncio.to_thread(self.journal.prune)
        if pruned:
            log.info("pruned %d old job record(s)", pruned)
        jobs = self.journal.unfinished()
        for job in jobs:
            log.info("job %s: resuming (%s)", job.id, job.state)
            self._resumed.add(job.id)
            if job.state == journal.PAINTED:
                self._start_delivery(job, resumed=True)
                continue
            if job.status_id is not None:
                self._attach_status(job)
            self._queue(job, None)
            self._ready[job.id].set()
        self._moved(self.scheduler.queue.positions())
        return len(jobs)

    async def follow_capacity(self, every: float = 5.0) -> None:
        """Keep as many jobs painting as the engine has painters (a cluster grows and shrinks)."""
        while self.scheduler.accepting:
            await asyncio.sleep(every)
            painters = self.engine.stats().painters
            if painters and painters != self.scheduler.slots:
                log.info("the engine has %d painter(s) now", painters)
                self.scheduler.resize(painters)

    async def shutdown(self, grace: float = 20.0) -> None:
        """Stop taking jobs; keep the waiting ones for the next start and say so; stop the
        painting ones (they are repainted after the restart); let deliveries finish within
        `grace`, after which the unfinished stay painted in the journal."""
        deadline = time.monotonic() + grace
        self._stopping = True
        waiting = self.scheduler.stop()
        pauses = []
        for job in waiting:
            log.info("job %s: kept for the next start", job.id)
            if job.id in self._statuses:
                pauses.append(self._finish_status(job, PAUSED))
        for job in list(self.jobs.values()):
            handle = self._handles.get(job.id)
            if handle is not None:
                await handle.cancel()
        pending = [*pauses, self.scheduler.join(), self._no_intakes.wait()]
        pending_tasks = [asyncio.ensure_future(c) for c in pending] + list(self._deliveries)
        if pending_tasks:
            _, late = await asyncio.wait(
                pending_tasks, timeout=max(0.1, deadline - time.monotonic())
            )
            for task in late:
                task.cancel()
            if late:
                log.warning("%d task(s) did not end within the shutdown grace", len(late))
                await asyncio.gather(*late, return_exceptions=True)
        await self.downloader.close()
