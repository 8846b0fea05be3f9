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
import logging
import signal
import sys
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
from nst_engine.cli_files import (
    CONTENT_LABEL,
    MAX_ITERATIONS,
    STYLE_LABEL,
    check_decodes,
    check_not_an_input,
    check_writable,
    output_format,
    parse_styles,
    probe,
    read_init,
    save_image,
    snapshot_path,
    timelapse_format,
    write,
)

EXIT_BAD_INPUT = 2
EXIT_ENGINE = 1
EXIT_INTERRUPTED = 130


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
    fmt = output_format(output)  # refuse a wrong suffix before any work
    content_path = Path(args.content)
    content = images.read_file(content_path, label=CONTENT_LABEL)
    probe(content, content_path, CONTENT_LABEL)
    parsed = parse_styles(args.style)
    inputs = [(CONTENT_LABEL, content_path)]
    inputs += [(STYLE_LABEL, path) for _, path, _ in parsed if path is not None]
    if args.init is not None:
        inputs.append(("start image", args.init))
    check_not_an_input(output, inputs, args.save_every)
    if args.timelapse is not None:
        check_not_an_input(args.timelapse, [*inputs, ("output", output)], None)
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
        init=read_init(args.init),
        timelapse=args.timelapse is not None,
        timelapse_format=timelapse_format(args.timelapse),
    )
    check_writable(output)
    files = [(CONTENT_LABEL, content_path, content)]
    files += [(STYLE_LABEL, p, s.image) for s, p, _ in parsed if p is not None and s.image]
    check_decodes(files)
    if args.timelapse is not None:
        check_writable(args.timelapse)

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
        path = snapshot_path(output, step)
        save_image(img, path)
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
        write(output, result.image)
    else:
        save_image(images.decode(result.image), output)
    if args.timelapse is not None and result.timelapse is not None:
        write(args.timelapse, result.timelapse)
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
    output_format(output)
    if not 32 <= args.thumb <= 1024:
        raise api.InputError("Thumbnail size must be between 32 and 1024 pixels.")
    check_writable(output)
    sheet = gallery.contact_sheet(args.thumb)
    save_image(sheet, output)
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
