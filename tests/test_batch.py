"""stylize_batch: jobs with one schedule paint as one batch and come out as they would alone."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from nst_engine import images
from nst_engine.api import Cancelled, InputError, Progress, Result, StyleRequest, StyleSource
from nst_engine.transfer import stylize, stylize_batch

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
STARRY = StyleSource(name="starry-night")


@pytest.fixture(scope="module")
def photos() -> tuple[bytes, bytes]:
    """chelsea.png at 96 px, and a tall crop of it (another aspect, so another schedule)."""
    img = images.fit_long_side(images.decode((SAMPLES / "chelsea.png").read_bytes()), 96)
    return images.encode(img, "PNG"), images.encode(img.crop((0, 0, 40, 64)))


def _pixels(result: Result) -> np.ndarray:
    return np.asarray(images.decode(result.image), dtype=np.float32)


def _request(content: bytes, **knobs) -> StyleRequest:
    knobs.setdefault("styles", (STARRY,))
    knobs.setdefault("iterations", 8)
    knobs.setdefault("size", 64)
    return StyleRequest(content=content, **knobs)


@pytest.fixture(scope="module")
def trio(photos: tuple[bytes, bytes]) -> list[StyleRequest]:
    """A job, a batch-mate with another style and strength, and a job of another shape."""
    wide, tall = photos
    return [
        _request(wide, seed=1),
        _request(wide, seed=2, strength=3.0, styles=(StyleSource(name="great-wave"),)),
        _request(tall, seed=1),  # another shape: its own batch
    ]


@pytest.fixture(scope="module")
def together(trio: list[StyleRequest]) -> tuple[list[Result | Exception], list[list[Progress]]]:
    """The trio painted by one stylize_batch call (two batches), and each job's progress."""
    events: list[list[Progress]] = [[] for _ in trio]
    return stylize_batch(trio, device="cpu", on_progress=[e.append for e in events]), events


@pytest.fixture(scope="module")
def alone() -> Callable[[StyleRequest], tuple[Result, list[Progress]]]:
    """stylize() of one request on its own, and its progress; each request is painted once."""

    @functools.cache
    def paint(request: StyleRequest) -> tuple[Result, list[Progress]]:
        events: list[Progress] = []
        return stylize(request, device="cpu", on_progress=events.append), events

    return paint


def test_a_job_paints_the_same_whatever_its_company(
    photos: tuple[bytes, bytes], trio: list[StyleRequest], together
) -> None:
    """Each job's loss, gradient and L-BFGS history are its own: swapping its batch-mate for
    another job (other style, strength, colours) leaves its result bit for bit the same.

    The first company is the trio's: its first two jobs paint as one batch of two."""
    wide, _ = photos
    job = trio[0]
    mate_b = _request(wide, seed=3, preserve_colors=True)
    first, _ = together
    second = stylize_batch([job, mate_b], device="cpu")
    assert isinstance(first[0], Result) and isinstance(second[0], Result)
    assert first[0].image == second[0].image
    assert first[0].losses == second[0].losses
    assert first[1].losses != second[1].losses  # type: ignore[union-attr]


def test_batched_jobs_track_sequential_ones(trio: list[StyleRequest], together, alone) -> None:
    """Batched and single convolutions round differently (≈1e-7 relative); the results agree
    as long as that rounding is not amplified: to 1e-5 over the first two steps, then within
    the drift L-BFGS's first curvature pair (from a tiny first step) gives any such rounding."""
    outcomes, events = together
    for request, batched, seen in zip(trio, outcomes, events, strict=True):
        assert isinstance(batched, Result)
        alone_result, alone_events = alone(request)
        assert (batched.width, batched.height) == (alone_result.width, alone_result.height)
        assert [e.step for e in seen] == list(range(1, 9))
        for mine, theirs in zip(seen[:2], alone_events[:2], strict=True):
            assert mine.losses["total"] == pytest.approx(theirs.losses["total"], rel=1e-5)
        assert batched.losses["total"] == pytest.approx(alone_result.losses["total"], rel=0.05)
        assert np.abs(_pixels(batched) - _pixels(alone_result)).mean() < 4.0


def test_one_cancelled_or_bad_job_leaves_the_others_painting(
    photos: tuple[bytes, bytes], trio: list[StyleRequest], alone
) -> None:
    wide, _ = photos
    steps_seen: list[int] = []
    requests = [
        trio[0],
        _request(wide, seed=2),
        _request(wide, styles=(StyleSource(name="stary-night"),)),
    ]
    outcomes = stylize_batch(
        requests,
        device="cpu",
        on_progress=[None, lambda p: steps_seen.append(p.step), None],
        should_stop=[None, lambda: len(steps_seen) >= 3, None],
    )
    assert isinstance(outcomes[1], Cancelled) and steps_seen == [1, 2, 3]
    assert isinstance(outcomes[2], InputError) and "starry-night" in str(outcomes[2])
    first = outcomes[0]
    assert isinstance(first, Result)
    alone_result, _ = alone(requests[0])  # tracks it as in the test above
    assert first.losses["total"] == pytest.approx(alone_result.losses["total"], rel=0.05)
    assert np.abs(_pixels(first) - _pixels(alone_result)).mean() < 4.0


def test_bf16_on_the_cpu_tracks_fp32(photos: tuple[bytes, bytes]) -> None:
    """bf16 convolutions reach about the loss fp32 reaches (the losses themselves are fp32).

    Over the first few steps the two runs' L-BFGS paths part (as any rounding change makes
    them), so the comparison is after 30 steps, where both have settled (at 48 px as at 64 px,
    within 0.5 %)."""
    wide, _ = photos
    fp32 = stylize(_request(wide, iterations=30, size=48, precision="fp32"), device="cpu")
    bf16 = stylize(_request(wide, iterations=30, size=48, precision="bf16"), device="cpu")
    assert bf16.losses["total"] == pytest.approx(fp32.losses["total"], rel=0.1)
    assert _pixels(bf16).tobytes() != _pixels(fp32).tobytes()  # bf16 really ran
