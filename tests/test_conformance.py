"""The bot's REST traffic against Discord's own OpenAPI spec (tests/data/discord/openapi.json).

A broad scenario through the real bot and a real ProcessPoolEngine (tiny 64 px, 1-iteration
jobs), with fakecord on Discord's budget recording every request and answer. Then each request
body and each answer (status and body) is validated against the operation in the spec with
jsonschema (Draft 2020-12). Tolerated: only what tests/data/discord/README.md names. The bot is
used only through what a user does and sees, so a rewrite of bot/ must pass this as it is.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from bot.app import StyleBot
from nst_engine import images
from nst_engine.api import StyleRequest, StyleSource
from nst_engine.pool import ProcessPoolEngine
from tests.fakecord import Channel, FakeDiscord, Message, User
from tests.fakecord.spec import Spec
from tests.test_bot_e2e import next_painting, running_bot

pytestmark = pytest.mark.asyncio(loop_scope="module")

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
WAIT = 90.0
LOADING = 1 << 7  # the message flag of a deferred "thinking..." answer
LONG = 100_000  # steps for the job that holds the worker while others wait to be cancelled


def sample(name: str, long_side: int = 64, fmt: str = "PNG") -> bytes:
    img = images.fit_long_side(images.decode((SAMPLES / name).read_bytes()), long_side)
    return images.encode(img, fmt)


PHOTO = sample("chelsea.png")
STYLE = sample("rocket.jpg", fmt="JPEG")


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def engine() -> AsyncIterator[ProcessPoolEngine]:
    async with ProcessPoolEngine(workers=1, devices=["cpu"], job_timeout=120) as pool:
        yield pool


async def painting(discord: FakeDiscord, user: User, after: int = 0) -> Message:
    return await next_painting(discord, user, after)


async def answered(discord: FakeDiscord, message: Message) -> Message:
    """The bot's first reply to `message`."""

    def find() -> Message | None:
        return next((m for m in discord.replies_to(message) if m.author.bot), None)

    return await discord.wait_for(find, WAIT)


async def quiet(discord: FakeDiscord, bot: StyleBot, channel: Channel) -> None:
    """Wait until the channel's budget has room, so a command there gets a status reply of its
    own (with its Cancel button) rather than a line on the queue board."""
    await discord.wait_for(lambda: bot.traffic.room(channel.id), WAIT)


def shown(messages: list[Message]) -> bool:
    """Whether an interaction's answer is there (not just "thinking...")."""
    return bool(messages) and not messages[0].flags & LOADING


def cancel_button(message: Message) -> str | None:
    """The custom_id of an enabled button labelled Cancel on `message`, if any."""

    def walk(items: list[dict[str, Any]]) -> str | None:
        for item in items:
            if item.get("label") == "Cancel" and not item.get("disabled"):
                return item.get("custom_id")
            found = walk(item.get("components") or [])
            if found:
                return found
        return None

    return walk(message.components)


async def scenario(discord: FakeDiscord, bot: StyleBot, engine: ProcessPoolEngine) -> None:
    art = discord.guild.channels[1]
    alice, bob, carol, dave, erin = (
        discord.add_user(n) for n in ("alice", "bob", "carol", "dave", "erin")
    )
    # Prefix commands: a built-in style, and a style image.
    photo = await discord.post(alice, "!stylize udnie", files=[("cat.png", PHOTO)])
    first = await painting(discord, alice)
    pair = [("cat.png", PHOTO), ("style.jpg", STYLE)]
    await discord.post(bob, "!stylize", files=pair, channel=art)
    await painting(discord, bob)
    # Slash commands, with autocomplete.
    await discord.autocomplete(carol, "stylize", {"style": "star"}, focused="style")
    await discord.slash(carol, "stylize", {"style": "udnie"}, files={"photo": ("c.png", PHOTO)})
    await painting(discord, carol)
    for name in ("styles", "queue", "help"):
        await answered(discord, await discord.post(dave, f"!{name}", channel=art))
        used = await discord.slash(dave, name)
        await discord.wait_for(lambda u=used: shown(u.messages), WAIT)
    # A result button.
    clicked = await discord.click(alice, first, first.custom_ids()[0])
    await discord.wait_for(lambda: clicked.responded, WAIT)
    await painting(discord, alice, after=1)
    # An error the user made.
    typo = await discord.post(erin, "!stylize no-such-style", files=[("c.png", PHOTO)])
    await answered(discord, typo)
    # Cancel by button and by command, while the only worker is held.
    blocker = await engine.submit(
        StyleRequest(content=PHOTO, styles=(StyleSource(name="udnie"),), size=64, iterations=LONG)
    )
    try:
        await discord.wait_for(lambda: engine.stats().busy, WAIT)
        await quiet(discord, bot, discord.channel)
        asked = await discord.post(dave, "!stylize udnie", files=[("c.png", PHOTO)])
        status = await discord.wait_for(
            lambda: next((m for m in discord.replies_to(asked) if cancel_button(m)), None), WAIT
        )
        cancel = await discord.click(dave, status, cancel_button(status) or "")
        await discord.wait_for(lambda: cancel.responded, WAIT)
        await quiet(discord, bot, art)
        waiting = await discord.post(erin, "!stylize udnie", files=[("c.png", PHOTO)], channel=art)
        status = await answered(discord, waiting)
        edits = len(status.revisions)
        await answered(discord, await discord.post(erin, "!cancel", channel=art))
        await discord.wait_for(lambda: status.deleted or len(status.revisions) > edits, WAIT)
    finally:
        await blocker.cancel()
    # Faults: a 429 and a 500 on the next message creates, then a guild whose upload limit is
    # below the painting, where the bot learns the limit from Discord's 413.
    discord.fail_next("POST /channels/{channel_id}/messages", status=429, retry_after=0.3)
    discord.fail_next("POST /channels/{channel_id}/messages", status=500)
    await discord.post(alice, "!stylize the-scream", files=[("cat.png", PHOTO)])
    await painting(discord, alice, after=2)
    small = discord.add_guild("tiny uploads", upload_limit=3_000)
    await discord.wait_for(lambda: bot.get_guild(small.id) is not None, WAIT)
    await discord.post(
        carol, "!stylize starry-night", files=[("cat.png", PHOTO)], channel=small.channels[0]
    )
    await painting(discord, carol, after=1)
    # Apps: right-click the photo, pick a style in the private select; About; history.
    used = await discord.message_command(carol, "Stylize", photo)
    menu = await discord.wait_for(lambda: used.original, WAIT)
    picked = await discord.select(carol, menu, menu.custom_ids()[0], ["the-scream"])
    await discord.wait_for(lambda: shown(picked.messages), WAIT)
    await painting(discord, carol, after=2)
    about = next(c for c in first.custom_ids() if c.startswith("sb:i:"))
    pressed = await discord.click(dave, first, about)
    await discord.wait_for(lambda: pressed.responded, WAIT)
    used = await discord.slash(carol, "history")
    await discord.wait_for(lambda: shown(used.messages), WAIT)


async def test_the_bots_traffic_conforms_to_discords_spec(engine: ProcessPoolEngine) -> None:
    spec = Spec()
    async with FakeDiscord(record=True) as discord:
        async with running_bot(discord, engine, max_size=64, status_interval=0.5) as bot:
            await scenario(discord, bot, engine)
        exchanges = discord.exchanges
    assert exchanges is not None
    seen = {(ex.method, ex.route) for ex in exchanges}
    for needed in [
        ("POST", "/channels/{channel_id}/messages"),
        ("PATCH", "/channels/{channel_id}/messages/{message_id}"),
        ("POST", "/interactions/{interaction_id}/{token}/callback"),
        ("PUT", "/applications/{application_id}/commands"),
    ]:
        assert needed in seen, f"the scenario never made {needed}"
    statuses = {ex.status for ex in exchanges}
    assert {200, 413, 429, 500} <= statuses, statuses
    violations = [v for ex in exchanges for v in spec.violations(ex)]
    violations += [
        v for i in discord.interactions.values() for v in spec.interaction_violations(i.payload)
    ]
    assert not violations, f"{len(violations)} violations of Discord's spec:\n" + "\n".join(
        violations
    )
