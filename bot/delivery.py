"""Fitting a finished image into the channel's upload limit, and sending it without losing it.

PNG first; if it is too big, high-quality JPEG then WebP; then the same picture smaller. When
Discord still answers 413 (payload too large), the image is re-encoded under a tighter budget and
sent again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import discord

from nst_engine import images
from nst_engine.api import EngineError

log = logging.getLogger(__name__)

T = TypeVar("T")

MIN_LONG_SIDE = 64
SHRINK_STEPS = (0.85, 0.7, 0.55, 0.4, 0.3, 0.2, 0.12)
RETRY_413 = 6
RETRY_OTHER = 3


@dataclass(frozen=True)
class Encoded:
    """An encoded result ready to upload, with a short note on how it was made to fit."""

    data: bytes
    filename: str
    note: str = ""


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
    raise EngineError("The result doesn't fit this channel's upload limit, even made small.")


async def send_fitted(
    send: Callable[[Encoded, int], Awaitable[T]], png: bytes, limit: int, *, job_id: str = "-"
) -> tuple[T, Encoded]:
    """Send the result through `send(encoded, limit)`, re-encoding smaller on 413.

    `limit` is the byte budget per file that `send` should also hold any other files to.
    Server errors and rate limits that discord.py gave up on are retried a few times.
    """
    encoded = await asyncio.to_thread(fit, png, limit)
    too_large = other = 0
    while True:
        try:
            return await send(encoded, limit), encoded
        except discord.HTTPException as exc:
            if exc.status == 413 and too_large < RETRY_413:
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
            if (exc.status >= 500 or exc.status == 429) and other < RETRY_OTHER:
                other += 1
                log.warning("job %s: upload failed (%s); retrying", job_id, exc.status)
                await asyncio.sleep(2 * other)
                continue
            raise
