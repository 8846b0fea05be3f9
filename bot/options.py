"""A stylize job's options: parsing the prefix syntax, and the short form buttons carry.

Prefix syntax (any order after the command):
    [STYLE] [strength=F] [size=N] [quality=draft|standard|high] [keep-colors] [seed=N]
    [timelapse]

STYLE is one style or a blend of up to four: `starry-night+the-scream`, with optional weights
`starry-night:2+the-scream:1`. A part names a built-in or one of the server's own styles; each
attached style image joins the blend with weight 1 (written `~` in the stored form). Every check
of blend names, weights and counts lives here; the engine's contract checks the rest.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Collection
from dataclasses import dataclass, replace

from nst_engine import styles
from nst_engine.api import MAX_STRENGTH, MIN_SIZE, MIN_STRENGTH, QUALITIES, InputError

KEEP_WORDS = ("keep-colors", "keep-colours", "keep_colors", "keep_colours", "keepcolors")
QUALITY_CODES = {"draft": "d", "standard": "s", "high": "h"}
MAX_SEED = 2**31 - 1
MAX_STYLES = 4
MAX_SERVER_STYLES = 25
IMAGE = "~"  # a blend part that is an attached style image
MIN_WEIGHT = 0.01
MAX_WEIGHT = 100.0
STYLE_NAME = re.compile(r"[a-z0-9-]{2,32}")


@dataclass(frozen=True)
class Part:
    """One style of a blend: a built-in or server style name, or `IMAGE`, and its weight."""

    name: str
    weight: float = 1.0

    def text(self) -> str:
        return self.name if self.weight == 1 else f"{self.name}:{self.weight:g}"


def too_many(count: int) -> InputError:
    return InputError(f"Too many styles: {count}; a blend takes at most {MAX_STYLES}.")


def parse_blend(text: str, *, typed: bool = True) -> tuple[Part, ...]:
    """`a:2+b` as parts; `typed` (what a user wrote) refuses the internal `~` part."""
    pieces = text.strip().lower().split("+")
    if len(pieces) > MAX_STYLES:
        raise too_many(len(pieces))
    parts = []
    for piece in pieces:
        name, sep, raw = piece.strip().partition(":")
        name = name.strip()
        if not name or (typed and name == IMAGE):
            raise InputError(
                f"I can't read the blend `{text}`. Write it like `starry-night:2+the-scream`."
            )
        weight = 1.0
        if sep:
            try:
                weight = float(raw)
            except ValueError:
                raise InputError(f"The weight of `{name}` must be a number, not `{raw}`.") from None
            if not (math.isfinite(weight) and MIN_WEIGHT <= weight <= MAX_WEIGHT):
                raise InputError(
                    f"The weight of `{name}` must be between {MIN_WEIGHT:g} and {MAX_WEIGHT:g}."
                )
        parts.append(Part(name, float(f"{weight:.4g}")))
    return tuple(parts)


def blend_text(parts: tuple[Part, ...]) -> str | None:
    return "+".join(p.text() for p in parts) or None


def check_style_name(name: str) -> str:
    """A server style's name, lower-cased and checked (not a built-in's); raises InputError."""
    key = name.strip().lower()
    if not STYLE_NAME.fullmatch(key):
        raise InputError("A style name has 2–32 characters: lower-case letters, digits and `-`.")
    if key in styles.STYLES:
        raise InputError(f"`{key}` is a built-in style; pick another name.")
    return key


def _canonical(name: str, server: Collection[str]) -> str:
    if name == IMAGE or name in styles.STYLES:
        return name
    if name in server:  # after the built-ins: a server's name never shadows one
        return name
    try:
        return styles.get(name).name  # "Unknown style 'x'. Did you mean 'y'?"
    except InputError:
        if not server:
            raise
        close = difflib.get_close_matches(name, [*styles.STYLES, *server], n=1, cutoff=0.5)
        hint = f" Did you mean '{close[0]}'?" if close else " See `styles` for the names."
        raise InputError(f"Unknown style '{name}'.{hint}") from None


def _blend(text: str, server: Collection[str]) -> str | None:
    return blend_text(tuple(replace(p, name=_canonical(p.name, server)) for p in parse_blend(text)))


@dataclass(frozen=True)
class Options:
    """What the user asked for. `style` is the blend in its stored form (`a:2+b+~`: names,
    weights and `~` for each attached style image), or None before style images are added."""

    style: str | None = None
    strength: float = 1.0
    size: int | None = None
    quality: str | None = None
    keep_colors: bool = False
    seed: int = 0
    timelapse: bool = False  # also attach an animation of the painting forming

    def parts(self) -> tuple[Part, ...]:
        return () if self.style is None else parse_blend(self.style, typed=False)

    @property
    def images(self) -> int:
        """How many attached style images the blend takes."""
        return sum(p.name == IMAGE for p in self.parts())

    def with_images(self, count: int) -> Options:
        """The blend with `count` attached style images added (weight 1 each)."""
        parts = self.parts() + (Part(IMAGE),) * count
        if len(parts) > MAX_STYLES:
            raise too_many(len(parts))
        return replace(self, style=blend_text(parts))

    def resolved(
        self,
        *,
        default_size: int,
        max_size: int,
        default_quality: str,
        server_styles: Collection[str] = (),
    ) -> Options:
        """Defaults filled in, the size capped, every value checked; raises `InputError`.

        Names are made canonical: built-ins first (they cannot be shadowed), then the names in
        `server_styles` (the asking server's own)."""
        style = blend_text(
            tuple(replace(p, name=_canonical(p.name, server_styles)) for p in self.parts())
        )
        if not MIN_STRENGTH <= self.strength <= MAX_STRENGTH:
            raise InputError(f"Strength must be between {MIN_STRENGTH:g} and {MAX_STRENGTH:g}.")
        size = default_size if self.size is None else self.size
        if size < MIN_SIZE:
            raise InputError(f"Size must be at least {MIN_SIZE} pixels.")
        quality = default_quality if self.quality is None else self.quality
        if quality not in QUALITIES:
            raise InputError(f"Quality must be one of: {', '.join(QUALITIES)}.")
        if not 0 <= self.seed <= MAX_SEED:
            raise InputError(f"Seed must be between 0 and {MAX_SEED}.")
        return replace(self, style=style, size=min(size, max_size), quality=quality)

    def summary(self) -> str:
        """One line for chat, e.g. `starry-night · strength 1 · 512 px · standard · seed 0`."""
        blend = " + ".join(
            ("your style image" if p.name == IMAGE else p.name)
            + ("" if p.weight == 1 else f" ×{p.weight:g}")
            for p in self.parts()
        )
        parts = [blend or "your style image", f"strength {self.strength:g}"]
        if self.size is not None:
            parts.append(f"{self.size} px")
        if self.quality is not None:
            parts.append(self.quality)
        if self.keep_colors:
            parts.append("colours kept")
        parts.append(f"seed {self.seed}")
        if self.timelapse:
            parts.append("timelapse")
        return " · ".join(parts)


def _number(key: str, raw: str, kind: type[int] | type[float]) -> int | float:
    try:
        return kind(raw)
    except ValueError:
        what = "a whole number" if kind is int else "a number"
        raise InputError(f"`{key}` needs {what}, not `{raw}`.") from None


def parse_words(words: list[str], server_styles: Collection[str] = ()) -> Options:
    """Parse the prefix form's words; unknown words and typos get a clear `InputError`.

    Style names are checked against the built-ins and `server_styles` (the server's own)."""
    return Options(**parse_given(words, server_styles))  # type: ignore[arg-type]


def parse_given(words: list[str], server_styles: Collection[str] = ()) -> dict[str, object]:
    """Only the options the words give, by `Options` field name (what overrides a recipe)."""
    found: dict[str, object] = {}
    for word in words:
        key, sep, value = word.partition("=")
        key = key.lower().replace("_", "-")
        if not sep:
            if key in KEEP_WORDS:
                found["keep_colors"] = True
            elif key == "timelapse":
                found["timelapse"] = True
            elif "style" in found:
                raise InputError(
                    f"I don't understand `{word}`. Options look like `strength=2 size=512 "
                    "quality=high keep-colors seed=7`."
                )
            else:
                found["style"] = _blend(word, server_styles)
        elif key == "strength":
            found["strength"] = float(_number(key, value, float))
        elif key == "size":
            found["size"] = int(_number(key, value, int))
        elif key == "seed":
            found["seed"] = int(_number(key, value, int))
        elif key == "quality":
            if value.lower() not in QUALITIES:
                raise InputError(f"Quality must be one of: {', '.join(QUALITIES)}.")
            found["quality"] = value.lower()
        elif key in ("keep-colors", "keep-colours"):
            found["keep_colors"] = value.lower() in ("1", "yes", "true", "on")
        elif key == "style":
            found["style"] = _blend(value, server_styles)
        else:
            raise InputError(
                f"Unknown option `{key}`. Use strength=, size=, quality=, seed= or keep-colors."
            )
    return found


# The compact form carried in a button's custom_id (with the action and ids around it):
#   STYLE:STRENGTH:SIZE:Q:K:SEED   where STYLE is the blend with `*` for `:` (`a*2+b+~`).
PACKED = (
    r"(?P<style>[a-z0-9~*.+-]+):(?P<strength>[0-9.]+):(?P<size>\d+):(?P<quality>[dsh]):"
    r"(?P<keep>[01]):(?P<seed>\d+)"
)
_UNPACK_QUALITY = {code: name for name, code in QUALITY_CODES.items()}


def pack(options: Options) -> str:
    """The compact form of resolved options (size and quality must be set)."""
    if options.size is None or options.quality is None:
        raise ValueError("pack() needs resolved options")
    return ":".join(
        (
            (options.style or IMAGE).replace(":", "*"),
            f"{options.strength:.4g}",
            str(options.size),
            QUALITY_CODES[options.quality],
            "1" if options.keep_colors else "0",
            str(options.seed),
        )
    )


def unpack(match: re.Match[str]) -> Options:
    """Options back from a match of `PACKED`."""
    return Options(
        style=match["style"].replace("*", ":"),
        strength=float(match["strength"]),
        size=int(match["size"]),
        quality=_UNPACK_QUALITY[match["quality"]],
        keep_colors=match["keep"] == "1",
        seed=int(match["seed"]),
    )
