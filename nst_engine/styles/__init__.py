"""The built-in styles: six public-domain paintings shipped as package data, and vaporwave.

vaporwave has no public-domain original, so `vaporwave.render` paints it from code. Provenance of
the paintings is in SOURCES.md next to this file. Nothing here imports torch.
"""

from __future__ import annotations

import difflib
import functools
from dataclasses import dataclass
from importlib import resources

from PIL import Image

from nst_engine import images
from nst_engine.api import InputError
from nst_engine.styles import vaporwave


@dataclass(frozen=True)
class BuiltinStyle:
    """A built-in style's name (as typed in commands) and what it is."""

    name: str
    title: str
    artist: str
    year: str
    description: str


STYLES: dict[str, BuiltinStyle] = {
    s.name: s
    for s in (
        BuiltinStyle(
            "starry-night",
            "The Starry Night",
            "Vincent van Gogh",
            "1889",
            "Swirling night sky in thick, rhythmic strokes of blue and yellow.",
        ),
        BuiltinStyle(
            "the-scream",
            "The Scream",
            "Edvard Munch",
            "1893",
            "Wavering bands of blood-orange sky over a dark blue fjord.",
        ),
        BuiltinStyle(
            "great-wave",
            "The Great Wave off Kanagawa",
            "Katsushika Hokusai",
            "c. 1831",
            "Woodblock print: crisp outlines, Prussian blue and claw-like foam.",
        ),
        BuiltinStyle(
            "shipwreck",
            "The Shipwreck of the Minotaur",
            "J. M. W. Turner",
            "c. 1810",
            "A churning storm at sea in whites, greys and amber.",
        ),
        BuiltinStyle(
            "woman-with-hat",
            "Woman with a Hat",
            "Henri Matisse",
            "1905",
            "Fauvist patches of loud, unmixed colour.",
        ),
        BuiltinStyle(
            "udnie",
            "Udnie (Young American Girl, The Dance)",
            "Francis Picabia",
            "1913",
            "Fragmented machine-like planes in muted blues and ochres.",
        ),
        BuiltinStyle(
            "vaporwave",
            "Vaporwave Sunset",
            "rendered by stylebot's code",
            "2026",
            "Pastel sunset, striped sun and neon perspective grid with scan lines.",
        ),
    )
}

RENDERED = frozenset({"vaporwave"})


def names() -> list[str]:
    """The built-in style names, in display order."""
    return list(STYLES)


def _normalise(name: str) -> str:
    return "-".join(name.strip().lower().replace("_", " ").replace("-", " ").split())


def suggest(name: str) -> str | None:
    """The built-in name closest to `name`, or None when nothing is close."""
    key = _normalise(name)
    if not key:
        return None
    if len(key) >= 3:
        for candidate in STYLES:
            if key in candidate or candidate in key:
                return candidate
    close = difflib.get_close_matches(key, list(STYLES), n=1, cutoff=0.5)
    return close[0] if close else None


def get(name: str) -> BuiltinStyle:
    """The built-in style called `name` (case, spaces and underscores forgiven)."""
    style = STYLES.get(_normalise(name))
    if style is not None:
        return style
    guess = suggest(name)
    if guess is not None:
        raise InputError(f"Unknown style '{name}'. Did you mean '{guess}'?")
    raise InputError(f"Unknown style '{name}'. Built-in styles: {', '.join(STYLES)}.")


@functools.lru_cache(maxsize=len(STYLES))
def _load(name: str) -> Image.Image:
    if name in RENDERED:
        return vaporwave.render()
    data = resources.files(__package__).joinpath(f"{name}.jpg").read_bytes()
    return images.decode(data)


def image(name: str) -> Image.Image:
    """The style's picture as an RGB image (a fresh copy the caller may modify)."""
    return _load(get(name).name).copy()
