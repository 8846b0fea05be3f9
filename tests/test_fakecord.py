"""The emulator against the real discord.py client: handshake, messages, files, interactions,
resume, rate limits and upload limits. The bots here are tiny clients defined in the tests."""

from __future__ import annotations

import asyncio
import io
import itertools
import zlib
from collections.abc import AsyncIterator, Callable

import aiohttp
import discord
import pytest
from discord import app_commands
from PIL import Image

from tests.fakecord import (
    ATTACH_FILES,
    DISCORD,
    READ_MESSAGE_HISTORY,
    RELAXED,
    SEND_MESSAGES,
    SEND_MESSAGES_IN_THREADS,
    VIEW_CHANNEL,
    AttachmentSpec,
    Budget,
    Exchange,
    FakeDiscord,
)
from tests.fakecord.spec import Spec

pytestmark = pytest.mark.timeout(30)


def png(width: int, height: int, color: tuple[int, int, int] = (200, 40, 40)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buf, "PNG")
    return buf.getvalue()


class Recorder(discord.Client):
    """A client that keeps every gateway event the tests look at."""

    def __init__(self) -> None:
        intents = discord.Intents.default()
        intents.message_content = True
        super().__init__(intents=intents, guild_ready_timeout=0.1)
        self.tree = app_commands.CommandTree(self)
        self.seen: list[discord.Message] = []
        self.edits: list[discord.RawMessageUpdateEvent] = []
        self.resumed = asyncio.Event()
        self.reactions: list[discord.RawReactionActionEvent] = []
        self.deletions: list[int] = []
        self.on_user_message: Callable[[discord.Message], object] | None = None

    async def on_message(self, message: discord.Message) -> None:
        self.seen.append(message)
        if self.on_user_message is not None and not message.author.bot:
            await self.on_user_message(message)  # type: ignore[misc]

    async def on_raw_message_edit(self, payload: discord.RawMessageUpdateEvent) -> None:
        self.edits.append(payload)

    async def on_resumed(self) -> None:
        self.resumed.set()

    async def on_raw_reaction_add(self, payload: discord.RawReactionActionEvent) -> None:
        self.reactions.append(payload)

    async def on_raw_message_delete(self, payload: discord.RawMessageDeleteEvent) -> None:
        self.deletions.append(payload.message_id)


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord() as fake:
        yield fake


async def run(fake: FakeDiscord, client: Recorder) -> asyncio.Task[None]:
    await client.login(fake.token)
    task = asyncio.create_task(client.connect(reconnect=True))
    await asyncio.wait_for(client.wait_until_ready(), 10)
    return task


async def stop(client: Recorder, task: asyncio.Task[None]) -> None:
    await client.close()
    await asyncio.wait_for(task, 5)


async def test_client_identifies_and_sees_the_guild(fake: FakeDiscord) -> None:
    client = Recorder()
    task = await run(fake, client)
    try:
        assert fake.gateway_ops[0] == "IDENTIFY"
        wanted = discord.utils._ActiveDecompressionContext.COMPRESSION_TYPE
        assert fake.gateway.transports == [wanted]
        assert client.user is not None and client.user.id == fake.bot_user.id
        guild = client.get_guild(fake.guild.id)
        assert guild is not None and guild.name == fake.guild.name
        assert {c.name for c in guild.text_channels} == {"general", "art"}
        assert guild.get_role(fake.guild.roles[1].id).permissions.administrator
        routes = {(r.method, r.route) for r in fake.requests}
        assert ("GET", "/users/@me") in routes
        assert ("GET", "/oauth2/applications/@me") in routes
    finally:
        await stop(client, task)


async def test_zlib_stream_transport(fake: FakeDiscord, monkeypatch: pytest.MonkeyPatch) -> None:
    class ZlibStream:
        """discord.py's zlib-stream reader (used when zstandard is not installed)."""

        COMPRESSION_TYPE = "zlib-stream"

        def __init__(self) -> None:
            self.buffer = bytearray()
            self.context = zlib.decompressobj()

        def decompress(self, data: bytes) -> str | None:
            self.buffer.extend(data)
            if data[-4:] != b"\x00\x00\xff\xff":
                return None
            text = self.context.decompress(bytes(self.buffer)).decode()
            self.buffer.clear()
            return text

    monkeypatch.setattr(discord.utils, "_ActiveDecompressionContext", ZlibStream)
    client = Recorder()
    task = await run(fake, client)
    try:
        alice = fake.add_user("alice")
        await fake.post(alice, "over zlib")
        await fake.wait_for(lambda: [m for m in client.seen if m.content == "over zlib"], 5)
        assert fake.gateway.transports == ["zlib-stream"]
    finally:
        await stop(client, task)


async def test_message_with_attachment_reply_file_and_edit(fake: FakeDiscord) -> None:
    client = Recorder()
    photo = png(96, 64)
    upload = png(32, 32, (0, 90, 255))

    async def answer(message: discord.Message) -> None:
        attachment = message.attachments[0]
        data = await attachment.read()
        assert data == photo
        file = discord.File(io.BytesIO(upload), "answer.png")
        sent = await message.reply(f"got {attachment.width}x{attachment.height}", file=file)
        await sent.edit(content="edited", attachments=[])
        await sent.edit(attachments=[discord.File(io.BytesIO(b"second"), "b.txt")])

    client.on_user_message = answer
    task = await run(fake, client)
    try:
        alice = fake.add_user("alice")
        posted = await fake.post(alice, "look", files=[("cat.png", photo)])
        reply = await fake.wait_for(
            lambda: next((m for m in fake.replies_to(posted) if len(m.edits) == 2), None), 10
        )
        seen = next(m for m in client.seen if m.id == posted.id)
        attachment = seen.attachments[0]
        assert (attachment.width, attachment.height, attachment.size) == (96, 64, len(photo))
        assert attachment.content_type == "image/png" and attachment.filename == "cat.png"
        assert reply.author is fake.bot_user and reply.reference is posted
        first, after_text, after_file = reply.revisions
        assert first.content == "got 96x64" and first.files[0].data == upload
        assert after_text.content == "edited" and after_text.files == []
        assert [f.data for f in after_file.files] == [b"second"] and reply.content == "edited"
        await fake.wait_for(lambda: len([e for e in client.edits if e.message_id == reply.id]), 5)
        bot_copy = next(m for m in client.seen if m.id == reply.id)
        assert bot_copy.reference is not None and bot_copy.reference.message_id == posted.id
    finally:
        await stop(client, task)


async def test_content_is_redacted_without_the_intent_unless_mentioned(fake: FakeDiscord) -> None:
    client = Recorder()
    client._connection._intents.message_content = False
    task = await run(fake, client)
    try:
        alice = fake.add_user("alice")
        await fake.post(alice, "secret", files=[("a.png", png(8, 8))])
        await fake.post(alice, f"{fake.bot_user.mention} hello", files=[("b.png", png(8, 8))])
        await fake.wait_for(lambda: len(client.seen) == 2, 5)
        hidden, mentioned = client.seen
        assert hidden.content == "" and hidden.attachments == []
        assert mentioned.content.endswith("hello") and len(mentioned.attachments) == 1
    finally:
        await stop(client, task)


async def test_slash_command_button_and_autocomplete(fake: FakeDiscord) -> None:
    client = Recorder()

    class Again(discord.ui.View):
        @discord.ui.button(label="Again", custom_id="again:1")
        async def again(self, interaction: discord.Interaction, _: discord.ui.Button) -> None:
            await interaction.response.send_message("only you", ephemeral=True)

    @client.tree.command(description="Echo a picture")
    @app_commands.describe(photo="a picture", word="a word")
    async def echo(interaction: discord.Interaction, photo: discord.Attachment, word: str) -> None:
        await interaction.response.defer(thinking=True)
        data = await photo.read()
        file = discord.File(io.BytesIO(data), "echo.png")
        await interaction.followup.send(f"{word} {photo.width}", file=file, view=Again())

    @echo.autocomplete("word")
    async def words(_: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        return [app_commands.Choice(name=w, value=w) for w in ("starry", "scream") if current in w]

    task = await run(fake, client)
    try:
        await client.tree.sync()
        alice, bob = fake.add_user("alice"), fake.add_user("bob")
        assert await fake.autocomplete(alice, "echo", {"word": "sc"}, focused="word") == [
            {"name": "scream", "value": "scream"}
        ]
        photo = png(40, 30)
        used = await fake.slash(alice, "echo", {"word": "hi"}, files={"photo": ("p.png", photo)})
        result = await fake.wait_for(
            lambda: used.original if used.original and used.original.files else None, 10
        )
        assert used.deferred and not used.ephemeral
        assert result.content == "hi 40" and result.files[0].data == photo
        assert result.custom_ids() == ["again:1"]
        assert result.interaction_metadata["user"]["id"] == str(alice.id)

        clicked = await fake.click(bob, result, "again:1")
        await fake.wait_for(lambda: clicked.responded, 5)
        assert clicked.ephemeral and clicked.original.content == "only you"
        with pytest.raises(ValueError):
            await fake.click(bob, result, "no-such-button")
        with pytest.raises(LookupError):
            await fake.slash(alice, "never-synced")
    finally:
        await stop(client, task)


async def test_dropped_gateway_resumes_and_replays_missed_events(fake: FakeDiscord) -> None:
    client = Recorder()
    task = await run(fake, client)
    try:
        alice = fake.add_user("alice")
        await fake.drop_gateway(4000, down_for=0.5)
        missed = [await fake.post(alice, f"while down {i}") for i in range(3)]
        await asyncio.wait_for(client.resumed.wait(), 10)
        await fake.wait_for(lambda: len(client.seen) == 3, 5)
        assert [m.id for m in client.seen] == [m.id for m in missed]
        assert fake.gateway_ops.count("IDENTIFY") == 1 and "RESUME" in fake.gateway_ops
        fake.request_reconnect()
        await fake.wait_for(lambda: fake.gateway_ops.count("RESUME") == 2, 10)
        await fake.post(alice, "after reconnect")
        await fake.wait_for(lambda: len(client.seen) == 4, 5)
    finally:
        await stop(client, task)


async def test_planned_429_500_and_413_on_message_create(fake: FakeDiscord) -> None:
    fake.rate_limit = RELAXED  # more creates in one channel than 5 per 5 s; not about the budget
    client = Recorder()
    task = await run(fake, client)
    try:
        fake.fail_next("POST /channels/{channel_id}/messages", status=429, retry_after=0.3)
        channel = client.get_channel(fake.channel.id)
        sent = await channel.send("through the limit")
        assert fake.messages[sent.id].content == "through the limit"
        answers = [r for r in fake.requests if r.route == "/channels/{channel_id}/messages"]
        assert [r.status for r in answers] == [429, 200]
        assert answers[1].at - answers[0].at >= 0.3
        fake.fail_next("/channels/{channel_id}/messages", status=500)
        again = await channel.send("through a server error")
        assert fake.messages[again.id].content == "through a server error"
        with pytest.raises(ValueError):
            fake.fail_next("POST /channels/{id}/messages")  # a typo is refused, not ignored
        fake.fail_next("POST /channels/{channel_id}/messages", status=413)
        with pytest.raises(discord.HTTPException) as info:
            await channel.send("refused")
        assert (info.value.status, info.value.code) == (413, 40005)
    finally:
        await stop(client, task)


async def test_upload_over_the_guild_limit_gets_413(fake: FakeDiscord) -> None:
    client = Recorder()
    task = await run(fake, client)
    try:
        fake.set_upload_limit(fake.guild, 1000)
        channel = client.get_channel(fake.channel.id)
        with pytest.raises(discord.HTTPException) as info:
            await channel.send(file=discord.File(io.BytesIO(b"x" * 1001), "big.bin"))
        assert info.value.status == 413 and info.value.code == 40005
        small = await channel.send(file=discord.File(io.BytesIO(b"x" * 1000), "ok.bin"))
        assert fake.messages[small.id].files[0].size == 1000
        with pytest.raises(discord.HTTPException) as empty:
            await channel.send("")
        assert empty.value.code == 50006
    finally:
        await stop(client, task)


def age(fake: FakeDiscord, interaction: discord.Interaction, seconds: float) -> None:
    """Fake time: the interaction was created `seconds` earlier than it was."""
    fake.interactions[interaction.id].created -= seconds


async def test_late_answers_and_expired_tokens_are_refused(fake: FakeDiscord) -> None:
    client = Recorder()
    failures: list[discord.HTTPException] = []

    @client.tree.command(description="Too slow")
    async def slow(interaction: discord.Interaction) -> None:
        age(fake, interaction, fake.interaction_deadline + 1)
        try:
            await interaction.response.send_message("late")
        except discord.NotFound as err:
            failures.append(err)

    @client.tree.command(description="Answers, then follows up too late")
    async def later(interaction: discord.Interaction) -> None:
        await interaction.response.defer()
        age(fake, interaction, fake.interaction_token_lifetime + 1)
        try:
            await interaction.followup.send("too late")
        except discord.HTTPException as err:
            failures.append(err)

    task = await run(fake, client)
    try:
        await client.tree.sync()
        used = await fake.slash(fake.owner, "slow")
        await fake.wait_for(lambda: failures, 5)
        assert failures[0].code == 10062 and not used.responded
        deferred = await fake.slash(fake.owner, "later")
        await fake.wait_for(lambda: len(failures) == 2, 5)
        assert (failures[1].status, failures[1].code) == (401, 50027)
        assert deferred.deferred and deferred.original.flags & 128  # still "thinking"
    finally:
        await stop(client, task)


async def test_privileged_intent_not_enabled_is_refused() -> None:
    async with FakeDiscord(privileged_intents=0) as fake:
        client = Recorder()
        await client.login(fake.token)
        with pytest.raises(discord.PrivilegedIntentsRequired):
            await asyncio.wait_for(client.connect(reconnect=True), 10)
        await client.close()
        assert fake.gateway_ops == ["IDENTIFY"]


async def test_guild_command_sync_and_invocation(fake: FakeDiscord) -> None:
    client = Recorder()
    heard: list[tuple[int, bool]] = []

    @client.tree.command(description="Say a number")
    @app_commands.describe(n="how many")
    async def count(interaction: discord.Interaction, n: app_commands.Range[int, 1, 5]) -> None:
        heard.append((n, interaction.guild_id == fake.guild.id))
        await interaction.response.send_message(str(n))

    task = await run(fake, client)
    try:
        guild = discord.Object(fake.guild.id)
        client.tree.copy_global_to(guild=guild)
        client.tree.clear_commands(guild=None)
        await client.tree.sync()
        await client.tree.sync(guild=guild)
        assert fake.commands[None] == [] and fake.commands[fake.guild.id][0]["name"] == "count"
        with pytest.raises(ValueError):
            await fake.slash(fake.owner, "count", {"n": 9})
        used = await fake.slash(fake.owner, "count", {"n": 3})
        await fake.wait_for(lambda: used.original, 5)
        assert heard == [(3, True)] and used.original.content == "3"
        assert used.payload["data"]["guild_id"] == str(fake.guild.id)
    finally:
        await stop(client, task)


async def test_raw_gateway_protocol(fake: FakeDiscord) -> None:
    """Uncompressed JSON frames, a bad token, an unknown RESUME and a clean close."""
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(fake.gateway_url + "?v=10&encoding=json") as ws:
            assert (await ws.receive_json())["op"] == 10
            await ws.send_json({"op": 2, "d": {"token": "wrong", "intents": 0}})
            assert (await ws.receive()).data == 4004
        async with http.ws_connect(fake.gateway_url + "?v=10&encoding=json") as ws:
            await ws.receive_json()
            await ws.send_json({"op": 6, "d": {"token": fake.token, "session_id": "x", "seq": 1}})
            assert await ws.receive_json() == {"op": 9, "d": False}
        async with http.ws_connect(fake.gateway_url + "?v=10&encoding=json") as ws:
            await ws.receive_json()
            await ws.send_json({"op": 2, "d": {"token": fake.token, "intents": 1 << 9}})
            ready = await ws.receive_json()
            assert (ready["t"], ready["s"]) == ("READY", 1)
            assert (await ws.receive_json())["t"] == "GUILD_CREATE"
            await ws.send_json({"op": 1, "d": 2})
            assert (await ws.receive_json())["op"] == 11
            assert len(fake.gateway.sessions) == 1
            await ws.close(code=1000)
        await fake.wait_for(lambda: not fake.gateway.sessions, 5)


async def test_latency_delays_rest_and_gateway(fake: FakeDiscord) -> None:
    fake.latency = 0.2
    loop = asyncio.get_running_loop()
    async with aiohttp.ClientSession() as http:
        begun = loop.time()
        headers = {"Authorization": f"Bot {fake.token}"}
        async with http.get(f"{fake.url}/api/v10/users/@me", headers=headers) as response:
            assert response.status == 200 and response.headers["Content-Type"] == "application/json"
            assert int(response.headers["X-RateLimit-Remaining"]) < DISCORD.routes[0]
        assert loop.time() - begun >= 0.2
        stored = (await fake.post(fake.owner, "file", files=[("f.png", png(20, 10))])).files[0]
        async with http.get(stored.payload(fake.url)["url"]) as response:
            assert response.headers["Content-Length"] == str(stored.size)
            assert await response.read() == stored.data
        begun = loop.time()
        async with http.ws_connect(fake.gateway_url + "?v=10&encoding=json") as ws:
            assert (await ws.receive_json())["op"] == 10
            assert loop.time() - begun >= 0.2


async def test_history_fetch_delete_typing_and_reactions(fake: FakeDiscord) -> None:
    client = Recorder()
    task = await run(fake, client)
    try:
        alice = fake.add_user("alice")
        posts = [await fake.post(alice, f"post {i}") for i in range(3)]
        channel = client.get_channel(fake.channel.id)
        history = [m.content async for m in channel.history(limit=2)]
        assert history == ["post 2", "post 1"]
        older = [m.content async for m in channel.history(before=discord.Object(posts[2].id))]
        assert older == ["post 1", "post 0"]
        fetched = await channel.fetch_message(posts[0].id)
        assert fetched.author.id == alice.id and fetched.content == "post 0"
        async with channel.typing():
            sent = await channel.send("mine")
        assert fake.typing[fake.channel.id] >= 1
        await sent.add_reaction("👍")
        assert fake.messages[sent.id].reactions["👍"] == {fake.bot_user.id}
        await fake.react(alice, posts[1], "🎨")
        await fake.wait_for(lambda: client.reactions, 5)
        assert (client.reactions[0].user_id, str(client.reactions[0].emoji)) == (alice.id, "🎨")
        with pytest.raises(discord.Forbidden):
            await fetched.delete()  # someone else's message, and the bot cannot manage them
        await sent.delete()
        await fake.wait_for(lambda: client.deletions == [sent.id], 5)
        assert fake.messages[sent.id].deleted
        with pytest.raises(discord.NotFound):
            await channel.fetch_message(sent.id)
    finally:
        await stop(client, task)


# ---------------------------------------------------------------- as strict as Discord


async def test_responses_match_discords_spec() -> None:
    """Broad traffic from the real client, every exchange valid against Discord's OpenAPI spec."""
    async with FakeDiscord(record=True, rate_limit=RELAXED) as fake:
        client = Recorder()

        class Buttons(discord.ui.View):
            @discord.ui.button(label="Update", custom_id="update")
            async def update(self, interaction: discord.Interaction, _: discord.ui.Button) -> None:
                await interaction.response.edit_message(content="updated", view=None)

            @discord.ui.button(label="Quiet", custom_id="quiet")
            async def quiet(self, interaction: discord.Interaction, _: discord.ui.Button) -> None:
                await interaction.response.defer()

        @client.tree.command(description="Answer with buttons")
        @app_commands.describe(word="a word")
        async def ask(interaction: discord.Interaction, word: str) -> None:
            await interaction.response.defer(thinking=True)
            await interaction.followup.send(f"{word}?", view=Buttons())
            await interaction.edit_original_response(content=f"{word}!", view=Buttons())
            await interaction.followup.send("secret", ephemeral=True)

        @ask.autocomplete("word")
        async def words(_: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
            return [app_commands.Choice(name="yes", value="yes")]

        task = await run(fake, client)
        try:
            await client.tree.sync()
            await client.tree.sync(guild=discord.Object(fake.guild.id))
            await client.fetch_guild(fake.guild.id)
            guild = client.get_guild(fake.guild.id)
            await guild.fetch_channels()
            await guild.fetch_member(fake.owner.id)
            await client.fetch_user(fake.owner.id)
            channel = await client.fetch_channel(fake.channel.id)
            alice = fake.add_user("alice")
            posted = await fake.post(alice, "hello", files=[("a.png", png(8, 8))])
            sent = await channel.send("hi", file=discord.File(io.BytesIO(png(8, 8)), "b.png"))
            reply = await (await channel.fetch_message(posted.id)).reply("re", nonce=77)
            await sent.edit(content="edited", attachments=[])
            await sent.add_reaction("👍")
            await sent.remove_reaction("👍", client.user)
            [m async for m in channel.history(limit=5)]
            async with channel.typing():
                pass
            await reply.delete()
            fake.fail_next("POST /channels/{channel_id}/messages", status=429, retry_after=0.1)
            await channel.send("after a 429")
            fake.fail_next("POST /channels/{channel_id}/messages", status=413)
            with pytest.raises(discord.HTTPException):
                await channel.send("413")
            fake.deny_bot(ATTACH_FILES)
            with pytest.raises(discord.Forbidden):
                await channel.send(file=discord.File(io.BytesIO(b"x"), "x.txt"))
            with pytest.raises(discord.NotFound):
                await channel.fetch_message(1)
            await fake.autocomplete(alice, "ask", {"word": "y"}, focused="word")
            used = await fake.slash(alice, "ask", {"word": "yes"})
            await fake.wait_for(lambda: len(used.followups) == 2, 10)
            clicked = await fake.click(alice, used.original, "quiet")
            await fake.wait_for(lambda: clicked.responded, 5)
            clicked = await fake.click(alice, used.original, "update")
            await fake.wait_for(lambda: clicked.responded, 5)
        finally:
            await stop(client, task)
        spec = Spec()
        assert fake.exchanges is not None and len({ex.route for ex in fake.exchanges}) >= 15
        problems = [v for ex in fake.exchanges for v in spec.violations(ex)]
        assert not problems, "\n".join(problems)
        statuses = {ex.status for ex in fake.exchanges}
        assert {200, 204, 403, 404, 413, 429} <= statuses
        assert all("X-RateLimit-Bucket" in ex.headers for ex in fake.exchanges if ex.status >= 400)


async def test_message_and_user_commands_and_string_selects_as_discord_sends_them() -> None:
    """Apps on a message and on a member (command types 3 and 2, with target_id and resolved),
    an ephemeral string select picked (component type 3 with values): the real client handles
    them, and requests, answers and the dispatched interactions all match Discord's spec."""
    async with FakeDiscord(record=True, rate_limit=RELAXED) as fake:
        client = Recorder()
        client.intents.message_content = False  # resolved messages carry content regardless
        picked: list[list[str]] = []

        class Pick(discord.ui.View):
            @discord.ui.select(
                custom_id="pick", options=[discord.SelectOption(label=n) for n in ("a", "b", "c")]
            )
            async def pick(self, used: discord.Interaction, select: discord.ui.Select) -> None:
                picked.append(list(select.values))
                await used.response.edit_message(content=f"picked {select.values}", view=None)

        @client.tree.context_menu(name="Stylize")
        async def on_message(interaction: discord.Interaction, message: discord.Message) -> None:
            urls = [a.url for a in message.attachments]
            text = f"{message.author.name}: {message.content} {len(urls)}"
            await interaction.response.send_message(text, view=Pick(), ephemeral=True)

        @client.tree.context_menu(name="Stylize avatar")
        async def on_member(interaction: discord.Interaction, member: discord.Member) -> None:
            data = await member.display_avatar.with_size(4096).read()
            await interaction.response.send_message(f"{member.name} {len(data)}", ephemeral=True)

        task = await run(fake, client)
        try:
            await client.tree.sync()
            face = png(32, 32, (10, 200, 10))
            alice, bob = fake.add_user("alice"), fake.add_user("bob", avatar=face)
            photo = await fake.post(alice, "my cat", files=[("cat.png", png(8, 8))])
            used = await fake.message_command(bob, "Stylize", photo)
            await fake.wait_for(lambda: used.original, 5)
            shown = used.original
            assert used.ephemeral and shown.content == "alice: my cat 1"
            data = used.payload["data"]
            assert (data["type"], data["target_id"]) == (3, str(photo.id))
            assert data["resolved"]["messages"][str(photo.id)]["content"] == "my cat"
            assert shown.type == 23 and shown.interaction_metadata["target_message_id"] == str(
                photo.id
            )
            with pytest.raises(ValueError):
                await fake.select(bob, shown, "pick", ["z"])  # not an option
            with pytest.raises(ValueError):
                await fake.select(bob, shown, "pick", ["a", "b"])  # max_values is 1
            with pytest.raises(ValueError):
                await fake.click(bob, shown, "pick")  # a select is not a button
            chosen = await fake.select(bob, shown, "pick", ["b"])
            await fake.wait_for(lambda: chosen.responded, 5)
            assert picked == [["b"]] and shown.content == "picked ['b']" and not shown.components

            avatar = await fake.user_command(alice, "Stylize avatar", bob)
            await fake.wait_for(lambda: avatar.original, 5)
            assert avatar.original.content == f"bob {len(face)}"
            assert fake.avatar_fetches == {bob.id: 1}
            resolved = avatar.payload["data"]["resolved"]
            assert (
                set(resolved) == {"users", "members"}
                and "user" not in resolved["members"][str(bob.id)]
            )
            assert avatar.original.interaction_metadata["target_user"]["id"] == str(bob.id)
            with pytest.raises(LookupError):
                await fake.slash(alice, "Stylize")  # a message command is not a slash command
            with pytest.raises(LookupError):
                await fake.user_command(alice, "Stylize", bob)  # nor a user command
            channel = client.get_channel(fake.channel.id)
            empty = discord.ui.View()
            empty.add_item(discord.ui.Select(custom_id="none", options=[]))
            with pytest.raises(discord.HTTPException) as refused:
                await channel.send("no options", view=empty)
            assert refused.value.code == 50035
        finally:
            await stop(client, task)
        spec = Spec()
        assert fake.exchanges is not None
        refused = [ex for ex in fake.exchanges if ex.status == 400]
        assert len(refused) == 1 and "$.components[0].components[0]" in "".join(
            spec.violations(refused[0])
        )  # what fakecord refused, the spec refuses too
        problems = [v for ex in fake.exchanges if ex.status != 400 for v in spec.violations(ex)]
        interactions = fake.interactions.values()
        problems += [v for i in interactions for v in spec.interaction_violations(i.payload)]
        assert not problems, "\n".join(problems)
        commands = next(ex for ex in fake.exchanges if ex.method == "PUT").response
        assert sorted((c["type"], c["name"]) for c in commands) == [
            (2, "Stylize avatar"),
            (3, "Stylize"),
        ]


async def test_permissions_follow_overwrites_and_refusals_are_discords(fake: FakeDiscord) -> None:
    fake.rate_limit = RELAXED  # more creates in one channel than 5 per 5 s; not about the budget
    client = Recorder()
    task = await run(fake, client)
    try:
        guild = client.get_guild(fake.guild.id)
        channel = guild.get_channel(fake.channel.id)
        assert channel.permissions_for(guild.me).attach_files
        alice, root = fake.add_user("alice"), fake.add_user("root", admin=True)

        fake.deny_bot(ATTACH_FILES | READ_MESSAGE_HISTORY)
        await fake.wait_for(lambda: not channel.permissions_for(guild.me).attach_files, 5)
        assert not channel.permissions_for(guild.me).read_message_history
        assert channel.permissions_for(guild.me).send_messages
        with pytest.raises(discord.Forbidden) as files:
            await channel.send(file=discord.File(io.BytesIO(b"x"), "x.txt"))
        assert files.value.code == 50013
        posted = await fake.post(alice, "hello")
        with pytest.raises(discord.Forbidden) as reply:
            await channel.send("re", reference=channel.get_partial_message(posted.id))
        assert reply.value.code == 50013
        assert [m async for m in channel.history(limit=10)] == []
        await channel.send("text is fine")

        fake.set_permissions(fake.channel, fake.guild, deny=VIEW_CHANNEL)
        await fake.wait_for(lambda: not channel.permissions_for(guild.me).view_channel, 5)
        with pytest.raises(discord.Forbidden) as hidden:
            await channel.send("where am I")
        assert hidden.value.code == 50001
        unseen = await fake.post(alice, "not for the bot")
        bot_role = fake.guild.roles[2]
        fake.set_permissions(fake.channel, bot_role, allow=VIEW_CHANNEL)  # a role beats @everyone
        await fake.wait_for(lambda: channel.permissions_for(guild.me).view_channel, 5)
        seen = await fake.post(alice, "for the bot")
        await fake.wait_for(lambda: [m for m in client.seen if m.id == seen.id], 5)
        assert unseen.id not in [m.id for m in client.seen]
        fake.deny_bot(SEND_MESSAGES)  # the member's overwrite beats its roles
        with pytest.raises(discord.Forbidden) as mute:
            await channel.send("muted")
        assert mute.value.code == 50013
        assert not fake.permissions_in(fake.channel, alice) & VIEW_CHANNEL
        assert fake.permissions_in(fake.channel, root) & ATTACH_FILES  # admins bypass overwrites
        fake.set_permissions(fake.channel, fake.bot_user)  # removes the bot's overwrite
        assert fake.permissions_in(fake.channel, fake.bot_user) & SEND_MESSAGES
        art = fake.guild.channels[1]
        assert fake.permissions_in(art, alice) & SEND_MESSAGES
        fake.set_role_permissions(fake.guild.everyone, VIEW_CHANNEL)  # guild-wide
        await fake.wait_for(lambda: not guild.default_role.permissions.send_messages, 5)
        assert fake.permissions_in(art, alice) == VIEW_CHANNEL
    finally:
        await stop(client, task)


async def test_interactions_carry_channel_permissions_and_answer_without_them(
    fake: FakeDiscord,
) -> None:
    client = Recorder()
    seen: list[tuple[discord.Permissions, discord.Permissions]] = []

    @client.tree.command(description="Tell permissions")
    async def perms(interaction: discord.Interaction) -> None:
        seen.append((interaction.app_permissions, interaction.permissions))
        await interaction.response.defer(thinking=True)
        await interaction.followup.send("answered through the webhook")

    task = await run(fake, client)
    try:
        await client.tree.sync()
        art = fake.guild.channels[1]
        fake.deny_bot(SEND_MESSAGES | ATTACH_FILES, art)
        fake.set_permissions(art, fake.guild, deny=ATTACH_FILES)
        alice = fake.add_user("alice")
        used = await fake.slash(alice, "perms", channel=art)
        await fake.wait_for(lambda: used.followups, 5)
        app, member = seen[0]
        assert not app.send_messages and not app.attach_files and app.view_channel
        assert member.send_messages and not member.attach_files
        assert used.original.content == "answered through the webhook"
        with pytest.raises(discord.Forbidden):
            await client.get_channel(art.id).send("but not as the bot")
    finally:
        await stop(client, task)


async def test_threads_need_send_messages_in_threads(fake: FakeDiscord) -> None:
    client = Recorder()
    task = await run(fake, client)
    try:
        thread = fake.add_thread(fake.channel, "ideas")
        found = await fake.wait_for(lambda: client.get_channel(thread.id), 5)
        assert isinstance(found, discord.Thread) and found.parent_id == fake.channel.id
        alice = fake.add_user("alice")
        posted = await fake.post(alice, "in a thread", channel=thread)
        await fake.wait_for(lambda: [m for m in client.seen if m.id == posted.id], 5)
        assert isinstance(client.seen[-1].channel, discord.Thread)
        sent = await found.send("the bot answers")
        assert fake.messages[sent.id].channel_id == thread.id
        fake.deny_bot(SEND_MESSAGES_IN_THREADS)
        await fake.wait_for(
            lambda: not found.permissions_for(found.guild.me).send_messages_in_threads, 5
        )
        with pytest.raises(discord.Forbidden) as refused:
            await found.send("not any more")
        assert refused.value.code == 50013
        await client.get_channel(fake.channel.id).send("the parent is fine")
        with pytest.raises(ValueError):
            fake.set_permissions(thread, fake.guild, deny=VIEW_CHANNEL)
    finally:
        await stop(client, task)


async def test_files_of_one_message_together_over_25_mib_get_413(fake: FakeDiscord) -> None:
    client = Recorder()
    task = await run(fake, client)
    try:
        fake.set_upload_limit(fake.guild, 50 * 1024 * 1024)
        channel = client.get_channel(fake.channel.id)
        part = b"x" * (9 * 1024 * 1024)
        files = [discord.File(io.BytesIO(part), f"{i}.bin") for i in range(3)]
        with pytest.raises(discord.HTTPException) as info:
            await channel.send(files=files)
        assert (info.value.status, info.value.code) == (413, 40005)
        two = [discord.File(io.BytesIO(part), f"{i}.bin") for i in range(2)]
        sent = await channel.send(files=two)
        assert len(fake.messages[sent.id].files) == 2
    finally:
        await stop(client, task)


async def test_discords_budget_shared_message_bucket_and_global_limit() -> None:
    quick = Budget(messages=(2, 0.5), webhooks=(5, 2.0), routes=(50, 1.0), global_limit=(6, 1.0))
    async with FakeDiscord(rate_limit=quick) as fake:
        assert FakeDiscord().rate_limit == DISCORD == Budget()
        assert DISCORD.messages == (5, 5.0) and DISCORD.global_limit == (50, 1.0)
        spec = Spec()
        headers = {"Authorization": f"Bot {fake.token}"}
        api = f"{fake.url}/api/v10"
        messages = f"{api}/channels/{fake.channel.id}/messages"
        async with aiohttp.ClientSession(headers=headers) as http:
            async with http.post(messages, json={"content": "one"}) as first:
                created = await first.json()
                bucket = first.headers["X-RateLimit-Bucket"]
            async with http.patch(f"{messages}/{created['id']}", json={"content": "1"}) as edit:
                assert edit.headers["X-RateLimit-Bucket"] == bucket  # one bucket for both
                assert edit.headers["X-RateLimit-Remaining"] == "0"
            async with http.post(messages, json={"content": "two"}) as limited:
                body = await limited.json()
                assert limited.status == 429 and body["global"] is False and body["code"] == 0
                assert limited.headers["X-RateLimit-Scope"] == "user"
            other = f"{api}/channels/{fake.guild.channels[1].id}/messages"
            async with http.post(other, json={"content": "elsewhere"}) as elsewhere:
                assert elsewhere.status == 200  # per channel
            for _ in range(2):
                async with http.get(f"{api}/users/@me") as ok:
                    assert ok.status == 200
            async with http.get(f"{api}/users/@me") as over:
                body = await over.json()
                assert over.status == 429 and body["global"] is True
                assert over.headers["X-RateLimit-Global"] == "true"
                assert over.headers["X-RateLimit-Scope"] == "global"
                assert "X-RateLimit-Bucket" in over.headers
            ex = Exchange("GET", "/users/@me", "/users/@me", {}, None, 0, 429, body)
            assert spec.violations(ex) == []
        fake.rate_limit = RELAXED  # a test may relax it at any time
        client = Recorder()
        task = await run(fake, client)
        try:
            channel = client.get_channel(fake.channel.id)
            for i in range(8):
                await channel.send(f"relaxed {i}")
            assert all(r.status != 429 for r in fake.requests[-8:])
        finally:
            await stop(client, task)


async def test_reactions_have_discords_bucket_of_one_per_second_per_channel(
    fake: FakeDiscord,
) -> None:
    spec = Spec()
    alice = fake.add_user("alice")
    art = fake.guild.channels[1]
    posts = [await fake.post(alice, f"post {i}") for i in range(3)]
    client = Recorder()
    task = await run(fake, client)
    try:  # discord.py follows the headers: one reaction per second, never a 429
        channel = client.get_channel(fake.channel.id)
        for post in posts:
            await channel.get_partial_message(post.id).add_reaction("👍")
        puts = [r for r in fake.requests if r.route.endswith("/reactions/{emoji}/@me")]
        assert [r.status for r in puts] == [204, 204, 204]
        assert all(b.at - a.at >= 0.9 for a, b in itertools.pairwise(puts))
    finally:
        await stop(client, task)
    headers = {"Authorization": f"Bot {fake.token}"}
    api = f"{fake.url}/api/v10"

    def reaction(channel_id: int, message_id: int, emoji: str) -> str:
        return f"{api}/channels/{channel_id}/messages/{message_id}/reactions/{emoji}/@me"

    elsewhere = await fake.post(alice, "in #art", channel=art)
    async with aiohttp.ClientSession(headers=headers) as http:
        async with http.put(reaction(art.id, elsewhere.id, "%F0%9F%8E%A8")) as first:
            assert first.status == 204
            assert first.headers["X-RateLimit-Limit"] == "1"
            assert first.headers["X-RateLimit-Remaining"] == "0"
            assert 0 < float(first.headers["X-RateLimit-Reset-After"]) <= 1.0
            bucket = first.headers["X-RateLimit-Bucket"]
        async with http.delete(reaction(art.id, elsewhere.id, "%F0%9F%8E%A8")) as again:
            body = await again.json()
            assert again.status == 429 and again.headers["X-RateLimit-Bucket"] == bucket
            assert again.headers["X-RateLimit-Scope"] == "user" and body["code"] == 0
            route = "/channels/{channel_id}/messages/{message_id}/reactions/{emoji}/@me"
            path = f"/channels/{art.id}/messages/{elsewhere.id}/reactions/x/@me"
            assert spec.violations(Exchange("DELETE", route, path, {}, None, 0, 429, body)) == []


async def test_the_client_keeps_to_the_budget_and_callbacks_are_apart() -> None:
    async with FakeDiscord(rate_limit=Budget(messages=(2, 0.6))) as fake:
        client = Recorder()

        @client.tree.command(description="Answer")
        async def hello(interaction: discord.Interaction) -> None:
            await interaction.response.send_message("hi")
            for i in range(3):
                await interaction.followup.send(f"more {i}")

        task = await run(fake, client)
        try:
            await client.tree.sync()
            channel = client.get_channel(fake.channel.id)
            sent = [await channel.send(f"n{i}") for i in range(2)]
            used = await fake.slash(fake.owner, "hello")  # the channel's bucket is spent
            await fake.wait_for(lambda: len(used.followups) == 3, 5)
            await sent[0].edit(content="edited")  # waits for the shared bucket
            creates = [
                r for r in fake.requests if r.route.startswith("/channels/{channel_id}/messages")
            ]
            assert [r.method for r in creates] == ["POST", "POST", "PATCH"]
            assert creates[2].at - creates[0].at >= 0.5
            assert used.response.at < creates[2].at
            assert all(r.status != 429 for r in fake.requests)
        finally:
            await stop(client, task)


async def test_enforce_nonce_returns_the_message_already_created(fake: FakeDiscord) -> None:
    fake.rate_limit = RELAXED  # more creates in one channel than 5 per 5 s; not about the budget
    client = Recorder()
    task = await run(fake, client)
    try:
        channel = client.get_channel(fake.channel.id)
        first = await channel.send("once", nonce="job-1")
        again = await channel.send("once more", nonce="job-1")
        assert again.id == first.id and again.content == "once"
        fake.fail_next("POST /channels/{channel_id}/messages", status=500, after_commit=True)
        kept = await channel.send("after a 500", nonce="job-2")  # discord.py retries the 500
        assert [m.content for m in fake.messages_in()].count("after a 500") == 1
        assert fake.messages[kept.id].content == "after a 500"
        statuses = [r.status for r in fake.requests if r.method == "POST"]
        assert statuses == [200, 200, 500, 200]
        await channel.send("resent")  # discord.py's own nonce is new on every send() call
        await channel.send("resent")
        assert [m.content for m in fake.messages_in()].count("resent") == 2
    finally:
        await stop(client, task)


async def test_connection_reset_with_and_without_commit(fake: FakeDiscord) -> None:
    client = Recorder()
    task = await run(fake, client)
    try:
        channel = client.get_channel(fake.channel.id)
        fake.fail_next("POST /channels/{channel_id}/messages", reset=True)
        with pytest.raises(aiohttp.ClientConnectionError):
            await channel.send("lost")
        assert not [m for m in fake.messages_in() if m.content == "lost"]
        fake.fail_next("POST /channels/{channel_id}/messages", reset=True, after_commit=True)
        with pytest.raises(aiohttp.ClientConnectionError):
            await channel.send("made it")
        assert [m.content for m in fake.messages_in()] == ["made it"]
        assert (await channel.send("and on")).content == "and on"
    finally:
        await stop(client, task)


async def test_attachments_that_lie_stream_or_point_elsewhere(fake: FakeDiscord) -> None:
    client = Recorder()
    urls: list[str] = []

    @client.tree.command(description="Look at a photo")
    async def look(interaction: discord.Interaction, photo: discord.Attachment) -> None:
        urls.append(photo.url)
        await interaction.response.send_message(f"{photo.size} bytes, I think")

    task = await run(fake, client)
    try:
        await client.tree.sync()
        alice = fake.add_user("alice")
        photo = png(16, 16)
        huge = 200 * 1024 * 1024
        posted = await fake.post(
            alice,
            "look",
            files=[
                AttachmentSpec("small.png", photo, lie_size=1000, stream_bytes=huge),
                AttachmentSpec("far.png", photo, url_host="evil.example"),
                ("honest.png", photo),
            ],
        )
        seen = await fake.wait_for(lambda: [m for m in client.seen if m.id == posted.id], 5)
        lying, far, honest = seen[0].attachments
        assert lying.size == 1000 and (lying.width, lying.height) == (16, 16)
        assert far.url.startswith("http://evil.example/") and far.proxy_url.startswith(
            "http://evil.example/"
        )
        async with aiohttp.ClientSession() as http, http.get(lying.url) as response:
            assert "Content-Length" not in response.headers
            head = await response.content.readexactly(len(photo))
            assert head == photo
            read = len(head)
            while read < 4 * 1024 * 1024:
                read += len(await response.content.read(64 * 1024))
        stored = posted.files
        await fake.wait_for(lambda: stored[0].fetches == 1, 5)
        assert stored[0].bytes_served < huge
        assert await honest.read() == photo and stored[2].fetches == 1
        assert stored[1].fetches == 0  # never fetched from fakecord
        spec = AttachmentSpec("p.png", photo, lie_size=10, url_host="evil.example")
        used = await fake.slash(alice, "look", files={"photo": spec})
        await fake.wait_for(lambda: used.original, 5)
        assert used.original.content == "10 bytes, I think"
        assert urls[0].startswith("http://evil.example/attachments/")
        resolved = used.payload["data"]["resolved"]["attachments"]
        assert next(iter(resolved.values()))["ephemeral"] is True
    finally:
        await stop(client, task)


def test_the_spec_checker_finds_violations_and_tolerates_only_the_named_looseness() -> None:
    spec = Spec()
    route = "/channels/{channel_id}/messages"

    def check(query: dict[str, str], request: object, status: int, response: object) -> str:
        method = "GET" if request is None else "POST"
        ex = Exchange(method, route, "/channels/12/messages", query, request, 0, status, response)
        return "\n".join(spec.violations(ex))

    sent = {"content": "hi", "message_reference": {"message_id": 12}, "nonce": 5}
    limited = {"message": "slow", "retry_after": 1.0, "global": False}
    assert check({}, sent, 429, limited | {"code": 0}) == ""
    assert "'code' is a required property" in check({}, sent, 429, limited)
    assert check({"limit": "5", "before": "12"}, None, 200, []) == ""
    assert "2001 characters" in check({}, {"content": "x" * 2001}, 400, {"message": "", "code": 1})
    assert "'type' is a required property" in check({}, sent, 200, {"id": "1"})
    assert "'foo' is not in the spec" in check({"foo": "1"}, None, 200, [])
    assert "limit='500'" in check({"limit": "500"}, None, 200, [])
    assert "'code' is a required property" in check({}, sent, 500, {"message": "oops"})
    assert "status 302" in check({}, sent, 302, None)
    callback = Exchange(
        "POST",
        "/interactions/{interaction_id}/{token}/callback",
        "/interactions/1/abc/callback",
        {"with_response": "1"},
        {"type": 5},
        0,
        200,
        {"interaction": {"id": "1", "type": 2}, "resource": {"type": 5}},
    )
    assert "$.resource" in "\n".join(spec.violations(callback))
    menu = {"type": 2, "data": {"type": 3, "target_id": "5", "resolved": {"messages": {}}}}
    assert "data.target_id is not in data.resolved.messages" in spec.interaction_violations(menu)
    picked = {"type": 3, "data": {"component_type": 3, "custom_id": "x", "values": "a"}}
    assert "values of a string select" in "".join(spec.interaction_violations(picked))
    member = {"type": 2, "data": {"type": 2, "target_id": "5", "resolved": {"users": {"5": {}}}}}
    assert "'id' is a required property" in "".join(spec.interaction_violations(member))
