"""Delivery: results are fitted to the upload limit, and a 413 leads to a smaller re-send."""

from __future__ import annotations

import io

import discord
import pytest
from PIL import Image

from bot.delivery import Encoded, fit, send_fitted
from nst_engine import images
from nst_engine.api import EngineError


def noisy_png(side: int = 256) -> bytes:
    """A PNG that compresses badly (noise), so that fitting really has to work."""
    img = Image.effect_noise((side, side), 80).convert("RGB")
    out = io.BytesIO()
    img.save(out, "PNG")
    return out.getvalue()


def test_png_is_kept_when_it_fits() -> None:
    data = noisy_png(64)
    assert fit(data, len(data)) == Encoded(data, "stylized.png")


@pytest.mark.parametrize("fraction", [0.5, 0.2, 0.05])
def test_fit_stays_under_the_limit(fraction: float) -> None:
    data = noisy_png()
    limit = int(len(data) * fraction)
    encoded = fit(data, limit)
    assert len(encoded.data) <= limit
    assert encoded.note
    info = images.probe(encoded.data)
    assert info.format in ("JPEG", "WEBP")
    assert encoded.filename.endswith(".jpg" if info.format == "JPEG" else ".webp")


def test_fit_gives_up_with_a_readable_error() -> None:
    with pytest.raises(EngineError, match="upload limit"):
        fit(noisy_png(), 200)


class Response413:
    """The two fields of an aiohttp response that discord.HTTPException reads."""

    status = 413
    reason = "Payload Too Large"


async def test_a_413_reencodes_smaller_and_retries() -> None:
    data = noisy_png()
    sent: list[int] = []

    async def send(encoded: Encoded, limit: int) -> str:
        assert len(encoded.data) <= limit
        sent.append(len(encoded.data))
        if len(sent) < 3:
            raise discord.HTTPException(Response413(), {"message": "Request entity too large"})  # type: ignore[arg-type]
        return "posted"

    outcome, encoded = await send_fitted(send, data, len(data))
    assert outcome == "posted"
    assert sent[0] == len(data)
    assert sent[0] > sent[1] > sent[2] == len(encoded.data)
