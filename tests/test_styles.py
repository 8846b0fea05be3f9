"""The built-in style registry, the vaporwave renderer and the contact sheet."""

from __future__ import annotations

import itertools

import pytest
from PIL import Image, ImageChops, ImageOps, ImageStat

from nst_engine import gallery, styles
from nst_engine.api import InputError
from nst_engine.styles import vaporwave

PAINTINGS = ["starry-night", "the-scream", "great-wave", "shipwreck", "woman-with-hat", "udnie"]


def test_seven_builtins_with_metadata() -> None:
    assert styles.names() == [*PAINTINGS, "vaporwave"]
    for name in styles.names():
        style = styles.get(name)
        assert style.name == name
        assert all((style.title, style.artist, style.year, style.description))
        assert "\n" not in style.description


@pytest.mark.parametrize("name", styles.names())
def test_each_style_has_a_picture(name: str) -> None:
    img = styles.image(name)
    assert img.mode == "RGB"
    assert min(img.size) >= 256
    assert ImageStat.Stat(img).stddev[0] > 20  # a picture, not a blank


def test_image_is_a_copy_the_caller_may_change() -> None:
    first = styles.image("udnie")
    first.paste((0, 0, 0), (0, 0, 64, 64))
    assert styles.image("udnie").getpixel((10, 10)) != (0, 0, 0)


def test_names_are_forgiving_about_case_and_spaces() -> None:
    assert styles.get("Starry Night").name == "starry-night"
    assert styles.get(" WOMAN_WITH_HAT ").name == "woman-with-hat"


@pytest.mark.parametrize(
    ("typed", "meant"),
    [("starry", "starry-night"), ("scream", "the-scream"), ("udnee", "udnie"),
     ("shipwrek", "shipwreck"), ("vapourwave", "vaporwave")],
)  # fmt: skip
def test_unknown_name_suggests_the_closest(typed: str, meant: str) -> None:
    assert styles.suggest(typed) == meant
    with pytest.raises(InputError) as caught:
        styles.get(typed)
    assert str(caught.value) == f"Unknown style '{typed}'. Did you mean '{meant}'?"


def test_unknown_name_without_a_close_match_lists_the_styles() -> None:
    assert styles.suggest("qqqq") is None
    assert styles.suggest("") is None
    with pytest.raises(InputError, match=r"Built-in styles: starry-night, .*vaporwave\."):
        styles.get("qqqq")


def test_vaporwave_is_deterministic() -> None:
    a, b = vaporwave.render(320, 200), vaporwave.render(320, 200)
    assert a.size == (320, 200)
    assert ImageChops.difference(a, b).getbbox() is None
    assert vaporwave.render(200, 320).size == (200, 320)


def _hues(region: Image.Image) -> list[tuple[float, float, float]]:
    """(hue in degrees, saturation 0..1, value 0..1) of every pixel."""
    hsv = region.convert("HSV")
    return [(h * 360 / 256, s / 255, v / 255) for h, s, v in hsv.get_flattened_data()]


def _share(pixels: list[tuple[float, float, float]], lo: float, hi: float) -> float:
    """Fraction of clearly coloured pixels whose hue lies in lo..hi degrees."""
    return sum(1 for h, s, v in pixels if s > 0.25 and v > 0.3 and lo <= h <= hi) / len(pixels)


def test_vaporwave_looks_like_vaporwave() -> None:
    width, height = 480, 300
    img = vaporwave.render(width, height)
    horizon = round(height * vaporwave.HORIZON)
    left = width // 10  # a strip of sky clear of the sun and the mountains

    top_sky = _hues(img.crop((0, 0, width, height // 10)))
    assert _share(top_sky, 160, 210) > 0.9  # teal at the top
    low_sky = _hues(img.crop((0, horizon - height // 5, left, horizon - height // 7)))
    assert _share(low_sky, 290, 360) > 0.9  # pink and magenta towards the horizon
    mid_sky = _hues(img.crop((0, horizon // 3, left, horizon // 2)))
    assert _share(mid_sky, 230, 290) > 0.5  # purple between them

    sun = _hues(img.crop((width // 2 - 20, horizon // 3, width // 2 + 20, horizon // 2)))
    assert _share(sun, 20, 65) > 0.9  # a yellow-orange sun overhead
    # The sun's stripes: down its middle column the colour leaves the sun's hues and comes back.
    column = _hues(img.crop((width // 2, horizon // 2, width // 2 + 1, horizon - 2)))
    in_sun = [5 <= h <= 65 and s > 0.4 for h, s, _ in column]
    switches = sum(1 for a, b in itertools.pairwise(in_sun) if a != b)
    assert switches >= 6

    floor = _hues(img.crop((0, horizon + 4, width, height)))
    sky = _hues(img.crop((0, 0, width, horizon)))
    brightness = [sum(v for _, _, v in part) / len(part) for part in (floor, sky)]
    assert brightness[0] < 0.6 * brightness[1]  # a dark floor under a bright sky ...
    assert _share(floor, 285, 330) > 0.05  # ... with magenta lines ...
    assert _share(floor, 170, 200) > 0.02  # ... and cyan ones

    # Scan lines: in plain sky, every few rows one row is darker than both neighbours.
    rows = [ImageStat.Stat(img.crop((0, y, left, y + 1))).mean[2] for y in range(height // 2)]
    dips = sum(1 for y in range(1, len(rows) - 1) if rows[y] < 0.9 * min(rows[y - 1], rows[y + 1]))
    assert len(rows) / 6 <= dips <= len(rows) / 2


def test_contact_sheet_shows_every_style() -> None:
    thumb = 64
    sheet = gallery.contact_sheet(thumb)
    names = styles.names()
    gap = max(4, thumb // 24)
    label = round(thumb * 0.22)
    for i, name in enumerate(names):
        x = gap + (i % 4) * (thumb + gap)
        y = gap + (i // 4) * (thumb + label + gap)
        cell = sheet.crop((x, y, x + thumb, y + thumb))
        expected = ImageOps.fit(styles.image(name), (thumb, thumb), Image.Resampling.LANCZOS)
        assert ImageChops.difference(cell, expected).getbbox() is None, name
        text = sheet.crop((x, y + thumb, x + thumb, y + thumb + label))
        assert ImageStat.Stat(text).extrema[0][1] > 200, f"{name} has no label"
