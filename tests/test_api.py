"""The contract's own checks: a bad request is refused with a readable InputError."""

import pytest

from nst_engine.api import MAX_SEED, InputError, StyleRequest, StyleSource

STYLE = (StyleSource(name="udnie"),)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"styles": ()}, "at least one style"),
        ({"size": 8}, "Size must be between"),
        ({"quality": "ultra"}, "Quality must be one of"),
        ({"strength": 0.0}, "Strength must be between"),
        ({"seed": -1}, "Seed must be"),
        ({"seed": MAX_SEED + 1}, "Seed must be"),
        ({"iterations": 0}, "Iterations must be"),
    ],
)
def test_bad_requests_are_refused_with_a_readable_line(changes: dict, message: str) -> None:
    with pytest.raises(InputError, match=message):
        StyleRequest(content=b"photo", **{"styles": STYLE, **changes})


def test_a_request_at_the_edges_is_accepted() -> None:
    request = StyleRequest(content=b"photo", styles=STYLE, seed=MAX_SEED, size=32, strength=20)
    assert request.seed == MAX_SEED


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"name": "udnie", "image": b"x"}, {"name": "udnie", "weight": 0}],
)
def test_a_style_is_a_name_or_an_image_with_a_positive_weight(kwargs: dict) -> None:
    with pytest.raises(InputError):
        StyleSource(**kwargs)
