"""Server style images, re-encoded in a short-lived child process (the bot never decodes pixels).

`python -m bot.reencode MAX_BYTES MAX_PIXELS LONG_SIDE` reads an image on stdin, decodes it with
the engine's caps, shrinks it to LONG_SIDE when it is larger, and writes a PNG without metadata on
stdout; a bad image exits 2 with its one-line reason on stderr.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
from pathlib import Path

from nst_engine import images
from nst_engine.api import InputError

log = logging.getLogger(__name__)

BAD_IMAGE = 2
ROOT = Path(__file__).resolve().parent.parent


def convert(data: bytes, max_bytes: int, max_pixels: int, long_side: int) -> bytes:
    img = images.decode(data, max_bytes=max_bytes, max_pixels=max_pixels)
    if max(img.size) > long_side:
        img = images.fit_long_side(img, long_side)
    return images.encode(img, "PNG")


async def reencode(
    data: bytes, *, max_bytes: int, max_pixels: int, long_side: int, timeout: float = 30.0
) -> bytes:
    """The image as a clean PNG, made by a child process; raises `InputError`."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot.reencode",
        str(max_bytes),
        str(max_pixels),
        str(long_side),
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
        log.warning("re-encoding a style image failed (%s): %s", child.returncode, err[-500:])
        raise InputError("I couldn't read that image; try another one.")
    return out


def main() -> int:
    max_bytes, max_pixels, long_side = (int(arg) for arg in sys.argv[1:4])
    try:
        png = convert(sys.stdin.buffer.read(), max_bytes, max_pixels, long_side)
    except InputError as exc:
        print(exc, file=sys.stderr)
        return BAD_IMAGE
    sys.stdout.buffer.write(png)
    return 0


if __name__ == "__main__":
    sys.exit(main())
