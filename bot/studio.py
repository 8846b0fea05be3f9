"""The studio: turns a request from chat into a queued job, runs it on the engine, and delivers.

Commands, buttons and shutdown all come through here, so every path shares the same intake,
caps, status message, delivery and error handling.
"""

from __future__ import annotations

import asyncio
import io
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import discord

from bot import delivery, intake, progress
from bot.buttons import cancel_view, result_view
from bot.errors import friendly
from bot.intake import AttachmentLike, IntakeLimits
from bot.options import Options
from bot.scheduler import Limits, Scheduler, Ticket
from bot.settings import Settings
from nst_engine import images
from nst_engine.api import (
    Cancelled,
    Engine,
    InputError,
    Job,
    Result,
    StyleBotError,
    StyleRequest,
    StyleSource,
)

log = logging.getLogger(__name__)

SendStatus = Callable[[str, discord.ui.View], Awaitable[discord.abc.Snowflake]]


@dataclass(eq=False)
class BotJob:
    """A job as the bot sees it: who asked, where to answer, and how far it got."""

    id: str
    owner_id: int
    guild_id: int | None
    channel: discord.abc.Messageable
    options: Options
    request: StyleRequest
    source: int | None  # the user's message id; None when the inputs go on the result message
    filesize_limit: int
    reply_to: discord.abc.Snowflake | None = None
    status: progress.StatusMessage | None = None
    ticket: Ticket | None = None
    engine_job: Job | None = None
    ready: asyncio.Event = field(default_factory=asyncio.Event)  # set once the status exists
    cancelled: bool = False
    shutting_down: bool = False
    fraction: float = 0.0


def new_job_id(taken: dict[str, BotJob]) -> str:
    while (job_id := secrets.token_hex(3)) in taken:
        continue
    return job_id


def _input_copy(data: bytes, size: int, limit: int, stem: str) -> delivery.Encoded:
    """An input image at the job's size, carried on a result so its buttons can re-run it."""
    img = images.fit_long_side(images.decode(data), size)
    return delivery.fit(images.encode(img, "PNG"), limit, stem=stem)


class Studio:
    """Owns the scheduler and the jobs of one bot."""

    def __init__(self, engine: Engine, settings: Settings, *, slots: int) -> None:
        self.engine = engine
        self.settings = settings
        self.limits = IntakeLimits(
            max_bytes=settings.max_attachment_bytes,
            max_pixels=settings.max_pixels,
            timeout=settings.download_timeout,
        )
        self.scheduler = Scheduler(
            Limits(
                user_running=settings.user_running,
                user_waiting=settings.user_waiting,
                guild_jobs=settings.guild_jobs,
                total_jobs=settings.total_jobs,
            ),
            slots=slots,
            run=self._run,
            on_moved=self._moved,
        )
        self.jobs: dict[str, BotJob] = {}
        self._positions: dict[str, int] = {}

    # ------------------------------------------------------------------ creating jobs

    def resolve(self, options: Options) -> Options:
        s = self.settings
        return options.resolved(
            default_size=s.default_size, max_size=s.max_size, default_quality=s.default_quality
        )

    def check_caps(self, owner_id: int, guild_id: int | None) -> None:
        """Refuse at once (before any download) when a new job would go over a cap."""
        self.scheduler.check(Ticket("-", owner_id, guild_id))

    async def read_inputs(
        self, photo: AttachmentLike, style: AttachmentLike | None
    ) -> tuple[bytes, bytes | None]:
        """Check both attachments' metadata, then download and probe them."""
        for att in (photo, style):
            if att is not None:
                intake.check_attachment(att, self.limits)
        photo_bytes = await intake.read_image(photo, self.limits)
        style_bytes = None if style is None else await intake.read_image(style, self.limits)
        return photo_bytes, style_bytes

    async def enqueue(
        self,
        *,
        owner_id: int,
        guild_id: int | None,
        channel: discord.abc.Messageable,
        options: Options,
        photo: bytes,
        style_image: bytes | None,
        source: int | None,
        filesize_limit: int,
        reply_to: discord.abc.Snowflake | None,
        send_status: SendStatus,
    ) -> BotJob:
        """Check the caps, post the status message and queue the job; raises `InputError`."""
        style = (
            StyleSource(name=options.style)
            if options.style is not None
            else StyleSource(image=style_image)
        )
        request = StyleRequest(
            content=photo,
            styles=(style,),
            size=options.size or self.settings.default_size,
            quality=options.quality or self.settings.default_quality,
            strength=options.strength,
            preserve_colors=options.keep_colors,
            seed=options.seed,
            iterations=self.settings.max_iterations,
        )
        job = BotJob(
            id=new_job_id(self.jobs),
            owner_id=owner_id,
            guild_id=guild_id,
            channel=channel,
            options=options,
            request=request,
            source=source,
            filesize_limit=filesize_limit,
            reply_to=reply_to,
        )
        job.ticket = Ticket(job.id, owner_id, guild_id, payload=job)
        partial = self._partial_maker(channel)
        self.jobs[job.id] = job
        try:
            position = self.scheduler.submit(job.ticket)
        except InputError:
            self.jobs.pop(job.id, None)
            raise
        try:
            text = (
                progress.starting_text(job.id, self._summary(job))
                if position is None
                else progress.queued_text(job.id, position, self._summary(job))
            )
            sent = await send_status(text, cancel_view(job.id))
            status_message = partial(sent.id)
        except BaseException:
            job.cancelled = True
            self.scheduler.cancel_waiting(job.ticket)
            self.jobs.pop(job.id, None)
            job.ready.set()
            raise
        job.status = progress.StatusMessage(
            status_message,
            interval=self.settings.status_interval,
            view=cancel_view(job.id),
            job_id=job.id,
        )
        if job.reply_to is None:
            job.reply_to = status_message
        if position is not None:
            self._positions[job.id] = position
            self._moved(self.scheduler.queue.positions())  # it may have moved meanwhile
        job.ready.set()
        log.info(
            "job %s: queued for user %s in guild %s (%s), position %s",
            job.id,
            owner_id,
            guild_id,
            options.summary(),
            position or "running",
        )
        return job

    @staticmethod
    def _partial_maker(
        channel: discord.abc.Messageable,
    ) -> Callable[[int], discord.PartialMessage]:
        """How to address a message in `channel` by id (to edit it with the bot's own token)."""
        maker = getattr(channel, "get_partial_message", None)
        if maker is None:
            raise InputError("I can only work in server text channels, threads and DMs.")
        return maker

    def _summary(self, job: BotJob) -> str:
        return f"-# {job.options.summary()}"

    # ------------------------------------------------------------------ running jobs

    def _moved(self, positions: dict[str, int]) -> None:
        for job_id, position in positions.items():
            job = self.jobs.get(job_id)
            if job is None or job.status is None or self._positions.get(job_id) == position:
                continue
            self._positions[job_id] = position
            job.status.show(progress.queued_text(job.id, position, self._summary(job)))

    async def _run(self, ticket: Ticket) -> None:
        job = ticket.payload
        assert isinstance(job, BotJob)
        await job.ready.wait()
        self._positions.pop(job.id, None)
        if job.status is None:  # the status message could not be posted; nobody to tell
            return
        try:
            if job.cancelled:
                raise Cancelled()
            log.info("job %s: starting", job.id)
            job.status.show(progress.starting_text(job.id, self._summary(job)))
            engine_job = await self.engine.submit(job.request)
            job.engine_job = engine_job
            if job.cancelled:
                await engine_job.cancel()
            async for event in engine_job.progress():
                job.fraction = event.fraction
                job.status.show(
                    progress.running_text(job.id, event, self._summary(job)), event.preview
                )
            result = await engine_job.result()
        except Exception as exc:  # friendly() logs the traceback of any unexpected one
            await self._failed(job, exc)
            return
        log.info("job %s: painted in %.1f s on %s", job.id, result.seconds, result.device)
        self.jobs.pop(job.id, None)  # painted: nothing left to cancel
        await self._deliver(job, result)

    async def _failed(self, job: BotJob, exc: BaseException) -> None:
        self.jobs.pop(job.id, None)
        assert job.status is not None
        if isinstance(exc, Cancelled):
            why = "the bot is shutting down" if job.shutting_down else "on request"
            log.info("job %s: cancelled (%s)", job.id, why)
            await job.status.finish(f"🛑 Job `{job.id}` was cancelled ({why}).")
            return
        log.warning("job %s: failed: %r", job.id, exc)
        await job.status.finish(f"Job `{job.id}`: {friendly(exc)}")

    async def _deliver(self, job: BotJob, result: Result) -> None:
        assert job.status is not None
        inputs = [("photo", job.request.content), ("style", job.request.styles[0].image)]
        copies: list[delivery.Encoded] = []
        header = (
            f"<@{job.owner_id}> here is your painting (job `{job.id}`).\n"
            f"-# {job.options.summary()} · {result.width}×{result.height} · "
            f"{progress.duration(result.seconds)} on {result.device}"
        )
        reference = (
            discord.MessageReference(
                message_id=job.reply_to.id,
                channel_id=getattr(job.channel, "id", None),  # type: ignore[arg-type]
                fail_if_not_exists=False,
            )
            if job.reply_to is not None
            else None
        )

        async def send(encoded: delivery.Encoded, limit: int) -> discord.Message:
            if job.source is None and (not copies or any(len(c.data) > limit for c in copies)):
                copies[:] = [
                    await asyncio.to_thread(_input_copy, data, job.request.size, limit, stem)
                    for stem, data in inputs
                    if data is not None
                ]
            files = [discord.File(io.BytesIO(encoded.data), filename=encoded.filename)]
            files += [discord.File(io.BytesIO(c.data), filename=c.filename) for c in copies]
            note = f" · {encoded.note}" if encoded.note else ""
            return await job.channel.send(
                header + note,
                files=files,
                view=result_view(job.owner_id, job.source, job.options),
                reference=reference,  # type: ignore[arg-type]
                allowed_mentions=discord.AllowedMentions(users=True, replied_user=False),
            )

        try:
            message, encoded = await delivery.send_fitted(
                send, result.image, job.filesize_limit, job_id=job.id
            )
        except discord.HTTPException as exc:
            log.error("job %s: delivery failed: %s %s", job.id, exc.status, exc.text)
            await job.status.finish(
                f"⚠️ Job `{job.id}` finished but Discord refused the picture "
                f"(HTTP {exc.status}). Check that I may attach files here."
            )
            return
        except StyleBotError as exc:
            log.error("job %s: delivery failed: %s", job.id, exc)
            await job.status.finish(f"⚠️ Job `{job.id}` finished but: {friendly(exc)}")
            return
        log.info(
            "job %s: delivered %s (%d bytes) as message %s",
            job.id,
            encoded.filename,
            len(encoded.data),
            message.id,
        )
        await job.status.finish(
            f"✅ Job `{job.id}` is done ({progress.duration(result.seconds)}): {message.jump_url}"
        )

    # ------------------------------------------------------------------ cancelling

    def find(self, job_id: str) -> BotJob | None:
        return self.jobs.get(job_id)

    def jobs_of(self, user_id: int) -> list[BotJob]:
        return [job for job in self.jobs.values() if job.owner_id == user_id]

    async def cancel(self, job: BotJob, *, shutting_down: bool = False) -> None:
        """Cancel a waiting or running job; its status message says so."""
        job.cancelled = True
        job.shutting_down = shutting_down
        assert job.ticket is not None
        if self.scheduler.cancel_waiting(job.ticket):
            self.jobs.pop(job.id, None)
            self._positions.pop(job.id, None)
            log.info("job %s: removed from the queue", job.id)
            if job.status is not None:
                await job.status.finish(f"🛑 Job `{job.id}` was cancelled before it started.")
        elif job.engine_job is not None:
            await job.engine_job.cancel()

    def may_cancel(self, job: BotJob, user: discord.abc.User) -> bool:
        if job.owner_id == user.id:
            return True
        perms = getattr(user, "guild_permissions", None)
        return bool(perms and (perms.administrator or perms.manage_guild))

    async def cancel_from_button(self, interaction: discord.Interaction, job_id: str) -> None:
        job = self.find(job_id)
        if job is None:
            await interaction.response.send_message(
                "That job has already finished or was cancelled.", ephemeral=True
            )
            return
        if not self.may_cancel(job, interaction.user):
            await interaction.response.send_message(
                "Only the person who started this job (or a server admin) can cancel it.",
                ephemeral=True,
            )
            return
        await interaction.response.send_message(f"Cancelling job `{job.id}`.", ephemeral=True)
        await self.cancel(job)

    # ------------------------------------------------------------------ buttons

    async def rerun(
        self, interaction: discord.Interaction, owner_id: int, source: int | None, options: Options
    ) -> None:
        """A result button: queue the same inputs again with changed options."""
        if interaction.user.id != owner_id:
            await interaction.response.send_message(
                f"These buttons belong to <@{owner_id}>. Use `/stylize` to make your own.",
                ephemeral=True,
                allowed_mentions=discord.AllowedMentions.none(),
            )
            return
        await interaction.response.defer(thinking=True)
        try:
            options = self.resolve(options)
            channel = interaction.channel
            if channel is None or not isinstance(channel, discord.abc.Messageable):
                raise InputError("I can't see this channel any more.")
            reply_to: discord.abc.Snowflake | None
            if source is None:
                holder = interaction.message
                if holder is None:
                    raise InputError("I can't find the message these buttons were on.")
                inputs = list(holder.attachments[1:])
                photo_att = inputs[0] if inputs else None
                style_att = inputs[1] if options.style is None and len(inputs) > 1 else None
                if photo_att is None or (options.style is None and style_att is None):
                    raise InputError("The images of that job are gone, so I can't re-run it.")
                reply_to = None
            else:
                try:
                    original = await channel.fetch_message(source)  # type: ignore[union-attr]
                except discord.NotFound:
                    raise InputError(
                        "The original message was deleted, so I can't re-run it."
                    ) from None
                photo_att, style_att = intake.pick(
                    list(original.attachments),
                    await self.replied_attachments(original),
                    needs_style_image=options.style is None,
                )
                reply_to = original
            self.check_caps(owner_id, interaction.guild_id)
            photo, style_image = await self.read_inputs(photo_att, style_att)

            async def send_status(text: str, view: discord.ui.View) -> discord.abc.Snowflake:
                return await interaction.followup.send(text, view=view, wait=True)

            await self.enqueue(
                owner_id=owner_id,
                guild_id=interaction.guild_id,
                channel=channel,
                options=options,
                photo=photo,
                style_image=style_image,
                source=source,
                filesize_limit=interaction.filesize_limit,
                reply_to=reply_to,
                send_status=send_status,
            )
        except Exception as exc:
            await interaction.followup.send(friendly(exc), ephemeral=True)

    @staticmethod
    async def replied_attachments(message: discord.Message) -> list[discord.Attachment]:
        """The attachments of the message this one replies to (same channel only)."""
        ref = message.reference
        if ref is None or ref.message_id is None or ref.channel_id != message.channel.id:
            return []
        replied = ref.resolved
        if not isinstance(replied, discord.Message):
            try:
                replied = await message.channel.fetch_message(ref.message_id)
            except discord.HTTPException:
                return []
        return list(replied.attachments)

    # ------------------------------------------------------------------ shutdown

    async def shutdown(self, grace: float = 15.0) -> None:
        """Stop taking jobs, tell the owners of waiting ones, cancel running ones, wait a bit."""
        waiting = self.scheduler.stop()
        for ticket in waiting:
            job = ticket.payload
            assert isinstance(job, BotJob)
            self.jobs.pop(job.id, None)
            log.info("job %s: dropped at shutdown before it started", job.id)
            if job.status is None:
                continue
            text = (
                f"🛑 The bot is shutting down, so job `{job.id}` was not started. "
                "Please send it again when I'm back."
            )
            await job.status.finish(text)
            try:
                await job.channel.send(
                    f"<@{job.owner_id}> {text}",
                    allowed_mentions=discord.AllowedMentions(users=True),
                )
            except discord.HTTPException as exc:
                log.warning("job %s: telling the owner about the shutdown failed: %s", job.id, exc)
        for job in list(self.jobs.values()):
            await self.cancel(job, shutting_down=True)
        try:
            await asyncio.wait_for(self.scheduler.join(), timeout=grace)
        except TimeoutError:
            log.warning("running jobs did not end within %.0f s of shutdown", grace)
