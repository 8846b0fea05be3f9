"""The bot: a `commands.Bot` that starts the engine, loads the commands and shuts down cleanly."""

from __future__ import annotations

import asyncio
import logging

import discord
from discord import app_commands
from discord.ext import commands

from bot import replies
from bot.apps import AppsCog, StyleSelect
from bot.buttons import AboutButton, CancelButton, ResultButton
from bot.cog import StyleCog
from bot.engine import start_engine
from bot.errors import friendly
from bot.health import Heartbeat, heartbeat_path
from bot.history import HistoryCog
from bot.journal import Journal
from bot.lag import LagMonitor, settle
from bot.lifecycle import Lifecycle
from bot.settings import Settings
from bot.studio import Studio
from bot.traffic import Traffic
from nst_engine.api import Engine

log = logging.getLogger(__name__)

HOUSEKEEPING_EVERY = 24 * 3600.0  # prune the journal and forget departed servers, daily
ORPHAN_AGE = 3600.0  # a running bot removes job folders without a record only after this long


class StyleBot(commands.Bot):
    """stylebot. `engine` is used as given (and left open); when None the bot owns one."""

    studio: Studio
    lifecycle: Lifecycle

    def __init__(self, settings: Settings, engine: Engine | None = None) -> None:
        # A painting bot never joins voice: no warnings at start about voice libraries (PyNaCl,
        # davey) it does not need. discord.py warns once per process, while these are True.
        discord.VoiceClient.warn_nacl = False
        discord.VoiceClient.warn_dave = False
        intents = discord.Intents.default()
        intents.message_content = settings.message_content_intent
        traffic = Traffic()
        super().__init__(
            command_prefix=commands.when_mentioned_or(settings.prefix),
            intents=intents,
            help_command=None,
            allowed_mentions=discord.AllowedMentions(
                everyone=False, roles=False, users=True, replied_user=False
            ),
            http_trace=traffic.trace_config(),
        )
        self.traffic = traffic
        self.journal: Journal | None = None
        self.settings = settings
        self.engine = engine
        self._owns_engine = engine is None
        self.lag_monitor = LagMonitor(slow_callbacks=settings.loop_debug)
        self.heartbeat = Heartbeat(
            heartbeat_path(settings.data_dir), lambda: self.is_ready() and not self.is_closed()
        )
        self._shut_down = False

    async def setup_hook(self) -> None:
        self.lag_monitor.start()
        self.heartbeat.start()
        if self.engine is None:
            log.info("starting the painter (workers=%s)", self.settings.workers or "auto")
            self.engine = await start_engine(self.settings)
        slots = max(1, self.engine.stats().painters)
        self.journal = Journal(self.settings.data_dir, keep_days=self.settings.keep_days)
        log.info("job journal in %s", self.settings.data_dir.resolve())
        self.studio = Studio(
            self.engine, self.settings, self, self.journal, slots=slots, traffic=self.traffic
        )
        self.lifecycle = Lifecycle(self.studio, self.engine)
        self.add_dynamic_items(ResultButton, CancelButton, AboutButton, StyleSelect)
        await self.add_cog(StyleCog(self))
        await self.add_cog(AppsCog(self))
        await self.add_cog(HistoryCog(self))
        self.tree.on_error = self.on_app_command_error
        if self.settings.sync_commands:
            synced = await self.tree.sync()
            log.info("synced %d slash command(s)", len(synced))
        self._capacity = asyncio.create_task(self.lifecycle.follow_capacity())
        self._housekeeping = asyncio.create_task(self._keep_house())
        resumed = await self.lifecycle.resume()
        if resumed:
            log.info("resumed %d unfinished job(s) from the journal", resumed)
        settle()
        log.info("ready to paint with %d job slot(s)", slots)

    async def on_ready(self) -> None:
        log.info(
            "logged in as %s (id %s) in %d server(s)",
            self.user,
            self.user and self.user.id,
            len(self.guilds),
        )
        await self.forget_departed_guilds()

    async def forget_departed_guilds(self) -> None:
        """Remove the styles of servers the bot left while it was not listening (READY lists
        every server it is in, unavailable ones included)."""
        assert self.journal is not None
        if not self.intents.guilds:  # without it the bot knows of no server at all
            return
        departed = await asyncio.to_thread(self.journal.styles.guilds)
        for guild_id in departed - {guild.id for guild in self.guilds}:
            removed = await asyncio.to_thread(self.journal.styles.forget_guild, guild_id)
            log.info("no longer in guild %s: removed its %d style(s)", guild_id, removed)

    async def housekeeping(self) -> None:
        """The periodic step: prune old job records and forget departed servers."""
        assert self.journal is not None
        pruned = await asyncio.to_thread(self.journal.prune, orphan_age=ORPHAN_AGE)
        if pruned:
            log.info("pruned %d old job record(s)", pruned)
        if self.is_ready():
            await self.forget_departed_guilds()

    async def _keep_house(self) -> None:
        while True:
            await asyncio.sleep(HOUSEKEEPING_EVERY)
            try:
                await self.housekeeping()
            except Exception:  # a full disk or a locked database: try again next time
                log.exception("housekeeping failed")

    async def report_error(self, ctx: commands.Context[StyleBot], error: BaseException) -> None:
        """Tell the user what went wrong in one line (the traceback, if any, goes to the log)."""
        if isinstance(error, commands.CommandNotFound):
            return
        text = friendly(error)
        log.info("command %s by %s failed: %s", ctx.command, ctx.author.id, text)
        try:
            await replies.reply(
                ctx,
                self.traffic,
                text,
                ephemeral=True,
                mention_author=False,
                allowed_mentions=discord.AllowedMentions.none(),
            )
        except discord.HTTPException as exc:
            log.warning("could not report an error to the user: %s", exc)

    async def on_command_error(  # type: ignore[override]
        self, ctx: commands.Context[StyleBot], error: commands.CommandError
    ) -> None:
        await self.report_error(ctx, error)

    async def on_app_command_error(
        self, interaction: discord.Interaction, error: app_commands.AppCommandError
    ) -> None:
        text = friendly(error)
        try:
            if interaction.response.is_done():
                await interaction.followup.send(text, ephemeral=True)
            else:
                await interaction.response.send_message(text, ephemeral=True)
        except discord.HTTPException as exc:
            log.warning("could not report an error to the user: %s", exc)

    async def close(self) -> None:
        """Stop taking jobs (the waiting ones stay journalled for the next start), close the
        engine, log out; each step runs even if the one before it failed."""
        if not self._shut_down:
            self._shut_down = True
            log.info("shutting down")
            await self.heartbeat.stop()
            try:
                if hasattr(self, "lifecycle"):
                    self._capacity.cancel()
                    self._housekeeping.cancel()
                    await self.lifecycle.shutdown(self.settings.shutdown_grace)
            except Exception:
                log.exception("stopping the jobs failed")
            finally:
                try:
                    if self._owns_engine and self.engine is not None:
                        await self.engine.close()
                except Exception:
                    log.exception("closing the painter failed")
                if hasattr(self, "studio"):
                    self.studio.notices.boards.close()
                await self.traffic.close()
                if self.journal is not None:
                    self.journal.close()
                await self.lag_monitor.stop()
                log.info("largest event-loop lag: %.0f ms", self.lag_monitor.max_lag * 1000)
                log.info("%s", self.lag_monitor.summary())
        await super().close()


def build_bot(settings: Settings, engine: Engine | None = None) -> StyleBot:
    """The bot for these settings; pass a started engine to share it (tests, benches)."""
    return StyleBot(settings, engine)
