"""Taking and scheduling a job: from the moment its ask is taken until a painter starts it.

    take(ask) → reserve a place under the caps → download → journal (waiting) → first answer
              → fair queue → a painter slot: `painting` paints it, `delivery` posts it

The studio owns the live jobs (waiting and painting), the queue and its caps, and cancelling.
Every state change is journalled before the bot acts on it (`lifecycle` resumes from the
journal). Must not touch the engine's handles, the upload or the wording of statuses: painting,
delivery and notices own those.
"""

from __future__ import annotations

import asyncio
import logging
import secrets

import discord

from bot import ending, journal
from bot.ask import Ask, missing_permissions
from bot.buttons import cancel_view
from bot.delivery import Delivery, Retry
from bot.errors import friendly
from bot.intake import Downloader, IntakeLimits
from bot.journal import Job, Journal
from bot.notices import PAUSED, Notices
from bot.options import IMAGE, Options
from bot.painting import Painting
from bot.scheduler import Limits, Place, Scheduler
from bot.settings import Settings
from bot.traffic import Traffic
from nst_engine import styles
from nst_engine.api import Engine, InputError

log = logging.getLogger(__name__)


def new_job_id(journal_: Journal, live: dict[str, Job]) -> str:
    while (job_id := secrets.token_hex(4)) in live or journal_.exists(job_id):
        continue
    return job_id


class Studio:
    """The jobs of one bot: taking asks, the fair queue, cancelling; and the parts that paint,
    deliver and tell people about them."""

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
        self.settings = settings
        self.journal = journal_
        self.traffic = traffic
        self.limits = IntakeLimits(
            max_bytes=settings.max_attachment_bytes,
            max_pixels=settings.max_pixels,
            timeout=settings.download_timeout,
            hosts=settings.download_hosts,
        )
        self.downloader = Downloader(self.limits, settings.max_downloads)
        self.jobs: dict[str, Job] = {}  # waiting and painting
        self.notices = Notices(client, traffic, interval=settings.status_interval)
        self.delivery = Delivery(
            client,
            journal_,
            traffic,
            self.notices,
            retry=Retry(attempts=settings.upload_attempts),
            max_size=settings.max_size,
        )
        self.painting = Painting(engine, settings, journal_, self.notices, self.delivery, self.jobs)
        self.scheduler: Scheduler[Job] = Scheduler(
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
        self._ready: dict[str, asyncio.Event] = {}  # set once a job's first answer is out
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
            server_styles=self.journal.styles.names(guild_id),
        )

    def _style_files(self, ask: Ask, attached: list[bytes]) -> list[bytes]:
        """The job's style image files in blend order: each attached style image, and a copy of
        each server style (so a job in the queue survives its style being removed)."""
        files = []
        pending = iter([*ask.kept_styles, *attached])
        for part in ask.options.parts():
            if part.name == IMAGE:
                files.append(next(pending))
            elif part.name not in styles.STYLES:
                found = (
                    None
                    if ask.guild_id is None
                    else self.journal.styles.image(ask.guild_id, part.name)
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

    async def intakes_done(self) -> None:
        """Wait until no ask is being taken."""
        await self._no_intakes.wait()

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
            job = await self._accept(ask, place)
        finally:
            self.scheduler.queue.release(place)  # a no-op once the queue holds the job there
        if job is None:
            return None
        ready = self._ready[job.id]
        try:
            await self._answer(ask, job)
        finally:
            ready.set()  # whatever became of its first answer, a painter may start it now
        return job

    async def _accept(self, ask: Ask, place: Place) -> Job | None:
        """Download the ask's inputs, journal the job and queue it in `place`; None (and the
        asker told why) when that fails."""
        try:
            await ask.front.acknowledge()
            photo = await self.downloader.read(ask.photo)
            attached = [await self.downloader.read(att) for att in ask.style_images]
            start = None if ask.start is None else await self.downloader.read(ask.start)
            style_files = await asyncio.to_thread(self._style_files, ask, attached)
            if not self.scheduler.accepting:
                raise InputError("The bot is restarting and is not taking new jobs right now.")
        except Exception as exc:
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
            state=journal.WAITING,  # journalled as waiting: queued in the same step
        )
        try:
            await asyncio.to_thread(self.journal.add, job, photo, style_files, start)
        except Exception as exc:  # a full disk (OSError) or a failing database (sqlite3.Error)
            log.error("job %s: could not journal it: %r", job.id, exc)
            await ask.front.refuse("⚠️ I couldn't store your job (disk trouble); please try again.")
            return None
        self._queue(job, place)
        return job

    async def _answer(self, ask: Ask, job: Job) -> None:
        """The job's first answer: its place in the queue, or that it starts."""
        position = self.scheduler.queue.positions().get(job.id)
        try:
            status_id = await ask.front.answer(
                self.notices.first_text(job, position), cancel_view(job.id)
            )
        except Exception as exc:  # the job stands; only its first answer failed
            log.warning("job %s: the first answer failed: %r", job.id, exc)
            status_id = None
        if status_id is not None:
            replied = {} if job.reply_to_id is not None else {"reply_to_id": status_id}
            ending.write(self.journal, job, status_id=status_id, **replied)
            self.notices.attach(job)
            if self.painting.stopping and job.state == journal.WAITING:
                # a shutdown kept it for the next start before its status existed
                await self.notices.finish(job, PAUSED)
        log.info(
            "job %s: accepted for user %s in guild %s (%s), position %s",
            job.id,
            job.owner_id,
            job.guild_id,
            job.options.summary(),
            position or "painting",
        )

    def _queue(self, job: Job, place: Place | None) -> asyncio.Event:
        """Queue a journalled waiting job; a painter starts it once the returned event is set."""
        self.jobs[job.id] = job
        ready = self._ready[job.id] = asyncio.Event()
        self.scheduler.submit(job, place)
        return ready

    def requeue(self, job: Job) -> None:
        """Queue a job taken up from the journal after a restart (no caps, no first answer)."""
        if job.state != journal.WAITING:
            ending.write(self.journal, job, state=journal.WAITING)
        self._queue(job, None).set()

    def show_places(self) -> None:
        """Every waiting job's status shows its current place."""
        self._moved(self.scheduler.queue.positions())

    def _moved(self, positions: dict[str, int]) -> None:
        for job_id, position in positions.items():
            job = self.jobs.get(job_id)
            if job is not None and job.state == journal.WAITING:
                self.notices.show_place(job, position)

    async def _run(self, job: Job) -> None:
        """The scheduler's runner: paint once the job's first answer is out."""
        await self._ready[job.id].wait()
        self._ready.pop(job.id, None)
        await self.painting.paint(job)

    def stop_taking(self) -> list[Job]:
        """A shutdown begins: take no more asks, start no more jobs; the waiting ones, removed
        from the queue (they stay `waiting` in the journal)."""
        self.painting.stopping = True
        return self.scheduler.stop()

    # ------------------------------------------------------------------ cancelling, queue

    def find(self, job_id: str) -> Job | None:
        return self.jobs.get(job_id)

    def jobs_of(self, user_id: int) -> list[Job]:
        return [job for job in self.jobs.values() if job.owner_id == user_id]

    def fraction(self, job: Job) -> float:
        return self.painting.fraction(job)

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
            self._ready.pop(job.id, None)
            await ending.record(self.journal, job, journal.CANCELLED)
            log.info("job %s: removed from the queue", job.id)
            text = f"🛑 Job `{job.id}` was cancelled before it started."
            self.notices.background(self.notices.tell(job, text))
            return
        ending.write(self.journal, job, state=journal.CANCELLED)  # ends when the painter stops
        await self.painting.cancel(job)

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
