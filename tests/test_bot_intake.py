"""Intake: attachment metadata checks before download, byte caps, timeouts, header probing."""

from __future__ import annotations

import asyncio
import io

import pytest
from PIL import Image

from bot.intake import IntakeLimits, check_attachment, pick, read_image
from nst_engine.api import InputError


class Upload:
    """An attachment as intake sees it (the fields of `discord.Attachment` and `read()`)."""

    def __init__(
        self,
        data: bytes = b"",
        *,
        name: str = "photo.png",
        size: int | None = None,
        content_type: str | None = "image/png",
        width: int | None = None,
        height: int | None = None,
        delay: float = 0.0,
    ) -> None:
        self.filename = name
        self.size = len(data) if size is None else size
        self.content_type = content_type
        self.width, self.height = width, height
        self._data = data
        self._delay = delay

    async def read(self) -> bytes:
        await asyncio.sleep(self._delay)
        return self._data


def png(width: int = 64, height: int = 48) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(out, "PNG")
    return out.getvalue()


LIMITS = IntakeLimits(max_bytes=100_000, max_pixels=1_000_000, timeout=0.5)


@pytest.mark.parametrize(
    ("att", "message"),
    [
        (Upload(name="big.png", size=200_000), "too big"),
        (Upload(name="notes.txt", size=10, content_type="text/plain"), "not an image"),
        (Upload(name="bomb.png", size=5000, width=20000, height=20000), "too many pixels"),
    ],
)
def test_metadata_refusals(att: Upload, message: str) -> None:
    with pytest.raises(InputError, match=message):
        check_attachment(att, LIMITS)


def test_metadata_accepts_a_plain_image() -> None:
    check_attachment(Upload(size=5000, content_type="image/jpeg", width=640, height=480), LIMITS)
    check_attachment(Upload(size=5000, content_type=None), LIMITS)


async def test_read_image_returns_the_bytes() -> None:
    data = png()
    assert await read_image(Upload(data), LIMITS) == data


async def test_read_image_checks_the_real_length() -> None:
    big = png(400, 400) + b"\0" * 100_000
    with pytest.raises(InputError, match="too big"):
        await read_image(Upload(big, size=1000), LIMITS)


async def test_read_image_times_out() -> None:
    with pytest.raises(InputError, match="took longer"):
        await read_image(Upload(png(), delay=5), LIMITS)


async def test_read_image_refuses_garbage_and_bombs() -> None:
    with pytest.raises(InputError, match=r"photo\.png"):
        await read_image(Upload(b"GIF89a not really"), LIMITS)
    with pytest.raises(InputError, match="too large"):
        await read_image(Upload(png(1200, 1000)), LIMITS)


def test_pick_photo_and_style() -> None:
    a, b, r = (Upload(name=n) for n in ("a.png", "b.png", "r.png"))
    assert pick([a], [], needs_style_image=False) == (a, None)
    assert pick([a, b], [], needs_style_image=True) == (a, b)
    assert pick([], [r], needs_style_image=False) == (r, None)
    assert pick([b], [r], needs_style_image=True) == (r, b)  # replied photo, attached style
    assert pick([a], [r], needs_style_image=False) == (a, None)


@pytest.mark.parametrize(
    ("own", "replied", "needs", "message"),
    [
        ([], [], False, "No image"),
        (["a", "b"], [], False, "Too many attachments: 2"),
        (["a", "b", "c"], [], True, "Too many attachments: 3"),
        (["a"], [], True, "I need a style"),
    ],
)
def test_pick_refusals(own: list[str], replied: list[str], needs: bool, message: str) -> None:
    own_atts = [Upload(name=f"{n}.png") for n in own]
    with pytest.raises(InputError, match=message):
        pick(own_atts, replied, needs_style_image=needs)
