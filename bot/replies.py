"""Answers to commands. A prefix command's reply is a message in the channel, so it waits its
turn in the channel's lane like everything else the bot posts there; a slash command's answer
is the interaction's own response, with a budget of its own."""

from __future__ import annotations

from typing import Any

import discord
from discord.ext import commands

from bot.traffic import ANSWER, Traffic


async def reply(
    ctx: commands.Context[Any], traffic: Traffic, content: str, **kwargs: Any
) -> discord.Message:
    """`ctx.reply(content, **kwargs)`, through the channel's lane unless it answers an
    interaction."""
    if ctx.interaction is not None:
        return await ctx.reply(content, **kwargs)
    return await traffic.send(ctx.channel.id, ANSWER, lambda: ctx.reply(content, **kwargs))
