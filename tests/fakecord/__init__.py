"""fakecord: a local Discord (REST + gateway) that the real discord.py client talks to.

It runs an aiohttp server on 127.0.0.1 (ephemeral port) in the test's own event loop. Entering
`async with FakeDiscord() as discord:` points discord.py at it by patching
`discord.http.Route.BASE` and `discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY`; leaving
restores them. Then start any bot with `discord.token`:

    async with FakeDiscord() as discord:
        bot = build_bot(Settings(discord_token=discord.token), engine=...)
        await bot.login(discord.token)               # GET /users/@me, application info, setup_hook
        task = asyncio.create_task(bot.connect())    # (login first: wait_until_ready needs it)
        await bot.wait_until_ready()                 # READY + GUILD_CREATE (about 2 s: discord.py
                                                     # waits guild_ready_timeout after GUILD_CREATE)
        alice = discord.add_user("alice")
        msg = await discord.post(alice, "!stylize starry-night", files=[("cat.png", png)])
        reply = await discord.wait_for(lambda: next(iter(discord.replies_to(msg)), None), 60)
        assert reply.files[0].data.startswith(b"\\x89PNG")
        await bot.close(); await task
    Bots in the same process share discord.py's patched endpoints, so one FakeDiscord at a time.

World (created by the constructor)
    discord.guild            the default guild; roles @everyone (send/attach/read/use commands),
                             "Admin" (ADMINISTRATOR), "Bot"; channels #general and #art
    discord.channel          #general of that guild
    discord.owner            the guild owner and application owner (admin)
    discord.bot_user         the bot's user (its id is the application id)
    discord.token            the bot token to give the client (anything else gets 401 / 4004)
    discord.application_id
    add_user(name, admin=False, guilds=None) -> User       member of all guilds by default;
                             admin=True gives the Admin role (guild_permissions.administrator)
    add_guild(name, upload_limit=10 MiB) -> Guild           dispatched as GUILD_CREATE
    set_upload_limit(guild, nbytes)   bigger files get 413 {"code": 40005}; discord.py's
                             Guild.filesize_limit still says the tier's 10 MiB (so a prefix command
                             only learns of it from the 413), interactions carry the real value
                             in attachment_size_limit (Interaction.filesize_limit)

Users act (each returns at once; the bot reacts over the gateway)
    await post(user, content, files=[(filename, bytes)], channel=None, reply_to=None) -> Message
        MESSAGE_CREATE with attachments as Discord describes them (id, filename, size, url,
        proxy_url, content_type, width/height read from the image header, even for bombs),
        `member`, `mentions` (from <@id> in content), and for replies `message_reference` +
        `referenced_message`. Without the message-content intent the bot sees empty
        content/attachments unless it is mentioned, as on Discord.
    await slash(user, "stylize", options={"style": "udnie", "strength": 2.0},
                files={"photo": ("cat.png", png)}, channel=None) -> Interaction
        INTERACTION_CREATE for a command the bot has synced (PUT .../commands, global or
        guild); options are typed and checked against the synced definition (choices,
        min/max, required) like the Discord client does; attachment options are uploaded and
        put in data.resolved.attachments. LookupError if the command was never synced.
        "group sub" names address subcommands.
    await autocomplete(user, "stylize", {"style": "sta"}, focused="style") -> list[choice]
    await click(user, message, custom_id) -> Interaction     a component on `message`
        (ValueError if no enabled component has that custom_id)
    await react(user, message, "👍")

Waiting and looking
    await wait_for(predicate, timeout=10.0)   re-runs the zero-argument predicate after every
        change (message created/edited/deleted, interaction answered, request served) and
        returns its first truthy value; TimeoutError names the latest messages.
    discord.messages: dict[id, Message] (all, including ephemeral and deleted ones)
    messages_in(channel=None), bot_messages(channel=None), replies_to(message)
    Message: id, author (User), content, files (StoredFile: filename, data bytes, size,
        content_type, width, height, description), embeds, components (raw dicts),
        custom_ids(), flags, ephemeral, reference (the Message replied to), deleted,
        revisions (the original then one Revision per edit), edits (revisions[1:]; each has
        content, embeds, components, files, flags, at)
    Interaction: callbacks (Callback: type 4/5/6/7/8/9, data, ephemeral), response (the
        first), responded, deferred, ephemeral, original (the response Message, or the
        clicked message for 6/7), followups, messages (original + follow-ups), choices
        (autocomplete), payload (what was dispatched)
    listen(callback)          callback(kind, message) for kind in "create", "edit", "delete"
    requests: list[RequestRecord(method, route, path, status, at)]   every REST call; `route`
        is a template such as "/channels/{channel_id}/messages"
    gateway_ops: list[str]    "IDENTIFY", "RESUME", "REQUEST_GUILD_MEMBERS", ...
    typing: dict[channel_id, count]

Faults
    fail_next("POST /channels/{channel_id}/messages", status=429, retry_after=0.5, count=1)
        also 413 (40005 Request entity too large), 500, or any status; the method is optional;
        webhook routes are "/webhooks/{application_id}/{token}" and
        "/webhooks/{application_id}/{token}/messages/{message_id}", the interaction callback
        "/interactions/{interaction_id}/{token}/callback"
    await drop_gateway(code=4000, down_for=0.0)   close the websocket with a resumable code;
        events dispatched while down (down_for s) are replayed when the client RESUMEs
    request_reconnect()       opcode 7; the client reconnects and resumes
    FakeDiscord(upload_limit=10 MiB, latency=0.0, heartbeat_interval=41.25,
                interaction_deadline=3.0, interaction_token_lifetime=900.0,
                rate_limit=(50, 1.0),
                privileged_intents=MEMBERS | PRESENCES | MESSAGE_CONTENT)
        latency delays every REST answer and gateway frame; an interaction not answered
        within interaction_deadline s gets 404 10062 "Unknown interaction" (as on Discord),
        and follow-ups or @original edits after interaction_token_lifetime s get 401 50027
        "Invalid Webhook Token" (a job longer than 15 minutes must edit another way);
        each route+channel bucket allows rate_limit[0] requests per rate_limit[1] s and
        advertises it in X-RateLimit-* headers (a client that ignores them gets 429s);
        privileged_intents are those "enabled in the developer portal": IDENTIFY asking for
        another privileged intent is closed with 4014 (discord.PrivilegedIntentsRequired).

Behaviour worth knowing
    Messages the bot sends (REST or interaction responses, unless ephemeral) come back to it
    as MESSAGE_CREATE, edits as MESSAGE_UPDATE, deletions as MESSAGE_DELETE. A deferred
    response (type 5) is a "thinking" message; the first follow-up or @original edit fills
    it. Payload checks return Discord's errors: empty message 50006, content over 2000,
    embed limits, over 5 action rows, custom_id over 100 characters or duplicated, unknown
    reply target, ephemeral outside interactions (all 400 50035 unless said otherwise).
"""

from .emulator import FakeDiscord
from .interactions import Callback, Interaction
from .server import DISCORD, RELAXED, Budget, Exchange, Failure, RequestRecord
from .state import (
    ADD_REACTIONS,
    ADMINISTRATOR,
    ATTACH_FILES,
    EMBED_LINKS,
    MANAGE_MESSAGES,
    READ_MESSAGE_HISTORY,
    SEND_MESSAGES,
    SEND_MESSAGES_IN_THREADS,
    USE_APPLICATION_COMMANDS,
    VIEW_CHANNEL,
    AttachmentSpec,
    Channel,
    Guild,
    Message,
    Revision,
    Role,
    StoredFile,
    User,
)

__all__ = [
    "ADD_REACTIONS",
    "ADMINISTRATOR",
    "ATTACH_FILES",
    "DISCORD",
    "EMBED_LINKS",
    "MANAGE_MESSAGES",
    "READ_MESSAGE_HISTORY",
    "RELAXED",
    "SEND_MESSAGES",
    "SEND_MESSAGES_IN_THREADS",
    "USE_APPLICATION_COMMANDS",
    "VIEW_CHANNEL",
    "AttachmentSpec",
    "Budget",
    "Callback",
    "Channel",
    "Exchange",
    "Failure",
    "FakeDiscord",
    "Guild",
    "Interaction",
    "Message",
    "RequestRecord",
    "Revision",
    "Role",
    "StoredFile",
    "User",
]
