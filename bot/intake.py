"""Reading users' images from Discord attachments, safely.

Only the attachments of the invoking message (or the message it replies to) are ever read: no
arbitrary URLs. Metadata (count, size, content type, dimensions) is checked before downloading;
the download has a byte cap and a timeout; the header is probed off the event loop.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Protocol

from nst_engine import images
from nst_engine.api import InputError

log = logging.getLogger(__name__)

IMAGE_TYPES = ("image/jpeg", "image/png", "image/webp", "image/gif")


class AttachmentLike(Protocol):
    """The part of `discord.Attachment` intake uses."""

    filename: str
    size: int
    content_type: str | None
    width: int | None
    height: int | None

    async def read(self) -> bytes: ...


@dataclass(frozen=True)
class IntakeLimits:
    max_bytes: int = images.MAX_BYTES
    max_pixels: int = images.MAX_PIXELS
    timeout: float = 30.0


def _mb(n: int) -> str:
    return f"{n / (1024 * 1024):.1f} MB"


def check_attachment(att: AttachmentLike, limits: IntakeLimits) -> None:
    """Refuse an attachment from its metadata alone, before any byte is downloaded."""
    name = att.filename
    content_type = (att.content_type or "").split(";")[0].strip().lower()
    if content_type and content_type not in IMAGE_TYPES:
        raise InputError(f"`{name}` is not an image I can use (JPEG, PNG, WebP or GIF).")
    if att.size > limits.max_bytes:
        raise InputError(
            f"`{name}` is too big: {_mb(att.size)}; the limit is {_mb(limits.max_bytes)}."
        )
    if att.width and att.height and att.width * att.height > limits.max_pixels:
        raise InputError(
            f"`{name}` has too many pixels: {att.width}×{att.height}; "
            f"the limit is {limits.max_pixels / 1_000_000:g} megapixels."
        )


async def read_image(att: AttachmentLike, limits: IntakeLimits) -> bytes:
    """Download an attachment that passed `check_attachment` and probe its header.

    The byte cap is enforced again on what actually arrived; returns the encoded bytes.
    """
    try:
        data = await asyncio.wait_for(att.read(), timeout=limits.timeout)
    except TimeoutError:
        raise InputError(
            f"Downloading `{att.filename}` took longer than {limits.timeout:g} s; please try again."
        ) from None
    except Exception as exc:
        log.warning("download of %s failed: %r", att.filename, exc)
        raise InputError(f"I couldn't download `{att.filename}`; please try again.") from None
    if len(data) > limits.max_bytes:
        raise InputError(
            f"`{att.filename}` is too big: {_mb(len(data))}; the limit is {_mb(limits.max_bytes)}."
        )
    try:
        await asyncio.to_thread(
            images.probe, data, max_bytes=limits.max_bytes, max_pixels=limits.max_pixels
        )
    except InputError as exc:
        raise InputError(f"`{att.filename}`: {exc}") from None
    return data


def pick(
    own: list[AttachmentLike], replied: list[AttachmentLike], *, needs_style_image: bool
) -> tuple[AttachmentLike, AttachmentLike | None]:
    """Choose the photo (and style image) from the invoking message and the replied-to one.

    The photo is the first attachment of the invoking message; when it has too few, the first
    attachment of the message it replies to is the photo and its own attachment the style.
    """
    needed = 2 if needs_style_image else 1
    if len(own) > needed:
        what = "a photo and a style image" if needs_style_image else "one photo"
        raise InputError(
            f"Too many attachments: {len(own)}. Attach {what}"
            + ("." if needs_style_image else " (with a style name), or two images.")
        )
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
    return chosen[0], (chosen[1] if needs_style_image else None)
