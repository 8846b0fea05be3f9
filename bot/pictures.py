"""Users' pictures are decoded only in short-lived child processes, never in the bot process.

`python -m bot.pictures reencode MAX_BYTES MAX_PIXELS LONG_SIDE` reads an image on stdin, decodes
it with the engine's caps, shrinks it to LONG_SIDE when it is larger, and writes a PNG without
metadata on stdout. `python -m bot.pictures sheet THUMB` reads a JSON list of [name, path] (a
server's stored styles) on stdin and writes a JPEG contact sheet of them. A bad image exits 2
with its one-line reason on stderr. The bot starts them through one `Pictures`, which bounds
how many run at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import sys
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont, ImageOps

from nst_engine import images
from nst_engine.api import InputError
from nst_engine.gallery import BACKGROUND, NAME_COLOR

log = logging.getLogger(__name__)

BAD_IMAGE = 2
ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 30.0
SHEET_COLUMNS = 5


def convert(data: bytes, max_bytes: int, max_pixels: int, long_side: int) -> bytes:
    img = images.decode(data, max_bytes=max_bytes, max_pixels=max_pixels)
    if max(img.size) > long_side:
        img = images.fit_long_side(img, long_side)
    return images.encode(img, "PNG")


def sheet(entries: list[tuple[str, Path]], thumb: int) -> bytes:
    """A grid of `thumb`-pixel squares, each labelled with its style's name, as a JPEG."""
    columns = max(1, min(SHEET_COLUMNS, len(entries)))
    rows = math.ceil(len(entries) / columns)
    gap, label = max(4, thumb // 24), max(14, thumb // 7)
    font = ImageFont.load_default(size=max(10, thumb // 11))
    cell_w, cell_h = thumb + gap, thumb + label + gap
    out = Image.new("RGB", (columns * cell_w + gap, rows * cell_h + gap), BACKGROUND)
    draw = ImageDraw.Draw(out)
    for i, (name, path) in enumerate(entries):
        x, y = gap + (i % columns) * cell_w, gap + (i // columns) * cell_h
        picture = images.decode(images.read_file(path, label=name))
        out.paste(ImageOps.fit(picture, (thumb, thumb), Image.Resampling.LANCZOS), (x, y))
        shown = name
        while draw.textlength(shown, font=font) > thumb:  # a long name is cut to its square
            shown = shown[:-2] + "…"
        draw.text((x, y + thumb + label * 0.1), shown, fill=NAME_COLOR, font=font)
    return images.encode(out, "JPEG", quality=88)


async def _child(args: list[str], data: bytes, timeout: float) -> bytes:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot.pictures",
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    try:
        out, err = await asyncio.wait_for(child.communicate(data), timeout)
    except TimeoutError:
        raise InputError("Reading that image took too long; try a smaller one.") from None
    finally:
        if child.returncode is None:  # timed out or cancelled: never leave it behind
            with contextlib.suppress(ProcessLookupError):
                child.kill()
            await child.wait()
    if child.returncode == BAD_IMAGE:
        raise InputError(err.decode(errors="replace").strip() or "I can't read that image.")
    if child.returncode != 0 or not out:
        log.warning("a picture child failed (%s): %s", child.returncode, err[-500:])
        raise InputError("I couldn't read that image; try another one.")
    return out


async def reencode(
    data: bytes, *, max_bytes: int, max_pixels: int, long_side: int, timeout: float = TIMEOUT
) -> bytes:
    """The image as a clean PNG, made by a child process; raises `InputError`."""
    args = ["reencode", str(max_bytes), str(max_pixels), str(long_side)]
    return await _child(args, data, timeout)


async def server_sheet(
    entries: list[tuple[str, Path]], *, thumb: int = 128, timeout: float = TIMEOUT
) -> bytes:
    """A JPEG contact sheet of a server's stored styles, made by a child process."""
    listing = json.dumps([[name, str(path)] for name, path in entries]).encode()
    return await _child(["sheet", str(thumb)], listing, timeout)


class Pictures:
    """The bot's picture children, at most `concurrency` alive at once: each decodes a user's
    image and may take hundreds of MB, so a burst of `styles` or `style add` queues here."""

    def __init__(self, concurrency: int) -> None:
        self._gate = asyncio.Semaphore(concurrency)

    async def reencode(
        self, data: bytes, *, max_bytes: int, max_pixels: int, long_side: int
    ) -> bytes:
        async with self._gate:
            return await reencode(
                data, max_bytes=max_bytes, max_pixels=max_pixels, long_side=long_side
            )

    async def server_sheet(self, entries: list[tuple[str, Path]]) -> bytes:
        async with self._gate:
            return await server_sheet(entries)


def main() -> int:
    mode, *args = sys.argv[1:]
    try:
        if mode == "reencode":
            max_bytes, max_pixels, long_side = (int(arg) for arg in args)
            out = convert(sys.stdin.buffer.read(), max_bytes, max_pixels, long_side)
        elif mode == "sheet":
            entries = [(name, Path(path)) for name, path in json.loads(sys.stdin.buffer.read())]
            out = sheet(entries, int(args[0]))
        else:
            raise SystemExit(f"unknown mode {mode!r}")
    except InputError as exc:
        print(exc, file=sys.stderr)
        return BAD_IMAGE
    sys.stdout.buffer.write(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
