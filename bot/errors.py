"""Turning any failure into one friendly line for chat; the details go to the log only."""

from __future__ import annotations

import logging

import discord
from discord import app_commands
from discord.ext import commands

from nst_engine.api import Cancelled, EngineError, InputError, JobTimeout, StyleBotError

log = logging.getLogger(__name__)

MAX_LEN = 1800
SORRY = "Something went wrong on my side. It has been logged; please try again."


def _unwrap(error: BaseException) -> BaseException:
    """The original exception inside discord.py's command and app-command wrappers."""
    for _ in range(5):
        inner = getattr(error, "original", None)
        if not isinstance(inner, BaseException):
            break
        error = inner
    return error


def _first_line(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= MAX_LEN else line[: MAX_LEN - 1] + "…"


def friendly(error: BaseException) -> str:
    """A one-line message for the user; unexpected errors are logged with their traceback."""
    error = _unwrap(error)
    if isinstance(error, JobTimeout):
        return _first_line(f"⏱️ {error} Try a smaller size or the draft quality.")
    if isinstance(error, Cancelled):
        return _first_line(f"🛑 {error}")
    if isinstance(error, EngineError):
        return _first_line(f"⚠️ The painter failed: {error}")
    if isinstance(error, InputError | StyleBotError):
        return _first_line(f"❌ {error}")
    if isinstance(error, commands.MissingRequiredArgument | commands.MissingRequiredAttachment):
        return f"❌ Missing `{error.param.name}`. See `help` for the usage."
    if isinstance(
        error, commands.BadArgument | commands.BadUnionArgument | commands.BadLiteralArgument
    ):
        return _first_line(f"❌ {error}")
    if isinstance(error, commands.TooManyArguments | commands.UnexpectedQuoteError):
        return "❌ I couldn't read that command. See `help` for the usage."
    if isinstance(error, commands.NoPrivateMessage | app_commands.NoPrivateMessage):
        return "❌ That command only works in a server."
    if isinstance(error, commands.CommandOnCooldown | app_commands.CommandOnCooldown):
        return f"⏳ Slow down: try again in {error.retry_after:.0f} s."
    if isinstance(error, commands.CheckFailure | app_commands.CheckFailure):
        return "❌ You can't use that command here."
    if isinstance(error, app_commands.TransformerError):
        return _first_line(f"❌ I couldn't read `{error.value}`.")
    if isinstance(error, discord.Forbidden):
        return "❌ I lack a permission here (I need Send Messages, Attach Files, Read History)."
    log.error("unexpected error", exc_info=(type(error), error, error.__traceback__))
    return SORRY
