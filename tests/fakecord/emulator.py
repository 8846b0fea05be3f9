"""`FakeDiscord`: the emulator's state, its test API, and the events it dispatches.

See the package docstring (`tests/fakecord/__init__.py`) for how tests use it.
"""

from __future__ import annotations

import asyncio
import base64
import re
import secrets
import socket
from collections.abc import Callable
from typing import Any, TypeVar

import discord.asset
import discord.gateway
import discord.http
import yarl
from aiohttp import web

from . import interactions as ix
from .gateway import MESSAGE_CONTENT_INTENT, PRIVILEGED_INTENTS, Gateway
from .server import DISCORD, ROUTES, Budget, Exchange, Failure, RequestRecord, build_app
from .state import (
    ADMINISTRATOR,
    MEMBER_PERMISSIONS,
    PUBLIC_THREAD,
    VIEW_CHANNEL,
    AttachmentSpec,
    Channel,
    Guild,
    Member,
    Message,
    Overwrite,
    Role,
    StoredFile,
    User,
    iso_now,
    snowflake,
)

MiB = 1024 * 1024
GUILDS_INTENT = 1 << 0
GUILD_MEMBERS_INTENT = 1 << 1
GUILD_MESSAGES_INTENT = 1 << 9
GUILD_MESSAGE_REACTIONS_INTENT = 1 << 10
_MENTION = re.compile(r"<@!?(\d+)>")

T = TypeVar("T")
Listener = Callable[[str, Message], None]
FileSpec = tuple[str, bytes]


class FakeDiscord:
    """A local Discord (REST + gateway) for the real discord.py client. Use `async with`."""

    def __init__(
        self,
        upload_limit: int = 10 * MiB,
        latency: float = 0.0,
        *,
        heartbeat_interval: float = 41.25,
        interaction_deadline: float = 3.0,
        interaction_token_lifetime: float = 15 * 60,
        rate_limit: Budget | tuple[int, float] = DISCORD,
        record: bool = False,
        bot_name: str = "stylebot",
        privileged_intents: int = PRIVILEGED_INTENTS,
    ) -> None:
        self.latency = latency
        self.privileged_intents = privileged_intents
        self.interaction_deadline = interaction_deadline
        self.interaction_token_lifetime = interaction_token_lifetime
        self.rate_limit = rate_limit
        self.exchanges: list[Exchange] | None = [] if record else None
        self.nonces: dict[tuple[int, str], tuple[Message, float]] = {}
        self.application_id = snowflake()
        self.bot_user = User(self.application_id, bot_name, bot=True)
        encoded_id = base64.b64encode(str(self.application_id).encode()).decode().rstrip("=")
        self.token = f"{encoded_id}.{secrets.token_urlsafe(4)}.{secrets.token_urlsafe(27)}"
        self.owner = User(snowflake(), "owner")
        self.users: dict[int, User] = {u.id: u for u in (self.bot_user, self.owner)}
        self.guilds: dict[int, Guild] = {}
        self.channels: dict[int, Channel] = {}
        self.messages: dict[int, Message] = {}
        self.files: dict[int, StoredFile] = {}
        self.interactions: dict[int, ix.Interaction] = {}
        self.commands: dict[int | None, list[dict[str, Any]]] = {}
        self.requests: list[RequestRecord] = []
        self.gateway_ops: list[str] = []
        self.typing: dict[int, int] = {}
        self.failures: list[Failure] = []
        self.gateway = Gateway(self, heartbeat_interval_ms=int(heartbeat_interval * 1000))
        self._listeners: list[Listener] = []
        self._changed = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._saved: tuple[str, yarl.URL, str] | None = None
        self.avatar_fetches: dict[int, int] = {}
        # Requests of one rate-limit bucket (e.g. ("messages", "<channel id>")) in flight now,
        # and the most there ever were at once.
        self.in_flight: dict[tuple[str, str], int] = {}
        self.peak_in_flight: dict[tuple[str, str], int] = {}
        self.port = 0
        self.guild = self.add_guild("stylebot test server", upload_limit=upload_limit)
        self.channel = self.guild.channels[0]

    # ---- lifecycle -------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def gateway_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/"

    async def start(self) -> None:
        """Serve on an ephemeral loopback port and point discord.py at it (API, gateway and the
        CDN of avatars)."""
        self._runner = web.AppRunner(build_app(self), access_log=None)
        await self._runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        await web.SockSite(self._runner, sock).start()
        self._saved = (
            discord.http.Route.BASE,
            discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY,
            discord.asset.Asset.BASE,
        )
        discord.http.Route.BASE = f"{self.url}/api/v10"
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(self.gateway_url)
        discord.asset.Asset.BASE = self.url

    async def stop(self) -> None:
        """Restore discord.py's real endpoints and shut the server down."""
        if self._saved is not None:
            (
                discord.http.Route.BASE,
                discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY,
                discord.asset.Asset.BASE,
            ) = self._saved
            self._saved = None
        await self.gateway.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeDiscord:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ---- world building --------------------------------------------------------------------

    def add_guild(self, name: str, *, upload_limit: int = 10 * MiB) -> Guild:
        """A new guild with @everyone, Admin and Bot roles, #general and #art, the owner and the
        bot as members, and every user added so far. Dispatched to connected clients."""
        gid = snowflake()
        roles = [
            Role(gid, "@everyone", MEMBER_PERMISSIONS, 0),
            Role(snowflake(), "Admin", ADMINISTRATOR | MEMBER_PERMISSIONS, 2),
            Role(snowflake(), "Bot", MEMBER_PERMISSIONS, 1),
        ]
        guild = Guild(gid, name, self.owner.id, upload_limit, roles=roles)
        for position, channel_name in enumerate(("general", "art")):
            channel = Channel(snowflake(), channel_name, gid, position)
            guild.channels.append(channel)
            self.channels[channel.id] = channel
        guild.members[self.owner.id] = Member(self.owner, [roles[1].id])
        guild.members[self.bot_user.id] = Member(self.bot_user, [roles[2].id])
        for user in self.users.values():
            if user.id not in guild.members:
                guild.members[user.id] = Member(user, [roles[1].id] if user.admin else [])
        self.guilds[gid] = guild
        self.gateway.dispatch("GUILD_CREATE", guild.create_payload())
        return guild

    def add_user(
        self,
        name: str,
        admin: bool = False,
        guilds: list[Guild] | None = None,
        *,
        avatar: bytes | None = None,
    ) -> User:
        """A user who is a member of `guilds` (default: all); `admin` gives the Admin role;
        `avatar` (image bytes) is served by the CDN at the URL discord.py builds for it."""
        user = User(snowflake(), name, admin=admin, avatar=avatar)
        self.users[user.id] = user
        for guild in guilds if guilds is not None else self.guilds.values():
            member = Member(user, [guild.roles[1].id] if admin else [])
            guild.members[user.id] = member
            data = member.payload() | {"guild_id": str(guild.id)}
            self.gateway.dispatch("GUILD_MEMBER_ADD", data, GUILD_MEMBERS_INTENT)
        return user

    def set_upload_limit(self, guild: Guild, limit: int) -> None:
        """Uploads bigger than `limit` bytes to `guild` get 413 (code 40005), as on Discord.

        discord.py's `Guild.filesize_limit` keeps reporting the premium tier's limit, so a
        prefix command learns of the lower limit from the 413; interactions carry it in
        `attachment_size_limit`."""
        guild.upload_limit = limit

    # ---- permissions -----------------------------------------------------------------------

    def permissions_in(self, channel: Channel, user: User) -> int:
        """`user`'s permissions in `channel`, computed as Discord does (0 if not a member)."""
        guild = self.guilds[channel.guild_id]
        return guild.permissions_in(channel, user.id) if user.id in guild.members else 0

    def set_permissions(
        self, channel: Channel, target: User | Role | Guild, *, allow: int = 0, deny: int = 0
    ) -> None:
        """Set `channel`'s overwrite for `target`: a member, a role, or the guild (its @everyone
        role); allow=deny=0 removes it. Dispatched as CHANNEL_UPDATE. A thread has no overwrites
        of its own: set them on its parent."""
        if channel.is_thread:
            raise ValueError("a thread follows its parent's overwrites; set them there")
        if isinstance(target, Guild):
            target = target.everyone
        kind = 1 if isinstance(target, User) else 0
        if not allow and not deny:
            channel.overwrites.pop(target.id, None)
        else:
            channel.overwrites[target.id] = Overwrite(target.id, kind, allow, deny)
        self.gateway.dispatch("CHANNEL_UPDATE", channel.payload(), GUILDS_INTENT)
        self.changed()

    def deny_bot(self, permissions: int, channel: Channel | None = None) -> None:
        """Deny the bot `permissions` (e.g. ATTACH_FILES | READ_MESSAGE_HISTORY) in `channel`
        (default `self.channel`) through its member overwrite, keeping what that denied."""
        channel = channel or self.channel
        current = channel.overwrites.get(self.bot_user.id, Overwrite(self.bot_user.id, 1))
        self.set_permissions(
            channel,
            self.bot_user,
            allow=current.allow & ~permissions,
            deny=current.deny | permissions,
        )

    def set_role_permissions(self, role: Role, permissions: int) -> None:
        """Change a role's guild-wide permissions; dispatched as GUILD_ROLE_UPDATE."""
        role.permissions = permissions
        guild = next(g for g in self.guilds.values() if role in g.roles)
        data = {"guild_id": str(guild.id), "role": role.payload()}
        self.gateway.dispatch("GUILD_ROLE_UPDATE", data, GUILDS_INTENT)
        self.changed()

    def add_thread(self, channel: Channel, name: str, owner: User | None = None) -> Channel:
        """A public thread (type 11) in `channel`, started by `owner` (default the guild owner);
        dispatched as THREAD_CREATE. Posting there needs SEND_MESSAGES_IN_THREADS."""
        guild = self.guilds[channel.guild_id]
        thread = Channel(
            snowflake(),
            name,
            guild.id,
            type=PUBLIC_THREAD,
            parent=channel,
            owner_id=(owner or self.owner).id,
        )
        guild.threads.append(thread)
        self.channels[thread.id] = thread
        self.gateway.dispatch(
            "THREAD_CREATE", thread.payload() | {"newly_created": True}, GUILDS_INTENT
        )
        self.changed()
        return thread

    def fail_next(
        self,
        route: str,
        status: int = 429,
        retry_after: float = 0.5,
        count: int = 1,
        *,
        after_commit: bool = False,
        reset: bool = False,
    ) -> None:
        """Answer the next `count` requests on `route` with `status` (429, 413, 500, ...).

        `route` is a template with an optional method, e.g.
        `"POST /channels/{channel_id}/messages"` or `"/webhooks/{application_id}/{token}"`.
        `after_commit`: carry the request out first (create and dispatch the message), then
        answer the error. `reset`: close the connection without an HTTP answer (the client
        raises aiohttp.ServerDisconnectedError); with `after_commit`, after carrying it out."""
        method, _, path = route.rpartition(" ")
        known = {(m, p) for m, p, _ in ROUTES}
        if (method and (method, path) not in known) or path not in {p for _, p in known}:
            raise ValueError(f"fakecord serves no route {route!r}; see server.ROUTES")
        self.failures.append(
            Failure(method or None, path, status, retry_after, count, after_commit, reset)
        )

    async def drop_gateway(self, code: int = 4000, *, down_for: float = 0.0) -> None:
        """Close the gateway with a resumable `code`; refuse new connections for `down_for` s,
        so events dispatched meanwhile are only seen when the client RESUMEs (replay)."""
        await self.gateway.drop(code, down_for)

    def request_reconnect(self) -> None:
        """Send opcode 7 RECONNECT, as Discord does; the client reconnects and resumes."""
        self.gateway.reconnect()

    def listen(self, callback: Listener) -> None:
        """Call `callback(kind, message)` for every "create", "edit" and "delete"."""
        self._listeners.append(callback)

    # ---- what users do ---------------------------------------------------------------------

    async def post(
        self,
        user: User,
        content: str = "",
        files: list[FileSpec | AttachmentSpec] | None = None,
        channel: Channel | None = None,
        reply_to: Message | None = None,
    ) -> Message:
        """`user` posts in `channel` (default `self.channel`), with attachments and an optional
        reply; dispatched as MESSAGE_CREATE. Returns the stored message."""
        channel = channel or self.channel
        stored = [self._attach(spec, channel) for spec in files or []]
        message = Message(
            id=snowflake(),
            channel_id=channel.id,
            guild_id=channel.guild_id,
            author=user,
            content=content,
            files=stored,
            type=19 if reply_to is not None else 0,
            reference=reply_to,
            mentions=self.mentions_in(content),
        )
        self.add_message(message)
        return message

    async def slash(
        self,
        user: User,
        name: str,
        options: dict[str, Any] | None = None,
        files: dict[str, FileSpec | AttachmentSpec] | None = None,
        channel: Channel | None = None,
    ) -> ix.Interaction:
        """`user` runs `/name` (e.g. "stylize", or "group sub") with option values and attachment
        options; the command must have been synced by the bot. Returns the Interaction."""
        channel = channel or self.channel
        stored = {
            key: self._attach(spec, channel, ephemeral=True) for key, spec in (files or {}).items()
        }
        return self._command_interaction(
            ix.APPLICATION_COMMAND, user, name, options or {}, stored, channel, focused=None
        )

    async def autocomplete(
        self,
        user: User,
        name: str,
        options: dict[str, Any],
        focused: str,
        timeout: float = 5.0,
        channel: Channel | None = None,
    ) -> list[dict[str, Any]]:
        """`user` types into option `focused` of `/name`; returns the bot's choices."""
        interaction = self._command_interaction(
            ix.AUTOCOMPLETE, user, name, options, {}, channel or self.channel, focused=focused
        )
        await self.wait_for(lambda: interaction.responded, timeout)
        return interaction.choices or []

    async def click(self, user: User, message: Message, custom_id: str) -> ix.Interaction:
        """`user` clicks the button `custom_id` on `message` (it must be there, enabled)."""
        self._component(message, custom_id, ix.BUTTON)
        data = {"custom_id": custom_id, "component_type": ix.BUTTON}
        return self._component_interaction(user, message, data)

    async def select(
        self, user: User, message: Message, custom_id: str, values: list[str]
    ) -> ix.Interaction:
        """`user` picks `values` in the string select `custom_id` on `message`: they must be
        among its options, as many as its min_values..max_values allow (ValueError if not)."""
        select = self._component(message, custom_id, ix.STRING_SELECT)
        offered = [option["value"] for option in select["options"]]
        if any(v not in offered for v in values) or len(set(values)) != len(values):
            raise ValueError(f"{values} are not distinct options of {custom_id!r}: {offered}")
        if not select["min_values"] <= len(values) <= select["max_values"]:
            raise ValueError(
                f"{custom_id!r} takes {select['min_values']}..{select['max_values']} values"
            )
        data = {"custom_id": custom_id, "component_type": ix.STRING_SELECT, "values": values}
        return self._component_interaction(user, message, data)

    async def message_command(
        self, user: User, name: str, target: Message, channel: Channel | None = None
    ) -> ix.Interaction:
        """`user` runs the message command `name` (right-click → Apps → name) on `target`, in
        `target`'s channel. Discord sends the whole message in data.resolved.messages, content
        included even without the message-content intent."""
        channel = channel or self.channels[target.channel_id]
        shown = self.message_payload(target, intents=MESSAGE_CONTENT_INTENT)
        resolved = {"messages": {str(target.id): shown}}
        return self._menu_interaction(user, name, ix.MESSAGE_COMMAND, target.id, resolved, channel)

    async def user_command(
        self, user: User, name: str, target: User, channel: Channel | None = None
    ) -> ix.Interaction:
        """`user` runs the user command `name` (right-click a member → Apps → name) on `target`
        in `channel` (default `self.channel`): data.resolved carries the user and, for a member,
        the member (without user, deaf and mute, with their permissions in the channel)."""
        channel = channel or self.channel
        guild = self.guilds[channel.guild_id]
        resolved: dict[str, dict[str, Any]] = {"users": {str(target.id): target.payload()}}
        member = guild.members.get(target.id)
        if member is not None:
            partial = member.payload(with_user=False)
            del partial["deaf"], partial["mute"]
            partial["permissions"] = str(guild.permissions_in(channel, target.id))
            resolved["members"] = {str(target.id): partial}
        return self._menu_interaction(user, name, ix.USER_COMMAND, target.id, resolved, channel)

    async def react(self, user: User, message: Message, emoji: str) -> None:
        """`user` adds a unicode `emoji` reaction to `message`."""
        message.reactions.setdefault(emoji, set()).add(user.id)
        guild = self.guilds[message.guild_id]
        data = {
            "user_id": str(user.id),
            "channel_id": str(message.channel_id),
            "message_id": str(message.id),
            "guild_id": str(guild.id),
            "member": guild.members[user.id].payload(),
            "emoji": {"id": None, "name": emoji},
            "message_author_id": str(message.author.id),
            "burst": False,
            "burst_colors": [],
            "type": 0,
        }
        self.gateway.dispatch("MESSAGE_REACTION_ADD", data, GUILD_MESSAGE_REACTIONS_INTENT)
        self.changed()

    # ---- waiting and looking ---------------------------------------------------------------

    async def wait_for(self, predicate: Callable[[], T], timeout: float = 10.0) -> T:
        """Re-evaluate `predicate()` on every change until it returns something truthy; return
        that. Raises TimeoutError (naming the latest messages) after `timeout` s."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            changed = self._changed
            result = predicate()
            if result:
                return result
            remaining = deadline - loop.time()
            if remaining <= 0:
                recent = [
                    f"{m.author.name}: {m.content[:80]!r} ({len(m.files)} files)"
                    for m in list(self.messages.values())[-5:]
                ]
                raise TimeoutError(f"wait_for timed out after {timeout}s; last messages: {recent}")
            try:
                await asyncio.wait_for(changed.wait(), min(remaining, 0.25))
            except TimeoutError:
                continue

    def messages_in(self, channel: Channel | None = None) -> list[Message]:
        """Messages (not deleted) in `channel` (default `self.channel`), oldest first."""
        cid = (channel or self.channel).id
        return [m for m in self.messages.values() if m.channel_id == cid and not m.deleted]

    def bot_messages(self, channel: Channel | None = None) -> list[Message]:
        """Messages the bot authored in `channel` (default: any), ephemeral ones included."""
        return [
            m
            for m in self.messages.values()
            if m.author.id == self.bot_user.id
            and not m.deleted
            and (channel is None or m.channel_id == channel.id)
        ]

    def replies_to(self, message: Message) -> list[Message]:
        """Messages (not deleted) that reply to `message`."""
        return [m for m in self.messages.values() if m.reference is message and not m.deleted]

    # ---- hooks for the REST server and the gateway -----------------------------------------

    @property
    def intents(self) -> int:
        """The intents of the latest gateway session (what redaction of content follows)."""
        sessions = list(self.gateway.sessions.values())
        return sessions[-1].intents if sessions else MESSAGE_CONTENT_INTENT

    def gateway_op(self, name: str) -> None:
        self.gateway_ops.append(name)
        self.changed()

    def ready_payload(self, session_id: str) -> dict[str, Any]:
        user = self.bot_user_payload() | {"email": None}
        return {
            "v": 10,
            "user": user,
            "guilds": [{"id": str(g), "unavailable": True} for g in self.guilds],
            "session_id": session_id,
            "session_type": "normal",
            "resume_gateway_url": f"ws://127.0.0.1:{self.port}/resume",
            "application": {"id": str(self.application_id), "flags": (1 << 19) | (1 << 15)},
            "private_channels": [],
            "relationships": [],
            "presences": [],
            "user_settings": {},
            "geo_ordered_rtc_regions": [],
            "_trace": ["fakecord"],
        }

    def bot_user_payload(self) -> dict[str, Any]:
        """The bot's own user, as `GET /users/@me` and READY give it."""
        return self.bot_user.payload() | {"verified": True, "mfa_enabled": False, "locale": "en-US"}

    def guild_payloads(self) -> list[dict[str, Any]]:
        return [g.create_payload() for g in self.guilds.values()]

    def member_chunk(self, guild_id: int, nonce: str | None) -> dict[str, Any]:
        guild = self.guilds[guild_id]
        data: dict[str, Any] = {
            "guild_id": str(guild_id),
            "members": [m.payload() for m in guild.members.values()],
            "chunk_index": 0,
            "chunk_count": 1,
            "not_found": [],
        }
        if nonce is not None:
            data["nonce"] = nonce
        return data

    def application_payload(self) -> dict[str, Any]:
        return {
            "id": str(self.application_id),
            "name": self.bot_user.name,
            "icon": None,
            "description": "",
            "summary": "",
            "type": None,
            "bot_public": True,
            "bot_require_code_grant": False,
            "verify_key": secrets.token_hex(32),
            "owner": self.owner.payload(),
            "team": None,
            "flags": (1 << 19) | (1 << 15),
            "bot": self.bot_user.payload(),
            "rpc_origins": [],
            "tags": [],
            "approximate_guild_count": len(self.guilds),
            "redirect_uris": [],
            "interactions_endpoint_url": None,
            "role_connections_verification_url": None,
            "flags_new": str((1 << 19) | (1 << 15)),
            "approximate_user_install_count": 0,
            "approximate_user_authorization_count": 0,
            "explicit_content_filter": 0,
            "eligible_oauth2_scopes": ["bot", "applications.commands"],
        }

    def message_payload(self, message: Message, *, intents: int | None = None) -> dict[str, Any]:
        """`message` as Discord sends it to this bot: content redacted without the
        message-content intent unless the bot is mentioned or wrote it."""
        guild = self.guilds[message.guild_id]
        member = None if message.webhook_id else guild.members.get(message.author.id)
        data = message.payload(self.url, member=member)
        for entry, user in zip(data["mentions"], message.mentions, strict=True):
            if user.id in guild.members:
                entry["member"] = guild.members[user.id].payload(with_user=False)
        intents = self.intents if intents is None else intents
        if not intents & MESSAGE_CONTENT_INTENT:
            _redact(data, self.bot_user)
            if data.get("referenced_message"):
                _redact(data["referenced_message"], self.bot_user)
        return data

    def edited(self, message: Message) -> None:
        """Record an edit made through REST: new revision, MESSAGE_UPDATE, listeners."""
        message.edited_timestamp = iso_now()
        message.snapshot()
        if not message.ephemeral and self.bot_sees(message.channel_id):
            self.gateway.dispatch(
                "MESSAGE_UPDATE",
                lambda intents: self.message_payload(message, intents=intents),
                GUILD_MESSAGES_INTENT,
            )
        self._emit("edit", message)

    def deleted(self, message: Message) -> None:
        message.deleted = True
        if not message.ephemeral and self.bot_sees(message.channel_id):
            data = {
                "id": str(message.id),
                "channel_id": str(message.channel_id),
                "guild_id": str(message.guild_id),
            }
            self.gateway.dispatch("MESSAGE_DELETE", data, GUILD_MESSAGES_INTENT)
        self._emit("delete", message)

    def record_request(self, record: RequestRecord) -> None:
        self.requests.append(record)
        self.changed()

    def take_failure(self, method: str, route: str) -> Failure | None:
        for failure in self.failures:
            if failure.matches(method, route):
                failure.count -= 1
                if failure.count <= 0:
                    self.failures.remove(failure)
                return failure
        return None

    def store_upload(self, filename: str, data: bytes, channel_id: int, **extra: Any) -> StoredFile:
        stored = StoredFile.create(filename, data, channel_id, **extra)
        self.files[stored.id] = stored
        return stored

    def _attach(
        self, spec: FileSpec | AttachmentSpec, channel: Channel, *, ephemeral: bool = False
    ) -> StoredFile:
        if not isinstance(spec, AttachmentSpec):
            spec = AttachmentSpec(*spec)
        return self.store_upload(
            spec.filename,
            spec.data,
            channel.id,
            ephemeral=ephemeral,
            lie_size=spec.lie_size,
            stream_bytes=spec.stream_bytes,
            url_host=spec.url_host,
        )

    def mentions_in(self, content: str) -> list[User]:
        ids = dict.fromkeys(int(m) for m in _MENTION.findall(content))
        return [self.users[i] for i in ids if i in self.users]

    def bot_sees(self, channel_id: int) -> bool:
        """Whether the bot may view the channel (Discord sends it no events from others)."""
        channel = self.channels[channel_id]
        guild = self.guilds[channel.guild_id]
        return bool(guild.permissions_in(channel, self.bot_user.id) & VIEW_CHANNEL)

    def add_message(self, message: Message) -> None:
        self.messages[message.id] = message
        if not message.ephemeral and self.bot_sees(message.channel_id):
            self.gateway.dispatch(
                "MESSAGE_CREATE",
                lambda intents: self.message_payload(message, intents=intents),
                GUILD_MESSAGES_INTENT,
            )
        self._emit("create", message)

    def changed(self) -> None:
        """Wake every `wait_for` to re-check its predicate."""
        self._changed.set()
        self._changed = asyncio.Event()

    # ---- internals -------------------------------------------------------------------------

    def _emit(self, kind: str, message: Message) -> None:
        for callback in self._listeners:
            callback(kind, message)
        self.changed()

    def _new_interaction(
        self, kind: int, user: User, channel: Channel, data: dict[str, Any]
    ) -> ix.Interaction:
        guild = self.guilds[channel.guild_id]
        if user.id not in guild.members:
            raise ValueError(f"{user.name} is not a member of {guild.name}")
        iid = snowflake()
        token = f"aW50ZXJhY3Rpb246{iid}:{secrets.token_urlsafe(48)}"
        allowed = str(guild.permissions_in(channel, user.id))
        member = guild.members[user.id].payload() | {"permissions": allowed}
        payload: dict[str, Any] = {
            "id": str(iid),
            "application_id": str(self.application_id),
            "type": kind,
            "data": data,
            "guild_id": str(guild.id),
            "guild": {"id": str(guild.id), "locale": "en-US", "features": []},
            "channel_id": str(channel.id),
            "channel": channel.payload() | {"permissions": allowed},
            "member": member,
            "token": token,
            "version": 1,
            "app_permissions": str(guild.permissions_in(channel, self.bot_user.id)),
            "locale": "en-US",
            "guild_locale": "en-US",
            "entitlements": [],
            "authorizing_integration_owners": {"0": str(guild.id)},
            "context": 0,
            "attachment_size_limit": guild.upload_limit,
        }
        interaction = ix.Interaction(iid, token, kind, user, channel, payload)
        self.interactions[iid] = interaction
        return interaction

    def _command_interaction(
        self,
        kind: int,
        user: User,
        name: str,
        values: dict[str, Any],
        files: dict[str, StoredFile],
        channel: Channel,
        focused: str | None,
    ) -> ix.Interaction:
        command = self._synced(name, ix.CHAT_INPUT, channel)
        resolved: dict[str, dict[str, Any]] = {}
        options = ix.build_options(
            command,
            name.split()[1:],
            values,
            files,
            focused=focused,
            cdn_base=self.url,
            resolved=resolved,
        )
        data: dict[str, Any] = {
            "id": command["id"],
            "name": command["name"],
            "type": 1,
            "options": options,
        }
        if resolved:
            data["resolved"] = resolved
        if command.get("guild_id"):
            data["guild_id"] = command["guild_id"]
        interaction = self._new_interaction(kind, user, channel, data)
        self._dispatch_interaction(interaction)
        return interaction

    def _synced(self, name: str, kind: int, channel: Channel) -> dict[str, Any]:
        """The command of type `kind` the bot synced for `channel`'s guild or globally."""
        command = ix.find_command(self.commands.get(channel.guild_id, []), name, kind)
        command = command or ix.find_command(self.commands.get(None, []), name, kind)
        if command is None:
            raise LookupError(
                f"{name!r} (command type {kind}) is not registered for this application; the "
                f"bot must sync its command tree first (await bot.tree.sync())"
            )
        return command

    def _menu_interaction(
        self,
        user: User,
        name: str,
        kind: int,
        target_id: int,
        resolved: dict[str, dict[str, Any]],
        channel: Channel,
    ) -> ix.Interaction:
        command = self._synced(name, kind, channel)
        data: dict[str, Any] = {
            "id": command["id"],
            "name": command["name"],
            "type": kind,
            "target_id": str(target_id),
            "resolved": resolved,
        }
        if command.get("guild_id"):
            data["guild_id"] = command["guild_id"]
        interaction = self._new_interaction(ix.APPLICATION_COMMAND, user, channel, data)
        self._dispatch_interaction(interaction)
        return interaction

    def _component(self, message: Message, custom_id: str, kind: int) -> dict[str, Any]:
        found = [c for c in message.enabled_components() if c["custom_id"] == custom_id]
        if not found or found[0].get("type") != kind:
            raise ValueError(
                f"no enabled component {custom_id!r} of type {kind} on message {message.id}"
            )
        return found[0]

    def _component_interaction(
        self, user: User, message: Message, data: dict[str, Any]
    ) -> ix.Interaction:
        channel = self.channels[message.channel_id]
        interaction = self._new_interaction(ix.MESSAGE_COMPONENT, user, channel, data)
        interaction.message = message
        interaction.payload["message"] = self.message_payload(message)
        self._dispatch_interaction(interaction)
        return interaction

    def _dispatch_interaction(self, interaction: ix.Interaction) -> None:
        self.gateway.dispatch("INTERACTION_CREATE", interaction.payload)
        self.changed()


def _redact(data: dict[str, Any], bot: User) -> None:
    mentioned = any(m["id"] == str(bot.id) for m in data.get("mentions", []))
    if mentioned or data["author"]["id"] == str(bot.id):
        return
    data.update(content="", embeds=[], attachments=[], components=[])
