"""`/history` and `!history`: a user's last jobs, with their recipes and links to the results."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

import discord
from discord.ext import commands

from bot import provenance, replies

if TYPE_CHECKING:
    from bot.app import StyleBot

log = logging.getLogger(__name__)

SHOWN = 10
NO_DM = (
    "I can't send you a DM (your privacy settings may block messages from server members); "
    "use `/history` instead, which only you can see."
)


class HistoryCog(commands.Cog, name="History"):
    """A user's own jobs."""

    def __init__(self, bot: StyleBot) -> None:
        self.bot = bot

    def _text(self, user_id: int, guild_id: int | None) -> str:
        journal = self.bot.studio.journal
        jobs = journal.recent(user_id, guild_id, SHOWN)
        codes = journal.recipes.codes_of([job.id for job in jobs]) if jobs else {}
        return provenance.history(jobs, codes, "in this server" if guild_id else "anywhere")

    @commands.hybrid_command(name="history")
    async def history(self, ctx: commands.Context[StyleBot]) -> None:
        """Your last 10 jobs here: state, styles, recipe and a link to each result."""
        guild_id = ctx.guild.id if ctx.guild else None
        text = await asyncio.to_thread(self._text, ctx.author.id, guild_id)
        quiet = discord.AllowedMentions.none()
        if ctx.interaction is not None or ctx.guild is None:  # private already
            await ctx.reply(text, ephemeral=True, mention_author=False, allowed_mentions=quiet)
            return
        try:
            await ctx.author.send(text, allowed_mentions=quiet)
        except discord.HTTPException as exc:
            log.info("user %s: no DM for their history: %s", ctx.author.id, exc)
            await replies.reply(
                ctx, self.bot.traffic, NO_DM, mention_author=False, allowed_mentions=quiet
            )
            return
        await replies.reply(
            ctx, self.bot.traffic, "📬 Sent you your history in a DM.", mention_author=False
        )
