"""The contract between the engine and its callers: plain data, typed errors, the Engine protocol.

Nothing here imports torch, so the bot can depend on this module without loading the model.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Protocol

QUALITIES: tuple[str, ...] = ("draft", "standard", "high")
MIN_SIZE = 32
MAX_SIZE = 2048
MIN_STRENGTH = 0.05
MAX_STRENGTH = 20.0
MAX_SEED = 2**63 - 1
_KEY = re.compile(r"[0-9a-f]{8,64}")
# Precision of the VGG convolutions (see nst_engine.precision); None in a request means the
# NST_PRECISION setting of the process that paints, else "auto".
PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16")
TIMELAPSE_FORMATS: tuple[str, ...] = ("webp", "gif")
MIN_TIMELAPSE_BYTES = 4096


class StyleBotError(Exception):
    """Base of the typed errors; the message is fit to show to a chat user."""


class InputError(StyleBotError):
    """The request or one of its images cannot be used (the sender can fix it)."""


class Cancelled(StyleBotError):
    """The job was cancelled before it finished."""

    def __init__(self, message: str = "The job was cancelled.") -> None:
        super().__init__(message)


class EngineError(StyleBotError):
    """The engine failed through no fault of the request (crash, out of memory, shutdown)."""


class JobTimeout(EngineError):
    """The job ran past its time limit."""


@dataclass(frozen=True)
class StyleSource:
    """One style: a built-in name or encoded image bytes, with its blend weight.

    `key`, for an image only, names its bytes for good (e.g. their sha256): the engine caches the
    image's style targets under it, as it does a built-in's under its name.
    """

    name: str | None = None
    image: bytes | None = None
    weight: float = 1.0
    key: str | None = None

    def __post_init__(self) -> None:
        if (self.name is None) == (self.image is None):
            raise InputError("A style is either a built-in name or an image, not both or neither.")
        if not self.weight > 0:
            raise InputError("A style's weight must be a positive number.")
        if self.key is not None and (self.image is None or not _KEY.fullmatch(self.key)):
            raise InputError("A style's cache key goes with an image: 8–64 hex digits.")

    def describe(self) -> str:
        """A short label for logs and chat: the name, or 'image'."""
        return self.name if self.name is not None else "image"


@dataclass(frozen=True)
class StyleRequest:
    """What to paint: the content photo (encoded bytes), its styles and the knobs."""

    content: bytes
    styles: tuple[StyleSource, ...]
    size: int = 512
    quality: str = "standard"
    strength: float = 1.0
    preserve_colors: bool = False
    seed: int = 0
    iterations: int | None = None
    # Also return the inputs at the result's size (PNG), e.g. for a chat front end that must
    # carry them on the result message; made where the images are decoded, never by the caller.
    input_copies: bool = False
    precision: str | None = None
    # Start from this encoded image (e.g. an earlier result) instead of noise: it is resized to
    # the photo's aspect at `size`, and only the scales finer than it are painted ("Bigger").
    init: bytes | None = None
    # Also make an animation of the painting forming (Result.timelapse), in this format and,
    # with timelapse_max_bytes, fitted to that many bytes (fewer or smaller frames).
    timelapse: bool = False
    timelapse_format: str = "webp"
    timelapse_max_bytes: int | None = None

    def __post_init__(self) -> None:
        if not self.styles:
            raise InputError("Give at least one style.")
        if not MIN_SIZE <= self.size <= MAX_SIZE:
            raise InputError(f"Size must be between {MIN_SIZE} and {MAX_SIZE} pixels.")
        if self.quality not in QUALITIES:
            raise InputError(f"Quality must be one of: {', '.join(QUALITIES)}.")
        if not MIN_STRENGTH <= self.strength <= MAX_STRENGTH:
            raise InputError(f"Strength must be between {MIN_STRENGTH} and {MAX_STRENGTH:g}.")
        if not 0 <= self.seed <= MAX_SEED:
            raise InputError(f"Seed must be a whole number from 0 to {MAX_SEED}.")
        if self.iterations is not None and self.iterations < 1:
            raise InputError("Iterations must be at least 1.")
        if self.precision is not None and self.precision not in PRECISIONS:
            raise InputError(f"Precision must be one of: {', '.join(PRECISIONS)}.")
        if self.timelapse_format not in TIMELAPSE_FORMATS:
            raise InputError(f"A timelapse is one of: {', '.join(TIMELAPSE_FORMATS)}.")
        if self.timelapse_max_bytes is not None and self.timelapse_max_bytes < MIN_TIMELAPSE_BYTES:
            raise InputError(f"A timelapse needs a budget of at least {MIN_TIMELAPSE_BYTES} bytes.")


@dataclass(frozen=True)
class Progress:
    """One progress event of a running job. `step` counts steps over all scales."""

    scale: int
    scales: int
    step: int
    total_steps: int
    elapsed: float
    eta: float | None
    losses: dict[str, float] = field(default_factory=dict)
    preview: bytes | None = None

    @property
    def fraction(self) -> float:
        return self.step / self.total_steps if self.total_steps else 0.0


@dataclass(frozen=True)
class Result:
    """A finished job: the painted image as PNG bytes, and how it was made."""

    image: bytes
    width: int
    height: int
    seconds: float
    iterations: int
    device: str
    losses: dict[str, float] = field(default_factory=dict)
    inputs: tuple[bytes, ...] = ()  # with `input_copies`: the photo, then each style image
    timelapse: bytes | None = None  # the animation, when the request asked for one and it fit
    timelapse_frames: int = 0


@dataclass(frozen=True)
class EngineStats:
    """What an engine has now: painters ready, painters busy, jobs waiting for one, the nodes
    (machines) the ready painters run on and their distinct devices ("cpu", "cuda:0", ...)."""

    painters: int
    busy: int
    queued: int
    nodes: int = 1
    devices: tuple[str, ...] = ()

    @property
    def workers(self) -> int:
        """The former name of `painters`."""
        return self.painters


class Job(Protocol):
    """A submitted job. Progress ends when the job ends; result() raises the typed errors."""

    id: str

    def progress(self) -> AsyncIterator[Progress]: ...

    async def result(self) -> Result: ...

    async def cancel(self) -> None: ...


class Engine(Protocol):
    """Runs style transfers somewhere other than the caller's event loop."""

    async def submit(self, request: StyleRequest) -> Job: ...

    async def close(self) -> None: ...

    def stats(self) -> EngineStats: ...
