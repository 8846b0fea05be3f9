"""Fitting a painted image into the upload limit, and sending it until it arrives once.

PNG first; if it is too big, high-quality JPEG then WebP; then the same picture smaller. A 413
(payload too large) re-encodes under a tighter budget. Server errors, rate limits discord.py gave
up on, connection resets and timeouts are retried with backoff; the caller sends with a fixed
nonce, so a retry of an upload Discord already took returns that message instead of a second
one. A refusal that will not change (403, another 4xx) or too many failures raise
`DeliveryFailed`, whose message says what failed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import aiohttp
import discord

from nst_engine import images
from nst_engine.api import StyleBotError

log = logging.getLogger(__name__)

T = TypeVar("T")

MIN_LONG_SIDE = 64
SHRINK_STEPS = (0.85, 0.7, 0.55, 0.4, 0.3, 0.2, 0.12)
RETRY_413 = 6
MESSAGE_TOTAL = 25 * 1024 * 1024  # Discord's cap on all files of one message together


class DeliveryFailed(StyleBotError):
    """The painting could not be posted; the message says why, for its owner."""


@dataclass(frozen=True)
class Encoded:
    """An encoded result ready to upload, with a short note on how it was made to fit."""

    data: bytes
    filename: str
    note: str = ""


@dataclass(frozen=True)
class Retry:
    """How often and how patiently a failing upload is tried again."""

    attempts: int = 5
    base: float = 1.0
    cap: float = 30.0

    def delay(self, failures: int) -> float:
        return min(self.cap, self.base * 2 ** (failures - 1))


def fit(png: bytes, limit: int, *, stem: str = "stylized") -> Encoded:
    """The best encoding of `png` whose size is at most `limit` bytes."""
    if len(png) <= limit:
        return Encoded(png, f"{stem}.png")
    img = images.decode(png, max_bytes=len(png) + 1)
    for fmt, quality, ext in (("JPEG", 95, "jpg"), ("WEBP", 90, "webp"), ("JPEG", 85, "jpg")):
        data = images.encode(img, fmt, quality=quality)
        if len(data) <= limit:
            return Encoded(data, f"{stem}.{ext}", f"{fmt} to fit the upload limit")
    long_side = max(img.size)
    for scale in SHRINK_STEPS:
        side = round(long_side * scale)
        if side < MIN_LONG_SIDE:
            break
        smaller = images.fit_long_side(img, side)
        data = images.encode(smaller, "JPEG", quality=85)
        if len(data) <= limit:
            w, h = smaller.size
            return Encoded(data, f"{stem}.jpg", f"JPEG at {w}×{h} to fit the upload limit")
    raise DeliveryFailed("the picture doesn't fit this channel's upload limit, even made small.")


def _transient(exc: BaseException) -> tuple[str, float] | None:
    """(what failed, seconds Discord asked to wait) for a failure worth retrying, else None."""
    if isinstance(exc, discord.RateLimited):
        return "rate limited", exc.retry_after
    if isinstance(exc, discord.Forbidden):
        return None
    if isinstance(exc, discord.HTTPException):
        if exc.status == 429 or exc.status >= 500:
            return f"HTTP {exc.status}", 0.0
        return None
    if isinstance(exc, aiohttp.ClientError | OSError | TimeoutError):
        return type(exc).__name__, 0.0
    return None


def _permanent(exc: BaseException) -> DeliveryFailed:
    if isinstance(exc, discord.Forbidden):
        return DeliveryFailed(
            "Discord refused the upload: I'm missing a permission here "
            "(Send Messages, Attach Files or Read Message History)."
        )
    if isinstance(exc, discord.HTTPException):
        return DeliveryFailed(f"Discord refused the upload (HTTP {exc.status}: {exc.text}).")
    return DeliveryFailed(f"the upload failed ({type(exc).__name__}).")


async def send_fitted(
    send: Callable[[Encoded, int], Awaitable[T]],
    png: bytes,
    limit: int,
    *,
    job_id: str = "-",
    retry: Retry = Retry(),
) -> tuple[T, Encoded]:
    """Send the result through `send(encoded, limit)` until it arrives or cannot.

    `limit` is the byte budget per file that `send` should also hold any other files to.
    """
    encoded = await asyncio.to_thread(fit, png, limit)
    too_large = failures = 0
    while True:
        try:
            return await send(encoded, limit), encoded
        except Exception as exc:
            if isinstance(exc, discord.HTTPException) and exc.status == 413:
                if too_large >= RETRY_413:
                    raise DeliveryFailed(
                        "the picture doesn't fit this channel's upload limit, even made small."
                    ) from exc
                too_large += 1
                limit = max(1, int(len(encoded.data) * 0.7))
                log.warning(
                    "job %s: upload of %d bytes refused (413); re-encoding under %d bytes",
                    job_id,
                    len(encoded.data),
                    limit,
                )
                encoded = await asyncio.to_thread(fit, png, limit)
                continue
            transient = _transient(exc)
            if transient is None:
                raise _permanent(exc) from exc
            what, asked = transient
            failures += 1
            if failures >= retry.attempts:
                raise DeliveryFailed(
                    f"the upload to Discord kept failing ({what}, {failures} tries)."
                ) from exc
            wait = max(asked, retry.delay(failures))
            log.warning(
                "job %s: upload failed (%s); retry %d in %.1f s", job_id, what, failures, wait
            )
            await asyncio.sleep(wait)
