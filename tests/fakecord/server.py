"""The aiohttp application: the route table (REST under /api/v10, the CDN, the gateway) and
the middleware that gives every API answer Discord's shape: latency, bot-token auth, planned
faults (`fail_next`), per-bucket rate limits with X-RateLimit-* headers, and JSON errors
`{"message", "code"}`."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiohttp import web

from .payloads import ApiError, json_response
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
    """A planned fault: the next `count` requests matching `method route` get `status`."""

    method: str | None
    route: str
    status: int
    retry_after: float
    count: int

    def matches(self, method: str, route: str) -> bool:
        return self.route == route and self.method in (None, method)


@dataclass(frozen=True)
class RequestRecord:
    """One REST request as the emulator answered it (`route` is the template, e.g.
    `/channels/{channel_id}/messages`)."""

    method: str
    route: str
    path: str
    status: int
    at: float


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
    app[LIMITS] = _RateLimits(*hub.rate_limit)
    rest = Rest(hub)
    hooks = InteractionRoutes(hub)
    app.add_routes(
        [
            web.get("/", hub.gateway.handle),
            web.get("/resume", hub.gateway.handle),
            web.get("/attachments/{channel_id}/{file_id}/{filename}", rest.cdn),
            web.get("/media/attachments/{channel_id}/{file_id}/{filename}", rest.cdn),
        ]
    )
    for method, path, name in ROUTES:
        handler = getattr(rest, name, None) or getattr(hooks, name)
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


def _json_error(status: int, code: int, message: str, **extra: Any) -> web.Response:
    return json_response({"message": message, "code": code, **extra}, status=status)


def _too_many(retry_after: float, headers: dict[str, str]) -> web.Response:
    body = {"message": "You are being rate limited.", "retry_after": retry_after, "global": False}
    headers = headers | {
        "Retry-After": str(math.ceil(retry_after)),
        "X-RateLimit-Remaining": "0",
        "X-RateLimit-Scope": "user",
        "Via": "1.1 google",
    }
    return json_response(body, status=429, headers=headers)


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
        response = json_response(err.body(), status=err.status)
    except web.HTTPException as err:
        response = _json_error(err.status, 0, f"{err.status}: {err.reason}")
    except Exception as err:
        # An emulator bug: answer 400 (a 500 would make discord.py retry for half a minute).
        log.exception("fakecord failed on %s %s", request.method, route)
        response = _json_error(400, 0, f"fakecord bug: {err!r}")
    response.headers.update(headers)
    return response
