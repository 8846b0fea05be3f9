"""Blends in chat and each server's own styles (issue 12, features 3 and 4).

Unit tests of blend parsing and the styles table, then end to end: the real bot and a real
ProcessPoolEngine talking to fakecord, tiny images and one step per scale.
"""

from __future__ import annotations

import hashlib
import io
import re
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import discord as dpy
import pytest
import pytest_asyncio
from PIL import Image as PILImage

from bot.app import StyleBot
from bot.buttons import MAX_CUSTOM_ID, ResultButton
from bot.journal import Job, Journal
from bot.options import (
    Options,
    Part,
    check_style_name,
    parse_blend,
    parse_words,
)
from bot.pictures import reencode
from nst_engine import images
from nst_engine.api import InputError, StyleRequest, StyleSource
from nst_engine.pool import ProcessPoolEngine
from tests.fakecord import RELAXED, FakeDiscord
from tests.fakecord.state import MEMBER_PERMISSIONS
from tests.test_bot_e2e import (
    PHOTO,
    STYLE,
    bot_reply,
    engine,
    next_painting,
    running_bot,
    sample,
    settings,
    size_of,
    status_of,
)

__all__ = ["engine"]  # the module's shared painter, a fixture

e2e = pytest.mark.asyncio(loop_scope="module")

STYLE2 = sample("coffee.png")
MANAGE_GUILD = dpy.Permissions(manage_guild=True).value
WAIT = 60.0


# ---------------------------------------------------------------- blends, unit


def test_blend_parsing_names_weights_and_count() -> None:
    assert parse_blend("Starry-Night:2+the-scream") == (
        Part("starry-night", 2.0),
        Part("the-scream"),
    )
    options = parse_words(["starry_night:2+the-scream:0.5", "seed=3"])
    assert options.style == "starry-night:2+the-scream:0.5" and options.seed == 3
    assert options.summary().startswith("starry-night ×2 + the-scream ×0.5 · strength 1")
    assert parse_words(["mine+udnie"], server_styles={"mine"}).style == "mine+udnie"
    assert Options(style="udnie").with_images(2).style == "udnie+~+~"
    assert Options(style="udnie+~+~").images == 2


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a+b+c+d+e", "Too many styles: 5"),
        ("udnie:heavy", "The weight of `udnie` must be a number"),
        ("udnie:0", "must be between 0.01 and 100"),
        ("udnie:nan", "must be between"),
        ("udnie++the-scream", "I can't read the blend"),
        ("~", "I can't read the blend"),
        ("stary-night+udnie", "Did you mean 'starry-night'"),
        ("mne+udnie", "Did you mean 'mine'"),
    ],
)
def test_blend_refusals_are_one_clear_line(text: str, message: str) -> None:
    with pytest.raises(InputError, match=re.escape(message)):
        parse_words([text], server_styles={"mine"})


def test_too_many_styles_with_attached_images() -> None:
    with pytest.raises(InputError, match="Too many styles: 5"):
        Options(style="udnie+the-scream+great-wave").with_images(2)


def test_style_names() -> None:
    assert check_style_name(" Our-Look ") == "our-look"
    for bad, message in [
        ("a", "2–32 characters"),
        ("x" * 33, "2–32 characters"),
        ("no_underscores", "2–32 characters"),
        ("udnie", "is a built-in style"),
    ]:
        with pytest.raises(InputError, match=message):
            check_style_name(bad)


def test_long_blends_put_the_job_id_in_buttons() -> None:
    short = Options("udnie", 1.0, 512, "standard", False, 3)
    assert ":udnie:" in ResultButton("+", 10**18, 10**18, short, "ab12cd34").custom_id
    long = Options(
        "woman-with-hat:2.5+starry-night:1.5+the-scream:0.25+great-wave", 1.0, 512, "high", True, 7
    )
    custom_id = ResultButton("+", 10**18, 10**18, long, "ab12cd34").custom_id
    assert custom_id.endswith(":jab12cd34") and len(custom_id) <= MAX_CUSTOM_ID


def test_style_sources_take_a_cache_key_for_images_only() -> None:
    assert StyleSource(image=b"png", key="ab" * 32).key == "ab" * 32
    with pytest.raises(InputError, match="cache key"):
        StyleSource(name="udnie", key="ab" * 32)
    with pytest.raises(InputError, match="cache key"):
        StyleSource(image=b"png", key="../../etc")


def test_a_keyed_style_image_has_its_targets_cached_under_its_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from nst_engine import targets, transfer

    monkeypatch.setattr(targets, "_default", targets.TargetCache(directory=tmp_path))
    key = hashlib.sha256(STYLE2).hexdigest()
    request = StyleRequest(
        content=PHOTO,
        styles=(StyleSource(image=STYLE2, key=key), StyleSource(image=STYLE)),
        size=64,
        quality="draft",
        iterations=1,
        input_copies=True,
    )
    result = transfer.stylize(request, device="cpu")
    cached = {path.name.split("-")[0] for path in tmp_path.iterdir()}
    assert cached == {key}  # the keyed image only; a plain image is never cached
    assert len(result.inputs) == 2  # the photo and the unkeyed image: keyed ones have a home


# ---------------------------------------------------------------- the styles table, unit


def test_styles_table_per_server_capped_and_forgotten(tmp_path: Path) -> None:
    j = Journal(tmp_path)
    assert j.styles.add(1, "ours", b"png-1", added_by=7, cap=2)
    assert j.styles.add(1, "theirs", b"png-2", added_by=8, cap=2)
    assert not j.styles.add(1, "third", b"png-3", added_by=7, cap=2)  # the cap
    assert j.styles.add(2, "ours", b"png-4", added_by=9, cap=2)  # another server's own
    again = Journal(tmp_path)  # survives a restart
    assert [(s.name, s.added_by) for s in again.styles.of(1)] == [("ours", 7), ("theirs", 8)]
    data, key = again.styles.image(1, "ours")  # type: ignore[misc]
    assert data == b"png-1" and len(key) == 64
    assert again.styles.image(2, "ours")[0] == b"png-4"  # type: ignore[index]
    assert again.styles.names(None) == set()
    assert again.styles.remove(1, "theirs") and not again.styles.remove(1, "theirs")
    assert not (tmp_path / "styles" / "1" / "theirs.png").exists()
    assert again.styles.forget_guild(1) == 1
    assert again.styles.of(1) == [] and not (tmp_path / "styles" / "1").exists()
    assert again.styles.names(2) == {"ours"}
    with sqlite3.connect(tmp_path / "stylebot.db") as db:
        columns = [row[1] for row in db.execute("PRAGMA table_info(styles)")]
    assert columns == ["guild_id", "name", "file", "created", "added_by"]


def test_jobs_journalled_before_blends_read_as_one_style_image(tmp_path: Path) -> None:
    j = Journal(tmp_path)
    old = Job(id="old1", owner_id=1, guild_id=2, channel_id=3, options=Options(), upload_limit=9)
    j.add(old, b"photo", [b"style"])  # written as before blends: no name, one style image
    again = j.get("old1")
    assert again is not None and again.options.style == "~" and again.options.images == 1
    assert j.inputs(again) == (b"photo", [b"style"])


@e2e
async def test_style_images_are_reencoded_in_a_child_process() -> None:
    big = sample("astronaut.png", long_side=200)
    png = await reencode(big, max_bytes=10**6, max_pixels=10**6, long_side=96)
    info = images.probe(png)
    assert (info.format, max(info.width, info.height)) == ("PNG", 96)
    with pytest.raises(InputError, match="damaged or cut short"):
        await reencode(big[:400], max_bytes=10**6, max_pixels=10**6, long_side=96)
    with pytest.raises(InputError, match="too large: 200×200 pixels"):
        await reencode(big, max_bytes=10**6, max_pixels=1000, long_side=96)
    with pytest.raises(InputError, match="took too long"):
        await reencode(big, max_bytes=10**6, max_pixels=10**6, long_side=96, timeout=0.01)


# ---------------------------------------------------------------- end to end


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def world(engine: ProcessPoolEngine) -> AsyncIterator[tuple[FakeDiscord, StyleBot]]:
    async with FakeDiscord(rate_limit=RELAXED) as discord, running_bot(discord, engine) as bot:
        yield discord, bot


def labels(message) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {b["label"]: b["custom_id"] for row in message.components for b in row["components"]}


@e2e
async def test_a_blend_of_two_builtins_paints(world) -> None:
    discord, bot = world
    ann = discord.add_user("ann")
    msg = await discord.post(ann, "!stylize starry-night+the-scream", files=[("cat.png", PHOTO)])
    result = await next_painting(discord, ann)
    assert "starry-night + the-scream · strength 1" in result.content
    _, job_id = await status_of(discord, msg)
    assert bot.studio.journal.get(job_id).options.style == "starry-night+the-scream"  # type: ignore[union-attr]


@e2e
async def test_a_photo_and_two_style_images_blend(world) -> None:
    discord, _ = world
    ben = discord.add_user("ben")
    await discord.post(
        ben, "!stylize", files=[("cat.png", PHOTO), ("rocket.jpg", STYLE), ("cup.png", STYLE2)]
    )
    result = await next_painting(discord, ben)
    assert "your style image + your style image · strength 1" in result.content
    # Slash: a weighted built-in and two style image options; the inputs ride on the result and
    # its buttons re-run the whole blend.
    await discord.slash(
        ben,
        "stylize",
        {"style": "udnie:2"},
        files={
            "photo": ("cat.png", PHOTO),
            "style_image": ("rocket.jpg", STYLE),
            "style_image2": ("cup.png", STYLE2),
        },
    )
    second = await next_painting(discord, ben, after=1)
    assert "udnie ×2 + your style image + your style image" in second.content
    assert len(second.files) == 4  # the painting, the photo and both style images
    await discord.click(ben, second, labels(second)["New seed"])
    third = await next_painting(discord, ben, after=2)
    assert "udnie ×2 + your style image + your style image" in third.content
    assert "seed 0" not in third.content


@e2e
async def test_weights_autocomplete_and_more_than_four_styles(world) -> None:
    discord, _ = world
    cat = discord.add_user("cat")
    await discord.post(cat, "!stylize great-wave:3+udnie seed=5", files=[("cat.png", PHOTO)])
    result = await next_painting(discord, cat)
    assert "great-wave ×3 + udnie · strength 1" in result.content
    five = await discord.post(
        cat, "!stylize udnie+the-scream+great-wave+shipwreck+vaporwave", files=[("c.png", PHOTO)]
    )
    reply = await bot_reply(discord, five, "Too many styles: 5")
    assert reply.content.startswith("❌") and "\n" not in reply.content
    mixed = await discord.post(
        cat,
        "!stylize udnie+the-scream+great-wave",
        files=[("c.png", PHOTO), ("r.jpg", STYLE), ("d.png", STYLE2)],
    )
    await bot_reply(discord, mixed, "Too many styles: 5")
    choices = await discord.autocomplete(
        cat, "stylize", {"style": "starry-night:2+the-s"}, focused="style"
    )
    assert choices  # a weight is being typed: the text is kept as it is
    choices = await discord.autocomplete(
        cat, "stylize", {"style": "starry-night:2+scre"}, focused="style"
    )
    assert [c["value"] for c in choices] == ["starry-night:2+the-scream"]
    help_msg = await discord.post(cat, "!help")
    await bot_reply(discord, help_msg, "!stylize starry-night:2+the-scream")
    await bot_reply(discord, help_msg, "!style add NAME")
    bare = await discord.post(cat, "!style")
    await bot_reply(discord, bare, "Use `!style add NAME` (with an image)")


@e2e
async def test_long_blend_buttons_work_after_a_restart(engine) -> None:
    async with FakeDiscord(rate_limit=RELAXED) as discord:
        data_dir = settings(discord.token).data_dir
        dan = discord.add_user("dan")
        blend = "woman-with-hat:2.5+starry-night:1.5+the-scream:0.25+great-wave"
        async with running_bot(discord, engine, data_dir=data_dir):
            await discord.post(dan, f"!stylize {blend}", files=[("cat.png", PHOTO)])
            first = await next_painting(discord, dan)
        stronger = labels(first)["Stronger"]
        assert re.search(r":j[0-9a-f]+$", stronger)  # the options don't fit: the job id does
        async with running_bot(discord, engine, data_dir=data_dir):
            await discord.click(dan, first, stronger)
            second = await next_painting(discord, dan, after=1)
        assert "woman-with-hat ×2.5 + starry-night ×1.5" in second.content
        assert "strength 1.5" in second.content


async def _slash_answer(discord: FakeDiscord, interaction, text: str) -> str:  # type: ignore[no-untyped-def]
    def find() -> str | None:
        for m in interaction.messages:
            if text in m.content:
                return m.content
        return None

    return await discord.wait_for(find, WAIT)


async def _slash_add_style(discord: FakeDiscord, user, name: str, channel) -> str:  # type: ignore[no-untyped-def]
    """`/style add name` with STYLE attached, in `channel`; waits for the "Added" answer."""
    slash = await discord.slash(
        user, "style add", {"name": name}, files={"image": ("r.jpg", STYLE)}, channel=channel
    )
    return await _slash_answer(discord, slash, f"Added the style `{name}`")


@e2e
async def test_server_styles_add_use_list_remove_restart_and_leave(engine) -> None:
    async with FakeDiscord(rate_limit=RELAXED) as discord:
        data_dir = settings(discord.token).data_dir
        club = discord.add_guild("club")
        discord.set_role_permissions(club.everyone, MEMBER_PERMISSIONS | MANAGE_GUILD)
        eve = discord.add_user("eve")  # Manage Server in the club only
        art = club.channels[0]
        other = discord.channel  # the default server, where eve is a plain member
        async with running_bot(discord, engine, data_dir=data_dir) as bot:
            await discord.wait_for(lambda: bot.get_guild(club.id) is not None, WAIT)
            # A member without Manage Server is refused, on both paths.
            refused = await discord.post(eve, "!style add ours", files=[("r.jpg", STYLE)])
            await bot_reply(discord, refused, "Manage Server")
            slash = await discord.slash(
                eve, "style add", {"name": "ours"}, files={"image": ("r.jpg", STYLE)}
            )
            line = await _slash_answer(discord, slash, "Manage Server")
            assert line.startswith("❌") and slash.ephemeral
            # With it: added (slash), re-encoded as a PNG under the data dir.
            await _slash_add_style(discord, eve, "ours", art)
            stored = Path(data_dir) / "styles" / str(club.id) / "ours.png"
            assert stored.read_bytes().startswith(b"\x89PNG")
            dupe = await discord.post(
                eve, "!style add udnie", files=[("r.jpg", STYLE)], channel=art
            )
            await bot_reply(discord, dupe, "is a built-in style")
            bad = await discord.post(
                eve,
                "!style add broken",
                files=[("x.png", b"\x89PNG\r\n\x1a\nnot really")],
                channel=art,
            )
            await bot_reply(discord, bad, "`x.png`")
            # Usable by name, in blends, in autocomplete, the list and the styles sheet.
            await discord.post(eve, "!stylize ours", files=[("cat.png", PHOTO)], channel=art)
            result = await next_painting(discord, eve)
            assert "ours · strength 1" in result.content
            await discord.post(
                eve, "!stylize ours:2+udnie", files=[("cat.png", PHOTO)], channel=art
            )
            assert "ours ×2 + udnie" in (await next_painting(discord, eve, after=1)).content
            choices = await discord.autocomplete(
                eve, "stylize", {"style": "udnie+ou"}, focused="style", channel=art
            )
            assert "udnie+ours" in [c["value"] for c in choices]
            listed = await discord.post(eve, "!style list", channel=art)
            await bot_reply(discord, listed, "`ours`, added by")
            sheet = await discord.post(eve, "!styles", channel=art)
            shown = await bot_reply(discord, sheet, "**This server's styles**: `ours`")
            assert [f.filename for f in shown.files] == ["styles.jpg", "server-styles.jpg"]
            assert images.probe(shown.files[1].data).format == "JPEG"
            # Another server cannot see it.
            elsewhere = await discord.post(eve, "!stylize ours", files=[("c.png", PHOTO)])
            await bot_reply(discord, elsewhere, "Unknown style 'ours'")
            choices = await discord.autocomplete(
                eve, "stylize", {"style": "ou"}, focused="style", channel=other
            )
            assert "ours" not in [c["value"] for c in choices]
        # After a restart on the same data dir it still paints.
        async with running_bot(discord, engine, data_dir=data_dir) as bot:
            await discord.wait_for(lambda: bot.get_guild(club.id) is not None, WAIT)
            await discord.post(eve, "!stylize ours", files=[("cat.png", PHOTO)], channel=art)
            assert "ours · strength 1" in (await next_painting(discord, eve, after=2)).content
            # Removing works (prefix), then the name is unknown again.
            gone = await discord.post(eve, "!style remove ours", channel=art)
            await bot_reply(discord, gone, "Removed the style `ours`")
            assert not stored.exists()
            again = await discord.post(eve, "!stylize ours", files=[("c.png", PHOTO)], channel=art)
            await bot_reply(discord, again, "Unknown style 'ours'")
            # Leaving the server removes its styles, rows and files. (fakecord cannot remove
            # the bot from a guild, so the gateway's GUILD_DELETE is stood in for by its event.)
            await _slash_add_style(discord, eve, "later", art)
            guild = bot.get_guild(club.id)
            assert guild is not None
            bot.dispatch("guild_remove", guild)
            await discord.wait_for(lambda: not bot.studio.journal.styles.of(club.id), WAIT)
            assert not (Path(data_dir) / "styles" / str(club.id)).exists()


# ---------------------------------------------------------------- Bigger and timelapse


def frames_of(data: bytes) -> int:
    with PILImage.open(io.BytesIO(data)) as img:
        return getattr(img, "n_frames", 1)


@e2e
async def test_bigger_doubles_the_result_for_its_owner_and_after_a_restart(engine) -> None:
    async with FakeDiscord(rate_limit=RELAXED) as discord:
        data_dir = settings(discord.token).data_dir
        eve, fay = discord.add_user("eve"), discord.add_user("fay")
        async with running_bot(discord, engine, data_dir=data_dir, max_iterations=4):
            msg = await discord.post(eve, "!stylize udnie size=48", files=[("cat.png", PHOTO)])
            first = await next_painting(discord, eve)
            assert max(size_of(first.files[0].data)) == 48
            refused = await discord.click(fay, first, labels(first)["Bigger"])
            await discord.wait_for(lambda: refused.responded, WAIT)
            assert refused.ephemeral and "belong to" in refused.response.data["content"]
        async with running_bot(discord, engine, data_dir=data_dir, max_iterations=4):
            await discord.click(eve, first, labels(first)["Bigger"])
            bigger = await next_painting(discord, eve, after=1)
            assert max(size_of(bigger.files[0].data)) == 96 and "96 px" in bigger.content
            assert bigger.reference is msg
            # 128 is the cap of these settings: one more doubling stops there, then none is left
            await discord.click(eve, bigger, labels(bigger)["Bigger"])
            capped = await next_painting(discord, eve, after=2)
            assert max(size_of(capped.files[0].data)) == 128
            assert next(
                b["disabled"]
                for row in capped.components
                for b in row["components"]
                if b["label"] == "Bigger"
            )


@e2e
async def test_timelapse_attaches_an_animation_beside_the_result(engine) -> None:
    async with (
        FakeDiscord(rate_limit=RELAXED) as discord,
        running_bot(discord, engine, max_iterations=10),  # a frame a step: 10 + the result
    ):
        await timelapses(discord)


async def timelapses(discord: FakeDiscord) -> None:
    gus = discord.add_user("gus")
    await discord.post(gus, "!stylize vaporwave timelapse", files=[("cat.png", PHOTO)])
    result = await next_painting(discord, gus)
    assert "timelapse" in result.content
    [animation] = [f for f in result.files if f.filename.startswith("timelapse")]
    assert frames_of(animation.data) >= 8
    await discord.slash(
        gus, "stylize", {"style": "udnie", "timelapse": True}, files={"photo": ("c.png", PHOTO)}
    )
    second = await next_painting(discord, gus, after=1)
    names = [f.filename for f in second.files]
    assert names[0] == "stylized.png" and names[-1] == "timelapse.webp"
    assert frames_of(second.files[-1].data) >= 8
