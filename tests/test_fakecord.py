"""The emulator against the real discord.py client: handshake, messages, files, interactions,
resume, rate limits and upload limits. The bots here are tiny clients defined in the tests."""

from __future__ import annotations

import asyncio
import io
import zlib
from collections.abc import AsyncIterator, Callable

import aiohttp
import discord
import pytest
from discord import app_commands
from PIL import Image

from tests.fakecord import ATTACH_FILES, DISCORD, RELAXED, FakeDiscord
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


async def test_late_answers_and_expired_tokens_are_refused(fake: FakeDiscord) -> None:
    fake.interaction_deadline = 0.2
    fake.interaction_token_lifetime = 0.5
    client = Recorder()
    failures: list[discord.HTTPException] = []

    @client.tree.command(description="Too slow")
    async def slow(interaction: discord.Interaction) -> None:
        await asyncio.sleep(0.4)
        try:
            await interaction.response.send_message("late")
        except discord.NotFound as err:
            failures.append(err)

    @client.tree.command(description="Answers, then follows up too late")
    async def later(interaction: discord.Interaction) -> None:
        await interaction.response.defer()
        await asyncio.sleep(0.7)
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
