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
    discord.guild            the default guild; roles @everyone (view/send/send in threads/embed/
                             attach/read history/react/use commands), "Admin" (ADMINISTRATOR),
                             "Bot" (the bot's role, same as @everyone); channels #general, #art
    discord.channel          #general of that guild
    discord.owner            the guild owner and application owner (admin)
    discord.bot_user         the bot's user (its id is the application id)
    discord.token            the bot token to give the client (anything else gets 401 / 4004)
    discord.application_id
    add_user(name, admin=False, guilds=None) -> User       member of all guilds by default;
                             admin=True gives the Admin role (guild_permissions.administrator)
    add_guild(name, upload_limit=10 MiB) -> Guild           dispatched as GUILD_CREATE
    add_thread(channel, name, owner=None) -> Channel        a public thread (type 11) in
                             `channel`, dispatched as THREAD_CREATE; post/slash/click there
                             like anywhere; it follows its parent's overwrites
    set_upload_limit(guild, nbytes)   bigger files get 413 {"code": 40005}; discord.py's
                             Guild.filesize_limit still says the tier's 10 MiB (so a prefix command
                             only learns of it from the 413), interactions carry the real value
                             in attachment_size_limit (Interaction.filesize_limit). Besides, all
                             files of one message together may not pass 25 MiB (413, 40005).

Permissions (computed as Discord does; bits exported here: VIEW_CHANNEL, SEND_MESSAGES,
SEND_MESSAGES_IN_THREADS, EMBED_LINKS, ATTACH_FILES, READ_MESSAGE_HISTORY, ADD_REACTIONS,
MANAGE_MESSAGES, USE_APPLICATION_COMMANDS, ADMINISTRATOR; or use discord.Permissions(...).value)
    set_permissions(channel, target, *, allow=0, deny=0)   the channel's overwrite for target: a
        User (member), a Role, or a Guild (its @everyone); allow=deny=0 removes it. Dispatched
        as CHANNEL_UPDATE, so discord.py's channel.permissions_for(guild.me) follows. (On a
        thread: ValueError; set its parent.)
    deny_bot(permissions, channel=None)   adds `permissions` to the bot's member overwrite in
        `channel` (default #general), e.g. deny_bot(ATTACH_FILES | READ_MESSAGE_HISTORY)
    set_role_permissions(role, permissions)   a role's guild-wide permissions (GUILD_ROLE_UPDATE)
    permissions_in(channel, user) -> int   what Discord computes: guild base from @everyone and
        the member's roles (owner and ADMINISTRATOR: everything), then the channel's overwrites
        for @everyone, the member's roles, the member; no VIEW_CHANNEL → nothing; without the
        right to send (SEND_MESSAGES, in threads SEND_MESSAGES_IN_THREADS) no files, embeds or
        mentions either.
    REST answers as Discord: no VIEW_CHANNEL → 403 50001 Missing Access on anything in the
    channel (and the bot gets no gateway events from it); message create without the right to
    send, with files without ATTACH_FILES, or with message_reference without
    READ_MESSAGE_HISTORY → 403 50013 Missing Permissions; GET messages without
    READ_MESSAGE_HISTORY → [] (GET one message → 50001); typing needs the right to send;
    reactions need READ_MESSAGE_HISTORY (and ADD_REACTIONS for a new emoji); deleting others'
    messages needs MANAGE_MESSAGES, editing them is never allowed (50005). Interactions carry
    `app_permissions` (the bot's) and the member's `permissions` in that channel
    (Interaction.app_permissions / .permissions); interaction responses and follow-ups are
    webhooks and need no channel permission.

Users act (each returns at once; the bot reacts over the gateway)
    await post(user, content, files=[(filename, bytes) | AttachmentSpec], channel=None,
               reply_to=None) -> Message
        MESSAGE_CREATE with attachments as Discord describes them (id, filename, size, url,
        proxy_url, content_type, width/height read from the image header, even for bombs),
        `member`, `mentions` (from <@id> in content), and for replies `message_reference` +
        `referenced_message`. Without the message-content intent the bot sees empty
        content/attachments unless it is mentioned, as on Discord.
    AttachmentSpec(filename, data=b"", lie_size=None, stream_bytes=None, url_host=None)
        for download-hardening tests: `lie_size` is the size the payload declares (e.g. 1000);
        `stream_bytes` makes the CDN stream that many bytes (`data` first, then zeros, chunked
        without Content-Length, generated as it goes: 200 MiB costs no memory); `url_host`
        makes `url` and `proxy_url` point at http://<url_host>/... (e.g. "evil.example").
        Each StoredFile counts `fetches` (CDN requests) and `bytes_served`, so a test can
        assert that `message.files[i].fetches == 0`.
    await slash(user, "stylize", options={"style": "udnie", "strength": 2.0},
                files={"photo": ("cat.png", png) | AttachmentSpec}, channel=None) -> Interaction
        INTERACTION_CREATE for a command the bot has synced (PUT .../commands, global or
        guild); options are typed and checked against the synced definition (choices,
        min/max, required) like the Discord client does; attachment options are uploaded and
        put in data.resolved.attachments. LookupError if the command was never synced.
        "group sub" names address subcommands.
    await autocomplete(user, "stylize", {"style": "sta"}, focused="style") -> list[choice]
    await click(user, message, custom_id) -> Interaction     a button on `message`
        (ValueError if no enabled button has that custom_id)
    await select(user, message, custom_id, ["value", ...]) -> Interaction   picks options of a
        string select (component type 3; data.values); ValueError unless they are distinct
        options and as many as its min_values..max_values
    await message_command(user, "Stylize", target_message) -> Interaction   right-click a
        message → Apps: command type 3, data.target_id and data.resolved.messages (the whole
        message, content included even without the message-content intent); the answer's
        interaction_metadata has target_message_id and the message type is 23
    await user_command(user, "Stylize avatar", target_user, channel=None) -> Interaction
        right-click a member → Apps: command type 2, data.resolved.users and .members (partial:
        no user, deaf, mute; with permissions); interaction_metadata.target_user
        Both need the context-menu command synced (LookupError otherwise); context-menu
        definitions have a 1-32 character name, no description, no options.
    add_user(..., avatar=png_bytes) gives the user an avatar hash; the CDN serves the picture
        at /avatars/{user_id}/{hash}.png (any ?size=), where discord.py's Asset URLs point
        while FakeDiscord runs; avatar_fetches: dict[user_id, count]
    await react(user, message, "👍")

Waiting and looking
    await wait_for(predicate, timeout=10.0)   re-runs the zero-argument predicate after every
        change (message created/edited/deleted, interaction answered, request served) and
        returns its first truthy value; TimeoutError names the latest messages.
    discord.messages: dict[id, Message] (all, including ephemeral and deleted ones)
    messages_in(channel=None), bot_messages(channel=None), replies_to(message)
    Message: id, jump_url, author (User), content, files (StoredFile: filename, data bytes, size,
        content_type, width, height, description, fetches, bytes_served), embeds, components
        (raw dicts, each with Discord's numeric `id`), custom_ids(), flags, ephemeral, nonce,
        reference (the Message replied to), deleted, revisions (the original then one
        Revision per edit), edits (revisions[1:]; each has content, embeds, components,
        files, flags, at)
    spec.Spec().interaction_violations(interaction.payload) checks a dispatched interaction
        (command/component types, target_id, values, resolved objects) against the spec's
        schemas.
    Interaction: callbacks (Callback: type 4/5/6/7/8/9, data, ephemeral), response (the
        first), responded, deferred, ephemeral, original (the response Message, or the
        clicked message for 6/7), followups, messages (original + follow-ups), choices
        (autocomplete), payload (what was dispatched)
    listen(callback)          callback(kind, message) for kind in "create", "edit", "delete"
    requests: list[RequestRecord(method, route, path, status, at)]   every REST call; `route`
        is a template such as "/channels/{channel_id}/messages"; status 0 = connection reset
    FakeDiscord(record=True) → discord.exchanges: list[Exchange(method, route, path, query,
        request, files, status, response, headers)]: every REST request with its JSON body
        (multipart: payload_json, and the number of files) and answer (JSON body, X-RateLimit
        headers). `fakecord.spec.Spec().violations(exchange) -> list[str]` checks one against
        Discord's OpenAPI spec (tests/data/discord/, with its README's tolerances).
    peak_in_flight: dict[bucket, int]   the most requests of one rate-limit bucket that were
        in flight at once; a channel's message bucket is ("messages", str(channel.id)) (with
        latency > 0, overlapping requests are sure to show)
    gateway_ops: list[str]    "IDENTIFY", "RESUME", "REQUEST_GUILD_MEMBERS", ...
    typing: dict[channel_id, count]

Rate limits: Discord's budget by default (FakeDiscord(rate_limit=DISCORD))
    Budget(messages=(5, 5.0), webhooks=(5, 2.0), routes=(50, 1.0), global_limit=(50, 1.0),
           reactions=(1, 1.0))
        messages: one bucket per channel shared by POST, PATCH and DELETE on
        /channels/{id}/messages[/{id}] (one X-RateLimit-Bucket for all three);
        reactions: one bucket per channel shared by the bot's PUT and DELETE
        .../reactions/{emoji}/@me on any message there (Discord advertises 1 per second, and
        discord.py follows the headers);
        webhooks: one bucket per interaction token (follow-ups, @original GET/PATCH/DELETE);
        routes: one bucket per route and major parameter for the rest (interaction callbacks
        too: they never spend the channel's bucket); global_limit: every request of the bot
        token except interaction callbacks and webhooks, 429 with "global": true,
        X-RateLimit-Global: true and X-RateLimit-Scope: global. None = unlimited.
        Every answer, 4xx included (injected ones too), carries X-RateLimit-Limit, -Remaining,
        -Reset, -Reset-After and -Bucket; a per-bucket 429 says X-RateLimit-Scope: user. A 429
        body is Discord's: {"message", "code": 0, "retry_after", "global"}.
    RELAXED = Budget(messages=(50, 1.0), webhooks=(50, 1.0), routes=(50, 1.0),
                     global_limit=None, reactions=(50, 1.0))   for a test that needs speed:
        FakeDiscord(rate_limit=RELAXED), or `discord.rate_limit = RELAXED` at any time
        (a bare tuple (n, window) is every bucket n per window, without the global limit).

Exactly once
    A message create with `nonce` and `enforce_nonce: true` (discord.py sends both, with its
    own random nonce per send() call when none is given) that repeats a nonce the bot used in
    that channel within 5 minutes answers 200 with the message already created (same id) and
    creates nothing. The created message carries its `nonce`.

Faults
    fail_next("POST /channels/{channel_id}/messages", status=429, retry_after=0.5, count=1,
              *, after_commit=False, reset=False)
        also 413 (40005 Request entity too large), 500, or any status; the method is optional;
        webhook routes are "/webhooks/{application_id}/{token}" and
        "/webhooks/{application_id}/{token}/messages/{message_id}", the interaction callback
        "/interactions/{interaction_id}/{token}/callback".
        after_commit=True: the request is carried out (the message created and dispatched)
        and then answered with the error, as when Discord creates a message and answers 500
        (discord.py retries a 500 itself, with the same nonce).
        reset=True: the connection is closed without an HTTP answer (the client raises
        aiohttp.ServerDisconnectedError, a ClientConnectionError; discord.py does not retry);
        with after_commit=True, after carrying the request out.
    await drop_gateway(code=4000, down_for=0.0)   close the websocket with a resumable code;
        events dispatched while down (down_for s) are replayed when the client RESUMEs
    request_reconnect()       opcode 7; the client reconnects and resumes
    FakeDiscord(upload_limit=10 MiB, latency=0.0, *, heartbeat_interval=41.25,
                interaction_deadline=3.0, interaction_token_lifetime=900.0,
                rate_limit=DISCORD, record=False, bot_name="stylebot",
                privileged_intents=MEMBERS | PRESENCES | MESSAGE_CONTENT)
        latency delays every REST answer and gateway frame; an interaction not answered
        within interaction_deadline s gets 404 10062 "Unknown interaction" (as on Discord),
        and follow-ups or @original edits after interaction_token_lifetime s get 401 50027
        "Invalid Webhook Token" (a job longer than 15 minutes must edit another way);
        privileged_intents are those "enabled in the developer portal": IDENTIFY asking for
        another privileged intent is closed with 4014 (discord.PrivilegedIntentsRequired).

Behaviour worth knowing
    Messages the bot sends (REST or interaction responses, unless ephemeral) come back to it
    as MESSAGE_CREATE, edits as MESSAGE_UPDATE, deletions as MESSAGE_DELETE. A deferred
    response (type 5) is a "thinking" message; the first follow-up or @original edit fills
    it. Payload checks return Discord's errors: empty message 50006, content over 2000,
    embed limits, over 5 action rows, custom_id over 100 characters or duplicated, a string
    select without 1-25 options or with bad min/max values or not alone in its row, unknown
    reply target, ephemeral outside interactions (all 400 50035 unless said otherwise).
    The callback's `?with_response` answer has a `resource` only for types 4 and 7.
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
