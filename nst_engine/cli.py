"""`nst`: the style-transfer engine from a terminal.

    nst stylize photo.jpg --style starry-night -o out.png
    nst stylize photo.jpg --style the-scream:2 --style mine.jpg:1 -o out.jpg --size 768
    nst styles
    nst gallery -o styles.png

Bad input (a missing, undecodable or non-regular file, an unknown style, a nonsensical option,
an output that would overwrite an input, an unwritable output) exits with status 2 and one line on
stderr that names the file or option at fault; an engine failure exits 1; Ctrl-C stops at the
next step and exits 130.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import os
import re
import signal
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import NoReturn

from PIL import Image
from rich.console import Console
from rich.logging import RichHandler
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
from rich.progress import Progress as ProgressBar

from nst_engine import api, gallery, images, styles

OUTPUT_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".gif")
EXIT_BAD_INPUT = 2
EXIT_ENGINE = 1
EXIT_INTERRUPTED = 130
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
        info = _probe(data, path, STYLE_LABEL)
        return api.StyleSource(image=data, weight=weight), path, info.width * info.height
    if path.suffix.lower() in IMAGE_SUFFIXES or "/" in target or os.sep in target:
        raise api.InputError(f"{STYLE_LABEL} {target}: No such file.")
    return api.StyleSource(name=styles.get(target).name, weight=weight), None, 0


def _probe(data: bytes, path: Path, label: str) -> images.ImageInfo:
    try:
        return images.probe(data)
    except api.InputError as exc:
        raise api.InputError(f"{label} {path}: {exc}") from None


def _parse_styles(specs: Sequence[str]) -> list[tuple[api.StyleSource, Path | None, int]]:
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


def _check_decodes(files: Sequence[tuple[str, Path, bytes]]) -> None:
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


def _check_not_an_input(
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
            if match is None or _snapshot_path(output, int(match[1])).name != entry.name:
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


def _output_format(path: Path) -> str:
    fmt = OUTPUT_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise api.InputError(
            f"The output file must end in {', '.join(OUTPUT_FORMATS)} (got '{path.name}')."
        )
    return fmt


def _check_writable(path: Path) -> None:
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


def _write(path: Path, data: bytes) -> None:
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


def _save_image(img: Image.Image, path: Path) -> None:
    _write(path, images.encode(img, _output_format(path)))


def _snapshot_path(out: Path, step: int) -> Path:
    return out.with_name(f"{out.stem}-step{step:04d}{out.suffix}")


def _read_init(path: Path | None) -> bytes | None:
    """The --init image's bytes, checked to be an image."""
    if path is None:
        return None
    data = images.read_file(path, label="start image")
    _probe(data, path, "start image")
    return data


def _timelapse_format(path: Path | None) -> str:
    """The --timelapse animation's format from its suffix (.webp or .gif)."""
    if path is None:
        return "webp"
    suffix = path.suffix.lower().lstrip(".")
    if suffix not in api.TIMELAPSE_FORMATS:
        raise api.InputError(f"The timelapse must end in .webp or .gif, not '{path.name}'.")
    return suffix


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _iterations(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= MAX_ITERATIONS:
        raise argparse.ArgumentTypeError(
            f"must be a whole number from 1 to {MAX_ITERATIONS}, not '{text}'"
        )
    return value


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a whole number") from None
    if not 0 <= value <= api.MAX_SEED:
        raise argparse.ArgumentTypeError(f"must be between 0 and {api.MAX_SEED}")
    return value


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (`nst: ...`, exit 2); the usage stays behind --help."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_BAD_INPUT, f"nst: {message} (see `{self.prog} --help`)\n")


def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="nst", description="Paint a photo in the style of another picture.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what the engine does")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("stylize", help="paint CONTENT in one or more styles")
    run.add_argument("content", metavar="CONTENT", help="the photo (JPEG, PNG, WebP or GIF)")
    run.add_argument(
        "-s",
        "--style",
        action="append",
        required=True,
        metavar="NAME_OR_PATH[:WEIGHT]",
        help="a built-in style (see `nst styles`) or an image file, optionally with a blend "
        "weight; repeat to blend several",
    )
    run.add_argument(
        "-o",
        "--output",
        required=True,
        type=Path,
        metavar="OUT",
        help="where to write the result (.png, .jpg or .webp)",
    )
    run.add_argument(
        "--size",
        type=int,
        default=512,
        metavar="PX",
        help=f"long side in pixels, {api.MIN_SIZE}-{api.MAX_SIZE} (default 512)",
    )
    run.add_argument(
        "--quality",
        choices=api.QUALITIES,
        default="standard",
        help="speed/quality preset (default standard)",
    )
    run.add_argument(
        "--strength",
        type=float,
        default=1.0,
        metavar="S",
        help=f"style strength, {api.MIN_STRENGTH:g}-{api.MAX_STRENGTH:g}; 1 is the default look",
    )
    run.add_argument(
        "--preserve-colors",
        action="store_true",
        help="keep the photo's colours, take only the style's texture",
    )
    run.add_argument(
        "--seed",
        type=_seed,
        default=0,
        metavar="N",
        help="random seed (the same seed gives the same image on a CPU)",
    )
    run.add_argument(
        "--device",
        choices=("cpu", "cuda"),
        default=None,
        help="where to run (default: CUDA when present, else CPU)",
    )
    run.add_argument(
        "--init",
        type=Path,
        default=None,
        metavar="IMAGE",
        help="start from this image (e.g. an earlier result) and paint only the scales finer "
        "than it: with a larger --size, a bigger version of it",
    )
    run.add_argument(
        "--timelapse",
        type=Path,
        default=None,
        metavar="OUT.webp",
        help="also write an animation of the painting forming (.webp, or .gif)",
    )
    run.add_argument(
        "--precision",
        choices=api.PRECISIONS,
        default=None,
        help="precision of the VGG convolutions (default: $NST_PRECISION, else auto: bf16 on "
        "GPUs and CPUs with native bf16, fp32 elsewhere)",
    )
    run.add_argument(
        "--save-every",
        type=_positive_int,
        default=None,
        metavar="N",
        help="also save the image every N steps, as OUT-stepNNNN.ext",
    )
    run.add_argument(
        "--iterations",
        type=_iterations,
        default=None,
        metavar="N",
        help=f"total optimisation steps, 1-{MAX_ITERATIONS}, overriding the preset",
    )

    commands.add_parser("styles", help="list the built-in styles")

    sheet = commands.add_parser("gallery", help="render a contact sheet of the built-in styles")
    sheet.add_argument(
        "-o",
        "--output",
        required=True,
        type=Path,
        metavar="FILE",
        help="where to write it (.png, .jpg or .webp)",
    )
    sheet.add_argument(
        "--thumb",
        type=int,
        default=256,
        metavar="PX",
        help="thumbnail size in pixels (default 256)",
    )
    return parser


class _StopFlag:
    """The first Ctrl-C asks the engine to stop at the next step; a second one interrupts."""

    def __init__(self) -> None:
        self.requested = False

    def __call__(self) -> bool:
        return self.requested

    def handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True


def _format_eta(seconds: float | None) -> str:
    if seconds is None:
        return "ETA --:--"
    minutes, secs = divmod(round(seconds), 60)
    return f"ETA {minutes:d}:{secs:02d}"


def _stylize(args: argparse.Namespace, err: Console, out: Console) -> int:
    output: Path = args.output
    fmt = _output_format(output)  # refuse a wrong suffix before any work
    content_path = Path(args.content)
    content = images.read_file(content_path, label=CONTENT_LABEL)
    _probe(content, content_path, CONTENT_LABEL)
    parsed = _parse_styles(args.style)
    inputs = [(CONTENT_LABEL, content_path)]
    inputs += [(STYLE_LABEL, path) for _, path, _ in parsed if path is not None]
    if args.init is not None:
        inputs.append(("start image", args.init))
    _check_not_an_input(output, inputs, args.save_every)
    if args.timelapse is not None:
        _check_not_an_input(args.timelapse, [*inputs, ("output", output)], None)
    sources = tuple(source for source, _, _ in parsed)
    if args.strength != args.strength:  # NaN: say so, not "out of range"
        raise api.InputError("Strength must be a number.")
    request = api.StyleRequest(
        content=content,
        styles=sources,
        size=args.size,
        quality=args.quality,
        strength=args.strength,
        preserve_colors=args.preserve_colors,
        seed=args.seed,
        iterations=args.iterations,
        precision=args.precision,
        init=_read_init(args.init),
        timelapse=args.timelapse is not None,
        timelapse_format=_timelapse_format(args.timelapse),
    )
    _check_writable(output)
    files = [(CONTENT_LABEL, content_path, content)]
    files += [(STYLE_LABEL, p, s.image) for s, p, _ in parsed if p is not None and s.image]
    _check_decodes(files)
    if args.timelapse is not None:
        _check_writable(args.timelapse)

    from nst_engine import transfer, vgg  # torch loads here, after the cheap checks

    try:
        device = vgg.pick_device(args.device)
    except api.EngineError as exc:  # a device this machine lacks: the option is the problem
        raise api.InputError(str(exc)) from None
    stop = _StopFlag()
    previous = signal.signal(signal.SIGINT, stop.handle)
    bar = ProgressBar(
        TextColumn("scale {task.fields[scale]}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]}"),
        TimeElapsedColumn(),
        TextColumn("{task.fields[eta]}"),
        console=err,
        transient=False,
    )
    # Hidden until the first step, so that a job refused early leaves no empty bar behind.
    task = bar.add_task(
        "painting", total=None, visible=False, scale="-/-", loss="-", eta=_format_eta(None)
    )

    def on_progress(p: api.Progress) -> None:
        total = p.losses.get("total")
        bar.update(
            task,
            visible=True,
            completed=p.step,
            total=p.total_steps,
            scale=f"{p.scale}/{p.scales}",
            loss=f"{total:.4g}" if total is not None else "-",
            eta=_format_eta(p.eta),
        )

    def on_snapshot(step: int, img: Image.Image) -> None:
        path = _snapshot_path(output, step)
        _save_image(img, path)
        bar.console.print(f"saved step {step}: {path}", markup=False, soft_wrap=True)

    try:
        with bar:
            result = transfer.stylize(
                request,
                device=device,
                on_progress=on_progress,
                should_stop=stop,
                on_snapshot=on_snapshot if args.save_every else None,
                snapshot_every=args.save_every,
            )
    finally:
        signal.signal(signal.SIGINT, previous)

    if fmt == "PNG":
        _write(output, result.image)
    else:
        _save_image(images.decode(result.image), output)
    if args.timelapse is not None and result.timelapse is not None:
        _write(args.timelapse, result.timelapse)
        out.print(
            f"Saved {args.timelapse} ({result.timelapse_frames} frames)",
            markup=False, highlight=False, soft_wrap=True,
        )  # fmt: skip
    out.print(
        f"Saved {output} ({result.width}×{result.height}, {result.iterations} steps "
        f"in {result.seconds:.1f} s on {result.device})",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
    return 0


def _list_styles(out: Console) -> int:
    width = max(len(name) for name in styles.names()) + 2
    for name in styles.names():
        s = styles.get(name)
        heading = f"[bold]{s.name:<{width}}[/bold]{s.title} — {s.artist}, {s.year}"
        out.print(heading, highlight=False, soft_wrap=True)
        out.print(f"{'':<{width}}{s.description}", highlight=False, soft_wrap=True, style="dim")
    return 0


def _gallery(args: argparse.Namespace, out: Console) -> int:
    output: Path = args.output
    _output_format(output)
    if not 32 <= args.thumb <= 1024:
        raise api.InputError("Thumbnail size must be between 32 and 1024 pixels.")
    _check_writable(output)
    sheet = gallery.contact_sheet(args.thumb)
    _save_image(sheet, output)
    saved = f"Saved {output} ({sheet.width}×{sheet.height})"
    out.print(saved, markup=False, highlight=False, soft_wrap=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `nst` console script; returns the exit status."""
    args = _build_parser().parse_args(argv)
    err = Console(stderr=True)
    out = Console()
    # Log lines go through rich so that they print above the progress bar, not through it.
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(name)s: %(message)s",
        handlers=[RichHandler(console=err, show_path=False, markup=False)],
    )
    try:
        if args.command == "stylize":
            return _stylize(args, err, out)
        if args.command == "styles":
            return _list_styles(out)
        return _gallery(args, out)
    except api.InputError as exc:
        print(f"nst: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except api.Cancelled:
        print("nst: stopped.", file=sys.stderr)
        return EXIT_INTERRUPTED
    except api.EngineError as exc:
        print(f"nst: {exc}", file=sys.stderr)
        return EXIT_ENGINE
    except KeyboardInterrupt:
        print("nst: interrupted.", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
