"""Apps on any image, recipes, history and About (issue 19, the bot's side).

Unit tests of recipe codes and the recipes table, then end to end: the real bot and a real
ProcessPoolEngine talking to fakecord, tiny images and one step per scale.
"""

from __future__ import annotations

import io
import re
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import discord as dpy
import numpy as np
import pytest
import pytest_asyncio
from PIL import Image

from bot import recipes
from bot.app import StyleBot
from bot.apps import avatar_of, pictures_of
from bot.intake import IntakeLimits, check_attachment
from bot.journal import DELIVERED, Job, Journal
from bot.options import Options
from nst_engine import styles
from nst_engine.api import InputError
from nst_engine.pool import ProcessPoolEngine
from tests.fakecord import RELAXED, FakeDiscord, Message
from tests.fakecord.interactions import Interaction
from tests.fakecord.spec import Spec
from tests.fakecord.state import ATTACH_FILES, MEMBER_PERMISSIONS
from tests.test_bot_e2e import (
    PHOTO,
    STYLE,
    bot_reply,
    engine,
    next_painting,
    running_bot,
    sample,
    settings,
)

__all__ = ["engine"]  # the module's shared painter, a fixture

e2e = pytest.mark.asyncio(loop_scope="module")

WAIT = 60.0
FACE = sample("coffee.png", long_side=96)
RECIPE = re.compile(r"`recipe:([a-z0-9]+)`")
MANAGE_GUILD = dpy.Permissions(manage_guild=True).value


# ---------------------------------------------------------------- recipes, unit


def test_recipe_codes_are_checked_and_options_beside_them_override() -> None:
    assert recipes.code_in(" `recipe:ABCDEFGHJK` ") == "abcdefghjk"
    for bad in ("recipe:", "recipe:abc", "recipe:abcdefghj0", "x" * 300):
        with pytest.raises(InputError, match="is not a recipe code"):
            recipes.code_in(bad)
    assert recipes.split_words(["recipe:abcdefghjk", "seed=3"]) == ("abcdefghjk", ["seed=3"])
    with pytest.raises(InputError, match="one recipe at a time"):
        recipes.split_words(["recipe:abcdefghjk", "recipe=abcdefghjm"])
    kept = recipes.Recipe(
        "abcdefghjk", "j1", 5, Options("udnie+~", 2.0, 64, "draft", True, 7), images=1
    )
    options, pictures = recipes.apply(kept, {"seed": 9})
    assert (options.style, options.strength, options.seed, options.keep_colors) == (
        "udnie+~",
        2.0,
        9,
        True,
    )
    assert pictures == 1 and not options.timelapse
    options, pictures = recipes.apply(kept, {"style": "the-scream", "timelapse": True})
    assert options.style == "the-scream" and pictures == 0 and options.timelapse


def _ended_job(journal: Journal, job_id: str, style: str, files: list[bytes]) -> Job:
    job = Job(job_id, 1, 5, 6, Options(style, 1.0, 64, "draft", False, 0), 10_000_000)
    journal.add(job, PHOTO, files)
    journal.end(job, DELIVERED)
    return job


def test_recipes_live_in_the_journal_and_are_pruned_with_their_jobs_unless_used(
    tmp_path: Path,
) -> None:
    journal = Journal(tmp_path, keep_days=7)
    old = _ended_job(journal, "0000000a", "ours+~", [b"server style", b"picture"])
    journal.close()
    with sqlite3.connect(tmp_path / "stylebot.db") as db:  # a database from before recipes
        db.execute("DROP TABLE recipes")
    journal = Journal(tmp_path, keep_days=7)
    assert journal.get(old.id) is not None  # existing databases keep working
    book = journal.recipes
    code = book.keep(old.id, 5, old.options, [b"server style", b"picture"], {"steps": 3})
    assert book.keep(old.id, 5, old.options, [], {}) == code  # one recipe per job
    recipe, pictures = book.use(code, 5, {"ours"})
    assert pictures == [b"picture"] and recipe.made == {"steps": 3}  # server styles by name
    with pytest.raises(InputError, match="`ours`, a style of another server"):
        book.use(code, 99, {"ours"})
    with pytest.raises(InputError, match="no style `ours` any more"):
        book.use(code, 5, set())
    with pytest.raises(InputError, match="I don't know the recipe"):
        book.use("abcdefghjk", 5, set())
    other = _ended_job(journal, "0000000b", "udnie", [])
    unused = book.keep(other.id, 5, other.options, [], {})
    journal.close()
    month = 30 * 86400
    with sqlite3.connect(tmp_path / "stylebot.db") as db:  # both jobs ended a month ago ...
        db.execute("UPDATE jobs SET updated = updated - ?", (month,))
        db.execute("UPDATE recipes SET used = used - ? WHERE code = ?", (month, unused))
    journal = Journal(tmp_path, keep_days=7)  # ... and `code` was used just now
    assert journal.prune() == 2 and journal.get(old.id) is None
    assert journal.recipes.get(code) is not None and journal.recipes.get(unused) is None
    assert (tmp_path / "recipes" / code).is_dir() and not (tmp_path / "recipes" / unused).exists()
    journal.close()


@dataclass
class Posted:
    """What `pictures_of` reads of a message (fakecord's users post no embeds)."""

    attachments: list[Any] = field(default_factory=list)
    embeds: list[dpy.Embed] = field(default_factory=list)


def test_an_embeds_image_is_a_picture_fetched_through_discords_media_proxy() -> None:
    linked = dpy.Embed.from_dict(
        {
            "type": "image",
            "thumbnail": {
                "url": "https://example.com/cat.webp",
                "proxy_url": "https://media.discordapp.net/external/abc/https/example.com/cat.webp",
                "width": 320,
                "height": 200,
            },
        }
    )
    [found] = pictures_of(Posted(embeds=[dpy.Embed(title="words only"), linked]))  # type: ignore[arg-type]
    assert found.url.startswith("https://media.discordapp.net/external/")
    assert (found.content_type, found.width, found.height) == ("image/webp", 320, 200)
    check_attachment(found, IntakeLimits())  # Discord's media proxy is on the allow-list


# ---------------------------------------------------------------- helpers


def pixels(message: Message) -> np.ndarray:
    with Image.open(io.BytesIO(message.files[0].data)) as img:
        return np.asarray(img.convert("RGB"), dtype=np.int16)


def recipe_of(message: Message) -> str:
    match = RECIPE.search(message.content)
    assert match is not None, message.content
    return match[1]


def components(message: Message) -> list[dict[str, Any]]:
    return [c for row in message.components for c in row["components"]]


def button(message: Message, label: str) -> str:
    return next(c["custom_id"] for c in components(message) if c.get("label") == label)


async def answer(discord: FakeDiscord, used: Interaction, text: str = "") -> Message:
    """The interaction's first message that is more than "thinking..." and holds `text`."""

    def find() -> Message | None:
        return next((m for m in used.messages if m.content and text in m.content), None)

    return await discord.wait_for(find, WAIT)


async def offered(discord: FakeDiscord, used: Interaction) -> tuple[Message, str, list[str]]:
    """An app's private answer, its select's custom_id and the values it offers."""
    shown = await answer(discord, used, "Pick a style")
    [select] = components(shown)
    return shown, select["custom_id"], [o["value"] for o in select["options"]]


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def world(engine: ProcessPoolEngine) -> AsyncIterator[tuple[FakeDiscord, StyleBot]]:
    async with FakeDiscord(rate_limit=RELAXED) as discord, running_bot(discord, engine) as bot:
        yield discord, bot


# ---------------------------------------------------------------- apps


@e2e
async def test_stylize_app_on_a_photo_paints_once_and_its_select_outlives_a_restart(
    engine: ProcessPoolEngine,
) -> None:
    async with FakeDiscord(rate_limit=RELAXED, record=True) as discord:
        data_dir = settings(discord.token).data_dir
        ann, ben = discord.add_user("ann"), discord.add_user("ben")
        photo = await discord.post(ann, "my cat", files=[("cat.png", PHOTO)])
        async with running_bot(discord, engine, data_dir=data_dir) as bot:
            discord.set_role_permissions(discord.guild.everyone, MEMBER_PERMISSIONS | MANAGE_GUILD)
            added = await discord.post(ben, "!style add ours", files=[("r.jpg", STYLE)])
            await bot_reply(discord, added, "Added the style `ours`")
            used = await discord.message_command(ben, "Stylize", photo)
            shown, custom_id, values = await offered(discord, used)
            assert used.ephemeral and shown.ephemeral
            assert values == [*styles.STYLES, "ours", "~another"]
            hint = await discord.select(ben, shown, custom_id, ["~another"])
            text = (await answer(discord, hint)).content
            assert "style_image" in text and hint.ephemeral
            await discord.select(ben, shown, custom_id, ["udnie"])
            result = await next_painting(discord, ben)
            assert "udnie · strength 1" in result.content and recipe_of(result)
            assert [f.filename for f in result.files] == ["stylized.png", "photo.png"]
            journal = bot.studio.journal
            await discord.wait_for(
                lambda: journal.recent(ben.id, discord.guild.id)[0].state == "delivered", WAIT
            )
        # After a restart the same private select still works: its custom_id holds the target.
        async with running_bot(discord, engine, data_dir=data_dir):
            await discord.select(ben, shown, custom_id, ["ours"])
            again = await next_painting(discord, ben, after=1)
            assert "ours · strength 1" in again.content
        mine = [m for m in discord.bot_messages() if m.content.startswith(f"<@{ben.id}> here")]
        assert len(mine) == 2  # exactly one result per pick
        exchanges = discord.exchanges
        interactions = list(discord.interactions.values())
    assert exchanges is not None
    spec = Spec()
    problems = [v for ex in exchanges for v in spec.violations(ex)]
    problems += [v for i in interactions for v in spec.interaction_violations(i.payload)]
    assert not problems, "\n".join(problems)
    kinds = {(i.payload["type"], i.payload["data"].get("type")) for i in interactions}
    assert {(2, 3), (3, None)} <= kinds  # a message command and a select were checked


@e2e
async def test_apps_refuse_a_message_without_a_picture_and_a_missing_permission(world) -> None:
    discord, _ = world
    cal, dot = discord.add_user("cal"), discord.add_user("dot")  # dot has no avatar
    words = await discord.post(cal, "just words")
    used = await discord.message_command(cal, "Stylize", words)
    line = (await answer(discord, used, "no picture")).content
    assert used.ephemeral and line.startswith("❌") and "\n" not in line
    used = await discord.user_command(cal, "Stylize avatar", dot)
    assert "no avatar of their own" in (await answer(discord, used)).content
    art = discord.guild.channels[1]
    photo = await discord.post(cal, "", files=[("cat.png", PHOTO)], channel=art)
    discord.deny_bot(ATTACH_FILES, art)
    try:
        used = await discord.message_command(cal, "Stylize", photo)
        line = (await answer(discord, used, "missing")).content
        assert used.ephemeral and "Attach Files" in line and not components(used.messages[0])
    finally:
        discord.set_permissions(art, discord.bot_user)
    assert not [m for m in discord.bot_messages(art) if m.files]


@e2e
async def test_stylize_avatar_paints_the_members_avatar_from_the_cdn(world) -> None:
    discord, bot = world
    eva, fin = discord.add_user("eva"), discord.add_user("fin", avatar=FACE)
    used = await discord.user_command(eva, "Stylize avatar", fin)
    shown, custom_id, values = await offered(discord, used)
    assert custom_id == f"sa:u:{fin.id}" and "~another" in values
    await discord.select(eva, shown, custom_id, ["the-scream"])
    result = await next_painting(discord, eva)
    assert discord.avatar_fetches == {fin.id: 1}
    assert avatar_of(await bot.fetch_user(fin.id)).url.endswith("?size=4096")  # the largest
    assert [f.filename for f in result.files] == ["stylized.png", "photo.png"]
    with Image.open(io.BytesIO(result.files[1].data)) as copy:
        assert max(copy.size) == 64  # the avatar (96 px) at the job's size


@e2e
async def test_the_download_allow_list_applies_to_avatars(engine: ProcessPoolEngine) -> None:
    async with FakeDiscord(rate_limit=RELAXED) as discord:
        ola, pia = discord.add_user("ola"), discord.add_user("pia", avatar=FACE)
        async with running_bot(discord, engine, download_hosts=("cdn.discordapp.com",)):
            used = await discord.user_command(ola, "Stylize avatar", pia)
            line = (await answer(discord, used, "Discord's CDN")).content
            assert line.startswith("❌") and used.ephemeral and not components(used.messages[0])
        assert discord.avatar_fetches == {}


# ---------------------------------------------------------------- recipes


@e2e
async def test_a_pasted_recipe_repaints_the_same_picture_and_options_override_it(world) -> None:
    discord, _ = world
    gil, hal = discord.add_user("gil"), discord.add_user("hal")
    await discord.post(
        gil, "!stylize starry-night strength=2 seed=5 keep-colors", files=[("c.png", PHOTO)]
    )
    first = await next_painting(discord, gil)
    code = recipe_of(first)
    await discord.post(hal, f"!stylize recipe:{code}", files=[("same.png", PHOTO)])
    second = await next_painting(discord, hal)
    for part in ("starry-night", "strength 2", "colours kept", "seed 5", "draft", "64 px"):
        assert part in second.content
    assert np.abs(pixels(first) - pixels(second)).max() <= 3  # same photo and recipe: same picture
    await discord.post(hal, f"!stylize recipe:{code} seed=9 size=48", files=[("c.png", PHOTO)])
    third = await next_painting(discord, hal, after=1)
    assert "seed 9" in third.content and "48 px" in third.content and "strength 2" in third.content
    await discord.slash(
        hal,
        "stylize",
        {"recipe": f"recipe:{code}", "style": "udnie"},
        files={"photo": ("p.png", PHOTO)},
    )
    fourth = await next_painting(discord, hal, after=2)
    assert "udnie · strength 2" in fourth.content and "seed 5" in fourth.content
    for typed, text in [
        ("recipe:zz", "is not a recipe code"),
        ("recipe:abcdefghjk", "I don't know the recipe"),
    ]:
        msg = await discord.post(hal, f"!stylize {typed}", files=[("c.png", PHOTO)])
        line = (await bot_reply(discord, msg, text)).content
        assert line.startswith("❌") and "Traceback" not in line
    used = await discord.slash(
        hal, "stylize", {"recipe": "nonsense!"}, files={"photo": ("p.png", PHOTO)}
    )
    assert "is not a recipe code" in (await answer(discord, used)).content and used.ephemeral


@e2e
async def test_recipes_keep_picture_styles_survive_restarts_and_stay_in_their_server(
    engine: ProcessPoolEngine,
) -> None:
    async with FakeDiscord(rate_limit=RELAXED) as discord:
        data_dir = settings(discord.token).data_dir
        club = discord.add_guild("club")
        discord.set_role_permissions(club.everyone, MEMBER_PERMISSIONS | MANAGE_GUILD)
        ida = discord.add_user("ida")
        art = club.channels[0]
        async with running_bot(discord, engine, data_dir=data_dir) as bot:
            await discord.wait_for(lambda: bot.get_guild(club.id) is not None, WAIT)
            await discord.slash(
                ida,
                "stylize",
                {"style": "udnie:2", "seed": 3},
                files={"photo": ("c.png", PHOTO), "style_image": ("r.jpg", STYLE)},
            )
            picture = recipe_of(await next_painting(discord, ida))
            added = await discord.post(
                ida, "!style add ours", files=[("r.jpg", STYLE)], channel=art
            )
            await bot_reply(discord, added, "Added the style `ours`")
            await discord.post(ida, "!stylize ours", files=[("c.png", PHOTO)], channel=art)
            ours = recipe_of(await next_painting(discord, ida, after=1))
        async with running_bot(discord, engine, data_dir=data_dir) as bot:
            await discord.wait_for(lambda: bot.get_guild(club.id) is not None, WAIT)
            # A picture style's copy is kept with the recipe: only the photo is needed.
            msg = await discord.post(ida, f"!stylize recipe:{picture}", files=[("c.png", PHOTO)])
            again = await next_painting(discord, ida, after=2)
            assert "udnie ×2 + your style image" in again.content and "seed 3" in again.content
            assert again.reference is msg
            # Its buttons re-run it with that copy, which rides on the result.
            assert [f.filename for f in again.files] == ["stylized.png", "photo.png", "style.png"]
            await discord.click(ida, again, button(again, "New seed"))
            reseeded = await next_painting(discord, ida, after=3)
            assert "udnie ×2 + your style image" in reseeded.content
            # A server style's recipe works in its server, and is refused elsewhere.
            await discord.post(
                ida, f"!stylize recipe:{ours}", files=[("c.png", PHOTO)], channel=art
            )
            assert "ours · strength 1" in (await next_painting(discord, ida, after=4)).content
            elsewhere = await discord.post(ida, f"!stylize recipe:{ours}", files=[("c.png", PHOTO)])
            await bot_reply(discord, elsewhere, "`ours`, a style of another server")


# ---------------------------------------------------------------- history and About


@e2e
async def test_history_lists_the_users_jobs_here_with_recipes_and_links(world) -> None:
    discord, _ = world
    jo, kim = discord.add_user("jo"), discord.add_user("kim")
    art = discord.guild.channels[1]
    await discord.post(jo, "!stylize udnie", files=[("c.png", PHOTO)])
    first = await next_painting(discord, jo)
    await discord.post(jo, "!stylize the-scream seed=4", files=[("c.png", PHOTO)], channel=art)
    second = await next_painting(discord, jo, after=1)
    await discord.post(kim, "!stylize vaporwave", files=[("c.png", PHOTO)])
    await next_painting(discord, kim)
    used = await discord.slash(jo, "history")
    text = (await answer(discord, used, "Your last")).content
    assert used.ephemeral and "Your last 2 job(s) in this server" in text
    lines = text.splitlines()[1:]
    assert "the-scream" in lines[0] and "udnie" in lines[1]  # newest first
    for line, result in zip(lines, (second, first), strict=True):
        assert "✅ delivered" in line and f"`recipe:{recipe_of(result)}`" in line
        assert f"/{result.channel_id}/{result.id})" in line and "<t:" in line
    assert "vaporwave" not in text  # only the invoker's
    typed = await discord.post(jo, "!history")
    await bot_reply(discord, typed, "I can't send you a DM")  # fakecord has no DMs


@e2e
async def test_about_tells_anyone_how_the_picture_was_made(world) -> None:
    discord, _ = world
    lea, max_ = discord.add_user("lea"), discord.add_user("max")
    await discord.post(lea, "!stylize great-wave strength=1.5 seed=11", files=[("c.png", PHOTO)])
    result = await next_painting(discord, lea)
    about = await discord.click(max_, result, button(result, "ℹ️ About"))  # not the owner
    text = (await answer(discord, about, "How this picture was made")).content
    assert about.ephemeral
    for part in (
        "great-wave",
        "strength 1.5",
        "seed 11",
        "**Preset**: draft, ",
        " steps",
        "×",
        "on cpu",
        "**Engine**: ",
        f"`recipe:{recipe_of(result)}`",
        "**Job**: `",
    ):
        assert part in text, part
    assert "None" not in text
