"""Animated WebP or GIF of a painting forming, fitted to a byte budget.

Frames are taken every few steps over all scales (coarse ones upsampled to the output's size)
and the last frame is the result, held on screen. When the animation is too large for the
budget, it is re-encoded with fewer frames, then smaller ones, rather than given up.
"""

from __future__ import annotations

import io
import logging

from PIL import Image

log = logging.getLogger(__name__)

FORMATS: dict[str, str] = {"webp": "WEBP", "gif": "GIF"}
TARGET_FRAMES = 24
MIN_FRAMES = 8
FRAME_MS = 120
HOLD_MS = 1500
WEBP_QUALITY = 75
# Tried in order until one fits: (frames at most, fraction of the output's size).
_ATTEMPTS: tuple[tuple[int, float], ...] = (
    (TARGET_FRAMES, 1.0), (16, 1.0), (MIN_FRAMES, 1.0),
    (MIN_FRAMES, 0.75), (MIN_FRAMES, 0.5), (MIN_FRAMES, 0.35), (MIN_FRAMES, 0.25),
)  # fmt: skip


def frame_interval(total_steps: int) -> int:
    """Steps between frames: about TARGET_FRAMES over the job, at least one step apart."""
    return max(1, total_steps // TARGET_FRAMES)


def _pick(frames: list[Image.Image], count: int) -> list[Image.Image]:
    """`count` frames spread evenly over `frames`, always ending with the last."""
    if len(frames) <= count:
        return frames
    step = (len(frames) - 1) / (count - 1)
    return [frames[round(i * step)] for i in range(count)]


def _encode(frames: list[Image.Image], size: tuple[int, int], fmt: str) -> bytes:
    sized = [f if f.size == size else f.resize(size, Image.Resampling.BICUBIC) for f in frames]
    durations = [FRAME_MS] * (len(sized) - 1) + [HOLD_MS]
    buf = io.BytesIO()
    options: dict = {"save_all": True, "append_images": sized[1:], "duration": durations,
                     "loop": 0}  # fmt: skip
    if fmt == "WEBP":
        options.update(quality=WEBP_QUALITY, method=4)
    else:
        options.update(optimize=True, disposal=1)
    sized[0].save(buf, fmt, **options)
    return buf.getvalue()


def encode(
    frames: list[Image.Image],
    size: tuple[int, int],
    fmt: str = "webp",
    max_bytes: int | None = None,
) -> tuple[bytes, int] | None:
    """(animation, frame count) of `frames` at `size`, within `max_bytes`; None if nothing fits.

    The last of `frames` must be the result.
    """
    name = FORMATS[fmt]
    data = b""
    for count, fraction in _ATTEMPTS:
        chosen = _pick(frames, count)
        scaled = (max(1, round(size[0] * fraction)), max(1, round(size[1] * fraction)))
        data = _encode(chosen, scaled, name)
        if max_bytes is None or len(data) <= max_bytes:
            if (count, fraction) != _ATTEMPTS[0]:
                log.info("timelapse fitted to %d bytes: %d frames at %dx%d", max_bytes or 0,
                         len(chosen), *scaled)  # fmt: skip
            return data, len(chosen)
    log.warning("timelapse left out: %d bytes at the smallest, over %s", len(data), max_bytes)
    return None
