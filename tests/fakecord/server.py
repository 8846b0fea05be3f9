"""The REST API (under /api/v10), the CDN and the gateway route, as one aiohttp application.

Middleware gives every API answer Discord's shape: latency, bot-token auth, planned faults
(`fail_next`), per-bucket rate limits with X-RateLimit-* headers, and JSON errors
`{"message", "code"}`.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiohttp import web

from . import interactions as ix
from .emulator import RequestRecord
from .payloads import ApiError, Upload, check_command, message_fields
from .state import EPHEMERAL, LOADING, Channel, Guild, Message, snowflake

if TYPE_CHECKING:
    from .emulator import FakeDiscord

log = logging.getLogger(__name__)

API = "/api/v10"
HUB: web.AppKey[FakeDiscord] = web.AppKey("fakediscord")
LIMITS: web.AppKey[_RateLimits] = web.AppKey("ratelimits")
_FILE_FIELD = re.compile(r"files\[(\d+)\]|file(\d*)")
_UNAUTHENTICATED = ("/interactions/", "/webhooks/")
_MAJOR = ("channel_id", "guild_id", "interaction_id", "token")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def build_app(hub: FakeDiscord) -> web.Application:
    app = web.Application(client_max_size=512 * 1024 * 1024, middlewares=[_api_middleware])
    app[HUB] = hub
    app[LIMITS] = _RateLimits(*hub.rate_limit)
    rest = Rest(hub)
    app.add_routes(
        [
            web.get("/", hub.gateway.handle),
            web.get("/resume", hub.gateway.handle),
            web.get("/attachments/{channel_id}/{file_id}/{filename}", rest.cdn),
            web.get("/media/attachments/{channel_id}/{file_id}/{filename}", rest.cdn),
        ]
    )
    routes = [
        ("GET", "/users/@me", rest.me),
        ("GET", "/users/{user_id}", rest.user),
        ("GET", "/gateway", rest.gateway),
        ("GET", "/gateway/bot", rest.gateway),
        ("GET", "/oauth2/applications/@me", rest.application),
        ("GET", "/applications/@me", rest.application),
        ("GET", "/applications/{application_id}/commands", rest.get_commands),
        ("PUT", "/applications/{application_id}/commands", rest.put_commands),
        ("POST", "/applications/{application_id}/commands", rest.post_command),
        ("DELETE", "/applications/{application_id}/commands/{command_id}", rest.delete_command),
        ("GET", "/applications/{application_id}/guilds/{guild_id}/commands", rest.get_commands),
        ("PUT", "/applications/{application_id}/guilds/{guild_id}/commands", rest.put_commands),
        ("POST", "/applications/{application_id}/guilds/{guild_id}/commands", rest.post_command),
        (
            "DELETE",
            "/applications/{application_id}/guilds/{guild_id}/commands/{command_id}",
            rest.delete_command,
        ),
        ("GET", "/channels/{channel_id}", rest.channel),
        ("GET", "/channels/{channel_id}/messages", rest.history),
        ("POST", "/channels/{channel_id}/messages", rest.create_message),
        ("GET", "/channels/{channel_id}/messages/{message_id}", rest.get_message),
        ("PATCH", "/channels/{channel_id}/messages/{message_id}", rest.edit_message),
        ("DELETE", "/channels/{channel_id}/messages/{message_id}", rest.delete_message),
        ("POST", "/channels/{channel_id}/typing", rest.typing),
        (
            "PUT",
            "/channels/{channel_id}/messages/{message_id}/reactions/{emoji}/@me",
            rest.add_reaction,
        ),
        (
            "DELETE",
            "/channels/{channel_id}/messages/{message_id}/reactions/{emoji}/@me",
            rest.remove_reaction,
        ),
        ("GET", "/guilds/{guild_id}", rest.guild),
        ("GET", "/guilds/{guild_id}/channels", rest.guild_channels),
        ("GET", "/guilds/{guild_id}/roles", rest.guild_roles),
        ("GET", "/guilds/{guild_id}/members/{user_id}", rest.member),
        ("POST", "/interactions/{interaction_id}/{token}/callback", rest.callback),
        ("POST", "/webhooks/{application_id}/{token}", rest.followup),
        ("GET", "/webhooks/{application_id}/{token}/messages/{message_id}", rest.webhook_get),
        ("PATCH", "/webhooks/{application_id}/{token}/messages/{message_id}", rest.webhook_edit),
        (
            "DELETE",
            "/webhooks/{application_id}/{token}/messages/{message_id}",
            rest.webhook_delete,
        ),
    ]
    for method, path, handler in routes:
        app.router.add_route(method, API + path, handler)
    return app


@dataclass
class _Bucket:
    reset_at: float
    remaining: int


class _RateLimits:
    """Discord-style buckets: `limit` requests per `window` s per route and major parameter."""

    def __init__(self, limit: int, window: float) -> None:
        self.limit, self.window = limit, window
        self.buckets: dict[tuple[str, str], _Bucket] = {}

    def take(self, key: tuple[str, str]) -> _Bucket:
        now = time.time()
        bucket = self.buckets.get(key)
        if bucket is None or now >= bucket.reset_at:
            bucket = self.buckets[key] = _Bucket(now + self.window, self.limit)
        if bucket.remaining > 0:
            bucket.remaining -= 1
            return bucket
        raise _Limited(bucket)

    def headers(self, route_key: str, bucket: _Bucket) -> dict[str, str]:
        now = time.time()
        return {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(bucket.remaining),
            "X-RateLimit-Reset": f"{bucket.reset_at:.3f}",
            "X-RateLimit-Reset-After": f"{max(0.0, bucket.reset_at - now):.3f}",
            "X-RateLimit-Bucket": hashlib.sha1(route_key.encode()).hexdigest()[:16],
        }


class _Limited(Exception):
    def __init__(self, bucket: _Bucket) -> None:
        self.bucket = bucket


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """A JSON answer with Discord's exact `Content-Type: application/json` (no charset), which
    discord.py checks for by equality."""
    headers = {"Content-Type": "application/json"} | (headers or {})
    return web.Response(body=json.dumps(body).encode(), status=status, headers=headers)


def _json_error(status: int, code: int, message: str, **extra: Any) -> web.Response:
    return _json({"message": message, "code": code, **extra}, status=status)


def _too_many(retry_after: float, headers: dict[str, str]) -> web.Response:
    body = {"message": "You are being rate limited.", "retry_after": retry_after, "global": False}
    headers = headers | {
        "Retry-After": str(math.ceil(retry_after)),
        "X-RateLimit-Remaining": "0",
        "X-RateLimit-Scope": "user",
        "Via": "1.1 google",
    }
    return _json(body, status=429, headers=headers)


def _planned(status: int, retry_after: float, headers: dict[str, str]) -> web.Response:
    if status == 429:
        return _too_many(retry_after, headers)
    if status == 413:
        return _json_error(413, 40005, "Request entity too large")
    if status >= 500:
        return _json_error(status, 0, f"{status}: Internal Server Error")
    return _json_error(status, 0, f"{status}: planned failure")


@web.middleware
async def _api_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if not request.path.startswith(API + "/"):
        return await handler(request)
    hub = request.app[HUB]
    resource = request.match_info.route.resource
    route = resource.canonical[len(API) :] if resource is not None else request.path[len(API) :]
    if hub.latency:
        await asyncio.sleep(hub.latency)
    response = await _answer(request, handler, hub, route)
    hub.record_request(
        RequestRecord(request.method, route, request.path, response.status, time.monotonic())
    )
    return response


async def _answer(
    request: web.Request, handler: Handler, hub: FakeDiscord, route: str
) -> web.StreamResponse:
    if not route.startswith(_UNAUTHENTICATED) and (
        request.headers.get("Authorization") != f"Bot {hub.token}"
    ):
        return _json_error(401, 0, "401: Unauthorized")
    limits = request.app[LIMITS]
    route_key = f"{request.method} {route}"
    major = ":".join(request.match_info.get(k, "") for k in _MAJOR)
    try:
        bucket = limits.take((route_key, major))
    except _Limited as limited:
        headers = limits.headers(route_key, limited.bucket)
        return _too_many(max(0.0, limited.bucket.reset_at - time.time()), headers)
    headers = limits.headers(route_key, bucket)
    failure = hub.take_failure(request.method, route)
    if failure is not None:
        await request.read()
        return _planned(failure.status, failure.retry_after, headers)
    try:
        response = await handler(request)
    except ApiError as err:
        response = _json(err.body(), status=err.status)
    except web.HTTPException as err:
        response = _json_error(err.status, 0, f"{err.status}: {err.reason}")
    except Exception as err:
        # An emulator bug: answer 400 (a 500 would make discord.py retry for half a minute).
        log.exception("fakecord failed on %s %s", request.method, route)
        response = _json_error(400, 0, f"fakecord bug: {err!r}")
    response.headers.update(headers)
    return response


async def read_body(request: web.Request) -> tuple[dict[str, Any], list[Upload]]:
    """A JSON body, or multipart `payload_json` + `files[n]` parts."""
    if request.content_type.startswith("multipart/"):
        payload: dict[str, Any] = {}
        uploads: list[Upload] = []
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            name = part.name or ""  # type: ignore[union-attr]
            if name == "payload_json":
                payload = json.loads(await part.text())  # type: ignore[union-attr]
                continue
            match = _FILE_FIELD.fullmatch(name)
            if match is None:
                raise ApiError(400, 50035, "Invalid Form Body", {name: "unexpected form field"})
            index = int(match.group(1) or match.group(2) or 0)
            data = bytes(await part.read())  # type: ignore[union-attr]
            uploads.append(Upload(index, part.filename or "unknown", data))  # type: ignore[union-attr]
        return payload, uploads
    if not request.can_read_body:
        return {}, []
    try:
        body = await request.json()
    except ValueError as err:
        raise ApiError(400, 50109, "The request body contains invalid JSON.") from err
    return (body if isinstance(body, dict) else {"_": body}), []


class Rest:
    def __init__(self, hub: FakeDiscord) -> None:
        self.hub = hub

    # ---- identity, gateway, application ----------------------------------------------------

    async def me(self, request: web.Request) -> web.Response:
        return _json(self.hub.bot_user.payload() | {"verified": True})

    async def user(self, request: web.Request) -> web.Response:
        user = self.hub.users.get(int(request.match_info["user_id"]))
        if user is None:
            raise ApiError(404, 10013, "Unknown User")
        return _json(user.payload())

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
        return _json(body)

    async def application(self, request: web.Request) -> web.Response:
        return _json(self.hub.application_payload())

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
        return _json(self.hub.commands.get(self._command_scope(request), []))

    async def put_commands(self, request: web.Request) -> web.Response:
        scope = self._command_scope(request)
        body = await request.json()
        if not isinstance(body, list):
            raise ApiError(400, 50035, "Invalid Form Body", {"_errors": "expected a list"})
        previous = {c["name"]: c for c in self.hub.commands.get(scope, [])}
        stored = [self._command(scope, c, previous.get(c.get("name", ""))) for c in body]
        names = [c["name"] for c in stored]
        if len(set(names)) != len(names):
            raise ApiError(400, 50035, "Invalid Form Body", {"_errors": "duplicate names"})
        self.hub.commands[scope] = stored
        self.hub.changed()
        return _json(stored)

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
        return _json(stored, status=200 if previous else 201)

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
                "default_member_permissions": body.get("default_member_permissions"),
                "nsfw": body.get("nsfw", False),
                "options": body.get("options", []),
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
        channel = self.hub.channels.get(int(request.match_info["channel_id"]))
        if channel is None:
            raise ApiError(404, 10003, "Unknown Channel")
        return channel

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
        return _json(body)

    async def guild_channels(self, request: web.Request) -> web.Response:
        return _json([c.payload() for c in self._guild(request).channels])

    async def guild_roles(self, request: web.Request) -> web.Response:
        return _json([r.payload() for r in self._guild(request).roles])

    async def member(self, request: web.Request) -> web.Response:
        member = self._guild(request).members.get(int(request.match_info["user_id"]))
        if member is None:
            raise ApiError(404, 10007, "Unknown Member")
        return _json(member.payload())

    async def channel(self, request: web.Request) -> web.Response:
        return _json(self._channel(request).payload())

    # ---- messages --------------------------------------------------------------------------

    async def history(self, request: web.Request) -> web.Response:
        channel = self._channel(request)
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
        return _json([self.hub.message_payload(m) for m in found[:limit]])

    async def create_message(self, request: web.Request) -> web.Response:
        channel = self._channel(request)
        payload, uploads = await read_body(request)
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
            **fields,
        )
        self.hub.add_message(message)
        return _json(self.hub.message_payload(message))

    async def get_message(self, request: web.Request) -> web.Response:
        return _json(self.hub.message_payload(self._message(request)))

    async def edit_message(self, request: web.Request) -> web.Response:
        message = self._message(request)
        if message.author.id != self.hub.bot_user.id:
            raise ApiError(403, 50005, "Cannot edit a message authored by another user")
        payload, uploads = await read_body(request)
        return _json(self._edit(message, payload, uploads))

    def _edit(self, message: Message, payload: dict[str, Any], uploads: list[Upload]) -> Any:
        guild = self.hub.guilds[message.guild_id]
        channel = self.hub.channels[message.channel_id]
        fields = message_fields(
            self.hub, payload, uploads, guild, channel, existing=message, partial=True
        )
        for key, value in fields.items():
            setattr(message, key, value)
        if "content" in fields:
            message.mentions = self.hub.mentions_in(message.content)
        message.flags &= ~LOADING
        self.hub.edited(message)
        return self.hub.message_payload(message)

    async def delete_message(self, request: web.Request) -> web.Response:
        message = self._message(request)
        if message.author.id != self.hub.bot_user.id:
            raise ApiError(403, 50013, "Missing Permissions")
        self.hub.deleted(message)
        return web.Response(status=204)

    async def typing(self, request: web.Request) -> web.Response:
        channel = self._channel(request)
        self.hub.typing[channel.id] = self.hub.typing.get(channel.id, 0) + 1
        self.hub.changed()
        return web.Response(status=204)

    async def add_reaction(self, request: web.Request) -> web.Response:
        message = self._message(request)
        emoji = request.match_info["emoji"]
        message.reactions.setdefault(emoji, set()).add(self.hub.bot_user.id)
        self.hub.changed()
        return web.Response(status=204)

    async def remove_reaction(self, request: web.Request) -> web.Response:
        message = self._message(request)
        message.reactions.get(request.match_info["emoji"], set()).discard(self.hub.bot_user.id)
        self.hub.changed()
        return web.Response(status=204)

    async def cdn(self, request: web.Request) -> web.Response:
        stored = self.hub.files.get(int(request.match_info["file_id"]))
        if stored is None or stored.filename != request.match_info["filename"]:
            raise web.HTTPNotFound()
        headers = {"Content-Type": stored.content_type or "application/octet-stream"}
        return web.Response(body=stored.data, headers=headers)

    # ---- interactions and their webhooks ---------------------------------------------------

    def _interaction(self, token: str, *, answered: bool) -> ix.Interaction:
        iid = token.removeprefix("aW50ZXJhY3Rpb246").split(":", 1)[0]
        interaction = self.hub.interactions.get(int(iid)) if iid.isdigit() else None
        if interaction is None or interaction.token != token:
            raise ApiError(404, 10062 if not answered else 10015, "Unknown interaction")
        if interaction.expired(self.hub.interaction_deadline):
            raise ApiError(404, 10062, "Unknown interaction")
        if answered and not interaction.responded:
            raise ApiError(404, 10015, "Unknown Webhook")
        return interaction

    async def callback(self, request: web.Request) -> web.Response:
        interaction = self._interaction(request.match_info["token"], answered=False)
        if str(interaction.id) != request.match_info["interaction_id"]:
            raise ApiError(404, 10062, "Unknown interaction")
        body, uploads = await read_body(request)
        if interaction.responded:
            raise ApiError(400, 40060, "Interaction has already been acknowledged.")
        kind = int(body.get("type", 0))
        data = body.get("data") or {}
        allowed = {
            ix.APPLICATION_COMMAND: {4, 5, 9},
            ix.MESSAGE_COMPONENT: {4, 5, 6, 7, 9},
            ix.AUTOCOMPLETE: {8},
        }[interaction.type]
        if kind not in allowed:
            raise ApiError(400, 50035, "Invalid Form Body", {"type": f"{kind} is not valid here"})
        if kind == ix.AUTOCOMPLETE_RESULT and len(data.get("choices", [])) > 25:
            raise ApiError(400, 50035, "Invalid Form Body", {"choices": "at most 25"})
        if kind in (ix.CHANNEL_MESSAGE, ix.DEFERRED_CHANNEL_MESSAGE):
            interaction.original = self._response_message(interaction, data, uploads, kind)
        elif kind == ix.UPDATE_MESSAGE:
            assert interaction.message is not None
            self._edit(interaction.message, data, uploads)
            interaction.original = interaction.message
        elif kind == ix.DEFERRED_UPDATE_MESSAGE:
            interaction.original = interaction.message
        interaction.callbacks.append(ix.Callback(kind, data, time.monotonic()))
        self.hub.changed()
        if "with_response" not in request.query:
            return web.Response(status=204)
        original = interaction.original
        body_out: dict[str, Any] = {
            "interaction": {
                "id": str(interaction.id),
                "type": interaction.type,
                "response_message_loading": kind == ix.DEFERRED_CHANNEL_MESSAGE,
                "response_message_ephemeral": bool(original and original.ephemeral),
            },
            "resource": {"type": kind},
        }
        if original is not None and kind != ix.DEFERRED_UPDATE_MESSAGE:
            body_out["interaction"]["response_message_id"] = str(original.id)
            body_out["resource"]["message"] = self.hub.message_payload(original)
        return _json(body_out)

    def _response_message(
        self, interaction: ix.Interaction, data: dict[str, Any], uploads: list[Upload], kind: int
    ) -> Message:
        channel = interaction.channel
        guild = self.hub.guilds[channel.guild_id]
        if kind == ix.DEFERRED_CHANNEL_MESSAGE:
            fields: dict[str, Any] = {"flags": LOADING | (int(data.get("flags", 0)) & EPHEMERAL)}
        else:
            fields = message_fields(self.hub, data, uploads, guild, channel, existing=None)
            del fields["reference"], fields["type"]  # interaction answers are never replies
        metadata: dict[str, Any] = {
            "id": str(interaction.id),
            "type": interaction.type,
            "user": interaction.user.payload(),
            "authorizing_integration_owners": {"0": str(guild.id)},
        }
        if interaction.message is not None:
            metadata["interacted_message_id"] = str(interaction.message.id)
        else:
            metadata["name"] = interaction.payload["data"].get("name", "")
        message = Message(
            id=snowflake(),
            channel_id=channel.id,
            guild_id=channel.guild_id,
            author=self.hub.bot_user,
            type=20 if interaction.type == ix.APPLICATION_COMMAND else 0,
            webhook_id=self.hub.application_id,
            application_id=self.hub.application_id,
            interaction_metadata=metadata,
            **fields,
        )
        self.hub.add_message(message)
        return message

    def _webhook_interaction(self, request: web.Request) -> ix.Interaction:
        if int(request.match_info["application_id"]) != self.hub.application_id:
            raise ApiError(404, 10015, "Unknown Webhook")
        return self._interaction(request.match_info["token"], answered=True)

    def _webhook_message(self, request: web.Request) -> tuple[ix.Interaction, Message]:
        interaction = self._webhook_interaction(request)
        wanted = request.match_info["message_id"]
        if wanted == "@original":
            message = interaction.original
        else:
            message = next((m for m in interaction.messages if str(m.id) == wanted), None)
        if message is None or message.deleted:
            raise ApiError(404, 10008, "Unknown Message")
        return interaction, message

    async def followup(self, request: web.Request) -> web.Response:
        interaction = self._webhook_interaction(request)
        payload, uploads = await read_body(request)
        original = interaction.original
        if original is not None and original.flags & LOADING:
            # A deferred answer's first follow-up fills in the "thinking..." message.
            result = self._edit(original, payload, uploads)
            interaction.followups.append(original)
        else:
            message = self._response_message(interaction, payload, uploads, ix.CHANNEL_MESSAGE)
            message.type = 0
            interaction.followups.append(message)
            result = self.hub.message_payload(message)
        if request.query.get("wait", "false").lower() not in ("true", "1"):
            return web.Response(status=204)
        return _json(result)

    async def webhook_get(self, request: web.Request) -> web.Response:
        _, message = self._webhook_message(request)
        return _json(self.hub.message_payload(message))

    async def webhook_edit(self, request: web.Request) -> web.Response:
        _, message = self._webhook_message(request)
        payload, uploads = await read_body(request)
        return _json(self._edit(message, payload, uploads))

    async def webhook_delete(self, request: web.Request) -> web.Response:
        _, message = self._webhook_message(request)
        self.hub.deleted(message)
        return web.Response(status=204)
