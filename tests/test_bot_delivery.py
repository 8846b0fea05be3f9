"""Delivery: results are fitted to the upload limit, and a 413 leads to a smaller re-send."""

from __future__ import annotations

import io

import aiohttp
import discord
import pytest
from PIL import Image

from bot.delivery import DeliveryFailed, Encoded, Retry, fit, send_fitted
from nst_engine import images


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
    with pytest.raises(DeliveryFailed, match="upload limit"):
        fit(noisy_png(), 200)


class Response:
    """The two fields of an aiohttp response that discord.HTTPException reads."""

    def __init__(self, status: int, reason: str = "") -> None:
        self.status = status
        self.reason = reason


def http_error(status: int) -> discord.HTTPException:
    kind = discord.Forbidden if status == 403 else discord.HTTPException
    return kind(Response(status), {"message": f"{status}", "code": 0})  # type: ignore[arg-type]


async def test_a_413_reencodes_smaller_and_retries() -> None:
    data = noisy_png()
    sent: list[int] = []

    async def send(encoded: Encoded, limit: int) -> str:
        assert len(encoded.data) <= limit
        sent.append(len(encoded.data))
        if len(sent) < 3:
            raise http_error(413)
        return "posted"

    outcome, encoded = await send_fitted(send, data, len(data))
    assert outcome == "posted"
    assert sent[0] == len(data)
    assert sent[0] > sent[1] > sent[2] == len(encoded.data)


QUICK = Retry(attempts=3, base=0.01)


@pytest.mark.parametrize(
    "failure",
    [http_error(500), http_error(429), aiohttp.ServerDisconnectedError(), ConnectionResetError()],
)
async def test_passing_failures_are_retried(failure: Exception) -> None:
    data = noisy_png(64)
    calls: list[int] = []

    async def send(encoded: Encoded, limit: int) -> str:
        calls.append(len(encoded.data))
        if len(calls) == 1:
            raise failure
        return "posted"

    assert (await send_fitted(send, data, len(data), retry=QUICK))[0] == "posted"
    assert calls == [len(data), len(data)]  # the same upload again, not a smaller one


@pytest.mark.parametrize(
    ("failure", "message"),
    [
        (http_error(503), r"kept failing \(HTTP 503, 3 tries\)"),
        (TimeoutError(), r"kept failing \(TimeoutError"),
        (http_error(403), "missing a permission"),
        (http_error(400), r"refused the upload \(HTTP 400"),
    ],
)
async def test_lasting_failures_end_with_a_readable_reason(
    failure: Exception, message: str
) -> None:
    calls = 0

    async def send(encoded: Encoded, limit: int) -> str:
        nonlocal calls
        calls += 1
        raise failure

    with pytest.raises(DeliveryFailed, match=message):
        await send_fitted(send, noisy_png(64), 10**6, retry=QUICK)
    assert calls == (QUICK.attempts if "kept" in message else 1)
