"""The aiohttp application: the route table (REST under /api/v10, the CDN, the gateway) and
the middleware that gives every API answer Discord's shape: latency, bot-token auth, Discord's
rate limits (a `Budget`: per-channel message bucket, per-token webhook bucket, per-route
buckets, the global limit) with X-RateLimit-* headers on every answer, planned faults
(`fail_next`: an error status, after carrying the request out or not, or a connection reset),
JSON errors `{"message", "code"}`, and the opt-in recorder of whole exchanges."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import web

from .payloads import BODY, ApiError, json_response, read_body
from .rest import Rest
from .webhooks import InteractionRoutes

if TYPE_CHECKING:
    from .emulator import FakeDiscord

log = logging.getLogger(__name__)

API = "/api/v10"
HUB: web.AppKey[FakeDiscord] = web.AppKey("fakediscord")
LIMITS: web.AppKey[_RateLimits] = web.AppKey("ratelimits")
_UNAUTHENTICATED = ("/interactions/", "/webhooks/")
_MAJOR = ("channel_id", "guild_id", "interaction_id", "token")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Failure:
    """A planned fault: the next `count` requests matching `method route` get `status` (or, with
    `reset`, a connection closed without an answer). With `after_commit` the request is carried
    out first (the message is created and dispatched) and only its answer is lost."""

    method: str | None
    route: str
    status: int
    retry_after: float
    count: int
    after_commit: bool = False
    reset: bool = False

    def matches(self, method: str, route: str) -> bool:
        return self.route == route and self.method in (None, method)


@dataclass(frozen=True)
class Budget:
    """Discord's rate limits as (requests, window in s); None means unlimited.

    `messages`: one bucket per channel shared by POST/PATCH/DELETE on its messages;
    `reactions`: one bucket per channel shared by the bot's own reactions (PUT and DELETE
    .../reactions/{emoji}/@me on any message; Discord advertises 1 per second); `webhooks`:
    one bucket per interaction token (follow-ups and @original); `routes`: one bucket per route
    and major parameter for everything else (interaction callbacks included); `global_limit`:
    all requests of the bot token except interaction callbacks and webhooks."""

    messages: tuple[int, float] | None = (5, 5.0)
    webhooks: tuple[int, float] | None = (5, 2.0)
    routes: tuple[int, float] | None = (50, 1.0)
    global_limit: tuple[int, float] | None = (50, 1.0)
    reactions: tuple[int, float] | None = (1, 1.0)

    @classmethod
    def of(cls, value: Budget | tuple[int, float]) -> Budget:
        """A Budget as is; a bare (requests, window) applies to every bucket, without global."""
        if isinstance(value, Budget):
            return value
        return cls(messages=value, webhooks=value, routes=value, global_limit=None, reactions=value)


DISCORD = Budget()
RELAXED = Budget(
    messages=(50, 1.0), webhooks=(50, 1.0), routes=(50, 1.0), global_limit=None, reactions=(50, 1.0)
)


@dataclass(frozen=True)
class RequestRecord:
    """One REST request as the emulator answered it (`route` is the template, e.g.
    `/channels/{channel_id}/messages`)."""

    method: str
    route: str
    path: str
    status: int
    at: float


@dataclass(frozen=True)
class Exchange:
    """One REST request and its answer, bodies included (JSON, or a multipart payload_json)."""

    method: str
    route: str  # fakecord's template, e.g. /channels/{channel_id}/messages
    path: str  # under /api/v10, e.g. /channels/123/messages
    query: dict[str, str]
    request: Any  # the JSON body; None when there was none
    files: int  # file parts of a multipart body
    status: int
    response: Any  # the JSON answer; None when the body was empty
    headers: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        query = "?" + "&".join(f"{k}={v}" for k, v in self.query.items()) if self.query else ""
        return f"{self.method} {self.path}{query} -> {self.status}"


ROUTES: list[tuple[str, str, str]] = [
    # (method, template under /api/v10, handler: a method of Rest or InteractionRoutes)
    ("GET", "/users/@me", "me"),
    ("GET", "/users/{user_id}", "user"),
    ("GET", "/gateway", "gateway"),
    ("GET", "/gateway/bot", "gateway"),
    ("GET", "/oauth2/applications/@me", "application"),
    ("GET", "/applications/@me", "application"),
    ("GET", "/applications/{application_id}/commands", "get_commands"),
    ("PUT", "/applications/{application_id}/commands", "put_commands"),
    ("POST", "/applications/{application_id}/commands", "post_command"),
    ("DELETE", "/applications/{application_id}/commands/{command_id}", "delete_command"),
    ("GET", "/applications/{application_id}/guilds/{guild_id}/commands", "get_commands"),
    ("PUT", "/applications/{application_id}/guilds/{guild_id}/commands", "put_commands"),
    ("POST", "/applications/{application_id}/guilds/{guild_id}/commands", "post_command"),
    (
        "DELETE",
        "/applications/{application_id}/guilds/{guild_id}/commands/{command_id}",
        "delete_command",
    ),
    ("GET", "/channels/{channel_id}", "channel"),
    ("GET", "/channels/{channel_id}/messages", "history"),
    ("POST", "/channels/{channel_id}/messages", "create_message"),
    ("GET", "/channels/{channel_id}/messages/{message_id}", "get_message"),
    ("PATCH", "/channels/{channel_id}/messages/{message_id}", "edit_message"),
    ("DELETE", "/channels/{channel_id}/messages/{message_id}", "delete_message"),
    ("POST", "/channels/{channel_id}/typing", "typing"),
    ("PUT", "/channels/{channel_id}/messages/{message_id}/reactions/{emoji}/@me", "add_reaction"),
    (
        "DELETE",
        "/channels/{channel_id}/messages/{message_id}/reactions/{emoji}/@me",
        "remove_reaction",
    ),
    ("GET", "/guilds/{guild_id}", "guild"),
    ("GET", "/guilds/{guild_id}/channels", "guild_channels"),
    ("GET", "/guilds/{guild_id}/roles", "guild_roles"),
    ("GET", "/guilds/{guild_id}/members/{user_id}", "member"),
    ("POST", "/interactions/{interaction_id}/{token}/callback", "callback"),
    ("POST", "/webhooks/{application_id}/{token}", "followup"),
    ("GET", "/webhooks/{application_id}/{token}/messages/{message_id}", "webhook_get"),
    ("PATCH", "/webhooks/{application_id}/{token}/messages/{message_id}", "webhook_edit"),
    ("DELETE", "/webhooks/{application_id}/{token}/messages/{message_id}", "webhook_delete"),
]


def build_app(hub: FakeDiscord) -> web.Application:
    app = web.Application(client_max_size=512 * 1024 * 1024, middlewares=[_api_middleware])
    app[HUB] = hub
    app[LIMITS] = _RateLimits(hub)
    rest = Rest(hub)
    hooks = InteractionRoutes(hub)
    app.add_routes(
        [
            web.get("/", hub.gateway.handle),
            web.get("/resume", hub.gateway.handle),
            web.get("/attachments/{channel_id}/{file_id}/{filename}", rest.cdn),
            web.get("/media/attachments/{channel_id}/{file_id}/{filename}", rest.cdn),
            web.get("/avatars/{user_id}/{filename}", rest.avatar),
        ]
    )
    for method, path, name in ROUTES:
        handler = getattr(rest, name, None) or getattr(hooks, name)
        app.router.add_route(method, API + path, handler)
    return app


@dataclass
class _Bucket:
    limit: int
    window: float
    reset_at: float
    remaining: int
    hash: str


_MESSAGE_ROUTES = (
    "/channels/{channel_id}/messages",
    "/channels/{channel_id}/messages/{message_id}",
)
_REACTION_ROUTE = "/channels/{channel_id}/messages/{message_id}/reactions/{emoji}/@me"


class _RateLimits:
    """Discord-style buckets, following the hub's `rate_limit` (which a test may change)."""

    def __init__(self, hub: FakeDiscord) -> None:
        self.hub = hub
        self.buckets: dict[tuple[str, str], _Bucket] = {}
        self.global_bucket: _Bucket | None = None

    def classify(
        self, method: str, route: str, match: dict[str, str]
    ) -> tuple[tuple[str, str], tuple[int, float] | None, str]:
        """The bucket key, its limit and its advertised hash for a request."""
        budget = Budget.of(self.hub.rate_limit)
        if route in _MESSAGE_ROUTES and method in ("POST", "PATCH", "DELETE"):
            return ("messages", match["channel_id"]), budget.messages, "messages"
        if route == _REACTION_ROUTE:
            return ("reactions", match["channel_id"]), budget.reactions, "reactions"
        if route.startswith("/webhooks/"):
            return ("webhook", match["token"]), budget.webhooks, "webhook"
        key = f"{method} {route}"
        major = ":".join(match.get(k, "") for k in _MAJOR)
        return (key, major), budget.routes, key

    def _bucket(
        self, key: tuple[str, str], limit: tuple[int, float], name: str, now: float
    ) -> _Bucket:
        bucket = self.buckets.get(key)
        if bucket is None or now >= bucket.reset_at or (bucket.limit, bucket.window) != limit:
            digest = hashlib.sha1(name.encode()).hexdigest()[:16]
            bucket = _Bucket(limit[0], limit[1], now + limit[1], limit[0], digest)
            self.buckets[key] = bucket
        return bucket

    def take_global(self, route: str) -> float:
        """0 when a request may pass the global limit, else the seconds to wait."""
        limit = Budget.of(self.hub.rate_limit).global_limit
        if limit is None or route.startswith(_UNAUTHENTICATED):
            return 0.0
        now = time.time()
        bucket = self.global_bucket
        if bucket is None or now >= bucket.reset_at:
            bucket = self.global_bucket = _Bucket(limit[0], limit[1], now + limit[1], limit[0], "")
        if bucket.remaining <= 0:
            return max(0.001, bucket.reset_at - now)
        bucket.remaining -= 1
        return 0.0

    def take(
        self, key: tuple[str, str], limit: tuple[int, float] | None, name: str
    ) -> tuple[dict[str, str], float]:
        """Spend one request from the bucket: its headers, and 0 or the seconds to wait."""
        if limit is None:
            return {}, 0.0
        now = time.time()
        bucket = self._bucket(key, limit, name, now)
        wait = 0.0
        if bucket.remaining > 0:
            bucket.remaining -= 1
        else:
            wait = max(0.001, bucket.reset_at - now)
        return self.headers(bucket, now), wait

    def peek(self, key: tuple[str, str], limit: tuple[int, float] | None, name: str) -> dict:
        """The bucket's headers without spending from it."""
        if limit is None:
            return {}
        now = time.time()
        return self.headers(self._bucket(key, limit, name, now), now)

    @staticmethod
    def headers(bucket: _Bucket, now: float) -> dict[str, str]:
        return {
            "X-RateLimit-Limit": str(bucket.limit),
            "X-RateLimit-Remaining": str(bucket.remaining),
            "X-RateLimit-Reset": f"{bucket.reset_at:.3f}",
            "X-RateLimit-Reset-After": f"{max(0.0, bucket.reset_at - now):.3f}",
            "X-RateLimit-Bucket": bucket.hash,
        }


def _json_error(
    status: int, code: int, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    return json_response({"message": message, "code": code}, status=status, headers=headers)


def _too_many(retry_after: float, headers: dict[str, str], *, scope: str = "user") -> web.Response:
    glob = scope == "global"
    body = {
        "message": "You are being rate limited.",
        "code": 0,  # Discord's spec requires `code` in the rate-limit body too (0: general)
        "retry_after": retry_after,
        "global": glob,
    }
    headers = headers | {
        "Retry-After": str(math.ceil(retry_after)),
        "X-RateLimit-Remaining": "0",
        "X-RateLimit-Scope": scope,
        "Via": "1.1 google",
    }
    if glob:
        headers["X-RateLimit-Global"] = "true"
    return json_response(body, status=429, headers=headers)


def _planned(status: int, retry_after: float, headers: dict[str, str]) -> web.Response:
    if status == 429:
        return _too_many(retry_after, headers)
    if status == 413:
        return _json_error(413, 40005, "Request entity too large", headers)
    if status >= 500:
        return _json_error(status, 0, f"{status}: Internal Server Error", headers)
    return _json_error(status, 0, f"{status}: planned failure", headers)


class _Reset(Exception):
    """Raised to drop the connection without an HTTP answer."""


@web.middleware
async def _api_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if not request.path.startswith(API + "/"):
        return await handler(request)
    hub = request.app[HUB]
    resource = request.match_info.route.resource
    route = resource.canonical[len(API) :] if resource is not None else request.path[len(API) :]
    key, _, _ = request.app[LIMITS].classify(request.method, route, dict(request.match_info))
    in_flight = hub.in_flight[key] = hub.in_flight.get(key, 0) + 1
    hub.peak_in_flight[key] = max(hub.peak_in_flight.get(key, 0), in_flight)
    try:
        if hub.latency:
            await asyncio.sleep(hub.latency)
        response = await _answer(request, handler, hub, route)
    except _Reset:
        hub.record_request(RequestRecord(request.method, route, request.path, 0, time.monotonic()))
        assert request.transport is not None
        request.transport.abort()
        raise asyncio.CancelledError() from None
    finally:
        hub.in_flight[key] -= 1
    hub.record_request(
        RequestRecord(request.method, route, request.path, response.status, time.monotonic())
    )
    if hub.exchanges is not None:
        hub.exchanges.append(await _exchange(request, route, response))
    return response


async def _answer(
    request: web.Request, handler: Handler, hub: FakeDiscord, route: str
) -> web.StreamResponse:
    limits = request.app[LIMITS]
    key, limit, name = limits.classify(request.method, route, dict(request.match_info))
    if not route.startswith(_UNAUTHENTICATED) and (
        request.headers.get("Authorization") != f"Bot {hub.token}"
    ):
        await _read_quietly(request)
        return _json_error(401, 0, "401: Unauthorized", limits.peek(key, limit, name))
    wait = limits.take_global(route)
    if wait:
        await _read_quietly(request)
        return _too_many(wait, limits.peek(key, limit, name), scope="global")
    headers, wait = limits.take(key, limit, name)
    if wait:
        await _read_quietly(request)
        return _too_many(wait, headers)
    failure = hub.take_failure(request.method, route)
    if failure is not None and not failure.after_commit:
        await _read_quietly(request)
        if failure.reset:
            raise _Reset()
        return _planned(failure.status, failure.retry_after, headers)
    try:
        response = await handler(request)
    except ApiError as err:
        response = json_response(err.body(), status=err.status)
    except web.HTTPException as err:
        response = _json_error(err.status, 0, f"{err.status}: {err.reason}")
    except Exception as err:
        # An emulator bug: answer 400 (a 500 would make discord.py retry for half a minute).
        log.exception("fakecord failed on %s %s", request.method, route)
        response = _json_error(400, 0, f"fakecord bug: {err!r}")
    if failure is not None:  # carried out; only the answer is lost
        if failure.reset:
            raise _Reset()
        return _planned(failure.status, failure.retry_after, headers)
    response.headers.update(headers)
    return response


async def _read_quietly(request: web.Request) -> None:
    """Consume the body of a request that is refused (and keep it for the recorder)."""
    with contextlib.suppress(ApiError, ValueError):
        await read_body(request)


async def _exchange(request: web.Request, route: str, response: web.StreamResponse) -> Exchange:
    body = request.get(BODY)
    if body is None and request.body_exists and request.content_type == "application/json":
        raw = await request.read()
        body = (json.loads(raw), 0) if raw else None
    answer = None
    if isinstance(response, web.Response) and response.body:
        answer = json.loads(bytes(response.body))  # type: ignore[arg-type]
    return Exchange(
        method=request.method,
        route=route,
        path=request.path[len(API) :],
        query=dict(request.query),
        request=body[0] if body else None,
        files=body[1] if body else 0,
        status=response.status,
        response=answer,
        headers={k: v for k, v in response.headers.items() if k.lower().startswith("x-rate")},
    )
