"""REST routes for the bot's identity, application commands, guilds, channels and messages,
and the CDN that serves uploaded attachments."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from aiohttp import web

from .payloads import (
    ApiError,
    Upload,
    check_command,
    invalid_form,
    json_response,
    message_fields,
    read_body,
)
from .state import (
    ADD_REACTIONS,
    ATTACH_FILES,
    EPHEMERAL,
    LOADING,
    MANAGE_MESSAGES,
    READ_MESSAGE_HISTORY,
    VIEW_CHANNEL,
    Channel,
    Guild,
    Message,
    snowflake,
)

NONCE_WINDOW = 5 * 60.0  # s a nonce with enforce_nonce is remembered for (Discord: "a few minutes")
CDN_CHUNK = 64 * 1024

if TYPE_CHECKING:
    from .emulator import FakeDiscord


def apply_edit(
    hub: FakeDiscord, message: Message, payload: dict[str, Any], uploads: list[Upload]
) -> dict[str, Any]:
    """Apply an edit (PATCH body and new files) to `message`, record it, and return its JSON."""
    guild = hub.guilds[message.guild_id]
    channel = hub.channels[message.channel_id]
    fields = message_fields(hub, payload, uploads, guild, channel, existing=message, partial=True)
    for key, value in fields.items():
        setattr(message, key, value)
    if "content" in fields:
        message.mentions = hub.mentions_in(message.content)
    message.flags &= ~LOADING
    hub.edited(message)
    return hub.message_payload(message)


class Rest:
    def __init__(self, hub: FakeDiscord) -> None:
        self.hub = hub

    # ---- identity, gateway, application ----------------------------------------------------

    async def me(self, request: web.Request) -> web.Response:
        return json_response(self.hub.bot_user_payload())

    async def user(self, request: web.Request) -> web.Response:
        user = self.hub.users.get(int(request.match_info["user_id"]))
        if user is None:
            raise ApiError(404, 10013, "Unknown User")
        return json_response(user.payload())

    async def gateway(self, request: web.Request) -> web.Response:
        body: dict[str, Any] = {"url": f"ws://127.0.0.1:{self.hub.port}"}
        if request.path.endswith("/bot"):
            body["shards"] = 1
            body["session_start_limit"] = {
                "total": 1000,
                "remaining": 999,
                "reset_after": 86_400_000,
                "max_concurrency": 1,
            }
        return json_response(body)

    async def application(self, request: web.Request) -> web.Response:
        return json_response(self.hub.application_payload())

    # ---- application commands --------------------------------------------------------------

    def _command_scope(self, request: web.Request) -> int | None:
        if int(request.match_info["application_id"]) != self.hub.application_id:
            raise ApiError(403, 50001, "Missing Access")
        guild_id = request.match_info.get("guild_id")
        if guild_id is None:
            return None
        if int(guild_id) not in self.hub.guilds:
            raise ApiError(404, 10004, "Unknown Guild")
        return int(guild_id)

    async def get_commands(self, request: web.Request) -> web.Response:
        return json_response(self.hub.commands.get(self._command_scope(request), []))

    async def put_commands(self, request: web.Request) -> web.Response:
        scope = self._command_scope(request)
        body = await request.json()
        if not isinstance(body, list):
            raise invalid_form("_root", "expected a list")
        previous = {c["name"]: c for c in self.hub.commands.get(scope, [])}
        stored = [self._command(scope, c, previous.get(c.get("name", ""))) for c in body]
        names = [c["name"] for c in stored]
        if len(set(names)) != len(names):
            raise invalid_form("_root", "duplicate names")
        self.hub.commands[scope] = stored
        self.hub.changed()
        return json_response(stored)

    async def post_command(self, request: web.Request) -> web.Response:
        scope = self._command_scope(request)
        current = self.hub.commands.setdefault(scope, [])
        body = await request.json()
        previous = next((c for c in current if c["name"] == body.get("name")), None)
        stored = self._command(scope, body, previous)
        if previous is not None:
            current.remove(previous)
        current.append(stored)
        self.hub.changed()
        return json_response(stored, status=200 if previous else 201)

    async def delete_command(self, request: web.Request) -> web.Response:
        current = self.hub.commands.get(self._command_scope(request), [])
        found = [c for c in current if c["id"] == request.match_info["command_id"]]
        if not found:
            raise ApiError(404, 10063, "Unknown application command")
        current.remove(found[0])
        return web.Response(status=204)

    def _command(
        self, scope: int | None, body: dict[str, Any], previous: dict[str, Any] | None
    ) -> dict[str, Any]:
        check_command(body)
        return (
            body
            | {
                "id": previous["id"] if previous else str(snowflake()),
                "application_id": str(self.hub.application_id),
                "version": str(snowflake()),
                "type": body.get("type", 1),
                "description": body.get("description") or "",  # "" for context menus
                "default_member_permissions": body.get("default_member_permissions"),
                "nsfw": body.get("nsfw", False),
                "options": body.get("options", []),
                # discord.py sends null for "the default"; Discord answers the default.
                "integration_types": body.get("integration_types") or [0],
                "contexts": body.get("contexts") or [0, 1, 2],
            }
            | ({"guild_id": str(scope)} if scope else {})
        )

    # ---- guilds and channels ---------------------------------------------------------------

    def _guild(self, request: web.Request) -> Guild:
        guild = self.hub.guilds.get(int(request.match_info["guild_id"]))
        if guild is None:
            raise ApiError(404, 10004, "Unknown Guild")
        return guild

    def _channel(self, request: web.Request) -> Channel:
        """The channel of the request, which the bot must be able to view (50001 otherwise)."""
        channel = self.hub.channels.get(int(request.match_info["channel_id"]))
        if channel is None:
            raise ApiError(404, 10003, "Unknown Channel")
        if not self._allowed(channel) & VIEW_CHANNEL:
            raise ApiError(403, 50001, "Missing Access")
        return channel

    def _allowed(self, channel: Channel) -> int:
        """The bot's permissions in `channel`."""
        return self.hub.permissions_in(channel, self.hub.bot_user)

    def _need(self, channel: Channel, permission: int) -> None:
        if not self._allowed(channel) & permission:
            raise ApiError(403, 50013, "Missing Permissions")

    def _message(self, request: web.Request) -> Message:
        channel = self._channel(request)
        message = self.hub.messages.get(int(request.match_info["message_id"]))
        if message is None or message.deleted or message.channel_id != channel.id:
            raise ApiError(404, 10008, "Unknown Message")
        return message

    async def guild(self, request: web.Request) -> web.Response:
        guild = self._guild(request)
        body = guild.payload() | {
            "approximate_member_count": len(guild.members),
            "approximate_presence_count": 0,
        }
        return json_response(body)

    async def guild_channels(self, request: web.Request) -> web.Response:  # threads not listed
        return json_response([c.payload() for c in self._guild(request).channels])

    async def guild_roles(self, request: web.Request) -> web.Response:
        return json_response([r.payload() for r in self._guild(request).roles])

    async def member(self, request: web.Request) -> web.Response:
        member = self._guild(request).members.get(int(request.match_info["user_id"]))
        if member is None:
            raise ApiError(404, 10007, "Unknown Member")
        return json_response(member.payload())

    async def channel(self, request: web.Request) -> web.Response:
        return json_response(self._channel(request).payload())

    # ---- messages --------------------------------------------------------------------------

    async def history(self, request: web.Request) -> web.Response:
        channel = self._channel(request)
        if not self._allowed(channel) & READ_MESSAGE_HISTORY:
            return json_response([])  # as Discord: an empty history, not an error
        limit = max(1, min(100, int(request.query.get("limit", 50))))
        before = int(request.query.get("before", 1 << 63))
        after = int(request.query.get("after", 0))
        found = [
            m
            for m in self.hub.messages.values()
            if m.channel_id == channel.id
            and not m.deleted
            and not m.ephemeral
            and after < m.id < before
        ]
        found.sort(key=lambda m: m.id, reverse=True)
        if "after" in request.query and "before" not in request.query:
            found = sorted(found, key=lambda m: m.id)[:limit][::-1]
        return json_response([self.hub.message_payload(m) for m in found[:limit]])

    async def create_message(self, request: web.Request) -> web.Response:
        channel = self._channel(request)
        payload, uploads = await read_body(request)
        self._need(channel, channel.send_permission)
        if uploads:
            self._need(channel, ATTACH_FILES)
        if payload.get("message_reference"):
            self._need(channel, READ_MESSAGE_HISTORY)
        nonce = payload.get("nonce")
        enforced = nonce is not None and payload.get("enforce_nonce") is True
        if enforced:
            earlier = self._nonce_message(channel, nonce)
            if earlier is not None:
                return json_response(self.hub.message_payload(earlier))
        guild = self.hub.guilds[channel.guild_id]
        fields = message_fields(self.hub, payload, uploads, guild, channel, existing=None)
        if fields["flags"] & EPHEMERAL:
            raise ApiError(400, 50035, "Invalid Form Body", {"flags": "ephemeral needs a webhook"})
        message = Message(
            id=snowflake(),
            channel_id=channel.id,
            guild_id=channel.guild_id,
            author=self.hub.bot_user,
            mentions=self.hub.mentions_in(fields["content"]),
            nonce=nonce,
            **fields,
        )
        if enforced:
            self.hub.nonces[(channel.id, str(nonce))] = (message, time.monotonic())
        self.hub.add_message(message)
        return json_response(self.hub.message_payload(message))

    def _nonce_message(self, channel: Channel, nonce: str | int) -> Message | None:
        """The bot's message created in `channel` with `nonce` (and enforce_nonce) within the
        last NONCE_WINDOW s, if it still exists."""
        found = self.hub.nonces.get((channel.id, str(nonce)))
        if found is None or time.monotonic() - found[1] > NONCE_WINDOW or found[0].deleted:
            return None
        return found[0]

    async def get_message(self, request: web.Request) -> web.Response:
        message = self._message(request)
        if not self._allowed(self.hub.channels[message.channel_id]) & READ_MESSAGE_HISTORY:
            raise ApiError(403, 50001, "Missing Access")
        return json_response(self.hub.message_payload(message))

    async def edit_message(self, request: web.Request) -> web.Response:
        message = self._message(request)
        if message.author.id != self.hub.bot_user.id:
            raise ApiError(403, 50005, "Cannot edit a message authored by another user")
        payload, uploads = await read_body(request)
        return json_response(apply_edit(self.hub, message, payload, uploads))

    async def delete_message(self, request: web.Request) -> web.Response:
        message = self._message(request)
        if message.author.id != self.hub.bot_user.id:
            self._need(self.hub.channels[message.channel_id], MANAGE_MESSAGES)
        self.hub.deleted(message)
        return web.Response(status=204)

    async def typing(self, request: web.Request) -> web.Response:
        channel = self._channel(request)
        self._need(channel, channel.send_permission)
        self.hub.typing[channel.id] = self.hub.typing.get(channel.id, 0) + 1
        self.hub.changed()
        return web.Response(status=204)

    async def add_reaction(self, request: web.Request) -> web.Response:
        message = self._message(request)
        emoji = request.match_info["emoji"]
        channel = self.hub.channels[message.channel_id]
        self._need(channel, READ_MESSAGE_HISTORY)
        if not message.reactions.get(emoji):
            self._need(channel, ADD_REACTIONS)
        message.reactions.setdefault(emoji, set()).add(self.hub.bot_user.id)
        self.hub.changed()
        return web.Response(status=204)

    async def remove_reaction(self, request: web.Request) -> web.Response:
        message = self._message(request)
        message.reactions.get(request.match_info["emoji"], set()).discard(self.hub.bot_user.id)
        self.hub.changed()
        return web.Response(status=204)

    async def avatar(self, request: web.Request) -> web.Response:
        """A user's avatar, as cdn.discordapp.com/avatars/{user_id}/{hash}.png?size=N serves it
        (any size: the picture as it was given)."""
        user = self.hub.users.get(int(request.match_info["user_id"]))
        stem, _, _ = request.match_info["filename"].partition(".")
        if user is None or user.avatar is None or stem != user.avatar_hash:
            raise web.HTTPNotFound()
        self.hub.avatar_fetches[user.id] = self.hub.avatar_fetches.get(user.id, 0) + 1
        self.hub.changed()
        return web.Response(body=user.avatar, headers={"Content-Type": "image/png"})

    async def cdn(self, request: web.Request) -> web.StreamResponse:
        stored = self.hub.files.get(int(request.match_info["file_id"]))
        if stored is None or stored.filename != request.match_info["filename"]:
            raise web.HTTPNotFound()
        stored.fetches += 1
        self.hub.changed()
        headers = {"Content-Type": stored.content_type or "application/octet-stream"}
        if stored.stream_bytes is None:
            stored.bytes_served += stored.size
            return web.Response(body=stored.data, headers=headers)
        response = web.StreamResponse(headers=headers)
        response.enable_chunked_encoding()
        await response.prepare(request)
        left = stored.stream_bytes
        head = stored.data[:left]
        zeros = bytes(CDN_CHUNK)
        try:
            if head:
                await response.write(head)
                stored.bytes_served += len(head)
                left -= len(head)
            while left > 0:
                chunk = zeros[: min(left, CDN_CHUNK)]
                await response.write(chunk)
                stored.bytes_served += len(chunk)
                left -= len(chunk)
            await response.write_eof()
        except (ConnectionError, RuntimeError):
            pass  # the client stopped reading: what a capped download does
        return response
