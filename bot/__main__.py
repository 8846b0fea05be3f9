"""`stylebot`: run the bot until SIGINT/SIGTERM, with settings from the environment or `.env`.

`stylebot --check` exits 0 if a bot with the same STYLEBOT_DATA_DIR is logged in and answering
(its heartbeat is fresh), else 1 with one line saying why: the container's healthcheck.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import queue
import signal
import sys
from logging.handlers import QueueHandler, QueueListener

import discord
from pydantic import ValidationError

from bot import health
from bot.app import build_bot
from bot.credentials import TokenHandoffError, hide_from_proc, take_handoff
from bot.settings import Settings
from nst_engine.api import EngineError

log = logging.getLogger("bot")

NO_TOKEN = (
    "stylebot: DISCORD_TOKEN is not set. Create an application at "
    "https://discord.com/developers/applications, copy its token from the Bot page, and put it "
    "in a file named by DISCORD_TOKEN_FILE, or DISCORD_TOKEN=... in .env (see the README)."
)


async def serve(settings: Settings) -> int:
    """Run the bot until it is closed by a signal or a fatal error; returns the exit status."""
    assert settings.discord_token is not None
    bot = build_bot(settings)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, lambda s=sig: _stop(bot, s))
    try:
        async with bot:
            await bot.start(settings.discord_token.get_secret_value())
    except discord.LoginFailure:
        log.error("Discord refused the token; check DISCORD_TOKEN (the Bot page can reset it).")
        return 2
    except discord.PrivilegedIntentsRequired:
        log.error(
            "The Message Content intent is not enabled for this bot. Enable it on the Bot page "
            "of the developer portal, or set STYLEBOT_MESSAGE_CONTENT_INTENT=false."
        )
        return 2
    except EngineError as exc:
        log.error("stylebot could not start painting: %s", exc)
        return 1
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    return 0


def _stop(bot: discord.Client, sig: signal.Signals) -> None:
    log.info("received %s", sig.name)
    if not bot.is_closed():
        asyncio.get_running_loop().create_task(bot.close())


def log_in_background() -> QueueListener:
    """Hand what the root logger writes to a thread of its own: a write to a busy disk or a full
    pipe then holds that thread, never the event loop. Stop the returned listener at exit."""
    root = logging.getLogger()
    records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    listener = QueueListener(records, *root.handlers, respect_handler_level=True)
    root.handlers = [QueueHandler(records)]
    listener.start()
    return listener


def report(exc: ValidationError) -> None:
    """One line per bad setting, named as the user wrote it."""
    for error in exc.errors():
        field = ".".join(str(part) for part in error["loc"]).upper()
        if not field:  # a check across settings names them itself
            print(f"stylebot: bad settings: {error['msg']}", file=sys.stderr)
            continue
        where = field if field.startswith("DISCORD_") else f"STYLEBOT_{field}"
        print(f"stylebot: bad setting {where}: {error['msg']}", file=sys.stderr)


def check() -> int:
    """0 if the bot with this environment's data dir is alive, else 1 (Docker's "unhealthy")."""
    try:
        settings = Settings()
    except ValidationError as exc:
        report(exc)
        return 1
    problem = health.check(health.heartbeat_path(settings.data_dir))
    print(f"stylebot: {problem or 'healthy'}", file=sys.stderr if problem else sys.stdout)
    return 1 if problem else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="stylebot", description="Run the stylebot Discord bot.")
    parser.add_argument(
        "--check", action="store_true", help="exit 0 if the running bot is healthy, else 1"
    )
    if parser.parse_args(argv).check:
        return check()  # reads no token, starts nothing
    try:
        hide_from_proc()  # returns only when the environment holds no token
        handed = take_handoff()
    except (TokenHandoffError, OSError) as exc:
        print(f"stylebot: could not keep the token private: {exc}", file=sys.stderr)
        return 2
    try:
        settings = Settings() if handed is None else Settings(discord_token=handed)
    except ValidationError as exc:
        report(exc)
        return 2
    if settings.discord_token is None or not settings.discord_token.get_secret_value().strip():
        print(NO_TOKEN, file=sys.stderr)
        return 2
    discord.utils.setup_logging(level=getattr(logging, settings.log_level), root=True)
    listener = log_in_background()
    try:
        return asyncio.run(serve(settings))
    except KeyboardInterrupt:
        return 130
    finally:
        listener.stop()  # writes out what is still queued


if __name__ == "__main__":
    sys.exit(main())
