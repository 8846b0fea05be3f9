"""The timelapse encoder's fitting to a byte budget, and frames from a real (tiny) job."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image

from nst_engine import images, timelapse
from nst_engine.api import StyleRequest, StyleSource
from nst_engine.transfer import stylize

PHOTO = (Path(__file__).resolve().parent.parent / "samples" / "chelsea.png").read_bytes()


def _frames(count: int) -> list[Image.Image]:
    """Noisy frames (hard to compress), so that a budget really bites."""
    return [Image.effect_noise((200, 150), 40 + n).convert("RGB") for n in range(count)]


def test_a_tight_budget_gives_fewer_or_smaller_frames_not_a_failure() -> None:
    frames = _frames(30)
    full, full_count = timelapse.encode(frames, (200, 150)) or (b"", 0)
    assert full_count == timelapse.TARGET_FRAMES
    budget = len(full) // 5
    fitted = timelapse.encode(frames, (200, 150), max_bytes=budget)
    assert fitted is not None
    data, count = fitted
    assert len(data) <= budget and count >= timelapse.MIN_FRAMES
    with Image.open(io.BytesIO(data)) as img:
        assert img.n_frames == count
        assert img.size[0] <= 200
    assert timelapse.encode(frames, (200, 150), max_bytes=200) is None  # nothing can fit


def test_a_job_with_a_timelapse_under_a_budget() -> None:
    # 10 steps give 10 frames, about 42 kB as a 64 px GIF: over this budget, which bites
    request = StyleRequest(
        content=PHOTO, styles=(StyleSource(name="udnie"),), size=64, iterations=10,
        timelapse=True, timelapse_format="gif", timelapse_max_bytes=30_000,
    )  # fmt: skip
    result = stylize(request, device="cpu")
    assert result.timelapse is not None and len(result.timelapse) <= 30_000
    with Image.open(io.BytesIO(result.timelapse)) as img:
        assert img.format == "GIF" and img.n_frames == result.timelapse_frames >= 8
    plain = stylize(
        StyleRequest(content=PHOTO, styles=(StyleSource(name="udnie"),), size=64, iterations=10),
        device="cpu",
    )
    assert plain.timelapse is None and plain.timelapse_frames == 0
    assert images.decode(plain.image).tobytes() == images.decode(result.image).tobytes()
