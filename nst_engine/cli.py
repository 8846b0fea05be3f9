"""`nst`: the style-transfer engine from a terminal.

    nst stylize photo.jpg --style starry-night -o out.png
    nst stylize photo.jpg --style the-scream:2 --style mine.jpg:1 -o out.jpg --size 768
    nst styles
    nst gallery -o styles.png

Bad input (a missing or undecodable file, an unknown style, a nonsensical option, an
unwritable output) exits with status 2 and one line on stderr; an engine failure exits 1; Ctrl-C
stops at the next step and exits 130.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import os
import signal
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

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


def parse_style(spec: str) -> api.StyleSource:
    """`NAME_OR_PATH[:WEIGHT]` as a StyleSource; a file's bytes are read and probed here."""
    target, weight = spec, 1.0
    if not Path(spec).is_file():
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
    if path.is_file():
        data = images.read_file(path)
        _probe(data, path)
        return api.StyleSource(image=data, weight=weight)
    if path.suffix.lower() in IMAGE_SUFFIXES or "/" in target or os.sep in target:
        raise api.InputError(f"No such file: {target}")
    return api.StyleSource(name=styles.get(target).name, weight=weight)


def _probe(data: bytes, path: Path) -> None:
    try:
        images.probe(data)
    except api.InputError as exc:
        raise api.InputError(f"{path}: {exc}") from None


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
    data = images.read_file(path)
    _probe(data, path)
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


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a whole number") from None
    if not 0 <= value <= api.MAX_SEED:
        raise argparse.ArgumentTypeError(f"must be between 0 and {api.MAX_SEED}")
    return value


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nst", description="Paint a photo in the style of another picture."
    )
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
        type=_positive_int,
        default=None,
        metavar="N",
        help="total optimisation steps, overriding the preset",
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
    content = images.read_file(args.content)
    _probe(content, Path(args.content))
    sources = tuple(parse_style(spec) for spec in args.style)
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
