"""The `nst` command's files and paths: reading and probing the inputs, telling a style file from
a built-in's name, refusing an output that would overwrite an input or cannot be written, and
writing results atomically."""

from __future__ import annotations

import contextlib
import math
import os
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from nst_engine import api, images, styles

OUTPUT_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".gif")
# The most steps `nst stylize --iterations` takes, so also the highest step a snapshot is named for.
MAX_ITERATIONS = 10_000
# Style files are decoded together, so their pixels are capped together too (each one is also
# capped on its own by images.MAX_PIXELS).
MAX_STYLE_PIXELS = 100_000_000
# How messages name the files they are about: "photo cat.jpg: ...", "style file mine.png: ...".
CONTENT_LABEL = "photo"
STYLE_LABEL = "style file"


def _is_path(text: str) -> bool:
    """Whether `text` names something on disk (a dangling link too), other than a built-in's
    name that happens to be a folder here."""
    if not os.path.lexists(text):
        return False
    return not (os.path.isdir(text) and text in styles.names())


def parse_style(spec: str) -> tuple[api.StyleSource, Path | None, int]:
    """`NAME_OR_PATH[:WEIGHT]` as a StyleSource, the file it came from (None for a built-in)
    and that file's pixel count; a file's bytes are read and probed here."""
    target, weight = spec, 1.0
    if not _is_path(spec):
        head, sep, tail = spec.rpartition(":")
        if sep and head:
            try:
                weight = float(tail)
            except ValueError:
                raise api.InputError(
                    f"Style weight must be a number, not '{tail}' (in '{spec}')."
                ) from None
            target = head
    if not math.isfinite(weight) or weight <= 0:
        raise api.InputError(f"Style weight must be a positive number (in '{spec}').")
    path = Path(target)
    if _is_path(target):
        data = images.read_file(path, label=STYLE_LABEL)
        info = probe(data, path, STYLE_LABEL)
        return api.StyleSource(image=data, weight=weight), path, info.width * info.height
    if path.suffix.lower() in IMAGE_SUFFIXES or "/" in target or os.sep in target:
        raise api.InputError(f"{STYLE_LABEL} {target}: No such file.")
    return api.StyleSource(name=styles.get(target).name, weight=weight), None, 0


def probe(data: bytes, path: Path, label: str) -> images.ImageInfo:
    try:
        return images.probe(data)
    except api.InputError as exc:
        raise api.InputError(f"{label} {path}: {exc}") from None


def parse_styles(specs: Sequence[str]) -> list[tuple[api.StyleSource, Path | None, int]]:
    """Every --style, refusing as soon as the style files' pixels add up past the cap (before
    the rest are even read)."""
    parsed, total, files = [], 0, 0
    for spec in specs:
        source, path, pixels = parse_style(spec)
        parsed.append((source, path, pixels))
        total += pixels
        files += path is not None
        if total > MAX_STYLE_PIXELS:
            raise api.InputError(
                f"The style files are too large together: {total / 1_000_000:.1f} megapixels "
                f"in the first {files}; the limit is {MAX_STYLE_PIXELS / 1_000_000:g} "
                "megapixels for all of them."
            )
    return parsed


def check_decodes(files: Sequence[tuple[str, Path, bytes]]) -> None:
    """Decode each file once, one at a time, so that a file damaged past its header is named
    now rather than reported nameless by the engine later."""
    for label, path, data in files:
        try:
            images.decode(data).close()
        except api.InputError as exc:
            raise api.InputError(f"{label} {path}: {exc}") from None


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (yet)
        return False


def check_not_an_input(
    output: Path, inputs: Sequence[tuple[str, Path]], save_every: int | None
) -> None:
    """Refuse an output, or a snapshot it would write, that is one of the inputs: the same
    file by any name (a hard link, a symlink, `./x` for `x`)."""
    for label, path in inputs:
        if _same_file(output, path) or output.resolve() == path.resolve():
            raise api.InputError(
                f"The output {output} is the same file as the {label} {path}; choose another name."
            )
    if save_every is None or not output.parent.is_dir():
        return
    pattern = re.compile(re.escape(output.stem) + r"-step(\d{4,})" + re.escape(output.suffix))
    with os.scandir(output.parent) as entries:
        for entry in entries:
            match = pattern.fullmatch(entry.name)
            if match is None or snapshot_path(output, int(match[1])).name != entry.name:
                continue
            step = int(match[1])
            if step % save_every or step > MAX_ITERATIONS:
                continue
            snapshot = output.parent / entry.name
            for label, path in inputs:
                if _same_file(snapshot, path):
                    raise api.InputError(
                        f"--save-every would overwrite the {label} {path} with {snapshot}; "
                        "choose another output name."
                    )


def output_format(path: Path) -> str:
    fmt = OUTPUT_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise api.InputError(
            f"The output file must end in {', '.join(OUTPUT_FORMATS)} (got '{path.name}')."
        )
    return fmt


def check_writable(path: Path) -> None:
    """Create the output's folder and prove a file can be written there, before any work."""
    blocker = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise api.InputError(f"Can't write {path}: {blocker} is a file, not a folder.")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_dir():
            raise api.InputError(f"Can't write {path}: it is a folder.")
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=".nst-", suffix=".tmp"):
            pass
    except OSError as exc:
        raise api.InputError(f"Can't write {path}: {exc.strerror or exc}.") from None


def write(path: Path, data: bytes) -> None:
    """Write atomically: a reader never sees a half-written image."""
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".nst-", suffix=path.suffix)
    except OSError as exc:
        raise api.InputError(f"Can't write {path}: {exc.strerror or exc}.") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise api.InputError(f"Can't write {path}: {exc.strerror or exc}.") from None


def save_image(img: Image.Image, path: Path) -> None:
    write(path, images.encode(img, output_format(path)))


def snapshot_path(out: Path, step: int) -> Path:
    return out.with_name(f"{out.stem}-step{step:04d}{out.suffix}")


def read_init(path: Path | None) -> bytes | None:
    """The --init image's bytes, checked to be an image."""
    if path is None:
        return None
    data = images.read_file(path, label="start image")
    probe(data, path, "start image")
    return data


def timelapse_format(path: Path | None) -> str:
    """The --timelapse animation's format from its suffix (.webp or .gif)."""
    if path is None:
        return "webp"
    suffix = path.suffix.lower().lstrip(".")
    if suffix not in api.TIMELAPSE_FORMATS:
        raise api.InputError(f"The timelapse must end in .webp or .gif, not '{path.name}'.")
    return suffix
