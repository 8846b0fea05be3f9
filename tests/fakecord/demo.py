"""The offline demo: the real stylebot on a local Discord, painting a bundled photo.

    python -m tests.fakecord.demo [--photo samples/chelsea.png] [--style vaporwave] [--out out]

It starts fakecord, starts the bot (with its real process-pool engine) against it, posts
`!stylize vaporwave` with the photo as a scripted user, prints every message and status edit
the bot makes as it arrives, saves the image the bot replies with under `out/` and prints its
path. Nothing touches the network.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
import tempfile
import time
from pathlib import Path

from bot.app import build_bot
from bot.settings import Settings

from . import FakeDiscord, Message, StoredFile

log = logging.getLogger(__name__)
QUIET_SECONDS = 30.0  # a painting job edits its status every few seconds


class DemoFailed(Exception):
    """The bot answered without a picture; the message is what it said."""


def _printer(fake: FakeDiscord, started: float) -> None:
    """Print what the bot says: new messages and each edit, one line each."""

    shown: dict[int, str] = {}

    def show(kind: str, message: Message) -> None:
        if message.author.id != fake.bot_user.id or kind == "delete":
            return
        text = " ".join(message.content.split()) or "(no text)"
        files = ", ".join(f"{f.filename} {f.size // 1024} KiB" for f in message.files)
        line = f"{text[:150]}  [{files}]" if files else text[:150]
        if shown.get(message.id) == line:  # an edit that changed nothing visible here
            return
        shown[message.id] = line
        label = "new " if kind == "create" else "edit"
        print(f"{time.monotonic() - started:6.1f}s bot {label}: {line}", flush=True)

    fake.listen(show)


async def demo(photo: Path, style: str, out_dir: Path, timeout: float) -> Path:
    async with FakeDiscord() as fake:
        settings = Settings(
            _env_file=None,  # type: ignore[call-arg]
            discord_token=fake.token,
            default_size=384,
            default_quality="draft",  # the preset's own 70 steps
            workers=1,
            status_interval=2.0,
            download_hosts=(fake.url,),  # this fakecord's CDN: scheme, host and port
            data_dir=Path(tempfile.mkdtemp(prefix="stylebot-demo-")),  # a fresh job journal
        )
        started = time.monotonic()
        print(f"fakecord listening on {fake.url}; starting stylebot (loading VGG19)...", flush=True)
        bot = build_bot(settings)
        await bot.login(fake.token)
        runner = asyncio.create_task(bot.connect(reconnect=True))
        try:
            await asyncio.wait_for(bot.wait_until_ready(), timeout)
            _printer(fake, started)
            user = fake.add_user("demo-user")
            command = f"!stylize {style}"
            print(f"{time.monotonic() - started:6.1f}s demo-user: {command}  [{photo.name}]")
            posted = await fake.post(user, command, files=[(photo.name, photo.read_bytes())])
            activity = [time.monotonic()]
            fake.listen(lambda _kind, _message: activity.__setitem__(0, time.monotonic()))

            def outcome() -> Message | None:
                """The result (a later reply with an image: the first reply is the status
                message, whose preview is an image too), or the bot's last word once it has
                gone quiet without one (a refusal or a failure)."""
                replies = fake.replies_to(posted)
                result = next((m for m in replies[1:] if _image(m)), None)
                quiet = time.monotonic() - activity[0] > QUIET_SECONDS
                return result or (replies[-1] if replies and quiet else None)

            reply = await fake.wait_for(outcome, timeout)
            image = None if reply is fake.replies_to(posted)[0] else _image(reply)
            if image is None:
                raise DemoFailed(" ".join(reply.content.split()))
            out_dir.mkdir(parents=True, exist_ok=True)
            suffix = Path(image.filename).suffix or ".png"
            path = out_dir / f"demo-{photo.stem}-{style}{suffix}"
            path.write_bytes(image.data)
            return path
        finally:
            await bot.close()
            with contextlib.suppress(asyncio.CancelledError):
                await runner


def _image(message: Message) -> StoredFile | None:
    return next((f for f in message.files if (f.content_type or "").startswith("image/")), None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photo", type=Path, default=Path("samples/chelsea.png"))
    parser.add_argument("--style", default="vaporwave")
    parser.add_argument("--out", type=Path, default=Path("out"))
    parser.add_argument("--timeout", type=float, default=300.0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not args.photo.is_file():
        print(f"demo: no photo at {args.photo}", file=sys.stderr)
        return 2
    try:
        path = asyncio.run(demo(args.photo, args.style, args.out, args.timeout))
    except TimeoutError as exc:
        print(f"demo: the bot did not reply in time: {exc}", file=sys.stderr)
        return 1
    except DemoFailed as exc:
        print(f"demo: the bot sent no picture; it said: {exc}", file=sys.stderr)
        return 1
    print(f"saved the bot's reply image to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
