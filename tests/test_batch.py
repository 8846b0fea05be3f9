"""stylize_batch: jobs with one schedule paint as one batch and come out as they would alone."""

from __future__ import annotations

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
    return StyleRequest(content=content, size=64, **knobs)


def test_a_job_paints_the_same_whatever_its_company(photos: tuple[bytes, bytes]) -> None:
    """Each job's loss, gradient and L-BFGS history are its own: swapping its batch-mate for
    another job (other style, strength, colours) leaves its result bit for bit the same."""
    wide, _ = photos
    job = _request(wide, seed=1)
    mate_a = _request(wide, seed=2, strength=3.0, styles=(StyleSource(name="great-wave"),))
    mate_b = _request(wide, seed=3, preserve_colors=True)
    first = stylize_batch([job, mate_a], device="cpu")
    second = stylize_batch([job, mate_b], device="cpu")
    assert isinstance(first[0], Result) and isinstance(second[0], Result)
    assert first[0].image == second[0].image
    assert first[0].losses == second[0].losses
    assert first[1].losses != second[1].losses  # type: ignore[union-attr]


def test_batched_jobs_track_sequential_ones(photos: tuple[bytes, bytes]) -> None:
    """Batched and single convolutions round differently (≈1e-7 relative); the results agree
    as long as that rounding is not amplified: to 1e-5 over the first two steps, then within
    the drift L-BFGS's first curvature pair (from a tiny first step) gives any such rounding."""
    wide, tall = photos
    requests = [
        _request(wide, seed=1),
        _request(wide, seed=2, strength=3.0, styles=(StyleSource(name="great-wave"),)),
        _request(tall, seed=1),  # another shape: its own batch
    ]
    events: list[list[Progress]] = [[] for _ in requests]
    together = stylize_batch(requests, device="cpu", on_progress=[e.append for e in events])
    for request, batched, seen in zip(requests, together, events, strict=True):
        assert isinstance(batched, Result)
        alone_events: list[Progress] = []
        alone = stylize(request, device="cpu", on_progress=alone_events.append)
        assert (batched.width, batched.height) == (alone.width, alone.height)
        assert [e.step for e in seen] == list(range(1, 9))
        for mine, theirs in zip(seen[:2], alone_events[:2], strict=True):
            assert mine.losses["total"] == pytest.approx(theirs.losses["total"], rel=1e-5)
        assert batched.losses["total"] == pytest.approx(alone.losses["total"], rel=0.05)
        assert np.abs(_pixels(batched) - _pixels(alone)).mean() < 4.0


def test_one_cancelled_or_bad_job_leaves_the_others_painting(photos: tuple[bytes, bytes]) -> None:
    wide, _ = photos
    steps_seen: list[int] = []
    requests = [
        _request(wide, seed=1),
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
    alone = stylize(requests[0], device="cpu")  # tracks it as in the test above
    assert first.losses["total"] == pytest.approx(alone.losses["total"], rel=0.05)
    assert np.abs(_pixels(first) - _pixels(alone)).mean() < 4.0


def test_bf16_on_the_cpu_tracks_fp32(photos: tuple[bytes, bytes]) -> None:
    """bf16 convolutions reach about the loss fp32 reaches (the losses themselves are fp32).

    Over the first few steps the two runs' L-BFGS paths part (as any rounding change makes
    them), so the comparison is after 30 steps, where both have settled."""
    wide, _ = photos
    fp32 = stylize(_request(wide, iterations=30, precision="fp32"), device="cpu")
    bf16 = stylize(_request(wide, iterations=30, precision="bf16"), device="cpu")
    assert bf16.losses["total"] == pytest.approx(fp32.losses["total"], rel=0.1)
    assert _pixels(bf16).tobytes() != _pixels(fp32).tobytes()  # bf16 really ran
