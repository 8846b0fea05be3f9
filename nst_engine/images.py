"""The one place that decodes and encodes images, for the CLI, the workers and the bot alike.

Users' images are hostile until decoded here: the byte cap is checked before anything else, the
header is probed lazily and its format and pixel count are checked before any pixel is decoded,
and only the JPEG, PNG, WebP and GIF decoders are ever invoked. Pillow's decompression-bomb
warning is an error. An embedded ICC profile (a phone's Display P3, a print shop's CMYK) is
converted to sRGB; every mode comes out as RGB with alpha composited over white. Files are read
only when they are regular files, and never past the byte cap.

torch is imported only inside `to_tensor` and `from_tensor`, so the bot can import this module
without loading it.
"""

from __future__ import annotations

import io
import logging
import os
import stat
import struct
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image, ImageCms, ImageOps

from nst_engine.api import InputError

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

MAX_BYTES = 20 * 1024 * 1024
MAX_PIXELS = 50_000_000
MIN_SIDE = 16
MAX_ASPECT = 20.0

# Pillow format names, in the order Image.open tries them. No other decoder is ever consulted.
ALLOWED_FORMATS: tuple[str, ...] = ("JPEG", "PNG", "WEBP", "GIF")
# Pillow opens a multi-picture JPEG (common from phone cameras) as "MPO"; it is a JPEG whose
# first picture is the photo.
_FORMAT_NAMES = {"JPEG": "JPEG", "MPO": "JPEG", "PNG": "PNG", "WEBP": "WEBP", "GIF": "GIF"}
ENCODE_FORMATS: tuple[str, ...] = ("PNG", "JPEG", "WEBP")

_WARNINGS_LOCK = threading.Lock()

UNREADABLE = "That file isn't an image I can read (JPEG, PNG, WebP or GIF)."
DAMAGED = "That image is damaged or cut short, so I can't read it."
# How the allowed formats' files begin, to tell a damaged image from something else entirely.
_SIGNATURES = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF87a", b"GIF89a")

# What a decoder may raise on a malformed file. A hostile file is the sender's problem, so each of
# these becomes an InputError rather than a crash of the process that happened to decode it.
_DECODE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    IndexError,
    KeyError,
    TypeError,
    ZeroDivisionError,
    struct.error,
    Image.DecompressionBombError,
    Image.DecompressionBombWarning,
)


@dataclass(frozen=True)
class ImageInfo:
    """What the header of an encoded image says."""

    format: str
    width: int
    height: int


def _megabytes(n: int) -> str:
    return f"{n / (1024 * 1024):.1f} MB"


def _check_bytes(data: bytes, max_bytes: int) -> None:
    if not data:
        raise InputError("That file is empty.")
    if len(data) > max_bytes:
        size, limit = _megabytes(len(data)), _megabytes(max_bytes)
        raise InputError(f"That file is too large: {size}; the limit is {limit}.")


def _check_shape(width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise InputError(
            f"That image is too large: {width}×{height} pixels; "
            f"the limit is {max_pixels / 1_000_000:g} megapixels."
        )
    if min(width, height) < MIN_SIDE:
        raise InputError(
            f"That image is too small: {width}×{height} pixels; "
            f"it needs at least {MIN_SIDE} pixels on each side."
        )
    if max(width, height) > MAX_ASPECT * min(width, height):
        raise InputError(
            f"That image is too long and thin: {width}×{height} pixels; "
            f"its long side may be at most {MAX_ASPECT:g} times its short side."
        )


def _open(data: bytes, max_bytes: int, max_pixels: int) -> Image.Image:
    """Open lazily (header only), refusing a wrong format, a bad shape or a bomb warning."""
    _check_bytes(data, max_bytes)
    too_large = InputError(
        f"That image is too large; the limit is {max_pixels / 1_000_000:g} megapixels."
    )
    try:
        # Pillow's bomb warning is recorded here, not raised, so that the size check below can
        # name the dimensions; a recorded warning still refuses the image. The warning filters
        # are process-wide, so threads take turns (reading a header takes a millisecond).
        with _WARNINGS_LOCK, warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
    except Image.DecompressionBombError:
        raise too_large from None
    except _DECODE_ERRORS as exc:
        log.debug("refused an image at open: %r", exc)
        ours = data.startswith(_SIGNATURES) or (data[:4] == b"RIFF" and data[8:12] == b"WEBP")
        raise InputError(DAMAGED if ours else UNREADABLE) from None
    if img.format not in _FORMAT_NAMES:
        img.close()
        raise InputError(UNREADABLE)
    width, height = img.size
    try:
        _check_shape(width, height, max_pixels)
        if any(issubclass(w.category, Image.DecompressionBombWarning) for w in caught):
            raise too_large
    except InputError:
        img.close()
        raise
    return img


def probe(data: bytes, *, max_bytes: int = MAX_BYTES, max_pixels: int = MAX_PIXELS) -> ImageInfo:
    """Read only the header: format (JPEG/PNG/WEBP/GIF) and size, with every cap checked."""
    img = _open(data, max_bytes, max_pixels)
    info = ImageInfo(format=_FORMAT_NAMES[str(img.format)], width=img.width, height=img.height)
    img.close()
    return info


def decode(data: bytes, *, max_bytes: int = MAX_BYTES, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Decode safely to RGB: first GIF frame, EXIF orientation applied, alpha over white.

    Every cap is checked on the header before a pixel is decoded; only the first frame is ever
    read, so no later frame can claim a bigger canvas.
    """
    img = _open(data, max_bytes, max_pixels)
    try:
        img.load()
        ImageOps.exif_transpose(img, in_place=True)
        rgb = _to_rgb(_to_srgb(img))
    except InputError:
        img.close()
        raise
    except _DECODE_ERRORS as exc:
        img.close()
        log.debug("refused an image at decode: %r", exc)
        raise InputError(DAMAGED) from None
    if rgb is not img:
        img.close()
    rgb.info.clear()
    return rgb


# The ICC colour space each mode's pixels are in, and the mode its colour channels convert from.
_PROFILE_SPACES = {
    "RGB": ("RGB ", "RGB"),
    "RGBA": ("RGB ", "RGB"),
    "CMYK": ("CMYK", "CMYK"),
    "L": ("GRAY", "L"),
    "LA": ("GRAY", "L"),
}
_srgb: ImageCms.ImageCmsProfile | None = None


def _srgb_profile() -> ImageCms.ImageCmsProfile:
    global _srgb
    if _srgb is None:
        _srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
    return _srgb


def _to_srgb(img: Image.Image) -> Image.Image:
    """Convert through the embedded ICC profile to sRGB (alpha kept); `img` when it has none.

    A profile that can't be used (damaged, or for another colour space than the pixels) is
    logged and ignored: the pixels are then taken as sRGB, as they would be without a profile.
    CMYK without a profile is left to `_to_rgb` (ink coverage multiplied out, Pillow's way).
    """
    icc = img.info.get("icc_profile")
    if not icc:
        return img
    if img.mode in ("P", "PA") or "transparency" in img.info:
        img = img.convert("RGBA")  # the palette or colour key applies to the stored values
    if img.mode not in _PROFILE_SPACES:
        log.info("ignoring the colour profile of a %s image", img.mode)
        return img
    space, colour_mode = _PROFILE_SPACES[img.mode]
    alpha = img.getchannel("A") if img.mode in ("RGBA", "LA") else None
    colour = img.convert(colour_mode) if alpha is not None else img
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        if source.profile.xcolor_space != space:
            raise ImageCms.PyCMSError(
                f"a {source.profile.xcolor_space.strip()} profile on {img.mode} pixels"
            )
        converted = ImageCms.profileToProfile(colour, source, _srgb_profile(), outputMode="RGB")
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError) as exc:
        log.warning("ignoring a colour profile that can't be used: %s", exc)
        return img
    if converted is None:  # only with inPlace=True; keeps the type checker honest
        return img
    if alpha is not None:
        converted.putalpha(alpha)
    return converted


def _to_rgb(img: Image.Image) -> Image.Image:
    """Any mode as RGB, transparent pixels made white; `img` itself when already plain RGB."""
    mode = img.mode
    if mode in ("RGBA", "RGBa", "LA", "La", "PA") or "transparency" in img.info:
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    if mode == "RGB":
        return img
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        # 16-bit greys: scale 0..65535 down to 0..255 instead of clipping everything to white.
        wide = img if mode == "I" else img.convert("I")
        return wide.point(lambda v: v * (1 / 256)).convert("L").convert("RGB")
    if mode == "F":
        raise InputError(UNREADABLE)
    return img.convert("RGB")


def _check_regular(mode: int, what: str) -> None:
    if stat.S_ISDIR(mode):
        raise InputError(f"{what}: It is a folder, not an image file.")
    if not stat.S_ISREG(mode):
        raise InputError(f"{what}: It is not a regular file (a device, pipe or socket).")


def read_file(path: str | Path, *, max_bytes: int = MAX_BYTES, label: str = "file") -> bytes:
    """A regular file's bytes, never more than `max_bytes`; anything else is an InputError.

    Every message begins with `label` and the path ("photo cat.jpg: ..."). Devices, FIFOs and
    folders are refused from their metadata before they are opened, and again on the opened
    descriptor (opened non-blocking, so that a FIFO swapped in meanwhile can't hang the read).
    At most `max_bytes + 1` bytes are read, whatever size the file claims.
    """
    p = Path(path)
    what = f"{label} {p}"
    try:
        _check_regular(os.stat(p).st_mode, what)
        fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        with os.fdopen(fd, "rb", buffering=0) as f:
            info = os.fstat(fd)
            _check_regular(info.st_mode, what)
            if info.st_size > max_bytes:
                size, limit = _megabytes(info.st_size), _megabytes(max_bytes)
                raise InputError(f"{what}: It is too large: {size}; the limit is {limit}.")
            chunks: list[bytes] = []
            left = max_bytes + 1
            while left > 0:
                chunk = f.read(min(left, 1024 * 1024))
                if not chunk:
                    break
                chunks.append(chunk)
                left -= len(chunk)
    except FileNotFoundError:
        raise InputError(f"{what}: No such file.") from None
    except PermissionError:
        raise InputError(f"{what}: Not allowed to read it.") from None
    except OSError as exc:
        raise InputError(f"{what}: Can't read it: {exc.strerror or exc}.") from None
    data = b"".join(chunks)
    if len(data) > max_bytes:
        raise InputError(f"{what}: It is too large; the limit is {_megabytes(max_bytes)}.")
    return data


def fit_long_side(img: Image.Image, long_side: int) -> Image.Image:
    """Resize (LANCZOS) so that the longer side is `long_side` pixels, keeping the aspect ratio."""
    if long_side < 1:
        raise ValueError("long_side must be positive")
    width, height = img.size
    scale = long_side / max(width, height)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    if size == img.size:
        return img.copy()
    return img.resize(size, Image.Resampling.LANCZOS)


def to_tensor(img: Image.Image) -> torch.Tensor:
    """An RGB image as a 1×3×H×W float32 tensor with values in 0..1."""
    import torch

    rgb = img if img.mode == "RGB" else _to_rgb(img)
    width, height = rgb.size
    raw = torch.frombuffer(bytearray(rgb.tobytes()), dtype=torch.uint8)
    return raw.view(height, width, 3).permute(2, 0, 1).unsqueeze(0).float().div_(255.0)


def from_tensor(t: torch.Tensor) -> Image.Image:
    """A 1×3×H×W (or 3×H×W) tensor with values in 0..1 as an RGB image; values are clamped."""
    if t.dim() == 4:
        if t.shape[0] != 1:
            raise ValueError(f"expected a batch of one image, got {t.shape[0]}")
        t = t[0]
    if t.dim() != 3 or t.shape[0] != 3:
        raise ValueError(f"expected a 3×H×W tensor, got shape {tuple(t.shape)}")
    pixels = t.detach().float().clamp(0.0, 1.0).mul(255.0).round().to("cpu").byte()
    height, width = pixels.shape[1], pixels.shape[2]
    data = pixels.permute(1, 2, 0).contiguous().numpy().tobytes()
    return Image.frombytes("RGB", (width, height), data)


def encode(img: Image.Image, fmt: str = "PNG", *, quality: int = 95) -> bytes:
    """Encode as PNG, JPEG or WEBP with no metadata (no EXIF, ICC profile or text chunks)."""
    fmt = fmt.upper()
    if fmt not in ENCODE_FORMATS:
        raise ValueError(f"can't encode {fmt!r}; use one of {', '.join(ENCODE_FORMATS)}")
    clean = _to_rgb(img)
    if clean is img:
        clean = img.copy()
    clean.info.clear()
    out = io.BytesIO()
    if fmt == "PNG":
        clean.save(out, "PNG")
    elif fmt == "JPEG":
        clean.save(out, "JPEG", quality=quality, optimize=True)
    else:
        clean.save(out, "WEBP", quality=quality, method=4)
    return out.getvalue()
