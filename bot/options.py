"""A stylize job's options: parsing the prefix syntax, and the short form buttons carry.

Prefix syntax (any order after the command):
    [STYLE] [strength=F] [size=N] [quality=draft|standard|high] [keep-colors] [seed=N]
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from nst_engine import styles
from nst_engine.api import MAX_STRENGTH, MIN_SIZE, MIN_STRENGTH, QUALITIES, InputError

KEEP_WORDS = ("keep-colors", "keep-colours", "keep_colors", "keep_colours", "keepcolors")
QUALITY_CODES = {"draft": "d", "standard": "s", "high": "h"}
MAX_SEED = 2**31 - 1


@dataclass(frozen=True)
class Options:
    """What the user asked for; `style` is a built-in name, or None for a style image."""

    style: str | None = None
    strength: float = 1.0
    size: int | None = None
    quality: str | None = None
    keep_colors: bool = False
    seed: int = 0

    def resolved(self, *, default_size: int, max_size: int, default_quality: str) -> Options:
        """Defaults filled in, the size capped, every value checked; raises `InputError`."""
        style = None if self.style is None else styles.get(self.style).name
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
        parts = [self.style or "your style image", f"strength {self.strength:g}"]
        if self.size is not None:
            parts.append(f"{self.size} px")
        if self.quality is not None:
            parts.append(self.quality)
        if self.keep_colors:
            parts.append("colours kept")
        parts.append(f"seed {self.seed}")
        return " · ".join(parts)


def _number(key: str, raw: str, kind: type[int] | type[float]) -> int | float:
    try:
        return kind(raw)
    except ValueError:
        what = "a whole number" if kind is int else "a number"
        raise InputError(f"`{key}` needs {what}, not `{raw}`.") from None


def parse_words(words: list[str]) -> Options:
    """Parse the prefix form's words; unknown words and typos get a clear `InputError`."""
    found: dict[str, object] = {}
    for word in words:
        key, sep, value = word.partition("=")
        key = key.lower().replace("_", "-")
        if not sep:
            if key in KEEP_WORDS:
                found["keep_colors"] = True
            elif "style" in found:
                raise InputError(
                    f"I don't understand `{word}`. Options look like `strength=2 size=512 "
                    "quality=high keep-colors seed=7`."
                )
            else:
                # raises "Unknown style 'x'. Did you mean 'y'?"
                found["style"] = styles.get(word).name
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
            found["style"] = styles.get(value).name
        else:
            raise InputError(
                f"Unknown option `{key}`. Use strength=, size=, quality=, seed= or keep-colors."
            )
    return Options(**found)  # type: ignore[arg-type]


# The compact form carried in a button's custom_id (with the action and ids around it):
#   STYLE:STRENGTH:SIZE:Q:K:SEED   where STYLE is a built-in name or "~" for the style image.
PACKED = (
    r"(?P<style>[a-z0-9-]+|~):(?P<strength>[0-9.]+):(?P<size>\d+):(?P<quality>[dsh]):"
    r"(?P<keep>[01]):(?P<seed>\d+)"
)
_UNPACK_QUALITY = {code: name for name, code in QUALITY_CODES.items()}


def pack(options: Options) -> str:
    """The compact form of resolved options (size and quality must be set)."""
    if options.size is None or options.quality is None:
        raise ValueError("pack() needs resolved options")
    return ":".join(
        (
            options.style or "~",
            f"{options.strength:.4g}",
            str(options.size),
            QUALITY_CODES[options.quality],
            "1" if options.keep_colors else "0",
            str(options.seed),
        )
    )


def unpack(match: re.Match[str]) -> Options:
    """Options back from a match of `PACKED`."""
    style = match["style"]
    return Options(
        style=None if style == "~" else style,
        strength=float(match["strength"]),
        size=int(match["size"]),
        quality=_UNPACK_QUALITY[match["quality"]],
        keep_colors=match["keep"] == "1",
        seed=int(match["seed"]),
    )
