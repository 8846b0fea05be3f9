"""Reading users' images from Discord attachments, safely.

Only the attachments of the invoking message (or the message it replies to, or the result a
button sits on) are ever read, and only from the allowed origins (Discord's CDN by default, over
https on its default port; an entry may name another `scheme://host:port`): no arbitrary URLs,
no redirects. Metadata (count, size, content type, dimensions) is checked before
downloading; the download streams with a hard byte cap (it stops at cap + 1 bytes, whatever the
attachment claimed) and a timeout, a few at a time for the whole bot; the header is probed off
the event loop. Pixels are decoded only in the painter processes.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Protocol

import aiohttp
import yarl

from bot.options import MAX_STYLES
from nst_engine import images
from nst_engine.api import InputError

log = logging.getLogger(__name__)

IMAGE_TYPES = ("image/jpeg", "image/png", "image/webp", "image/gif")
CDN_HOSTS = ("cdn.discordapp.com", "media.discordapp.net")
CHUNK = 64 * 1024


class AttachmentLike(Protocol):
    """The part of `discord.Attachment` intake uses."""

    filename: str
    size: int
    content_type: str | None
    width: int | None
    height: int | None
    url: str


@dataclass(frozen=True)
class Origin:
    """Where downloads may come from: a scheme, a host and a port, all three matched."""

    scheme: str
    host: str
    port: int


def origin(entry: str) -> Origin:
    """An allow-list entry: a bare host means https on port 443; `scheme://host[:port]` says
    otherwise (http or https). Raises ValueError for anything else."""
    url = yarl.URL(entry if "://" in entry else f"https://{entry}")
    if url.scheme not in ("http", "https") or not url.host:
        raise ValueError(f"{entry!r} is not a host or an http(s)://host[:port]")
    if url.user or url.password or url.path not in ("", "/") or url.query_string or url.fragment:
        raise ValueError(f"{entry!r} must name only a scheme, a host and a port")
    assert url.port is not None  # http and https have default ports
    return Origin(url.scheme, url.host.lower(), url.port)


def allowed(url: str, hosts: tuple[str, ...]) -> bool:
    """Whether `url` is on one of the allowed origins (scheme, host and port all match)."""
    parsed = yarl.URL(url)
    if parsed.host is None or parsed.port is None:
        return False
    here = Origin(parsed.scheme, parsed.host.lower(), parsed.port)
    return any(here == origin(entry) for entry in hosts)


@dataclass(frozen=True)
class IntakeLimits:
    max_bytes: int = images.MAX_BYTES
    max_pixels: int = images.MAX_PIXELS
    timeout: float = 30.0
    hosts: tuple[str, ...] = CDN_HOSTS


def _mb(n: int) -> str:
    return f"{n / (1024 * 1024):.1f} MB"


def _too_big(name: str, size: int, limits: IntakeLimits, *, at_least: bool = False) -> InputError:
    amount = f"more than {_mb(limits.max_bytes)}" if at_least else _mb(size)
    return InputError(f"`{name}` is too big: {amount}; the limit is {_mb(limits.max_bytes)}.")


def check_attachment(att: AttachmentLike, limits: IntakeLimits) -> None:
    """Refuse an attachment from its metadata alone, before any byte is downloaded."""
    name = att.filename
    content_type = (att.content_type or "").split(";")[0].strip().lower()
    if content_type and content_type not in IMAGE_TYPES:
        raise InputError(f"`{name}` is not an image I can use (JPEG, PNG, WebP or GIF).")
    if att.size > limits.max_bytes:
        raise _too_big(name, att.size, limits)
    if att.width and att.height and att.width * att.height > limits.max_pixels:
        raise InputError(
            f"`{name}` has too many pixels: {att.width}×{att.height}; "
            f"the limit is {limits.max_pixels / 1_000_000:g} megapixels."
        )
    if not allowed(att.url, limits.hosts):
        url = yarl.URL(att.url)
        log.warning(
            "refused an attachment from %s://%s:%s (allowed: %s)",
            url.scheme,
            url.host,
            url.port,
            limits.hosts,
        )
        raise InputError(f"`{name}` is not stored on Discord's CDN, so I won't download it.")


class Downloader:
    """Downloads attachments that passed `check_attachment`, `concurrency` at a time."""

    def __init__(self, limits: IntakeLimits, concurrency: int = 4) -> None:
        self.limits = limits
        self._gate = asyncio.Semaphore(concurrency)
        self._session: aiohttp.ClientSession | None = None

    async def read(self, att: AttachmentLike) -> bytes:
        """The attachment's bytes, after probing its header; raises `InputError`."""
        async with self._gate:
            try:
                async with asyncio.timeout(self.limits.timeout):
                    data = await self._fetch(att)
            except TimeoutError:
                raise InputError(
                    f"Downloading `{att.filename}` took longer than {self.limits.timeout:g} s; "
                    "please try again."
                ) from None
            except (aiohttp.ClientError, OSError) as exc:
                log.warning("download of %s failed: %r", att.filename, exc)
                raise InputError(
                    f"I couldn't download `{att.filename}`; please try again."
                ) from None
        try:
            await asyncio.to_thread(
                images.probe,
                data,
                max_bytes=self.limits.max_bytes,
                max_pixels=self.limits.max_pixels,
            )
        except InputError as exc:
            raise InputError(f"`{att.filename}`: {exc}") from None
        return data

    async def _fetch(self, att: AttachmentLike) -> bytes:
        check_attachment(att, self.limits)  # the host again: never fetch from anywhere else
        if self._session is None:
            self._session = aiohttp.ClientSession()
        cap = self.limits.max_bytes
        async with self._session.get(att.url, allow_redirects=False) as response:
            if response.status != 200:
                log.warning("download of %s answered %s", att.filename, response.status)
                raise InputError(f"I couldn't download `{att.filename}`; please try again.")
            if response.content_length is not None and response.content_length > cap:
                raise _too_big(att.filename, response.content_length, self.limits)
            body = bytearray()
            async for chunk in response.content.iter_chunked(CHUNK):
                body += chunk
                if len(body) > cap:
                    raise _too_big(att.filename, len(body), self.limits, at_least=True)
        return bytes(body)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def pick(
    own: list[AttachmentLike],
    replied: list[AttachmentLike],
    *,
    named: bool,
    images: int | None = None,
) -> tuple[AttachmentLike, list[AttachmentLike]]:
    """Choose the photo and the style images from the invoking message and the replied-to one.

    The photo is the first attachment of the invoking message and the others are style images;
    when it has too few, the first attachment of the message it replies to is the photo. With
    `named` (a style name was given) style images are optional; `images` asks for exactly that
    many (a button re-running a job).
    """
    if images is None and len(own) > 1 + MAX_STYLES:
        raise InputError(
            f"Too many attachments: {len(own)}. Attach a photo and at most {MAX_STYLES} "
            "style images."
        )
    if images is not None and len(own) > 1 + images:
        raise InputError(f"Too many attachments: {len(own)}.")
    needed = 1 + (images if images is not None else 0 if named else 1)
    chosen = list(own)
    if len(chosen) < needed and replied:
        chosen.insert(0, replied[0])
    if not chosen:
        raise InputError(
            "No image found. Attach a photo (or reply to a message that has one) and give a "
            "style name or a second image as the style."
        )
    if len(chosen) < needed:
        raise InputError(
            "I need a style: give a style name (see `styles`) or attach a second image."
        )
    return chosen[0], chosen[1 : None if images is None else needed]
